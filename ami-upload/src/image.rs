//! The raw image as a sequence of EBS blocks.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::UploadError;

/// The EBS direct APIs store snapshots in blocks of 512 KiB (AWS documents the size as fixed;
/// StartSnapshot also reports it).
pub const BLOCK_SIZE: usize = 512 * 1024;
const GIB: u64 = 1024 * 1024 * 1024;

/// An open image file, read block by block from any thread.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    file: File,
    len: u64,
}

impl Image {
    /// Opens a regular, non-empty file.
    pub fn open(path: &Path) -> Result<Image, UploadError> {
        let io = |source| UploadError::Image {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(UploadError::Input(format!(
                "{}: not a regular file (give the raw disk image, e.g. disk.raw)",
                path.display()
            )));
        }
        if meta.len() == 0 {
            return Err(UploadError::Input(format!(
                "{}: the image is empty",
                path.display()
            )));
        }
        Ok(Image {
            path: path.to_path_buf(),
            file,
            len: meta.len(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// EBS volumes come in whole GiB.
    pub fn volume_size_gib(&self) -> i64 {
        self.len.div_ceil(GIB).max(1) as i64
    }

    pub fn block_count(&self) -> u64 {
        self.len.div_ceil(BLOCK_SIZE as u64)
    }

    /// Block `index`, a full [`BLOCK_SIZE`] (the tail past the end of the file is zero), or
    /// `None` when every byte is zero (see [`crate::snapshot::write_blocks`] for when such
    /// blocks may be left out).
    pub fn read_block(&self, index: u64) -> Result<Option<Vec<u8>>, UploadError> {
        let offset = index * BLOCK_SIZE as u64;
        let want = (self.len - offset).min(BLOCK_SIZE as u64) as usize;
        let mut buf = vec![0u8; BLOCK_SIZE];
        self.file
            .read_exact_at(&mut buf[..want], offset)
            .map_err(|source| UploadError::Image {
                path: self.path.clone(),
                source,
            })?;
        Ok((!is_zero(&buf)).then_some(buf))
    }
}

/// Word-at-a-time zero test (a byte loop is several times slower on 512 KiB).
pub fn is_zero(buf: &[u8]) -> bool {
    // SAFETY: every bit pattern is a valid u128, and align_to puts only aligned whole words
    // in the middle slice.
    let (head, words, tail) = unsafe { buf.align_to::<u128>() };
    head.iter().all(|&b| b == 0) && tail.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn zero_test_finds_a_single_set_byte_anywhere() {
        let mut buf = vec![0u8; BLOCK_SIZE];
        assert!(is_zero(&buf));
        for at in [0, 1, 15, 16, 4097, BLOCK_SIZE - 1] {
            buf[at] = 1;
            assert!(!is_zero(&buf), "byte {at}");
            buf[at] = 0;
        }
    }

    #[test]
    fn blocks_are_padded_and_zero_blocks_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let mut f = File::create(&p).unwrap();
        f.write_all(&vec![0u8; BLOCK_SIZE]).unwrap();
        f.write_all(&[7u8; 100]).unwrap();
        drop(f);
        let img = Image::open(&p).unwrap();
        assert_eq!(img.block_count(), 2);
        assert_eq!(img.volume_size_gib(), 1);
        assert!(img.read_block(0).unwrap().is_none());
        let b = img.read_block(1).unwrap().unwrap();
        assert_eq!(b.len(), BLOCK_SIZE);
        assert!(b[..100].iter().all(|&x| x == 7) && is_zero(&b[100..]));
    }

    #[test]
    fn empty_and_missing_images_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty");
        File::create(&p).unwrap();
        assert!(Image::open(&p).unwrap_err().to_string().contains("empty"));
        let e = Image::open(&dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(matches!(
            Image::open(dir.path()),
            Err(UploadError::Input(_))
        ));
    }
}
