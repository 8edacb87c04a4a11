//! `keel install`: write a signed Keel disk image to a disk, the way flatcar-install does.
//!
//! [`install`] runs the steps in order: [`source`] opens the image and its detached signature
//! (`IMAGE.sig`, [`keel_format::image_sig`]), [`trust`] picks the keys, [`device`] refuses a
//! disk in use, [`write`] streams and hashes (the edges held back until the hash matched),
//! [`table`] fits the GPT to the disk and re-reads it, [`slot_check`] confirms USR-A, and
//! [`cloud_config`] puts the user's cloud-config on OEM. [`cli`] is the command line both
//! `keel install` and the static `keel-install` use.

#![forbid(unsafe_code)]

pub mod cli;
pub mod cloud_config;
pub mod device;
pub mod error;
pub mod slot_check;
pub mod source;
pub mod table;
pub mod trust;
pub mod write;

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_format::image_sig::ImageSignature;
use serde::Serialize;

pub use error::{InstallError, Result};
use keel_cli_support::progress::Progress;
use source::Location;
use trust::Trusted;

pub struct Options {
    pub image: Location,
    /// `None`: beside the image (`IMAGE.sig`).
    pub signature: Option<Location>,
    pub device: PathBuf,
    pub cloud_config: Option<PathBuf>,
    pub trusted: Trusted,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub image: String,
    pub signature: String,
    pub device: String,
    pub image_bytes: u64,
    pub disk_bytes: u64,
    pub sha256: String,
    pub key_id: String,
    pub usr_a: slot_check::SlotSummary,
    pub layout: table::Layout,
    /// Where the installed system finds the cloud-config, if one was given.
    pub cloud_config: Option<PathBuf>,
    pub seconds: f64,
}

pub fn install(opts: &Options, progress: &dyn Progress) -> Result<Report> {
    let started = Instant::now();
    let mut checked = preflight(opts)?;
    let sig = &checked.signature;
    let (mut dev, disk_bytes) = open_target(&opts.device, sig.size)?;
    let wipe_then = |dev: &File, e: InstallError| -> InstallError {
        match write::wipe_tables(dev, sig.size, disk_bytes) {
            Ok(()) => {
                let _ = table::reread(dev);
                with_note(e, "wiped the disk's partition tables: it will not boot")
            }
            Err(w) => with_note(e, &format!("wiping the partition tables failed too: {w}")),
        }
    };
    write::wipe_tables(&dev, sig.size, disk_bytes)
        .map_err(|e| InstallError::Io(format!("{}: {e}", opts.device.display())))?;

    progress.phase("writing", sig.size);
    let streamed = write::stream(
        checked.image.as_mut(),
        &dev,
        sig.size,
        &sig.sha256_bytes(),
        progress,
    );
    progress.finish();
    let streamed = streamed.map_err(|e| wipe_then(&dev, e))?;
    let layout = table::fit(&mut dev, sig.size, disk_bytes).map_err(|e| wipe_then(&dev, e))?;
    let usr_a =
        slot_check::check_usr_a(&mut dev, &opts.trusted.keys).map_err(|e| wipe_then(&dev, e))?;
    table::reread(&dev).map_err(|e| wipe_then(&dev, e))?;
    table::announce_partitions(&dev, &checked.disk.kernel_partitions(), &layout.partitions)
        .map_err(|e| wipe_then(&dev, e))?;
    dev.sync_all()
        .map_err(|e| InstallError::Io(format!("{}: {e}", opts.device.display())))?;
    // The exclusive open of the whole disk would keep its partitions from being mounted.
    drop(dev);
    let placed = match &checked.cloud_config {
        Some(bytes) => {
            let oem = checked
                .disk
                .partition_node(keel_format::layout::OEM.number, Duration::from_secs(20))
                .and_then(|node| cloud_config::write_to_oem(&node, bytes));
            match oem {
                Ok(p) => Some(p),
                Err(e) => {
                    let dev = File::options().read(true).write(true).open(&opts.device);
                    return Err(match dev {
                        Ok(dev) => wipe_then(&dev, e),
                        Err(o) => with_note(e, &format!("and reopening the disk to wipe it: {o}")),
                    });
                }
            }
        }
        None => None,
    };
    Ok(Report {
        image: opts.image.name(),
        signature: checked.signature_at.name(),
        device: opts.device.display().to_string(),
        image_bytes: streamed.bytes,
        disk_bytes,
        sha256: hex::encode(streamed.sha256),
        key_id: sig.key_id.clone(),
        usr_a,
        layout,
        cloud_config: placed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What was checked before the disk is touched.
struct Checked {
    cloud_config: Option<Vec<u8>>,
    /// The image stream, opened (an HTTP response whose length matched the signature's).
    image: Box<dyn std::io::Read + Send>,
    signature_at: Location,
    signature: ImageSignature,
    disk: device::Disk,
}

/// Everything that can be refused without writing: the cloud-config, the image's presence and
/// announced size, its signature against the trusted keys, the disk being free.
fn preflight(opts: &Options) -> Result<Checked> {
    let cloud_config = match &opts.cloud_config {
        Some(p) => Some(cloud_config::load(p)?),
        None => None,
    };
    if let Location::File(p) = &opts.image {
        std::fs::metadata(p)
            .map_err(|e| InstallError::Input(format!("--image {}: {e}", p.display())))?;
    }
    let signature_at = opts
        .signature
        .clone()
        .unwrap_or_else(|| opts.image.signature());
    let signature = source::read_signature(&signature_at)?;
    signature.verify(&opts.trusted.keys).map_err(|e| {
        InstallError::Verification(format!(
            "signature {}: {e} (trusted: {})",
            signature_at.name(),
            opts.trusted.source
        ))
    })?;
    let (image, announced) = opts.image.open()?;
    if let Some(len) = announced.filter(|&l| l != signature.size) {
        return Err(InstallError::Verification(format!(
            "{} is {len} bytes; its signature covers {}",
            opts.image.name(),
            signature.size
        )));
    }
    let disk = device::Disk::open(&opts.device)?;
    let in_use = disk.in_use();
    if !in_use.is_empty() {
        return Err(InstallError::Refused(format!(
            "refusing to write {}: {}",
            opts.device.display(),
            in_use.join("; ")
        )));
    }
    Ok(Checked {
        cloud_config,
        image,
        signature_at,
        signature,
        disk,
    })
}

/// Open the disk exclusively (the kernel then refuses it while anything mounts or holds it)
/// and check it can take `image_bytes`; returns it and its size.
fn open_target(device: &std::path::Path, image_bytes: u64) -> Result<(File, u64)> {
    let mut dev = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(device)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                InstallError::Refused(format!(
                    "refusing to write {}: the kernel reports it busy (in use)",
                    device.display()
                ))
            } else {
                InstallError::Io(format!("{}: {e}", device.display()))
            }
        })?;
    let disk_bytes = dev
        .seek(SeekFrom::End(0))
        .map_err(|e| InstallError::Io(format!("{}: size: {e}", device.display())))?;
    if disk_bytes < image_bytes {
        return Err(InstallError::Refused(format!(
            "refusing to write {}: the disk has {disk_bytes} bytes ({} MiB), the image needs {image_bytes} ({} MiB)",
            device.display(),
            disk_bytes >> 20,
            image_bytes.div_ceil(1 << 20)
        )));
    }
    Ok((dev, disk_bytes))
}

fn with_note(e: InstallError, note: &str) -> InstallError {
    let m = format!("{e}; {note}");
    match e {
        InstallError::Input(_) => InstallError::Input(m),
        InstallError::Verification(_) => InstallError::Verification(m),
        InstallError::Refused(_) => InstallError::Refused(m),
        InstallError::Io(_) => InstallError::Io(m),
        InstallError::Environment(_) => InstallError::Environment(m),
    }
}
