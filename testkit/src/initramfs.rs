//! Pieces of a test guest's initramfs: a newc cpio writer, a kernel's modules with their
//! dependencies, an executable's shared libraries.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::debian::Kernel;
use crate::files::stdout_of;

/// `wanted` modules of `kernel` and their dependencies (per `modinfo -F depends`), dependencies
/// first, as (name, file) pairs. A module built into the kernel (`modules.builtin`) is left out;
/// one that is neither built in nor a file fails the test.
pub fn modules(kernel: &Kernel, wanted: &[&str]) -> Vec<(String, PathBuf)> {
    fn index(dir: &Path, files: &mut HashMap<String, PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                index(&path, files);
            } else if let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                files.insert(stem.replace('-', "_"), path.clone());
            }
        }
    }
    fn visit(
        name: &str,
        files: &HashMap<String, PathBuf>,
        builtin: &[String],
        out: &mut Vec<(String, PathBuf)>,
    ) {
        if out.iter().any(|(n, _)| n == name) {
            return;
        }
        let Some(path) = files.get(name) else {
            assert!(
                builtin.iter().any(|b| b == name),
                "kernel module {name} not found"
            );
            return;
        };
        let depends = stdout_of(Command::new("modinfo").args(["-F", "depends"]).arg(path))
            .unwrap_or_else(|e| panic!("{e} (install Debian's kmod package)"));
        for dep in depends.trim().split(',').filter(|d| !d.is_empty()) {
            visit(&dep.replace('-', "_"), files, builtin, out);
        }
        out.push((name.to_string(), path.clone()));
    }
    let mut files = HashMap::new();
    index(&kernel.modules.join("kernel"), &mut files);
    // Lines like `kernel/fs/erofs/erofs.ko`.
    let builtin: Vec<String> = fs::read_to_string(kernel.modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next()?.strip_suffix(".ko"))
        .map(|n| n.replace('-', "_"))
        .collect();
    let mut out = Vec::new();
    for name in wanted {
        visit(name, &files, &builtin, &mut out);
    }
    out
}

/// The shared libraries a dynamic executable needs (per ldd), as absolute paths.
pub fn shared_libraries(exe: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(exe).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Just enough of the cpio "newc" format for an initramfs. Directories are written once each,
/// parents first, and a file's parents are made for it.
#[derive(Default)]
pub struct Newc {
    out: Vec<u8>,
    ino: u32,
    dirs: Vec<String>,
}

impl Newc {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory and its parents, once each.
    pub fn dir(&mut self, name: &str) {
        let mut path = String::new();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            if !self.dirs.contains(&path) {
                self.dirs.push(path.clone());
                self.entry(&path.clone(), 0o040755, (0, 0), &[]);
            }
        }
    }

    /// A regular file with permissions `perm`, after its parent directories.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}
