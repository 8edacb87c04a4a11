//! Copying into a (sparse) disk image without writing blocks of zeros, so a 3 GiB image with
//! 200 MiB of content takes 200 MiB on the build host.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{io_at, Result};
use crate::extents;

const BLOCK: usize = 4096;

/// Copy all of `src` into `dst` at `offset`: only the data ranges of `src` are read (its holes
/// are skipped: [`extents`]), and all-zero 4 KiB blocks within them are not written (the
/// destination is a fresh sparse file, so what is skipped reads as zeros). `progress` gets the
/// bytes of `src` done so far, holes included. Returns the length of `src`.
pub fn copy_into(
    src: &Path,
    dst: &mut File,
    dst_path: &Path,
    offset: u64,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut f = File::open(src).map_err(io_at(src))?;
    let len = f.metadata().map_err(io_at(src))?.len();
    let mut buf = vec![0u8; 4 << 20];
    for range in extents::data(&f, len).collect::<Vec<_>>() {
        f.seek(SeekFrom::Start(range.start)).map_err(io_at(src))?;
        let mut pos = range.start;
        while pos < range.end {
            let want = (buf.len() as u64).min(range.end - pos) as usize;
            let n = read_full(&mut f, &mut buf[..want]).map_err(io_at(src))?;
            if n == 0 {
                // The file shrank under us.
                return Err(io_at(src)(std::io::ErrorKind::UnexpectedEof.into()));
            }
            write_skipping_zeros(dst, dst_path, offset + pos, &buf[..n])?;
            pos += n as u64;
            progress(pos);
        }
    }
    progress(len);
    Ok(len)
}

pub fn write_skipping_zeros(
    dst: &mut File,
    dst_path: &Path,
    offset: u64,
    data: &[u8],
) -> Result<()> {
    for (i, chunk) in data.chunks(BLOCK).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        dst.seek(SeekFrom::Start(offset + (i * BLOCK) as u64))
            .map_err(io_at(dst_path))?;
        dst.write_all(chunk).map_err(io_at(dst_path))?;
    }
    Ok(())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn copies_content_and_leaves_holes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let mut data = vec![0u8; 8 << 20];
        data[5] = 1;
        data[(6 << 20) + 3] = 2;
        std::fs::write(&src, &data).unwrap();
        let dstp = d.path().join("dst");
        let mut dst = File::create(&dstp).unwrap();
        dst.set_len(16 << 20).unwrap();
        copy_into(&src, &mut dst, &dstp, 1 << 20, |_| {}).unwrap();
        drop(dst);
        let out = std::fs::read(&dstp).unwrap();
        assert_eq!(&out[1 << 20..(1 << 20) + data.len()], &data[..]);
        assert!(std::fs::metadata(&dstp).unwrap().blocks() * 512 < 1 << 20);
    }

    /// A sparse source (holes, data, a trailing hole): the copy reads the same bytes as the
    /// source, progress ends at its length, and its holes stay holes.
    #[test]
    fn copies_a_sparse_source_byte_for_byte() {
        use std::os::unix::fs::FileExt;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let f = File::create(&src).unwrap();
        let len = 48u64 << 20;
        f.set_len(len).unwrap();
        f.write_all_at(&[0xab; 10_000], 3 << 20).unwrap();
        f.write_all_at(b"tail of the data", (20 << 20) - 16)
            .unwrap();
        drop(f);
        let dstp = d.path().join("dst");
        let mut dst = File::create(&dstp).unwrap();
        dst.set_len(64 << 20).unwrap();
        let mut last = 0;
        let n = copy_into(&src, &mut dst, &dstp, 2 << 20, |p| last = p).unwrap();
        drop(dst);
        assert_eq!((n, last), (len, len));
        let out = std::fs::read(&dstp).unwrap();
        let want = std::fs::read(&src).unwrap();
        assert_eq!(&out[2 << 20..(2 << 20) + len as usize], &want[..]);
        assert!(out[..2 << 20].iter().all(|&b| b == 0));
        assert!(std::fs::metadata(&dstp).unwrap().blocks() * 512 < 1 << 20);
    }
}
