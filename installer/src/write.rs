//! Streaming the image onto the disk while hashing it. The first and last MiB of the image
//! (protective MBR + primary GPT, backup GPT) are held back in memory and written only after
//! the whole stream matched its signature; the disk's old tables are wiped before the first
//! byte, so a disk cut off part way, or fed a tampered image, carries no partition table and
//! cannot boot. On any failure the tables are wiped again.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use ring::digest::{Context, SHA256};

use crate::error::{InstallError, Result};
use keel_cli_support::progress::Progress;

/// Bytes per read and write.
pub const CHUNK: usize = 4 << 20;
/// Held back at each end: MBR + primary GPT at the start, backup GPT at the end.
pub const EDGE: u64 = 1 << 20;

/// Put `data` at `offset`. A run of zeros (most of a fresh image) becomes BLKZEROOUT: the
/// device zeroes it without the bytes crossing the bus (WRITE ZEROES), and a loop device's
/// backing file stays sparse. Where the ioctl is missing (a regular file), the bytes are written.
fn put(dev: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let aligned = offset.is_multiple_of(512) && data.len().is_multiple_of(512);
    if aligned
        && !data.is_empty()
        && data.iter().all(|&b| b == 0)
        && keel_blockdev::zero::zero_range(dev, offset, data.len() as u64).is_ok()
    {
        return Ok(());
    }
    dev.write_all_at(data, offset)
}

/// What the stream turned out to be.
#[derive(Debug)]
pub struct Streamed {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Zero `[offset, offset + len)` of the device (clamped to `disk_bytes`).
fn zero(dev: &File, offset: u64, len: u64, disk_bytes: u64) -> io::Result<()> {
    let end = (offset + len).min(disk_bytes);
    if offset >= end {
        return Ok(());
    }
    let zeros = vec![0u8; (end - offset) as usize];
    dev.write_all_at(&zeros, offset)
}

/// Destroy every partition table an image of `image_bytes` may have left on the disk: the
/// protective MBR and primary GPT, the backup GPT at the image's end and at the disk's end.
pub fn wipe_tables(dev: &File, image_bytes: u64, disk_bytes: u64) -> io::Result<()> {
    zero(dev, 0, EDGE, disk_bytes)?;
    zero(dev, image_bytes.saturating_sub(EDGE), EDGE, disk_bytes)?;
    zero(dev, disk_bytes.saturating_sub(EDGE), EDGE, disk_bytes)?;
    dev.sync_all()
}

/// Copy exactly `size` bytes from `src` to `dev` (offset 0), holding back the edges. Returns
/// the bytes seen and their SHA-256; the edges are written only when they match `want`.
pub fn stream(
    src: &mut dyn Read,
    dev: &File,
    size: u64,
    want: &[u8; 32],
    progress: &dyn Progress,
) -> Result<Streamed> {
    let head_len = EDGE.min(size);
    let tail_start = size.saturating_sub(EDGE).max(head_len);
    let mut head = vec![0u8; head_len as usize];
    let mut tail = vec![0u8; (size - tail_start) as usize];
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    loop {
        let n = read_full(src, &mut buf)
            .map_err(|e| InstallError::Io(format!("reading the image at byte {at}: {e}")))?;
        if n == 0 {
            break;
        }
        if at + n as u64 > size {
            return Err(InstallError::Verification(format!(
                "the image is longer than the {size} bytes its signature covers"
            )));
        }
        let data = &buf[..n];
        ctx.update(data);
        let (start, end) = (at, at + n as u64);
        // Held-back edges go to memory, everything between them to the disk.
        let mid_start = start.max(head_len);
        let mid_end = end.min(tail_start);
        if start < head_len {
            let e = end.min(head_len);
            head[start as usize..e as usize].copy_from_slice(&data[..(e - start) as usize]);
        }
        if mid_start < mid_end {
            put(
                dev,
                &data[(mid_start - start) as usize..(mid_end - start) as usize],
                mid_start,
            )
            .map_err(|e| InstallError::Io(format!("writing the disk at byte {mid_start}: {e}")))?;
        }
        if end > tail_start {
            let s = start.max(tail_start);
            tail[(s - tail_start) as usize..(end - tail_start) as usize]
                .copy_from_slice(&data[(s - start) as usize..]);
        }
        at = end;
        progress.set(at);
    }
    let sha256: [u8; 32] = ctx.finish().as_ref().try_into().expect("32 bytes");
    if at != size {
        return Err(InstallError::Verification(format!(
            "the image ended after {at} bytes; its signature covers {size}"
        )));
    }
    if &sha256 != want {
        return Err(InstallError::Verification(format!(
            "the image's SHA-256 {} does not match its signature's {}",
            hex::encode(sha256),
            hex::encode(want)
        )));
    }
    let io = |e: io::Error| InstallError::Io(format!("writing the partition tables: {e}"));
    dev.sync_all().map_err(io)?;
    // Backup table first, primary last, as keel-format writes tables.
    dev.write_all_at(&tail, tail_start).map_err(io)?;
    dev.sync_all().map_err(io)?;
    dev.write_all_at(&head, 0).map_err(io)?;
    dev.sync_all().map_err(io)?;
    Ok(Streamed { bytes: at, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_cli_support::progress::Silent;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn sha(b: &[u8]) -> [u8; 32] {
        ring::digest::digest(&SHA256, b)
            .as_ref()
            .try_into()
            .unwrap()
    }

    /// A file standing in for the target disk: (its directory, path, open file).
    fn fake_device(size: u64) -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dev");
        let dev = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        dev.set_len(size).unwrap();
        (dir, p, dev)
    }

    #[test]
    fn a_good_stream_lands_whole() {
        let img = image(9 * (1 << 20) + 4096);
        let (_dir, p, dev) = fake_device(16 << 20);
        let s = stream(&mut &img[..], &dev, img.len() as u64, &sha(&img), &Silent).unwrap();
        assert_eq!(s.bytes, img.len() as u64);
        let back = std::fs::read(&p).unwrap();
        assert_eq!(&back[..img.len()], &img[..]);
    }

    #[test]
    fn a_tampered_stream_never_writes_its_edges() {
        let img = image(6 << 20);
        let want = sha(&img);
        let mut bad = img.clone();
        bad[3 << 20] ^= 1;
        let (_dir, p, dev) = fake_device(8 << 20);
        let e = stream(&mut &bad[..], &dev, bad.len() as u64, &want, &Silent).unwrap_err();
        assert!(
            e.to_string().contains("does not match its signature"),
            "{e}"
        );
        let back = std::fs::read(&p).unwrap();
        assert!(back[..EDGE as usize].iter().all(|&b| b == 0));
        assert!(back[(5 << 20)..(6 << 20)].iter().all(|&b| b == 0));
    }

    #[test]
    fn short_and_long_streams_are_refused() {
        let img = image(3 << 20);
        let dir = tempfile::tempdir().unwrap();
        let dev = File::create(dir.path().join("dev")).unwrap();
        let e = stream(&mut &img[..], &dev, 4 << 20, &sha(&img), &Silent).unwrap_err();
        assert!(e.to_string().contains("ended after"), "{e}");
        let e = stream(&mut &img[..], &dev, 2 << 20, &sha(&img), &Silent).unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }
}
