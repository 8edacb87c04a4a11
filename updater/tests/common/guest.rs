//! A real Linux guest for the updater: Debian's cloud kernel, busybox, veritysetup and
//! keel-update in an initramfs, booted by keel-qemu. Packages are fetched with apt-get and cached
//! where the runner's own tests cache them (`$KEEL_TEST_CACHE`, default ~/.cache/keel-test).

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apt(make: impl Fn() -> Command) -> String {
    let first = make().output().unwrap();
    if first.status.success() {
        return String::from_utf8_lossy(&first.stdout).into_owned();
    }
    run(Command::new("apt-get").args(["update", "-qq"]));
    run(&mut make())
}

pub fn cache_dir() -> PathBuf {
    let dir = match std::env::var_os("KEEL_TEST_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => match std::env::var_os("HOME") {
            Some(h) if !h.is_empty() => PathBuf::from(h).join(".cache/keel-test"),
            _ => PathBuf::from("/var/tmp/keel-test-cache"),
        },
    };
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// `apt-get download NAME` unpacked with `dpkg-deb -x`, cached (same layout as keel-qemu's tests).
pub fn debian_package(name: &str) -> PathBuf {
    let debs = cache_dir().join("deb");
    fs::create_dir_all(&debs).unwrap();
    let root = debs.join(name);
    let done = debs.join(format!("{name}.complete"));
    let lock = File::create(debs.join(format!("{name}.lock"))).unwrap();
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if done.exists() {
        return root;
    }
    let work = tempfile::tempdir_in(&debs).unwrap();
    apt(|| {
        let mut c = Command::new("apt-get");
        c.args(["download", "-qq", name]).current_dir(work.path());
        c
    });
    let deb = fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let unpacked = work.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    let _ = fs::remove_dir_all(&root);
    fs::rename(&unpacked, &root).unwrap();
    File::create(&done).unwrap();
    root
}

pub struct Kernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules: PathBuf,
}

/// The kernel that Debian's `linux-image-cloud-amd64` currently depends on.
pub fn kernel() -> Kernel {
    let depends = apt(|| {
        let mut c = Command::new("apt-cache");
        c.args([
            "depends",
            "--no-recommends",
            "--no-suggests",
            "linux-image-cloud-amd64",
        ]);
        c
    });
    let package = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .expect("a linux-image dependency")
        .trim()
        .to_string();
    let root = debian_package(&package);
    let release = package.trim_start_matches("linux-image-").to_string();
    Kernel {
        vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
        modules: root.join(format!("lib/modules/{release}")),
        release,
    }
}

/// `wanted` modules and their dependencies, dependencies first.
pub fn modules(kernel: &Kernel, wanted: &[&str]) -> Vec<(String, PathBuf)> {
    fn index(dir: &Path, files: &mut HashMap<String, PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                index(&p, files);
            } else if let Some(stem) = p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".ko"))
            {
                files.insert(stem.replace('-', "_"), p.clone());
            }
        }
    }
    fn visit(name: &str, files: &HashMap<String, PathBuf>, out: &mut Vec<(String, PathBuf)>) {
        if out.iter().any(|(n, _)| n == name) {
            return;
        }
        let Some(path) = files.get(name) else {
            return; // built into the kernel
        };
        let deps = run(Command::new("modinfo").args(["-F", "depends"]).arg(path));
        for d in deps.trim().split(',').filter(|d| !d.is_empty()) {
            visit(&d.replace('-', "_"), files, out);
        }
        out.push((name.to_string(), path.clone()));
    }
    let mut files = HashMap::new();
    index(&kernel.modules.join("kernel"), &mut files);
    let mut out = Vec::new();
    for w in wanted {
        visit(w, &files, &mut out);
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

/// Just enough of the cpio newc format for an initramfs.
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
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
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
                let p = path.clone();
                self.entry(&p, 0o040755, (0, 0), &[]);
            }
        }
    }
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        if let Some((parent, _)) = name.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }
    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}
