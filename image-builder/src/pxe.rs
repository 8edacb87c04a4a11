//! The network-boot form: `pxe/vmlinuz`, `pxe/initramfs.img` (the Keel initramfs with the
//! signed payload appended at `/usr.img`, so keel-init boots diskless from it) and the iPXE
//! script `pxe/keel.ipxe` naming both with the kernel command line.

use std::path::Path;

use keel_format::initramfs::EMBEDDED_PAYLOAD;

use crate::cpio::Archive;
use crate::error::{io_at, Result};

pub const DIR: &str = "pxe";
pub const KERNEL: &str = "vmlinuz";
pub const INITRAMFS: &str = "initramfs.img";
pub const SCRIPT: &str = "keel.ipxe";

/// The kernel unpacks concatenated archives: the gzip'd Keel initramfs, zero padding to a
/// 4-byte boundary (skipped), then an uncompressed newc archive with the payload. The payload
/// is already compressed (erofs), so gzip would only cost time.
pub fn initramfs(keel_initramfs: &[u8], payload: Vec<u8>, mtime: u64) -> Vec<u8> {
    let mut a = Archive::new();
    a.file(EMBEDDED_PAYLOAD, 0o644, payload);
    let mut out = keel_initramfs.to_vec();
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(&a.to_bytes(mtime));
    out
}

pub fn ipxe_script(cmdline: &str) -> String {
    format!("#!ipxe\nkernel {KERNEL} initrd={INITRAMFS} {cmdline}\ninitrd {INITRAMFS}\nboot\n")
}

/// Write `dir` (created) with the three files; `live_initramfs` is [`initramfs`]'s result.
pub fn write(dir: &Path, kernel: &Path, live_initramfs: &[u8], cmdline: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let k = dir.join(KERNEL);
    std::fs::copy(kernel, &k).map_err(io_at(&k))?;
    let i = dir.join(INITRAMFS);
    std::fs::write(&i, live_initramfs).map_err(io_at(&i))?;
    let s = dir.join(SCRIPT);
    std::fs::write(&s, ipxe_script(cmdline)).map_err(io_at(&s))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// GNU cpio reads both archives of the concatenation (as the kernel does).
    #[test]
    fn both_archives_unpack() {
        let mut a = Archive::new();
        a.file("init", 0o755, b"#!/bin/sh\n".to_vec());
        let first = crate::cpio::gzip(&a.to_bytes(0));
        let out = initramfs(&first, vec![9u8; 5000], 0);
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("i.img");
        std::fs::write(&f, &out).unwrap();
        // The second archive starts right after the padded gzip member.
        let second = &out[first.len().next_multiple_of(4)..];
        let mut c = Command::new("cpio")
            .args(["-i", "--quiet", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(second).unwrap();
        let o = c.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "usr.img");
        assert!(ipxe_script("console=ttyS0")
            .contains("kernel vmlinuz initrd=initramfs.img console=ttyS0"));
    }
}
