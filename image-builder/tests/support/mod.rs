//! Test support shared by every test that needs a built Keel image (this crate's and others',
//! e.g. QEMU boot tests: `#[path = "../../image-builder/tests/support/mod.rs"] mod support;`).
//!
//! [`built_image`] builds the default image once per test run and reuses it: images live under
//! `target/test-images/<name>-<fingerprint>/`, keyed by the `keel` and `keel-init` binaries,
//! `boards/`, `rootfs/`, the test key and the build options, and a file lock keeps parallel tests (and test
//! binaries) from building the same image twice. Only std is used, so any crate can include it.
#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What to build. `Default` is the repository's default image.
#[derive(Clone, Debug)]
pub struct BuildOpts {
    /// Names the cache entry (`target/test-images/<name>-<fingerprint>`).
    pub name: String,
    pub board: PathBuf,
    pub version: String,
    pub channel: Option<String>,
    pub source_date_epoch: Option<u64>,
    /// More `keel build` arguments (e.g. `--extra-bin`).
    pub extra_args: Vec<String>,
}

impl Default for BuildOpts {
    fn default() -> Self {
        BuildOpts {
            name: "default".into(),
            board: repo_root().join("boards/qemu-x86_64.yaml"),
            version: "1.0.0".into(),
            channel: None,
            source_date_epoch: None,
            extra_args: Vec::new(),
        }
    }
}

/// A built image and the key it was signed with.
#[derive(Clone, Debug)]
pub struct Image {
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub payload: PathBuf,
    pub manifest: PathBuf,
    /// Directory with keel-signing.key / keel-signing.pub.
    pub key_dir: PathBuf,
    pub pubkey: PathBuf,
}

/// The repository root (every workspace member sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate inside the repository")
        .to_path_buf()
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        let d = PathBuf::from(d);
        return if d.is_absolute() {
            d
        } else {
            repo_root().join(d)
        };
    }
    let p = profile_dir();
    p.parent().expect("target dir").to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(repo_root());
    c
}

/// The `keel` binary: `$KEEL_BIN`, this crate's own, or built now.
pub fn keel_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_keel") {
        return PathBuf::from(p);
    }
    let p = profile_dir().join("keel");
    if !p.is_file() {
        let release = profile_dir().file_name().is_some_and(|n| n == "release");
        let mut c = cargo();
        c.args(["build", "-p", "keel-builder", "--bin", "keel"]);
        if release {
            c.arg("--release");
        }
        assert!(c.status().expect("cargo").success(), "building keel failed");
    }
    p
}

/// The `keel-init` binary: `$KEEL_INIT`, or where ci/build.sh puts it, built now if missing
/// (under the lock: do not call it while holding [`lock`]).
pub fn keel_init() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_INIT") {
        return PathBuf::from(p);
    }
    static_bin("keel-init")
}

/// The static `keel-update` every image ships: `$KEEL_UPDATE`, or where ci/build.sh puts it,
/// built now if missing (under the lock: do not call it while holding [`lock`]).
pub fn keel_update() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_UPDATE") {
        return PathBuf::from(p);
    }
    static_bin("keel-update")
}

/// The static `keel-install` every image ships: `$KEEL_INSTALL`, or where ci/build.sh puts it,
/// built now if missing (under the lock: do not call it while holding [`lock`]).
pub fn keel_install() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_INSTALL") {
        return PathBuf::from(p);
    }
    static_bin("keel-install")
}

/// `name` (keel-init, keel-update or keel-install) as ci/build.sh builds it; all are built
/// together.
fn static_bin(name: &str) -> PathBuf {
    let p = target_dir()
        .join("x86_64-unknown-linux-gnu/init")
        .join(name);
    if !p.is_file() {
        let _lock = lock();
        if !p.is_file() {
            let st = cargo()
                .args([
                    "build",
                    "--profile",
                    "init",
                    "--target",
                    "x86_64-unknown-linux-gnu",
                    "-p",
                    "keel-init",
                    "-p",
                    "keel-update",
                    "-p",
                    "keel-install",
                ])
                .env(
                    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                    "-C target-feature=+crt-static",
                )
                .env("CARGO_TARGET_DIR", target_dir())
                .status()
                .expect("cargo");
            assert!(
                st.success(),
                "building keel-init, keel-update and keel-install failed"
            );
        }
    }
    p
}

pub fn images_dir() -> PathBuf {
    let d = target_dir().join("test-images");
    fs::create_dir_all(&d).expect("create target/test-images");
    d
}

/// Exclusive lock over target/test-images (held until dropped).
pub fn lock() -> File {
    let f = File::create(images_dir().join(".lock")).expect("lock file");
    f.lock().expect("lock target/test-images");
    f
}

/// Run `keel` with `args`.
pub fn keel(args: &[&str]) -> Output {
    Command::new(keel_bin())
        .args(args)
        .output()
        .expect("run keel")
}

/// The signing key every test image uses (made once). Takes the lock: do not call it while
/// holding [`lock`].
pub fn test_key_dir() -> PathBuf {
    let d = images_dir().join("test-key");
    if d.join("keel-signing.key").is_file() {
        return d;
    }
    let _l = lock();
    if !d.join("keel-signing.key").is_file() {
        let out = Command::new(keel_bin())
            .args(["keygen", "--out"])
            .arg(&d)
            .output()
            .expect("keel keygen");
        assert!(
            out.status.success(),
            "keel keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d
}

fn hash_file(h: &mut DefaultHasher, p: &Path) {
    h.write(p.to_string_lossy().as_bytes());
    h.write(&fs::read(p).unwrap_or_default());
}

fn hash_tree(h: &mut DefaultHasher, root: &Path) {
    let mut entries: Vec<PathBuf> = match fs::read_dir(root) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => return,
    };
    entries.sort();
    for p in entries {
        let m = fs::symlink_metadata(&p).expect("stat");
        if m.is_dir() {
            hash_tree(h, &p);
        } else if m.file_type().is_symlink() {
            h.write(p.to_string_lossy().as_bytes());
            h.write(fs::read_link(&p).unwrap().to_string_lossy().as_bytes());
        } else {
            use std::os::unix::fs::PermissionsExt;
            h.write_u32(m.permissions().mode() & 0o111);
            hash_file(h, &p);
        }
    }
}

fn fingerprint(opts: &BuildOpts) -> String {
    let mut h = DefaultHasher::new();
    hash_file(&mut h, &keel_bin());
    hash_file(&mut h, &keel_init());
    hash_file(&mut h, &keel_update());
    hash_file(&mut h, &keel_install());
    hash_file(&mut h, &test_key_dir().join("keel-signing.pub"));
    hash_tree(&mut h, &repo_root().join("boards"));
    hash_tree(&mut h, &repo_root().join("rootfs"));
    hash_file(&mut h, &opts.board);
    h.write(format!("{opts:?}").as_bytes());
    format!("{:016x}", h.finish())
}

/// The `keel build` arguments for `opts` into `out`.
pub fn build_args(opts: &BuildOpts, out: &Path) -> Vec<String> {
    let mut a = vec![
        "build".to_string(),
        "--quiet".into(),
        "--board".into(),
        opts.board.display().to_string(),
        "--key".into(),
        test_key_dir().display().to_string(),
        "--init".into(),
        keel_init().display().to_string(),
        "--update-bin".into(),
        keel_update().display().to_string(),
        "--install-bin".into(),
        keel_install().display().to_string(),
        "--version".into(),
        opts.version.clone(),
        "--out".into(),
        out.display().to_string(),
    ];
    if let Some(c) = &opts.channel {
        a.extend(["--channel".into(), c.clone()]);
    }
    if let Some(e) = opts.source_date_epoch {
        a.extend(["--source-date-epoch".into(), e.to_string()]);
    }
    a.extend(opts.extra_args.iter().cloned());
    a
}

/// Build (or reuse) the image for `opts`.
pub fn build_image(opts: &BuildOpts) -> Image {
    // Everything that may take the lock itself comes first.
    let key_dir = test_key_dir();
    let fp = fingerprint(opts);
    let dir = images_dir().join(format!("{}-{fp}", opts.name));
    let args = build_args(opts, &dir);
    let image = Image {
        disk: dir.join("disk.raw"),
        payload: dir.join("usr.img"),
        manifest: dir.join("manifest.json"),
        pubkey: key_dir.join("keel-signing.pub"),
        key_dir,
        dir: dir.clone(),
    };
    let _l = lock();
    if image.manifest.is_file() {
        return image;
    }
    // Older entries of the same name are stale: drop them (sparse, but large).
    if let Ok(rd) = fs::read_dir(images_dir()) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("{}-", opts.name)) && e.path() != dir {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let out = Command::new(keel_bin())
        .args(&args)
        .output()
        .expect("run keel build");
    assert!(
        out.status.success(),
        "keel {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// The default image (qemu-x86_64, version 1.0.0, test key), built once.
pub fn default_image() -> Image {
    build_image(&BuildOpts::default())
}

/// The metal board's image as the tests build and boot it (one cache entry for every test
/// binary): booted in software emulation on a busy host, where the kernel's check that the
/// timer interrupt arrives can fail and panic, so it skips that check as VM images do (the
/// qemu-x86_64 board has it in its command line).
pub fn metal_opts() -> BuildOpts {
    BuildOpts {
        name: "metal".into(),
        board: repo_root().join("boards/metal-x86_64.yaml"),
        extra_args: vec!["--kernel-arg".into(), "no_timer_check".into()],
        ..BuildOpts::default()
    }
}

/// Path of the default image's disk.raw.
pub fn built_image() -> PathBuf {
    default_image().disk
}

/// A writable sparse copy of `src` in `dir`.
pub fn sparse_copy(src: &Path, dir: &Path) -> PathBuf {
    let dst = dir.join(src.file_name().unwrap());
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(src)
        .arg(&dst)
        .status()
        .unwrap();
    assert!(st.success());
    dst
}

/// Copy `len` bytes at `offset` of `src` into a new file `dst`.
pub fn extract(src: &Path, offset: u64, len: u64, dst: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut i = File::open(src).unwrap();
    i.seek(SeekFrom::Start(offset)).unwrap();
    let mut o = File::create(dst).unwrap();
    let mut left = len;
    let mut buf = vec![0u8; 4 << 20];
    while left > 0 {
        let n = (buf.len() as u64).min(left) as usize;
        i.read_exact(&mut buf[..n]).unwrap();
        o.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// Flip one bit of the byte at `offset`.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

/// Run a command, returning (success, stdout + stderr).
pub fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// TEST IMAGES ONLY. The e2e test driver: a unit that, at every boot after multi-user.target,
/// runs the script on /dev/vdb (the first extra disk: a shell script padded with zeros) with its
/// output on the serial console. Serial console input does not reach the guest's shell, so
/// tests talk to the guest through scripts and console output.
pub const DRIVER: &str = "#!/bin/sh\n\
    # Keel e2e TEST IMAGE ONLY: runs the script on /dev/vdb as root at every boot.\n\
    [ \"$(head -c 2 /dev/vdb 2>/dev/null)\" = '#!' ] || exit 0\n\
    tr -d '\\000' < /dev/vdb > /run/keel-e2e.sh\n\
    exec /bin/sh /run/keel-e2e.sh\n";
pub const DRIVER_UNIT: &str = "[Unit]\n\
    Description=Keel e2e test driver (TEST IMAGE ONLY)\n\
    After=multi-user.target\n\n\
    [Service]\n\
    Type=simple\n\
    ExecStart=/usr/lib/keel-e2e/driver\n\
    StandardOutput=journal+console\n\
    StandardError=journal+console\n";

/// The driver and its unit, enabled as `systemctl enable` would (a symlink in
/// multi-user.target.wants): (file name, destination in the image, text or `symlink:TARGET`).
pub fn driver_files() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("driver", "/usr/lib/keel-e2e/driver", DRIVER),
        (
            "keel-e2e-driver.service",
            "/usr/lib/systemd/system/keel-e2e-driver.service",
            DRIVER_UNIT,
        ),
        (
            "keel-e2e-driver.service.wants",
            "/usr/lib/systemd/system/multi-user.target.wants/keel-e2e-driver.service",
            "symlink:../keel-e2e-driver.service",
        ),
    ]
}

/// `files` written into the image cache (in a directory named after their content, since the
/// image cache key covers the build arguments, not the files' bytes), as `--extra-file`
/// arguments for `keel build`.
pub fn extra_file_args(files: &[(&str, &str, &str)]) -> Vec<String> {
    let mut h = DefaultHasher::new();
    for (name, dest, text) in files {
        for part in [name, dest, text] {
            h.write(part.as_bytes());
        }
    }
    let dir = images_dir().join(format!("e2e-files-{:016x}", h.finish()));
    // Builds read these files while holding the lock: never rewrite one under them.
    let _l = lock();
    fs::create_dir_all(&dir).unwrap();
    let mut args = Vec::new();
    for (name, dest, text) in files {
        let src = dir.join(name);
        if let Some(target) = text.strip_prefix("symlink:") {
            // Tests running in parallel make the same files: the first link made stands.
            match std::os::unix::fs::symlink(target, &src) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    panic!("symlink {}: {e}", src.display())
                }
                _ => {}
            }
        } else {
            fs::write(&src, text).unwrap();
            let mode = if text.starts_with("#!") { 0o755 } else { 0o644 };
            fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        }
        args.push("--extra-file".to_string());
        args.push(format!("{}={dest}", src.display()));
    }
    args
}
