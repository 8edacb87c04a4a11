//! Built pieces kept by content and reused: a build whose inputs did not change takes what an
//! earlier build made instead of making it again. Each piece is keyed by the SHA-256 of
//! everything it is made from ([`Key`]), so a changed input gives a new key and only what
//! depends on it is rebuilt:
//!
//! - the USR filesystem: the staged tree ([`tree_digest`]: paths, kinds, modes, owners, device
//!   numbers, hard links, xattrs, symlink targets and contents) and mkfs.erofs's version and
//!   settings;
//! - the UKI: the kernel, initramfs, command line, os-release and EFI stub bytes;
//! - the qcow2: disk.raw's SHA-256 and qemu-img's version.
//!
//! `keel build --no-reuse` makes every piece (and keeps it). Entries live in
//! `CACHE/built/KIND/KEY` beside their SHA-256 (`KEY.sha256`), written through
//! a temporary file and renamed. Every reuse is copied out through that hash: an entry that
//! does not match is removed and the piece is made again. The newest [`KEEP_PER_KIND`] of each
//! kind are kept.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

use crate::error::{io_at, Result};
use crate::scratch;

/// Entries kept per kind (a few builds' worth: the default and a variant or two).
pub const KEEP_PER_KIND: usize = 4;

/// The pieces kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    UsrFilesystem,
    Uki,
    Qcow2,
}

impl Kind {
    fn dir_name(self) -> &'static str {
        match self {
            Kind::UsrFilesystem => "usr-erofs",
            Kind::Uki => "uki",
            Kind::Qcow2 => "qcow2",
        }
    }

    /// What a build report says it reused.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::UsrFilesystem => "USR filesystem",
            Kind::Uki => "UKI",
            Kind::Qcow2 => "qcow2",
        }
    }
}

/// A key under construction: every input is added with its name, so two different lists of
/// inputs never hash alike.
pub struct Key(Context);

impl Key {
    pub fn new(kind: Kind) -> Key {
        let mut k = Key(Context::new(&SHA256));
        k.add("keel-built-v1", kind.dir_name().as_bytes());
        k
    }

    pub fn add(&mut self, name: &str, value: &[u8]) -> &mut Key {
        self.0.update(name.as_bytes());
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value);
        self
    }

    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<&mut Key> {
        let sha = crate::digest::file_sha256(path, |_| {})?;
        Ok(self.add(name, sha.as_bytes()))
    }

    /// The program's own executable, by content: another version of the tool may make other
    /// bytes (not every tool says its version: mkfs.erofs 1.5 has no `--version`).
    pub fn add_tool(&mut self, program: &str) -> Result<&mut Key> {
        let path = crate::tool::find(program)?;
        self.add_file(program, &path)
    }

    pub fn finish(self) -> String {
        hex::encode(self.0.finish().as_ref())
    }
}

/// The store of built pieces under a cache directory. Without `reuse` (`keel build
/// --no-reuse`) nothing is read from it, but what the build makes is still kept.
pub struct Built {
    dir: PathBuf,
    reuse: bool,
}

impl Built {
    pub fn new(cache: &Path, reuse: bool) -> Built {
        Built {
            dir: cache.join("built"),
            reuse,
        }
    }

    /// Whether pieces are read from the store.
    pub fn reuses(&self) -> bool {
        self.reuse
    }

    fn entry(&self, kind: Kind, key: &str) -> PathBuf {
        self.dir.join(kind.dir_name()).join(key)
    }

    /// Copies the entry for `key` to `dest` if there is one whose bytes match its recorded
    /// SHA-256; true if it did. A damaged entry is removed (and false returned).
    pub fn fetch(&self, kind: Kind, key: &str, dest: &Path) -> Result<bool> {
        if !self.reuse {
            return Ok(false);
        }
        let entry = self.entry(kind, key);
        let sha_file = sha_path(&entry);
        let Ok(recorded) = std::fs::read_to_string(&sha_file) else {
            return Ok(false);
        };
        if !entry.is_file() {
            return Ok(false);
        }
        let copied = copy_hashing(&entry, dest)?;
        if copied != recorded.trim() {
            let _ = std::fs::remove_file(&entry);
            let _ = std::fs::remove_file(&sha_file);
            let _ = std::fs::remove_file(dest);
            return Ok(false);
        }
        // Reused entries stay among the newest.
        let _ = File::options()
            .append(true)
            .open(&entry)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        Ok(true)
    }

    /// Keeps a copy of `src` as the entry for `key`, then drops the oldest entries of `kind`
    /// beyond [`KEEP_PER_KIND`].
    pub fn keep(&self, kind: Kind, key: &str, src: &Path) -> Result<()> {
        let entry = self.entry(kind, key);
        let dir = entry.parent().expect("an entry has a directory");
        std::fs::create_dir_all(dir).map_err(io_at(dir))?;
        scratch::remove_stale(dir, ".tmp-")?;
        let tmp = dir.join(format!("{}{key}", scratch::own_prefix(".tmp-")));
        let sha = copy_hashing(src, &tmp)?;
        // The hash first, then the entry, each by a rename: a reader sees a whole hash, and an
        // entry only once its hash is there.
        let sha_file = sha_path(&entry);
        let sha_tmp = sha_path(&tmp);
        std::fs::write(&sha_tmp, format!("{sha}\n")).map_err(io_at(&sha_tmp))?;
        std::fs::rename(&sha_tmp, &sha_file).map_err(io_at(&sha_file))?;
        std::fs::rename(&tmp, &entry).map_err(io_at(&entry))?;
        prune(dir)
    }
}

fn sha_path(entry: &Path) -> PathBuf {
    let mut name = entry.file_name().expect("an entry has a name").to_owned();
    name.push(".sha256");
    entry.with_file_name(name)
}

/// Copies `src` to `dest` (replacing it) in one pass that also hashes it; the SHA-256 in hex.
fn copy_hashing(src: &Path, dest: &Path) -> Result<String> {
    let mut from = File::open(src).map_err(io_at(src))?;
    let mut to = File::create(dest).map_err(io_at(dest))?;
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = from.read(&mut buf).map_err(io_at(src))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(io_at(dest))?;
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// Removes all but the newest [`KEEP_PER_KIND`] entries (and their hashes) in `dir`.
fn prune(dir: &Path) -> Result<()> {
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io_at(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| !n.ends_with(".sha256") && !n.starts_with(".tmp-"))
        })
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    entries.sort();
    let excess = entries.len().saturating_sub(KEEP_PER_KIND);
    for (_, p) in entries.into_iter().take(excess) {
        let _ = std::fs::remove_file(sha_path(&p));
        std::fs::remove_file(&p).map_err(io_at(&p))?;
    }
    Ok(())
}

/// A digest of everything of a tree that a filesystem made from it holds: for each entry in
/// sorted path order its path, kind and mode bits, owner, device number, size, xattrs, symlink
/// target or contents, and hard links within the tree as references to the first path.
/// Timestamps are left out: mkfs.erofs is given one time for every inode (`-T`).
pub fn tree_digest(root: &Path) -> Result<String> {
    let mut ctx = Context::new(&SHA256);
    let mut inodes: HashMap<(u64, u64), usize> = HashMap::new();
    let mut paths = Vec::new();
    crate::digest::walk(root, root, &mut paths)?;
    paths.sort();
    let mut buf = vec![0u8; 1 << 20];
    for (index, rel) in paths.iter().enumerate() {
        let p = root.join(std::ffi::OsStr::from_bytes(rel));
        let meta = std::fs::symlink_metadata(&p).map_err(io_at(&p))?;
        ctx.update(rel);
        ctx.update(b"\0");
        if !meta.is_dir() && meta.nlink() > 1 {
            if let Some(first) = inodes.get(&(meta.dev(), meta.ino())) {
                ctx.update(format!("link {first}\n").as_bytes());
                continue;
            }
            inodes.insert((meta.dev(), meta.ino()), index);
        }
        ctx.update(
            format!(
                "{:o} {} {} {} {}\n",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.rdev(),
                meta.len()
            )
            .as_bytes(),
        );
        for (name, value) in xattrs(&p)? {
            ctx.update(&(name.len() as u64).to_le_bytes());
            ctx.update(&name);
            ctx.update(&(value.len() as u64).to_le_bytes());
            ctx.update(&value);
        }
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = std::fs::read_link(&p).map_err(io_at(&p))?;
            ctx.update(target.as_os_str().as_bytes());
        } else if kind.is_file() {
            let mut f = File::open(&p).map_err(io_at(&p))?;
            loop {
                let n = f.read(&mut buf).map_err(io_at(&p))?;
                if n == 0 {
                    break;
                }
                ctx.update(&buf[..n]);
            }
        }
        ctx.update(b"\n");
    }
    Ok(hex::encode(ctx.finish().as_ref()))
}

/// The extended attributes of `path` itself (not a symlink's target), sorted by name.
fn xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(io_at(path)(e.into())),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 256];
        let n = loop {
            match rustix::fs::lgetxattr(path, std::ffi::OsStr::from_bytes(name), &mut value[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(e) => return Err(io_at(path)(e.into())),
            }
        };
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        std::fs::write(d.path().join("usr/bin/a"), b"alpha").unwrap();
        std::fs::write(d.path().join("usr/bin/b"), b"beta").unwrap();
        std::os::unix::fs::symlink("a", d.path().join("usr/bin/c")).unwrap();
        d
    }

    #[test]
    fn the_tree_digest_sees_contents_modes_links_and_xattrs_but_not_times() {
        let d = tree();
        let base = tree_digest(d.path()).unwrap();
        assert_eq!(
            tree_digest(tree().path()).unwrap(),
            base,
            "same tree, same digest"
        );

        let a = d.path().join("usr/bin/a");
        File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!(tree_digest(d.path()).unwrap(), base, "a time changed");

        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o755)).unwrap();
        let moded = tree_digest(d.path()).unwrap();
        assert_ne!(moded, base, "a mode changed");

        std::fs::write(&a, b"alphA").unwrap();
        let edited = tree_digest(d.path()).unwrap();
        assert_ne!(edited, moded, "a byte changed");

        std::fs::remove_file(d.path().join("usr/bin/b")).unwrap();
        std::fs::hard_link(&a, d.path().join("usr/bin/b")).unwrap();
        let linked = tree_digest(d.path()).unwrap();
        assert_ne!(linked, edited, "b became a hard link");

        std::fs::remove_file(d.path().join("usr/bin/c")).unwrap();
        std::os::unix::fs::symlink("b", d.path().join("usr/bin/c")).unwrap();
        let relinked = tree_digest(d.path()).unwrap();
        assert_ne!(relinked, linked, "a symlink target changed");

        // A file capability, as `setcap` leaves on ping (tmpfs may refuse user xattrs).
        if rustix::fs::lsetxattr(&a, "user.keel-test", b"1", rustix::fs::XattrFlags::empty())
            .is_ok()
        {
            assert_ne!(tree_digest(d.path()).unwrap(), relinked, "an xattr added");
        }
    }

    #[test]
    fn entries_are_kept_fetched_checked_and_pruned() {
        let cache = tempfile::tempdir().unwrap();
        let built = Built::new(cache.path(), true);
        let src = cache.path().join("piece");
        std::fs::write(&src, b"the filesystem").unwrap();
        let out = cache.path().join("out");
        assert!(!built.fetch(Kind::Qcow2, "k1", &out).unwrap());
        built.keep(Kind::Qcow2, "k1", &src).unwrap();
        assert!(built.fetch(Kind::Qcow2, "k1", &out).unwrap());
        assert_eq!(std::fs::read(&out).unwrap(), b"the filesystem");

        // A damaged entry is not reused, and is gone afterwards.
        let entry = cache.path().join("built/qcow2/k1");
        std::fs::write(&entry, b"the filesystEm").unwrap();
        assert!(!built.fetch(Kind::Qcow2, "k1", &out).unwrap());
        assert!(!entry.exists());

        for k in 0..KEEP_PER_KIND + 2 {
            built.keep(Kind::Qcow2, &format!("n{k}"), &src).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let left = std::fs::read_dir(cache.path().join("built/qcow2"))
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                !n.to_string_lossy().ends_with(".sha256")
            })
            .count();
        assert_eq!(left, KEEP_PER_KIND);
        assert!(built
            .fetch(Kind::Qcow2, &format!("n{}", KEEP_PER_KIND + 1), &out)
            .unwrap());
        assert!(!built.fetch(Kind::Qcow2, "n0", &out).unwrap());

        // Reuse off: nothing found, what is made still kept.
        let off = Built::new(cache.path(), false);
        off.keep(Kind::Uki, "k", &src).unwrap();
        assert!(!off.fetch(Kind::Uki, "k", &out).unwrap());
        assert!(built.fetch(Kind::Uki, "k", &out).unwrap());
    }
}
