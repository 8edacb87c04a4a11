//! Writes an image into a new EBS snapshot through the EBS direct APIs: StartSnapshot, one
//! PutSnapshotBlock per non-zero 512 KiB block (concurrent, each retried with back-off), and
//! CompleteSnapshot with the LINEAR SHA-256 aggregate.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm};
use keel_cli_support::progress::{Progress, Reporter};

use crate::checksum::{self, Digest};
use crate::error::{aws_error, UploadError};
use crate::image::{Image, BLOCK_SIZE};

/// How failed block uploads are tried again: `attempts` in all, waiting `first_backoff`,
/// then twice as long each time up to `max_backoff`.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// About 80 s of waiting in all: coldsnap found a just-started snapshot can take that long
    /// to accept blocks.
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(16),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, failed_attempts: u32) -> Duration {
        let factor = 1u32 << failed_attempts.saturating_sub(1).min(16);
        (self.first_backoff * factor).min(self.max_backoff)
    }
}

/// A snapshot just started.
#[derive(Clone, Debug)]
pub struct Started {
    pub id: String,
    /// AWS encrypts the snapshot (asked for, or the account's EBS encryption by default).
    pub encrypted: bool,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    pub blocks_total: u64,
    pub blocks_uploaded: u64,
    /// Block uploads that failed and were tried again.
    pub retries: u64,
    pub zero_blocks_skipped: bool,
}

/// Starts a snapshot of `volume_size_gib` GiB.
pub async fn start(
    ebs: &aws_sdk_ebs::Client,
    volume_size_gib: i64,
    description: &str,
) -> Result<Started, UploadError> {
    let out = ebs
        .start_snapshot()
        .volume_size(volume_size_gib)
        .description(description)
        .send()
        .await
        .map_err(|e| aws_error("StartSnapshot", e))?;
    let id = out
        .snapshot_id()
        .map(str::to_owned)
        .ok_or_else(|| UploadError::Aws {
            call: "StartSnapshot".into(),
            detail: "the answer carries no SnapshotId".into(),
            transient: false,
        })?;
    let encrypted = out.kms_key_arn().is_some()
        || out
            .sse_type()
            .is_some_and(|t| *t != aws_sdk_ebs::types::SseType::None);
    Ok(Started { id, encrypted })
}

/// Uploads the blocks of `image` with `concurrency` uploads in flight, then completes the
/// snapshot. The first block that fails for good stops the other workers.
///
/// All-zero blocks are left out when `skip_zero` is set: an unencrypted snapshot reads absent
/// blocks as zeros. An encrypted one does not (it returns random bytes, awslabs/coldsnap#395),
/// so the caller must pass `false` for it or the image's zeroed areas (ext4 inode tables,
/// the verity-covered filesystem) would read back as garbage.
pub async fn write_blocks(
    ebs: &aws_sdk_ebs::Client,
    snapshot_id: &str,
    image: Arc<Image>,
    skip_zero: bool,
    concurrency: usize,
    retry: RetryPolicy,
    progress: &Reporter,
) -> Result<Written, UploadError> {
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        retries: AtomicU64::new(0),
        uploaded: AtomicU64::new(0),
        digests: Mutex::new(BTreeMap::new()),
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let worker = Worker {
            ebs: ebs.clone(),
            snapshot_id: snapshot_id.to_owned(),
            image: image.clone(),
            shared: shared.clone(),
            skip_zero,
            retry,
            progress: progress.clone(),
        };
        workers.spawn(worker.run());
    }
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        let result = joined.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        if let Err(e) = result {
            shared.stop.store(true, Ordering::Relaxed);
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }

    let digests = std::mem::take(&mut *shared.digests.lock().expect("digest map"));
    let written = Written {
        blocks_total: image.block_count(),
        blocks_uploaded: digests.len() as u64,
        retries: shared.retries.load(Ordering::Relaxed),
        zero_blocks_skipped: skip_zero,
    };
    ebs.complete_snapshot()
        .snapshot_id(snapshot_id)
        .changed_blocks_count(written.blocks_uploaded as i32)
        .checksum(checksum::base64(&checksum::linear(&digests)))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
        .send()
        .await
        .map_err(|e| aws_error("CompleteSnapshot", e))?;
    Ok(written)
}

struct Shared {
    next: AtomicU64,
    stop: AtomicBool,
    retries: AtomicU64,
    /// Image bytes done, by every worker.
    uploaded: AtomicU64,
    digests: Mutex<BTreeMap<u64, Digest>>,
}

struct Worker {
    ebs: aws_sdk_ebs::Client,
    snapshot_id: String,
    image: Arc<Image>,
    shared: Arc<Shared>,
    skip_zero: bool,
    retry: RetryPolicy,
    progress: Reporter,
}

impl Worker {
    async fn run(self) -> Result<(), UploadError> {
        let count = self.image.block_count();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let index = self.shared.next.fetch_add(1, Ordering::Relaxed);
            if index >= count {
                break;
            }
            let image = self.image.clone();
            let block = tokio::task::spawn_blocking(move || image.read_block(index))
                .await
                .expect("block reader")?;
            let block = match block {
                None if !self.skip_zero => Some(vec![0u8; BLOCK_SIZE]),
                b => b,
            };
            if let Some(block) = block {
                let digest = checksum::block_digest(&block);
                self.put_with_retries(index, block, &digest).await?;
                self.shared
                    .digests
                    .lock()
                    .expect("digest map")
                    .insert(index, digest);
            }
            let done = (index + 1) * BLOCK_SIZE as u64;
            let bytes = BLOCK_SIZE as u64 - done.saturating_sub(self.image.len());
            let uploaded = self.shared.uploaded.fetch_add(bytes, Ordering::Relaxed) + bytes;
            self.progress.set(uploaded);
        }
        Ok(())
    }

    async fn put_with_retries(
        &self,
        index: u64,
        block: Vec<u8>,
        digest: &Digest,
    ) -> Result<(), UploadError> {
        let data = bytes_of(block);
        let checksum = checksum::base64(digest);
        let mut failed = 0;
        loop {
            let err = match self.put(index, data.clone(), &checksum).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            failed += 1;
            if !err.is_transient() || failed >= self.retry.attempts {
                return Err(match err {
                    UploadError::Aws { call, detail, .. } => UploadError::Aws {
                        call: format!("{call} of block {index}"),
                        detail: format!("{detail} (attempt {failed} of {})", self.retry.attempts),
                        transient: false,
                    },
                    UploadError::Unreachable { call, detail } => UploadError::Unreachable {
                        call: format!("{call} of block {index}"),
                        detail: format!("{detail} (attempt {failed} of {})", self.retry.attempts),
                    },
                    other => other,
                });
            }
            self.shared.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.retry.backoff(failed)).await;
            if self.shared.stop.load(Ordering::Relaxed) {
                return Err(err);
            }
        }
    }

    async fn put(&self, index: u64, data: bytes::Bytes, checksum: &str) -> Result<(), UploadError> {
        self.ebs
            .put_snapshot_block()
            .snapshot_id(&self.snapshot_id)
            .block_index(index as i32)
            .data_length(BLOCK_SIZE as i32)
            .block_data(ByteStream::from(data))
            .checksum(checksum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .customize()
            // This loop does the retrying, with its own (longer) back-off and count.
            .config_override(
                aws_sdk_ebs::config::Builder::new().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_error("PutSnapshotBlock", e))
    }
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let waits: Vec<_> = (1..=8).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 16000, 16000, 16000]);
    }
}
