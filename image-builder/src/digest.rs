//! SHA-256 of files, buffers and directory trees (hex strings throughout).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ring::digest::{Context, SHA256};

use crate::error::{io_at, Result};
use crate::extents;

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&SHA256, data).as_ref())
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    ring::digest::digest(&SHA256, data)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// SHA-256 of a file, calling `progress` with the bytes hashed so far. Holes of a sparse file
/// are hashed as the zeros they read as, without reading them (a disk image is mostly holes).
pub fn file_sha256(path: &Path, progress: impl FnMut(u64)) -> Result<String> {
    Ok(hex::encode(
        file_sha256_state(path, progress)?.finish().as_ref(),
    ))
}

/// As [`file_sha256`], but the unfinished hash state: bytes that will follow the file (say,
/// what is appended to it next) can be added without reading it again.
pub fn file_sha256_state(path: &Path, mut progress: impl FnMut(u64)) -> Result<Context> {
    let mut f = File::open(path).map_err(io_at(path))?;
    let len = f.metadata().map_err(io_at(path))?.len();
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 4 << 20];
    let mut pos = 0u64;
    for range in extents::data(&f, len).collect::<Vec<_>>() {
        hash_zeros(&mut ctx, &mut pos, range.start, &mut progress);
        f.seek(SeekFrom::Start(pos)).map_err(io_at(path))?;
        while pos < range.end {
            let want = (buf.len() as u64).min(range.end - pos) as usize;
            let n = f.read(&mut buf[..want]).map_err(io_at(path))?;
            if n == 0 {
                return Err(io_at(path)(std::io::ErrorKind::UnexpectedEof.into()));
            }
            ctx.update(&buf[..n]);
            pos += n as u64;
            progress(pos);
        }
    }
    hash_zeros(&mut ctx, &mut pos, len, &mut progress);
    Ok(ctx)
}

/// A hole from `pos` to `end`, hashed as the zeros it reads as.
fn hash_zeros(ctx: &mut Context, pos: &mut u64, end: u64, progress: &mut impl FnMut(u64)) {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    while *pos < end {
        let n = (ZEROS.len() as u64).min(end - *pos) as usize;
        ctx.update(&ZEROS[..n]);
        *pos += n as u64;
        if pos.is_multiple_of(4 << 20) || *pos == end {
            progress(*pos);
        }
    }
}

/// A digest over a directory tree: relative paths, kinds, executable bits, contents and
/// symlink targets, in sorted order. Timestamps and owners are left out.
pub fn tree_sha256(root: &Path) -> Result<String> {
    let mut ctx = Context::new(&SHA256);
    let mut entries = Vec::new();
    walk(root, root, &mut entries)?;
    entries.sort();
    for rel in entries {
        let p = root.join(OsStr::from_bytes(&rel));
        let meta = std::fs::symlink_metadata(&p).map_err(io_at(&p))?;
        ctx.update(String::from_utf8_lossy(&rel).as_bytes());
        ctx.update(b"\0");
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&p).map_err(io_at(&p))?;
            ctx.update(b"L");
            ctx.update(t.to_string_lossy().as_bytes());
        } else if meta.is_dir() {
            ctx.update(b"D");
        } else {
            let exec = meta.permissions().mode() & 0o111 != 0;
            ctx.update(if exec { b"X" } else { b"F" });
            ctx.update(file_sha256(&p, |_| {})?.as_bytes());
        }
        ctx.update(b"\n");
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// Paths below `root` (relative, as bytes), directories included, not following symlinks.
pub(crate) fn walk(root: &Path, dir: &Path, out: &mut Vec<Vec<u8>>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let e = e.map_err(io_at(dir))?;
        let p = e.path();
        let rel = p.strip_prefix(root).expect("below root");
        out.push(rel.as_os_str().as_bytes().to_vec());
        if e.file_type().map_err(io_at(&p))?.is_dir() {
            walk(root, &p, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Sparse files hash like their contents, as sha256sum sees them.
    #[test]
    fn sparse_files_hash_like_sha256sum() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sparse");
        let f = File::create(&p).unwrap();
        f.set_len(40 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"data in the middle", 17 << 20).unwrap();
        f.write_all_at(b"and at the end", (40 << 20) - 14).unwrap();
        drop(f);
        let out = std::process::Command::new("sha256sum")
            .arg(&p)
            .output()
            .unwrap();
        let theirs = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            file_sha256(&p, |_| {}).unwrap(),
            theirs.split_whitespace().next().unwrap()
        );
        let empty = d.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(file_sha256(&empty, |_| {}).unwrap(), sha256_hex(b""));
    }

    /// The state of a file's hash, continued with more bytes, is the hash of the file with
    /// those bytes appended.
    #[test]
    fn a_continued_state_hashes_what_follows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"head").unwrap();
        let mut ctx = file_sha256_state(&p, |_| {}).unwrap();
        ctx.update(b" and tail");
        assert_eq!(
            hex::encode(ctx.finish().as_ref()),
            sha256_hex(b"head and tail")
        );
    }

    #[test]
    fn tree_digest_follows_content() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/f"), "1").unwrap();
        let one = tree_sha256(d.path()).unwrap();
        assert_eq!(one, tree_sha256(d.path()).unwrap());
        std::fs::write(d.path().join("a/f"), "2").unwrap();
        assert_ne!(one, tree_sha256(d.path()).unwrap());
    }
}
