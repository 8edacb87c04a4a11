//! Where defaults come from: the repository (boards, the development signing key) and the
//! key files given on the command line.

use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use keel_signing::{Key, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE};

use crate::error::{Error, Result};

pub const DEFAULT_BOARD: &str = "boards/qemu-x86_64.yaml";

fn is_repo(dir: &Path) -> bool {
    dir.join(DEFAULT_BOARD).is_file() && dir.join("rootfs").is_dir()
}

/// The Keel repository: `$KEEL_REPO`, else the nearest ancestor of the working directory or of
/// the `keel` executable that holds `boards/` and `rootfs/`.
pub fn repo_root() -> Option<PathBuf> {
    if let Some(r) = std::env::var_os("KEEL_REPO").map(PathBuf::from) {
        return Some(r);
    }
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    [cwd, exe].into_iter().flatten().find_map(|start| {
        start
            .ancestors()
            .find(|d| is_repo(d))
            .map(Path::to_path_buf)
    })
}

pub fn default_board() -> Result<PathBuf> {
    repo_root().map(|r| r.join(DEFAULT_BOARD)).ok_or_else(|| {
        Error::input("no --board given and no Keel repository found to take boards/qemu-x86_64.yaml from (set KEEL_REPO or pass --board)")
    })
}

/// `signing/dev-key/` in the repository, else `~/.config/keel/dev-key`.
pub fn dev_key_dir() -> PathBuf {
    if let Some(r) = repo_root() {
        return r.join("signing/dev-key");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".config/keel/dev-key")
}

pub struct SigningKey {
    pub key: Key,
    pub path: PathBuf,
    /// A development key was generated just now.
    pub created: bool,
}

/// The key to sign with: `given` (a key file or a directory holding keel-signing.key), else the
/// development key, made on first use.
pub fn signing_key(given: Option<&Path>) -> Result<SigningKey> {
    if let Some(g) = given {
        let path = if g.is_dir() {
            g.join(PRIVATE_KEY_FILE)
        } else {
            g.to_path_buf()
        };
        if !path.is_file() {
            return Err(Error::input(format!(
                "--key {}: no private key there (make one with `keel keygen --out DIR`)",
                g.display()
            )));
        }
        return Ok(SigningKey {
            key: Key::load(&path)?,
            path,
            created: false,
        });
    }
    let dir = dev_key_dir();
    let path = dir.join(PRIVATE_KEY_FILE);
    if path.is_file() {
        return Ok(SigningKey {
            key: Key::load(&path)?,
            path,
            created: false,
        });
    }
    let key = Key::generate()?;
    key.save(&dir, false)?;
    Ok(SigningKey {
        key,
        path,
        created: true,
    })
}

/// A public key from a file: SPKI PEM, a private key (its public half), or a directory holding
/// keel-signing.pub.
pub fn public_key(path: &Path) -> Result<VerifyingKey> {
    let file = if path.is_dir() {
        path.join(PUBLIC_KEY_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| Error::input(format!("{}: {e}", file.display())))?;
    if text.contains("PRIVATE KEY") {
        return Ok(Key::load(&file)?.public());
    }
    Ok(keel_signing::load_public(&file)?)
}

/// The development public key, if one exists.
pub fn dev_public_key() -> Option<(PathBuf, VerifyingKey)> {
    let p = dev_key_dir().join(PUBLIC_KEY_FILE);
    public_key(&p).ok().map(|k| (p, k))
}

pub const DEV_KEY_WARNING: &str = "\
###########################################################################
##  WARNING: signing with a DEVELOPMENT key that was just generated.     ##
##  Anyone with this file can sign updates your machines will trust.     ##
##  For real images make a key with `keel keygen` and pass --key.        ##
###########################################################################";
