//! Is a (verified) payload meant for this system? Same arch and board, and a newer version
//! unless a downgrade is asked for.

use std::cmp::Ordering;

use keel_format::metadata::SlotMetadata;

use crate::error::{Result, UpdateError};
use crate::release::SystemInfo;

/// Compare two release versions as semver. A version that is not semver is an error rather than
/// a guess: an update must never be applied because a string compared "higher".
pub fn compare_versions(a: &str, b: &str) -> std::result::Result<Ordering, String> {
    let parse = |v: &str| {
        semver::Version::parse(v.trim_start_matches('v'))
            .map_err(|e| format!("version {v:?} is not semantic versioning ({e})"))
    };
    Ok(parse(a)?.cmp_precedence(&parse(b)?))
}

pub fn check_compatible(
    payload: &str,
    meta: &SlotMetadata,
    running: &SystemInfo,
    allow_downgrade: bool,
) -> Result<()> {
    let not_applicable = |reason: String| UpdateError::NotApplicable {
        payload: payload.to_string(),
        reason,
    };
    let refuse = |reason: String| Err(not_applicable(reason));
    if meta.arch != running.arch {
        return refuse(format!(
            "it is built for arch {}, this system is {}",
            meta.arch, running.arch
        ));
    }
    if meta.board != running.board {
        return refuse(format!(
            "it is built for board {}, this system is {}",
            meta.board, running.board
        ));
    }
    let order = compare_versions(&meta.version, &running.version).map_err(not_applicable)?;
    if order != Ordering::Greater && !allow_downgrade {
        let what = if order == Ordering::Equal {
            "the same as"
        } else {
            "older than"
        };
        return refuse(format!(
            "its version {} is {what} the running version {} (pass --allow-downgrade to apply it anyway)",
            meta.version, running.version
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_precedence() {
        let c = |a, b| compare_versions(a, b).unwrap();
        assert_eq!(c("1.10.0", "1.9.0"), Ordering::Greater);
        assert_eq!(c("2.0.0", "2.0.0"), Ordering::Equal);
        assert_eq!(c("2.0.0-rc.1", "2.0.0"), Ordering::Less);
        assert_eq!(c("2.0.0-rc.10", "2.0.0-rc.9"), Ordering::Greater);
        assert_eq!(c("1.0.0+build.5", "1.0.0+build.4"), Ordering::Equal);
        assert_eq!(c("v3.1.0", "3.0.9"), Ordering::Greater);
        assert!(compare_versions("1.0", "1.0.0").is_err());
    }
}
