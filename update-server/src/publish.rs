//! `publish PAYLOAD --channel C`: verify, keep the file (or note its external URL), record it
//! and point the channel at it. Nothing is stored unless every check passed.

use std::io;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use keel_omaha::KEEL_APP_ID;

use crate::payload::{verify_payload, PayloadError, VerifiedPayload};
use crate::store::{Package, Store, StoreError};

/// The file name machines download (appended to the codebase).
pub const PAYLOAD_FILE_NAME: &str = "usr.img";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("refused: {0}")]
    Payload(#[from] PayloadError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("storing the payload in {}: {error}", dir.display())]
    Copy { dir: PathBuf, error: io::Error },
    #[error("external URL {0:?} is not an http(s) URL ending in a file name")]
    Url(String),
}

/// Where a published payload's file lives in the payload directory.
pub fn stored_path(payloads: &Path, sha256_hex: &str) -> PathBuf {
    payloads.join(format!("{sha256_hex}.img"))
}

/// Verify `payload` and publish it on `channel`, served by this server (`external_url` none)
/// or downloaded from `external_url` (the whole file URL).
pub fn publish(
    store: &dyn Store,
    keys: &[VerifyingKey],
    payloads: &Path,
    payload: &Path,
    channel: &str,
    external_url: Option<&str>,
    now: i64,
) -> Result<Package, PublishError> {
    if let Some(url) = external_url {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url
                .rsplit_once('/')
                .is_some_and(|(_, name)| !name.is_empty());
        if !ok {
            return Err(PublishError::Url(url.to_owned()));
        }
    }
    // Refuse early, before any copy, when the channel does not exist.
    if !store.channels()?.iter().any(|c| c == channel) {
        return Err(StoreError::NotFound(format!("channel {channel}")).into());
    }
    let v: VerifiedPayload = verify_payload(payload, keys)?;
    let mut stored = None;
    if external_url.is_none() {
        let dest = stored_path(payloads, &v.sha256_hex);
        if !dest.exists() {
            copy_into(payload, payloads, &dest)?;
            stored = Some(dest);
        }
    }
    let record = Package {
        id: 0,
        app_id: KEEL_APP_ID.to_owned(),
        version: v.metadata.version.clone(),
        file_name: PAYLOAD_FILE_NAME.to_owned(),
        size: v.size,
        sha1_base64: v.sha1_base64,
        sha256_base64: v.sha256_base64,
        sha256_hex: v.sha256_hex,
        key_id: v.metadata.key_id.clone(),
        external_url: external_url.map(str::to_owned),
        created_at: now,
    };
    store
        .publish(&record, channel)
        .inspect_err(|_| {
            if let Some(p) = &stored {
                let _ = std::fs::remove_file(p);
            }
        })
        .map_err(Into::into)
}

fn copy_into(src: &Path, dir: &Path, dest: &Path) -> Result<(), PublishError> {
    let fail = |error| PublishError::Copy {
        dir: dir.to_path_buf(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let tmp = dest.with_extension("img.partial");
    let result = (|| {
        std::fs::copy(src, &tmp)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}
