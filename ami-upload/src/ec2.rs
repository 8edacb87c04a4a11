//! The EC2 side: wait for the snapshot, register the AMI, delete a snapshot left by a failure.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, BootModeValues, EbsBlockDevice, SnapshotState,
    VolumeType,
};

use crate::error::{aws_error, UploadError};

/// The root device of every Keel AMI.
pub const ROOT_DEVICE: &str = "/dev/xvda";

/// Polls DescribeSnapshots until the snapshot is `completed`; fails on `error` or after
/// `timeout`.
pub async fn wait_completed(
    ec2: &aws_sdk_ec2::Client,
    snapshot_id: &str,
    timeout: Duration,
) -> Result<(), UploadError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(500);
    loop {
        let out = ec2
            .describe_snapshots()
            .snapshot_ids(snapshot_id)
            .send()
            .await
            .map_err(|e| aws_error("DescribeSnapshots", e))?;
        let snapshot = out.snapshots().first().ok_or_else(|| {
            UploadError::Snapshot(format!(
                "DescribeSnapshots does not list snapshot {snapshot_id}"
            ))
        })?;
        match snapshot.state() {
            Some(SnapshotState::Completed) => return Ok(()),
            Some(SnapshotState::Error) => {
                return Err(UploadError::Snapshot(format!(
                    "snapshot {snapshot_id} is in state error: {}",
                    snapshot.state_message().unwrap_or("AWS gave no reason")
                )))
            }
            _ if started.elapsed() >= timeout => {
                return Err(UploadError::Snapshot(format!(
                    "snapshot {snapshot_id} did not complete within {} s (state {}, progress {})",
                    timeout.as_secs(),
                    snapshot.state().map(|s| s.as_str()).unwrap_or("unknown"),
                    snapshot.progress().unwrap_or("unknown"),
                )))
            }
            _ => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// Registers an x86_64 HVM AMI booting from the snapshot under UEFI, with ENA and SR-IOV.
pub async fn register_image(
    ec2: &aws_sdk_ec2::Client,
    name: &str,
    description: &str,
    snapshot_id: &str,
) -> Result<String, UploadError> {
    let root = BlockDeviceMapping::builder()
        .device_name(ROOT_DEVICE)
        .ebs(
            EbsBlockDevice::builder()
                .snapshot_id(snapshot_id)
                .volume_type(VolumeType::Gp3)
                .delete_on_termination(true)
                .build(),
        )
        .build();
    let out = ec2
        .register_image()
        .name(name)
        .description(description)
        .architecture(ArchitectureValues::X8664)
        .virtualization_type("hvm")
        .ena_support(true)
        .sriov_net_support("simple")
        .boot_mode(BootModeValues::Uefi)
        .root_device_name(ROOT_DEVICE)
        .block_device_mappings(root)
        .send()
        .await
        .map_err(|e| aws_error("RegisterImage", e))?;
    out.image_id()
        .map(str::to_owned)
        .ok_or_else(|| UploadError::Aws {
            call: "RegisterImage".into(),
            detail: "the answer carries no ImageId".into(),
            transient: false,
        })
}

pub async fn delete_snapshot(
    ec2: &aws_sdk_ec2::Client,
    snapshot_id: &str,
) -> Result<(), UploadError> {
    ec2.delete_snapshot()
        .snapshot_id(snapshot_id)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| aws_error("DeleteSnapshot", e))
}
