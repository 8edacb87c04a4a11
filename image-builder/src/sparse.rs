//! Copying into a (sparse) disk image without writing blocks of zeros, so a 3 GiB image with
//! 200 MiB of content takes 200 MiB on the build host.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{io_at, Result};

const BLOCK: usize = 4096;

/// Copy all of `src` into `dst` at `offset`, skipping all-zero 4 KiB blocks (the destination
/// is a fresh sparse file, so skipped blocks read as zeros). Returns the bytes copied.
pub fn copy_into(
    src: &Path,
    dst: &mut File,
    dst_path: &Path,
    offset: u64,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut f = File::open(src).map_err(io_at(src))?;
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf).map_err(io_at(src))?;
        if n == 0 {
            break;
        }
        write_skipping_zeros(dst, dst_path, offset + done, &buf[..n])?;
        done += n as u64;
        progress(done);
    }
    Ok(done)
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
}
