//! A reproducible cpio archive in the "newc" format the kernel unpacks as an initramfs: entries
//! sorted by path (parents first), fixed mtime, root ownership, sequential inode numbers.

use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: String },
    CharDev { mode: u32, major: u32, minor: u32 },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An archive being put together. Paths are relative (`etc/keel/init.json`); missing parent
/// directories are added with mode 0755.
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries
                .entry(parent.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
        self.entries.insert(path, entry);
    }

    pub fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.add(path, Entry::File { mode, data });
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The archive bytes. Parents sort before their children since a path is a prefix of its
    /// children's paths, and `/` sorts after nothing that would split them.
    pub fn to_bytes(&self, mtime: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut ordered: Vec<(&String, &Entry)> = self.entries.iter().collect();
        // Sort by path components so that "a/b" comes right after "a", before "a-b".
        ordered.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
        for (ino, (path, entry)) in ordered.into_iter().enumerate() {
            let (mode, nlink, data, rmaj, rmin): (u32, u32, &[u8], u32, u32) = match entry {
                Entry::Dir { mode } => (S_IFDIR | mode, 2, &[], 0, 0),
                Entry::File { mode, data } => (S_IFREG | mode, 1, data, 0, 0),
                Entry::Symlink { target } => (S_IFLNK | 0o777, 1, target.as_bytes(), 0, 0),
                Entry::CharDev { mode, major, minor } => (S_IFCHR | mode, 1, &[], *major, *minor),
            };
            write_header(
                &mut out,
                ino as u32 + 1,
                mode,
                nlink,
                mtime,
                data.len(),
                rmaj,
                rmin,
                path,
            );
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        write_header(&mut out, 0, 0, 1, 0, 0, 0, 0, "TRAILER!!!");
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn write_header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u64,
    size: usize,
    rdev_major: u32,
    rdev_minor: u32,
    name: &str,
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        mtime as u32,
        size as u32,
        0, // dev major
        0, // dev minor
        rdev_major,
        rdev_minor,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// gzip with no name and mtime 0 in the header: same input, same bytes.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("writing to a Vec");
    enc.finish().expect("writing to a Vec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.file("init", 0o755, b"#!/bin/true\n".to_vec());
        a.file("etc/keel/init.json", 0o644, b"{}".to_vec());
        a.add(
            "dev/console",
            Entry::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        a.add("a-b", Entry::Dir { mode: 0o755 });
        a.add(
            "bin",
            Entry::Symlink {
                target: "usr/bin".into(),
            },
        );
        a
    }

    #[test]
    fn parents_are_added_and_come_first() {
        let a = sample();
        let paths: Vec<&str> = a.paths().collect();
        assert!(paths.contains(&"etc") && paths.contains(&"etc/keel"));
        let bytes = a.to_bytes(0);
        let text = String::from_utf8_lossy(&bytes);
        let at = |s: &str| text.find(&format!("{s}\0")).unwrap();
        assert!(at("etc") < at("etc/keel") && at("etc/keel") < at("etc/keel/init.json"));
    }

    #[test]
    fn reproducible() {
        assert_eq!(sample().to_bytes(7), sample().to_bytes(7));
        assert_eq!(gzip(&sample().to_bytes(7)), gzip(&sample().to_bytes(7)));
    }

    /// GNU cpio, an independent reader, lists what we wrote with the right types and modes.
    #[test]
    fn gnu_cpio_reads_it() {
        let mut child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio must be installed");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&sample().to_bytes(1_700_000_000))
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let line = |name: &str| {
            listing
                .lines()
                .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
                .unwrap_or_else(|| panic!("{name} missing in\n{listing}"))
                .to_string()
        };
        assert!(line("init").starts_with("-rwxr-xr-x"));
        assert!(line("etc/keel").starts_with("drwxr-xr-x"));
        assert!(line("dev/console").starts_with("crw-------"));
        assert!(line("dev/console").contains("5,"));
        assert!(line("bin").starts_with("lrwxrwxrwx"));
        assert!(line("etc/keel/init.json").contains(" 2 "), "{listing}");
    }
}
