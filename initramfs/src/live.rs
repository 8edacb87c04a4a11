//! The diskless boot (PXE, ISO): the initramfs carries a whole signed payload at `/usr.img`.
//! Its metadata is verified like a slot's, its body becomes a loop device under dm-verity, and
//! ROOT is a tmpfs. Nothing is persistent, so there are no slot attributes and no rollback:
//! any failure is fatal.

use std::convert::Infallible;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::VerifyingKey;
use keel_format::initramfs::EMBEDDED_PAYLOAD;
use keel_format::metadata::METADATA_SIZE;
use keel_format::slot;
use nix::mount::MsFlags;

use crate::cmdline::VerifyPolicy;
use crate::rootfs::SYSROOT;
use crate::settings::Settings;
use crate::{handoff, info, kexec, mounts, rootfs, usr, warning};

pub const LABEL: &str = "embedded";

pub fn present() -> bool {
    Path::new(EMBEDDED_PAYLOAD).exists()
}

/// Boot the embedded payload; returns only on failure.
pub fn boot(settings: &Settings, keys: &[VerifyingKey]) -> Result<Infallible> {
    let path = Path::new(EMBEDDED_PAYLOAD);
    let mut f = File::open(path).with_context(|| format!("opening {EMBEDDED_PAYLOAD}"))?;
    let (unverified, _) =
        slot::read_payload_metadata(&mut f).context("reading the embedded payload's metadata")?;
    let meta = slot::verified_slot_metadata(unverified, keys, None)
        .context("the embedded payload cannot be trusted")?;
    let have = f.metadata()?.len();
    let want = METADATA_SIZE as u64 + meta.body_size();
    if have < want {
        bail!("{EMBEDDED_PAYLOAD} has {have} bytes; its metadata promises {want}");
    }
    // The kernel sizes each file it unpacks before writing it: a write that fails (the
    // initramfs tmpfs is capped at half the memory) leaves the file its full length with a
    // hole at the end, which verity would only report as a bad block.
    let unpacked = f.metadata()?.blocks() * 512;
    if unpacked < want {
        bail!(
            "{EMBEDDED_PAYLOAD} was cut short while the kernel unpacked the initramfs: {} of              its {} MiB are there (the kernel said \"Initramfs unpacking failed: write \
             error\"). Linux unpacks the initramfs into a tmpfs capped at half its memory: this \
             machine has too little RAM for this live image (`keel build --format pxe|iso` \
             prints the minimum)",
            unpacked >> 20,
            want >> 20
        );
    }
    info!(
        "embedded payload: Keel {} ({} channel, board {}), signed by key {}",
        meta.version, meta.channel, meta.board, meta.key_id
    );
    let running = kexec::running_kernel();
    if (meta.kernel.release.as_str(), meta.kernel.build.as_str())
        != (running.0.as_str(), running.1.as_str())
    {
        warning!(
            "!!! the payload carries kernel {} ({}) but {} ({}) is running; a diskless boot \
             does not kexec: the payload's modules may not load",
            meta.kernel.release,
            meta.kernel.build,
            running.0,
            running.1
        );
    }

    let body = keel_blockdev::loopdev::attach(path, METADATA_SIZE as u64, meta.body_size())?;
    let dev = usr::open_verity(&body, &meta, LABEL)?;
    // Nothing records that this payload ever booted well: every boot is a first boot.
    if settings.verify != VerifyPolicy::None {
        usr::read_everything(&dev, meta.verity.data_size)?;
    }
    usr::mount(&dev, &meta.filesystem)?;

    let sysroot = Path::new(SYSROOT);
    mounts::mount_fs(
        "tmpfs",
        sysroot,
        "tmpfs",
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
    info!("ROOT is a tmpfs at {SYSROOT}: nothing written survives a reboot");
    for w in rootfs::skeleton(sysroot)? {
        warning!("{w}");
    }
    mounts::move_mount(Path::new(usr::STAGING), &sysroot.join("usr"))?;
    if let Some(n) = rootfs::populate_var(sysroot, &sysroot.join("usr"))? {
        info!("populated /var from the payload's factory copy ({n} entries)");
    }
    if !rootfs::factory_etc_present(&sysroot.join("usr")) {
        bail!("the payload has no factory /etc");
    }
    rootfs::mount_etc_overlay(sysroot, &sysroot.join("usr"))?;
    handoff::check_program(sysroot, &settings.hand_off)?;
    info!(
        "booting {LABEL} version {} (diskless, ROOT in RAM)",
        meta.version
    );
    handoff::switch_root(&settings.hand_off)
}
