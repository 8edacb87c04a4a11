//! Uploads a raw Keel disk image to EC2 as an AMI: the image becomes an EBS snapshot through the
//! EBS direct APIs ([`snapshot`]), and the snapshot is registered as an x86_64 UEFI AMI
//! ([`ec2`]). Whatever fails after the snapshot started, the snapshot is deleted and no AMI is
//! registered. `keel upload-ami` runs the `keel-upload-ami` binary, a thin CLI over [`upload_ami`].

pub mod aws;
pub mod checksum;
pub mod ec2;
pub mod error;
pub mod image;
pub mod snapshot;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_cli_support::progress::{Progress, Reporter};
use serde::Serialize;

pub use aws::{Clients, Target};
pub use error::UploadError;
pub use image::Image;
pub use snapshot::RetryPolicy;

/// What to upload and how.
#[derive(Clone, Debug)]
pub struct Request {
    /// The AMI's name (unique per account and region).
    pub name: String,
    pub description: Option<String>,
    /// Block uploads in flight at once.
    pub concurrency: usize,
    /// Upload all-zero blocks too (always done for an encrypted snapshot).
    pub include_zero_blocks: bool,
    pub retry: RetryPolicy,
    /// How long to wait for the completed snapshot to become `completed` in EC2.
    pub snapshot_timeout: Duration,
}

/// What was made (`keel-upload-ami --json` prints it).
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub snapshot_id: String,
    pub image_id: String,
    pub name: String,
    pub image_bytes: u64,
    pub volume_size_gib: i64,
    pub blocks_total: u64,
    pub blocks_uploaded: u64,
    pub block_retries: u64,
    /// The snapshot is encrypted (zero blocks are then uploaded, see `snapshot::write_blocks`).
    pub encrypted: bool,
    pub zero_blocks_skipped: bool,
    pub upload_seconds: f64,
}

/// A failed upload and what was done about the snapshot it had started.
#[derive(Debug, thiserror::Error)]
#[error("{cause}{}", cleanup_note(.snapshot_id, .cleanup))]
pub struct Failure {
    #[source]
    pub cause: UploadError,
    pub snapshot_id: Option<String>,
    /// `None` when no snapshot was started; else the result of deleting it.
    pub cleanup: Option<Result<(), UploadError>>,
}

fn cleanup_note(id: &Option<String>, cleanup: &Option<Result<(), UploadError>>) -> String {
    match (id, cleanup) {
        (Some(id), Some(Ok(()))) => format!("; snapshot {id} deleted, no AMI registered"),
        (Some(id), Some(Err(e))) => format!(
            "; no AMI registered, but snapshot {id} could not be deleted ({e}): delete it by hand"
        ),
        _ => "; nothing was created".into(),
    }
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        self.cause.exit_code()
    }
}

impl From<UploadError> for Failure {
    fn from(cause: UploadError) -> Failure {
        Failure {
            cause,
            snapshot_id: None,
            cleanup: None,
        }
    }
}

/// Checks the AMI name the way EC2 does (3–128 characters of letters, digits and `()[] ./-'@_`)
/// so a bad name fails before any upload.
pub fn check_name(name: &str) -> Result<(), UploadError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c);
    if !(3..=128).contains(&name.len()) || !name.chars().all(ok_char) {
        return Err(UploadError::Input(format!(
            "--name {name:?}: an AMI name has 3 to 128 characters, letters, digits and ()[] ./-'@_"
        )));
    }
    Ok(())
}

/// Uploads `image` and registers the AMI. `progress` counts image bytes (a hidden
/// reporter is fine). When `interrupted` resolves before registration starts, the upload stops, the
/// snapshot is deleted and the result is [`UploadError::Interrupted`]; once RegisterImage is on
/// its way it is let finish, so an AMI is never registered without being reported.
pub async fn upload_ami(
    clients: &Clients,
    request: &Request,
    image: Image,
    progress: &Reporter,
    interrupted: impl Future<Output = ()>,
) -> Result<Outcome, Failure> {
    check_name(&request.name)?;
    let description = request
        .description
        .clone()
        .unwrap_or_else(|| format!("Keel image {}", request.name));
    let image = Arc::new(image);
    progress.phase("uploading", image.len());

    let started = Instant::now();
    // Not interruptible: a snapshot started but not yet named could not be deleted. A signal
    // that arrives meanwhile is seen right after.
    let snapshot = snapshot::start(&clients.ebs, image.volume_size_gib(), &description).await?;
    let snapshot_id = snapshot.id.clone();
    let mut interrupted = Box::pin(interrupted);

    let uploaded = async {
        let written = snapshot::write_blocks(
            &clients.ebs,
            &snapshot_id,
            image.clone(),
            !request.include_zero_blocks && !snapshot.encrypted,
            request.concurrency,
            request.retry,
            progress,
        )
        .await?;
        ec2::wait_completed(&clients.ec2, &snapshot_id, request.snapshot_timeout).await?;
        Ok::<_, UploadError>(written)
    };
    let result = tokio::select! {
        r = uploaded => r,
        _ = interrupted.as_mut() => Err(UploadError::Interrupted),
    };
    let upload_seconds = started.elapsed().as_secs_f64();
    let result = match result {
        Ok(written) => ec2::register_image(&clients.ec2, &request.name, &description, &snapshot_id)
            .await
            .map(|image_id| (written, image_id)),
        Err(e) => Err(e),
    };
    match result {
        Ok((written, image_id)) => Ok(Outcome {
            snapshot_id,
            image_id,
            name: request.name.clone(),
            image_bytes: image.len(),
            volume_size_gib: image.volume_size_gib(),
            blocks_total: written.blocks_total,
            blocks_uploaded: written.blocks_uploaded,
            block_retries: written.retries,
            encrypted: snapshot.encrypted,
            zero_blocks_skipped: written.zero_blocks_skipped,
            upload_seconds,
        }),
        Err(cause) => {
            let cleanup = ec2::delete_snapshot(&clients.ec2, &snapshot_id).await;
            Err(Failure {
                cause,
                snapshot_id: Some(snapshot_id),
                cleanup: Some(cleanup),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_ec2_does() {
        check_name("keel-1.0.0 (x86_64)").unwrap();
        for bad in ["ab", "a\u{e9}b", "name/with*star", &"x".repeat(129)] {
            assert!(
                matches!(check_name(bad), Err(UploadError::Input(_))),
                "{bad}"
            );
        }
    }
}
