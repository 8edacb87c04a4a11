//! Built Keel test images, made once and shared by every test binary of the workspace.
//!
//! [`build_image`] runs `keel build` and reuses its output: images live under
//! `target/test-images/<name>-<fingerprint>/`, keyed by the `keel`, `keel-init`, `keel-update` and
//! `keel-install` binaries, `boards/`, `rootfs/`, the test key and the build options, and a file
//! lock keeps parallel tests (and test binaries) from building the same image twice.

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What to build. `Default` is the repository's default image with the boot marker
/// ([`crate::driver::BOOT_MARKER_UNIT`]) in place of its container demo; [`shipped_opts`] is
/// the image exactly as `keel build` makes it.
#[derive(Clone, Debug)]
pub struct BuildOpts {
    /// Names the cache entry (`target/test-images/<name>-<fingerprint>`).
    pub name: String,
    pub board: PathBuf,
    pub version: String,
    pub channel: Option<String>,
    pub source_date_epoch: Option<u64>,
    /// `--format` values; empty: the board's formats. The tests boot disk.raw through
    /// overlays, so the default is `raw` alone: a qcow2 beside each of the suite's ten-odd
    /// images (and in keel's reuse cache) was 250 MiB of disk apiece.
    pub formats: Vec<String>,
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
            formats: vec!["raw".into()],
            extra_args: extra_file_args(&crate::driver::boot_marker_files()),
        }
    }
}

/// The default image as shipped: the container demo (hello.service pulling busybox), no test
/// files.
pub fn shipped_opts() -> BuildOpts {
    BuildOpts {
        name: "shipped".into(),
        formats: Vec::new(),
        extra_args: Vec::new(),
        ..BuildOpts::default()
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

/// The repository root (every workspace member, this crate too, sits one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate inside the repository")
        .to_path_buf()
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/<test>`).
/// `target/<profile>`: a test runs from its `deps/` directory, a benchmark binary from the
/// profile directory itself.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("target/<profile>[/deps]");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>/deps").to_path_buf()
    } else {
        dir.to_path_buf()
    }
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

/// The `keel` binary: `$KEEL_BIN`, else the one in the running test's profile directory (where
/// cargo puts it when it tests the `keel` package or the whole workspace), built now if missing.
pub fn keel_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_BIN") {
        return PathBuf::from(p);
    }
    let p = profile_dir().join("keel");
    if !p.is_file() {
        let release = profile_dir().file_name().is_some_and(|n| n == "release");
        let mut c = cargo();
        c.args(["build", "-p", "keel", "--bin", "keel"]);
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

/// The static `keel-cloudinit` every image ships: `$KEEL_CLOUDINIT`, or where ci/build.sh puts
/// it, built now if missing (under the lock: do not call it while holding [`lock`]).
pub fn keel_cloudinit() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_CLOUDINIT") {
        return PathBuf::from(p);
    }
    static_bin("keel-cloudinit")
}

/// The static `keel-reboot-manager` every image ships: `$KEEL_REBOOT_MANAGER`, or where
/// ci/build.sh puts it, built now if missing (under the lock: do not call it while holding
/// [`lock`]).
pub fn keel_reboot_manager() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_REBOOT_MANAGER") {
        return PathBuf::from(p);
    }
    built_static(
        "release",
        "keel-reboot-manager",
        &["--release", "-p", "keel-reboot-manager"],
    )
}

/// The static `keel-fleet` every image ships: `$KEEL_FLEET`, or where ci/build.sh puts it,
/// built now if missing (under the lock: do not call it while holding [`lock`]).
pub fn keel_fleet() -> PathBuf {
    if let Some(p) = std::env::var_os("KEEL_FLEET") {
        return PathBuf::from(p);
    }
    built_static("release", "keel-fleet", &["--release", "-p", "keel-fleet"])
}

/// `name` (keel-init, keel-update, keel-install or keel-cloudinit) as ci/build.sh builds it;
/// all are built together.
fn static_bin(name: &str) -> PathBuf {
    built_static(
        "init",
        name,
        &[
            "--profile",
            "init",
            "-p",
            "keel-init",
            "-p",
            "keel-update",
            "-p",
            "keel-install",
            "-p",
            "keel-cloudconfig",
        ],
    )
}

/// `target/x86_64-unknown-linux-gnu/PROFILE/NAME`, built statically with `cargo build ARGS`
/// if missing.
fn built_static(profile: &str, name: &str, args: &[&str]) -> PathBuf {
    let p = target_dir()
        .join("x86_64-unknown-linux-gnu")
        .join(profile)
        .join(name);
    if !p.is_file() {
        let _lock = lock();
        if !p.is_file() {
            let st = cargo()
                .args(["build", "--target", "x86_64-unknown-linux-gnu"])
                .args(args)
                .env(
                    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                    "-C target-feature=+crt-static",
                )
                .env("CARGO_TARGET_DIR", target_dir())
                .status()
                .expect("cargo");
            assert!(st.success(), "cargo build {} failed", args.join(" "));
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
    hash_file(&mut h, &keel_cloudinit());
    hash_file(&mut h, &keel_reboot_manager());
    hash_file(&mut h, &keel_fleet());
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
    for f in &opts.formats {
        a.extend(["--format".into(), f.clone()]);
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
        .env("KEEL_CLOUDINIT", keel_cloudinit())
        .env("KEEL_REBOOT_MANAGER", keel_reboot_manager())
        .env("KEEL_FLEET", keel_fleet())
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

/// The default image (qemu-x86_64, version 1.0.0, test key, the boot marker), built once.
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
        // The board's raw, pxe and iso: the live and network boots use them.
        formats: Vec::new(),
        extra_args: [
            BuildOpts::default().extra_args,
            vec!["--kernel-arg".into(), "no_timer_check".into()],
        ]
        .concat(),
        ..BuildOpts::default()
    }
}

/// Path of the default image's disk.raw.
pub fn built_image() -> PathBuf {
    default_image().disk
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
    crate::driver::write_extra_files(&dir, files)
}

/// The e2e image at `version` (the default board with the boot marker and the test driver):
/// `e2e_opts("e2e-v1", "1.0.0")` is the image every update test starts from, shared through
/// the image cache.
pub fn e2e_opts(name: &str, version: &str) -> BuildOpts {
    BuildOpts {
        name: name.into(),
        version: version.into(),
        extra_args: extra_file_args(
            &[
                crate::driver::boot_marker_files(),
                crate::driver::driver_files(),
            ]
            .concat(),
        ),
        ..BuildOpts::default()
    }
}
