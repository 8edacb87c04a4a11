//! Debian packages for test guests, fetched with apt-get the same way on a developer machine and
//! in CI (`apt-get download`, unpacked with `dpkg-deb -x`) and cached in `$KEEL_TEST_CACHE`
//! (default `~/.cache/keel-test`, or `/var/tmp/keel-test-cache` without HOME). A missing tool or
//! package fails the test with a message saying what to install.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::files::stdout_of;

/// The cache directory, created if missing.
pub fn cache_dir() -> PathBuf {
    let dir = match std::env::var_os("KEEL_TEST_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".cache/keel-test"),
            _ => PathBuf::from("/var/tmp/keel-test-cache"),
        },
    };
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create cache dir {}: {e}", dir.display()));
    dir
}

/// Runs an apt command; when it fails (stale or missing package lists), runs
/// `apt-get update` once and tries again.
fn apt(make: impl Fn() -> Command) -> String {
    match stdout_of(&mut make()) {
        Ok(out) => out,
        Err(first) => {
            eprintln!("{first}; refreshing package lists with apt-get update");
            stdout_of(Command::new("apt-get").args(["update", "-qq"]))
                .unwrap_or_else(|e| panic!("apt-get update: {e}"));
            stdout_of(&mut make()).unwrap_or_else(|e| {
                panic!(
                    "{e}\n(these tests fetch Debian packages with apt-get; see testkit/README.md)"
                )
            })
        }
    }
}

/// Exclusive lock on `path` (created if missing), across threads and test processes; released
/// when dropped.
fn lock(path: &Path) -> File {
    let file = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("lock {}: {e}", path.display()));
    file
}

/// Downloads a Debian package (`apt-get download`) and unpacks it (`dpkg-deb -x`) into the
/// cache, once; returns the unpacked root.
pub fn package(name: &str) -> PathBuf {
    let debs = cache_dir().join("deb");
    fs::create_dir_all(&debs).unwrap();
    let root = debs.join(name);
    let done = debs.join(format!("{name}.complete"));
    let _lock = lock(&debs.join(format!("{name}.lock")));
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
        .unwrap_or_else(|| panic!("apt-get download {name} produced no .deb"));
    let unpacked = work.path().join("root");
    stdout_of(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))
        .unwrap_or_else(|e| panic!("{e}"));
    let _ = fs::remove_dir_all(&root);
    fs::rename(&unpacked, &root).unwrap();
    File::create(&done).unwrap();
    root
}

/// Debian's cloud kernel, unpacked from the package that `linux-image-cloud-amd64` currently
/// depends on.
pub struct Kernel {
    /// `uname -r` of the kernel, e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
}

/// The test kernel (see [`Kernel`]), fetched once.
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
    let package_name = depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .unwrap_or_else(|| panic!("no linux-image dependency in:\n{depends}"))
        .trim()
        .to_string();
    let root = package(&package_name);
    let release = package_name.trim_start_matches("linux-image-").to_string();
    let kernel = Kernel {
        vmlinuz: root.join(format!("boot/vmlinuz-{release}")),
        modules: root.join(format!("lib/modules/{release}")),
        release,
    };
    assert!(
        kernel.vmlinuz.is_file(),
        "{} missing",
        kernel.vmlinuz.display()
    );
    kernel
}
