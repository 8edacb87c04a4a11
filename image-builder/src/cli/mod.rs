//! The builder's commands as `keel` runs them: each owns its clap arguments and a `run` that
//! prints results (stdout), errors (stderr) and returns the exit code
//! ([`keel_cli_support::exit`]).

pub mod build;
pub mod inspect;
pub mod keygen;
pub mod timings;

use std::path::PathBuf;

use keel_cli_support::exit;

use crate::error::Error;
use crate::inspect::Trust;
use crate::keys;

/// Prints `err` as `keel: error: ...` and returns its exit code: the builder error's own, else
/// [`exit::FAILED`].
pub fn report(err: &anyhow::Error) -> i32 {
    eprintln!("keel: error: {err:#}");
    err.chain()
        .find_map(|c| c.downcast_ref::<Error>())
        .map_or(exit::FAILED, Error::exit_code)
}

/// `Ok` as [`exit::OK`], an error printed and mapped by [`report`].
pub fn finish(result: anyhow::Result<i32>) -> i32 {
    result.unwrap_or_else(|e| report(&e))
}

/// The key `inspect` and `verify` check signatures with: `--pubkey`, else the development key
/// if there is one.
fn trust_from(pubkey: Option<PathBuf>) -> anyhow::Result<Option<Trust>> {
    if let Some(p) = pubkey {
        let k = keys::public_key(&p)?;
        return Ok(Some(Trust {
            keys: vec![k],
            source: p.display().to_string(),
        }));
    }
    Ok(keys::dev_public_key().map(|(p, k)| Trust {
        keys: vec![k],
        source: format!("development key {}", p.display()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_through_context() {
        let e = anyhow::Error::from(Error::Environment("no mkfs.erofs".into())).context("build");
        assert_eq!(report(&e), exit::ENVIRONMENT);
        let e = anyhow::Error::from(Error::input("bad board")).context("build");
        assert_eq!(report(&e), exit::USAGE);
        assert_eq!(report(&anyhow::anyhow!("anything else")), exit::FAILED);
    }
}
