//! Hashing outputs (whole files, byte ranges) and sizing directory trees.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};
use ring::digest::{Context as Sha, SHA256};

/// SHA-256 (hex) of a whole file; holes of a sparse file are not read.
pub fn sha256(path: &Path) -> Result<String> {
    keel_builder::digest::file_sha256(path, |_| {})
        .with_context(|| format!("hashing {}", path.display()))
}

/// SHA-256 (hex) of `len` bytes of `path` from `offset`.
pub fn range_sha256(path: &Path, offset: u64, len: u64) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(SeekFrom::Start(offset))?;
    let mut ctx = Sha::new(&SHA256);
    let mut buf = vec![0u8; 4 << 20];
    let mut left = len;
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        f.read_exact(&mut buf[..want])
            .with_context(|| format!("reading {} at {offset}", path.display()))?;
        ctx.update(&buf[..want]);
        left -= want as u64;
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// Calls `each` with the metadata of every entry under `dir` (directories included).
fn for_each_entry(dir: &Path, mut each: impl FnMut(&std::fs::Metadata)) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let m = e.metadata()?;
            if m.is_dir() {
                stack.push(e.path());
            }
            each(&m);
        }
    }
    Ok(())
}

/// Total bytes of the regular files under `dir` and how many entries it holds.
pub fn tree_size(dir: &Path) -> Result<(u64, u64)> {
    let (mut bytes, mut entries) = (0, 0);
    for_each_entry(dir, |m| {
        entries += 1;
        if m.is_file() {
            bytes += m.len();
        }
    })?;
    Ok((bytes, entries))
}

/// Bytes the files under `dir` take on disk (allocated blocks: sparse disk images count for what
/// they hold).
pub fn disk_usage(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    for_each_entry(dir, |m| {
        if !m.is_dir() {
            bytes += m.blocks() * 512;
        }
    })?;
    Ok(bytes)
}

/// The line a benchmark ends with about the work directory it keeps for its next run: where it
/// is and how much disk it holds (a few of them filled a CI machine's disk once).
pub fn work_dir_note(dir: &Path) -> String {
    match disk_usage(dir) {
        Ok(bytes) => format!(
            "work directory {} holds {:.1} GiB, kept for the next run (remove it when done)",
            dir.display(),
            bytes as f64 / (1u64 << 30) as f64
        ),
        Err(e) => format!("work directory {}: {e:#}", dir.display()),
    }
}

/// Read every regular file under `dir` once, so the tools compared afterwards all find it in
/// the page cache and none pays for the first read.
pub fn warm_page_cache(dir: &Path) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let mut f = File::open(e.path())?;
                while f.read(&mut buf)? > 0 {}
            }
        }
    }
    Ok(())
}

/// A file of `len` bytes that does not compress (like a kernel image does not), the same for
/// every run: xorshift64 output from a fixed seed.
pub fn incompressible_file(path: &Path, len: u64) -> Result<()> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(len as usize);
    while (data.len() as u64) < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(len as usize);
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// The partitions of a disk image, read from its GPT (keel-format's reader).
pub fn partitions(image: &Path) -> Result<Vec<keel_format::gpt::Partition>> {
    let mut f =
        std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let table = keel_format::gpt::DiskTable::read(&mut f)
        .with_context(|| format!("the partition table of {}", image.display()))?;
    Ok(table.partitions())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_what_sparse_files_hold() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let sparse = std::fs::File::create(dir.path().join("sub/disk.raw")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        std::fs::write(dir.path().join("data"), vec![1u8; 1 << 20]).unwrap();
        let used = disk_usage(dir.path()).unwrap();
        assert!((1 << 20..4 << 20).contains(&used), "{used}");
        let note = work_dir_note(dir.path());
        assert!(
            note.ends_with("holds 0.0 GiB, kept for the next run (remove it when done)"),
            "{note}"
        );
    }
}
