//! Step 5b: a verified slot becomes a dm-verity device and a read-only /usr. Only a device whose
//! table carries the signed root hash is ever mounted.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use keel_format::metadata::SlotMetadata;
use keel_format::verity;
use nix::mount::MsFlags;

use keel_blockdev::dm::{self, Control, Device, Target};
use keel_blockdev::sysfs::PartitionNode;

/// Where the slot's filesystem is mounted until ROOT is there to receive it.
pub const STAGING: &str = "/sysusr/usr";
/// The device-mapper name, as on Flatcar (`/dev/mapper/usr` once udev runs).
pub const DM_NAME: &str = "usr";

/// What the kernel must offer before any slot can be judged: without these every slot would
/// fail for reasons that are not the slot's, so their absence is fatal and marks no slot.
pub fn preflight() -> Result<()> {
    let ctl = Control::open().with_context(|| {
        format!(
            "{} is missing: device-mapper (dm-mod) is not loaded; the initramfs lacks it",
            dm::CONTROL
        )
    })?;
    let version = ctl.version()?;
    let types = ctl.target_types()?;
    if !types.iter().any(|t| t == "verity") {
        bail!(
            "the kernel has no dm-verity target (targets: {}); the initramfs lacks dm-verity",
            types.join(", ")
        );
    }
    if !crate::mounts::filesystem_known("erofs") {
        bail!("the kernel does not know erofs; the initramfs lacks the erofs module");
    }
    crate::debug!(
        "device-mapper {}.{}.{}, targets: {}",
        version[0],
        version[1],
        version[2],
        types.join(" ")
    );
    Ok(())
}

/// The verity target for `meta` over partition `part`.
pub fn verity_target(part: &PartitionNode, meta: &SlotMetadata) -> Result<Target> {
    let v = &meta.verity;
    let line = verity::kernel_table(
        &part.dev.to_string(),
        v.data_size,
        v.hash_offset,
        &v.root_hash,
        &v.salt,
        &[],
    );
    let mut f = line.splitn(4, ' ');
    let (Some(start), Some(length), Some(kind), Some(params)) =
        (f.next(), f.next(), f.next(), f.next())
    else {
        bail!("malformed verity table line {line:?}");
    };
    Ok(Target {
        start: start.parse()?,
        length: length.parse()?,
        kind: kind.to_string(),
        params: params.to_string(),
    })
}

/// Create and start the dm-verity device for a slot; returns it once its status is `V`.
pub fn open_verity(part: &PartitionNode, meta: &SlotMetadata, label: &str) -> Result<Device> {
    let body = meta.body_size();
    if part.sectors * 512 < body {
        bail!(
            "the kernel sees {} bytes in {}, less than the {body} bytes of the signed slot body",
            part.sectors * 512,
            part.name
        );
    }
    let target = verity_target(part, meta)?;
    let ctl = Control::open()?;
    // A device left over from an earlier attempt in this boot.
    let _ = ctl.remove(DM_NAME);
    let dev = ctl.create(DM_NAME, &format!("KEEL-VERITY-{label}"))?;
    let setup = || -> Result<()> {
        ctl.load_table(DM_NAME, std::slice::from_ref(&target), true)
            .with_context(|| {
                format!(
                    "loading the table `{} {} {} {}`",
                    target.start, target.length, target.kind, target.params
                )
            })?;
        ctl.resume(DM_NAME)?;
        check_status(&ctl)?;
        wait_for_node(&dev)?;
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = ctl.remove(DM_NAME);
        return Err(e);
    }
    crate::info!(
        "dm-verity device {} ({}) over {}: root hash {}",
        dev.node(),
        DM_NAME,
        part.name,
        meta.verity.root_hash
    );
    Ok(dev)
}

/// The verity status must be `V`: `C` means a block failed verification since creation.
pub fn check_status(ctl: &Control) -> Result<()> {
    let status = ctl.status(DM_NAME)?;
    match status.as_slice() {
        [t] if t.kind == "verity" && t.params.trim() == "V" => Ok(()),
        [t] if t.kind == "verity" && t.params.trim() == "C" => {
            bail!("dm-verity reports corruption (status C)")
        }
        other => bail!("unexpected dm-verity status {other:?}"),
    }
}

fn wait_for_node(dev: &Device) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Path::new(&dev.node()).exists() {
        if Instant::now() >= deadline {
            bail!(
                "devtmpfs did not create {} for {}:{}",
                dev.node(),
                dev.major,
                dev.minor
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Read the whole data area through dm-verity: any block that does not match the signed root
/// hash fails the read.
pub fn read_everything(dev: &Device, data_size: u64) -> Result<()> {
    let start = Instant::now();
    let mut f = File::open(dev.node()).with_context(|| format!("opening {}", dev.node()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut next_report = data_size / 4;
    crate::info!(
        "reading all {} MiB of the slot through dm-verity",
        data_size >> 20
    );
    while done < data_size {
        let want = buf.len().min((data_size - done) as usize);
        let n = f.read(&mut buf[..want]).map_err(|e| {
            anyhow!(
                "read error at byte {done} (data block {}) of the slot ({e}): a block does not \
                 match the signed root hash",
                done / 4096
            )
        })?;
        if n == 0 {
            bail!("the dm-verity device ends at byte {done}, before the signed {data_size}");
        }
        // Keep the page cache free: this data is read once.
        let _ = nix::fcntl::posix_fadvise(
            &f,
            done as i64,
            n as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        done += n as u64;
        if done >= next_report && done < data_size {
            crate::info!("  {}% verified", done * 100 / data_size);
            next_report += data_size / 4;
        }
    }
    check_status(&Control::open()?)?;
    let secs = start.elapsed().as_secs_f64().max(0.001);
    crate::info!(
        "whole slot verified in {:.1} s ({:.0} MiB/s)",
        secs,
        (data_size >> 20) as f64 / secs
    );
    Ok(())
}

pub fn mount(dev: &Device, filesystem: &str) -> Result<()> {
    if filesystem != "erofs" {
        bail!("the slot's filesystem is {filesystem:?}; keel-init mounts erofs only");
    }
    crate::mounts::mount_fs(
        &dev.node(),
        Path::new(STAGING),
        "erofs",
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        None,
    )
}

/// Remove the dm device (after its mounts are gone). A few retries: the last unmount's
/// reference can linger for a moment.
pub fn close_verity() -> Result<()> {
    let ctl = Control::open()?;
    let mut last = None;
    for _ in 0..10 {
        match ctl.remove(DM_NAME) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.expect("at least one attempt").into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_blockdev::sysfs::DevNum;

    #[test]
    fn verity_target_from_metadata() {
        let part = PartitionNode {
            name: "vda3".into(),
            number: 3,
            dev: DevNum {
                major: 254,
                minor: 3,
            },
            start: 4096,
            sectors: 1 << 20,
        };
        let meta: SlotMetadata = serde_json::from_str(
            r#"{"version":"1.0.0","channel":"stable","arch":"x86_64","board":"qemu-x86_64",
            "build_time":0,"filesystem":"erofs",
            "kernel":{"release":"r","build":"b","image":"i","initramfs":"n"},
            "verity":{"data_size":409600,"hash_offset":409600,"hash_size":8192,
              "data_block_size":4096,"hash_block_size":4096,"algorithm":"sha256",
              "salt":"ab","root_hash":"cd","uuid":"00000000-0000-0000-0000-000000000000"},
            "body_sha256":"00","key_id":"00"}"#,
        )
        .unwrap();
        let t = verity_target(&part, &meta).unwrap();
        assert_eq!((t.start, t.length, t.kind.as_str()), (0, 800, "verity"));
        assert_eq!(
            t.params, "1 254:3 254:3 4096 4096 100 101 sha256 cd ab",
            "hash blocks start after the superblock block at 409600/4096 = 100"
        );
    }
}
