//! SHA-256 of files, buffers and directory trees (hex strings throughout).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ring::digest::{Context, SHA256};

use crate::error::{io_at, Result};

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&SHA256, data).as_ref())
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    ring::digest::digest(&SHA256, data)
        .as_ref()
        .try_into()
        .expect("32 bytes")
}

/// SHA-256 of a file, calling `progress` with the bytes hashed so far.
pub fn file_sha256(path: &Path, mut progress: impl FnMut(u64)) -> Result<String> {
    let mut f = File::open(path).map_err(io_at(path))?;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// A digest over a directory tree: relative paths, kinds, executable bits, contents and
/// symlink targets, in sorted order. Timestamps and owners are left out.
pub fn tree_sha256(root: &Path) -> Result<String> {
    let mut ctx = Context::new(&SHA256);
    let mut entries = Vec::new();
    walk(root, root, &mut entries)?;
    entries.sort();
    for rel in entries {
        let p = root.join(&rel);
        let meta = std::fs::symlink_metadata(&p).map_err(io_at(&p))?;
        ctx.update(rel.as_bytes());
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

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let e = e.map_err(io_at(dir))?;
        let p = e.path();
        let rel = p
            .strip_prefix(root)
            .expect("below root")
            .to_string_lossy()
            .into_owned();
        out.push(rel);
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
