//! Where a payload comes from (a file, an http(s) URL, standard input or any reader) and the
//! first step of an update: reading and verifying its signed metadata block before anything is
//! written.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use ed25519_dalek::VerifyingKey;
use keel_format::metadata::{SlotMetadata, METADATA_SIZE};
use keel_format::slot;
use keel_format::verity;

use crate::download::{Download, ResumePolicy};
use crate::error::{Result, UpdateError};
use crate::stream;
use keel_cli_support::progress::Progress;

pub enum PayloadSource {
    File(PathBuf),
    Url(String),
    Stdin,
    /// Any byte stream, e.g. a pipe; `name` is what messages call it.
    Reader {
        name: String,
        reader: Box<dyn Read + Send>,
    },
}

impl PayloadSource {
    /// `http://…` and `https://…` are URLs, `-` is standard input, anything else a file path.
    pub fn parse(arg: &str) -> PayloadSource {
        if arg.starts_with("http://") || arg.starts_with("https://") {
            PayloadSource::Url(arg.to_string())
        } else if arg == "-" {
            PayloadSource::Stdin
        } else {
            PayloadSource::File(PathBuf::from(arg))
        }
    }

    pub fn name(&self) -> String {
        match self {
            PayloadSource::File(p) => p.display().to_string(),
            PayloadSource::Url(u) => u.clone(),
            PayloadSource::Stdin => "(standard input)".into(),
            PayloadSource::Reader { name, .. } => name.clone(),
        }
    }

    /// Open the stream. Nothing is read yet.
    pub fn open(self) -> Result<OpenPayload> {
        self.open_with(ResumePolicy::default())
    }

    /// Open the stream; a URL resumes a broken download as `resume` says.
    pub fn open_with(self, resume: ResumePolicy) -> Result<OpenPayload> {
        let name = self.name();
        let transport = |reason: String| UpdateError::Transport {
            payload: name.clone(),
            reason,
        };
        let (reader, length, file): (Box<dyn Read>, _, _) = match self {
            PayloadSource::File(path) => {
                let f = File::open(&path).map_err(|e| transport(e.to_string()))?;
                let meta = f.metadata().map_err(|e| transport(e.to_string()))?;
                // A pipe or process substitution (/dev/fd/N) is a stream: no length, one read.
                if meta.is_file() {
                    (Box::new(f), Some(meta.len()), Some(path))
                } else {
                    (Box::new(f), None, None)
                }
            }
            PayloadSource::Url(url) => {
                let d = Download::open(&url, resume).map_err(|e| transport(e.to_string()))?;
                let len = d.total();
                (Box::new(d), len, None)
            }
            PayloadSource::Stdin => (Box::new(io::stdin().lock()), None, None),
            PayloadSource::Reader { reader, .. } => (reader, None, None),
        };
        Ok(OpenPayload {
            name,
            reader,
            length,
            file,
        })
    }
}

/// A payload stream positioned at its start.
pub struct OpenPayload {
    pub name: String,
    pub reader: Box<dyn Read>,
    /// Total bytes, when the source says (file size, Content-Length).
    pub length: Option<u64>,
    /// The path, when the payload is a regular file that can be read twice.
    pub file: Option<PathBuf>,
}

/// A payload whose metadata block is signed by a trusted key and self-consistent.
#[derive(Clone, Debug)]
pub struct VerifiedPayload {
    pub name: String,
    pub metadata: SlotMetadata,
    /// The exact 4 KiB block, to be written into the slot as it came.
    pub block: Vec<u8>,
}

impl VerifiedPayload {
    pub fn body_sha256(&self) -> Result<[u8; 32]> {
        let bad = || UpdateError::Untrusted {
            payload: self.name.clone(),
            reason: format!(
                "its signed body_sha256 {:?} is not 64 hex digits",
                self.metadata.body_sha256
            ),
        };
        hex::decode(&self.metadata.body_sha256)
            .ok()
            .and_then(|v| <[u8; 32]>::try_from(v).ok())
            .ok_or_else(bad)
    }
}

/// Step a: read the 4 KiB metadata block from the head of the stream and verify its signature
/// against `trusted` and its geometry. The stream is left at the first body byte.
pub fn read_verified_metadata(
    payload: &mut OpenPayload,
    trusted: &[VerifyingKey],
) -> Result<VerifiedPayload> {
    let untrusted = |reason: String| UpdateError::Untrusted {
        payload: payload.name.clone(),
        reason,
    };
    let mut block = vec![0u8; METADATA_SIZE];
    let got =
        stream::read_full(&mut payload.reader, &mut block).map_err(|e| UpdateError::Transport {
            payload: payload.name.clone(),
            reason: e.to_string(),
        })?;
    if got < METADATA_SIZE {
        return Err(UpdateError::Transport {
            payload: payload.name.clone(),
            reason: format!(
                "it ended after {got} bytes, inside its {METADATA_SIZE}-byte metadata block; it starts {}",
                keel_http::excerpt(&block[..got])
            ),
        });
    }
    let unverified = keel_format::metadata::decode(&block).map_err(|e| {
        untrusted(format!(
            "its metadata block is unreadable ({e}); it starts {}",
            keel_http::excerpt(&block)
        ))
    })?;
    let claimed = unverified.claimed().version.clone();
    let metadata = unverified.verify(trusted).map_err(|e| {
        untrusted(format!(
            "the signature check of its metadata (claiming version {claimed}) failed: {e}"
        ))
    })?;
    slot::check_geometry(&metadata, None)
        .map_err(|e| untrusted(format!("its signed metadata is inconsistent: {e}")))?;
    if let Some(len) = payload.length {
        let want = METADATA_SIZE as u64 + metadata.body_size();
        if len != want {
            return Err(untrusted(format!(
                "it is {len} bytes long, its signed metadata says {want} (4096 + body {})",
                metadata.body_size()
            )));
        }
    }
    let verified = VerifiedPayload {
        name: payload.name.clone(),
        metadata,
        block,
    };
    verified.body_sha256()?;
    verity_params(&verified.metadata).map_err(untrusted)?;
    Ok(verified)
}

/// The decoded dm-verity parameters of signed metadata.
pub fn verity_params(meta: &SlotMetadata) -> std::result::Result<verity::Params, String> {
    verity::Params::from_info(&meta.verity).map_err(|e| format!("its {e}"))
}

/// For a payload file: hash its body before the disk is touched, so a damaged file is refused
/// without invalidating the passive slot. (A streamed payload can only be checked while it is
/// written; the slot is invalidated first, so that is safe too, just not free.)
pub fn precheck_file_body(
    path: &std::path::Path,
    payload: &VerifiedPayload,
    progress: &dyn Progress,
) -> Result<()> {
    let transport = |reason: String| UpdateError::Transport {
        payload: payload.name.clone(),
        reason,
    };
    let mut f = File::open(path).map_err(|e| transport(e.to_string()))?;
    let mut skip = vec![0u8; METADATA_SIZE];
    f.read_exact(&mut skip)
        .map_err(|e| transport(e.to_string()))?;
    let want = payload.body_sha256()?;
    progress.phase("checking payload body", payload.metadata.body_size());
    let got = stream::copy_and_hash(&mut f, payload.metadata.body_size(), None, None, progress)
        .map_err(|e| e.into_update_error(&payload.name, None))?;
    progress.finish();
    check_body_hash(payload, &got, &want)
}

pub fn check_body_hash(payload: &VerifiedPayload, got: &[u8; 32], want: &[u8; 32]) -> Result<()> {
    if got != want {
        return Err(UpdateError::Untrusted {
            payload: payload.name.clone(),
            reason: format!(
                "the SHA-256 of its body is {}, its signed metadata says {}",
                hex::encode(got),
                hex::encode(want)
            ),
        });
    }
    Ok(())
}
