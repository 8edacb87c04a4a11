//! Reading the version string out of an x86 bzImage, so the builder knows `uname -r` and
//! `uname -v` of the kernel it ships without booting it.
//!
//! The real-mode header carries `HdrS` at 0x202 and, at 0x20E, a pointer (minus 0x200) to a
//! NUL-terminated string like `6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP
//! PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)`.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelVersion {
    /// `uname -r`: the first word.
    pub release: String,
    /// `uname -v`: what follows the builder's `(user@host) `.
    pub build: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BzImageError {
    #[error("not an x86 bzImage (no HdrS signature at 0x202)")]
    NotBzImage,
    #[error("bzImage header carries no kernel version string")]
    NoVersion,
    #[error("kernel version string is malformed: {0:?}")]
    Malformed(String),
}

pub fn kernel_version(image: &[u8]) -> Result<KernelVersion, BzImageError> {
    if image.len() < 0x210 || &image[0x202..0x206] != b"HdrS" {
        return Err(BzImageError::NotBzImage);
    }
    let ptr = u16::from_le_bytes([image[0x20E], image[0x20F]]) as usize;
    if ptr == 0 {
        return Err(BzImageError::NoVersion);
    }
    let start = ptr + 0x200;
    let rest = image.get(start..).ok_or(BzImageError::NoVersion)?;
    let end = rest
        .iter()
        .take(512)
        .position(|&b| b == 0)
        .ok_or(BzImageError::NoVersion)?;
    let text = String::from_utf8_lossy(&rest[..end]).into_owned();
    parse_version_string(&text)
}

pub fn parse_version_string(text: &str) -> Result<KernelVersion, BzImageError> {
    let release = text
        .split_whitespace()
        .next()
        .ok_or_else(|| BzImageError::Malformed(text.into()))?;
    let build = text
        .split_once(") ")
        .map(|(_, b)| b.trim())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| BzImageError::Malformed(text.into()))?;
    Ok(KernelVersion {
        release: release.to_string(),
        build: build.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)";

    fn image_with(version: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x4000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let at = 0x3000usize;
        img[0x20E..0x210].copy_from_slice(&((at - 0x200) as u16).to_le_bytes());
        img[at..at + version.len()].copy_from_slice(version.as_bytes());
        img
    }

    #[test]
    fn parses_debian_kernel_header() {
        let v = kernel_version(&image_with(DEBIAN)).unwrap();
        assert_eq!(v.release, "6.1.0-28-cloud-amd64");
        assert_eq!(
            v.build,
            "#1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)"
        );
    }

    #[test]
    fn rejects_non_kernels() {
        assert_eq!(kernel_version(&[0u8; 4096]), Err(BzImageError::NotBzImage));
        let mut img = image_with(DEBIAN);
        img[0x20E] = 0;
        img[0x20F] = 0;
        assert_eq!(kernel_version(&img), Err(BzImageError::NoVersion));
        assert!(matches!(
            parse_version_string("6.1.0"),
            Err(BzImageError::Malformed(_))
        ));
    }

    /// The host's own kernel, if readable, parses and agrees with `uname -r` when it is the one
    /// running.
    #[test]
    fn host_kernels_parse() {
        let Ok(dir) = std::fs::read_dir("/boot") else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rel) = name.strip_prefix("vmlinuz-") {
                let v = kernel_version(&std::fs::read(e.path()).unwrap()).unwrap();
                assert_eq!(v.release, rel);
            }
        }
    }
}
