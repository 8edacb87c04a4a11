//! `keel install` of the real default image onto loop devices (root and loop devices needed),
//! from a file and from a real HTTP server (`python3 -m http.server` on loopback). What lands
//! on the disk is read back by independent tools: `sgdisk -v` and `sfdisk --json` for the GPT,
//! `debugfs` for the cloud-config on OEM, `e2fsck` for the filesystems, `cmp`-style byte
//! comparison of USR-A against the image. The refusals check the message names the check and
//! that the target is left without a partition table (or untouched where nothing was written).

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use keel_cli_support::exit;

const MIB: u64 = 1 << 20;
const CLOUD_CONFIG: &str = "#cloud-config\nhostname: keel-installed\nusers:\n  - name: core\n    ssh_authorized_keys:\n      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeelTestKeyOnly core@test\n";

/// A loop device with partition scanning over a sparse file; detached on drop.
struct Loop {
    dev: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn sparse(bytes: u64) -> Loop {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk");
        fs::File::create(&file).unwrap().set_len(bytes).unwrap();
        Loop::over(dir, &file)
    }

    /// A loop device over `file` (which lives in `dir`).
    fn over(dir: tempfile::TempDir, file: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["-P", "-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup -P -f --show {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Loop { dev, _dir: dir }
    }

    fn part(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev.display()))
    }

    fn size(&self) -> u64 {
        fs::File::open(&self.dev)
            .unwrap()
            .seek(SeekFrom::End(0))
            .unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn install(args: &[&str]) -> Output {
    let mut a = vec!["install"];
    a.extend_from_slice(args);
    keel_testkit::keel(&a)
}

/// `keel install --image IMAGE --device DEV --key KEY`, which must exit with `code`; its stderr.
fn refused(image: &str, dev: &str, key: &str, code: i32) -> String {
    let out = install(&["--image", image, "--device", dev, "--key", key]);
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut v = vec![0u8; len as usize];
    f.read_exact(&mut v).unwrap();
    v
}

fn sha256_range(path: &Path, offset: u64, len: u64) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dd if='{}' bs=1M iflag=skip_bytes,count_bytes skip={offset} count={len} status=none | sha256sum",
            path.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `sfdisk --json`: the partition table as an independent tool reads it.
fn sfdisk(dev: &Path) -> serde_json::Value {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(dev)
        .output()
        .unwrap();
    assert!(out.status.success(), "sfdisk --json: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (number, start sector, size in sectors) of each partition, numbers from the node names.
fn partitions(table: &serde_json::Value) -> Vec<(u32, u64, u64)> {
    table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            let digits = node.len() - node.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let n = node[node.len() - digits..].parse().unwrap();
            (n, p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap())
        })
        .collect()
}

fn pubkey() -> String {
    keel_testkit::default_image().pubkey.display().to_string()
}

/// Everything a successful install must leave behind, checked by tools other than Keel's.
fn check_installed(target: &Loop, image: &Path, with_cloud_config: bool) {
    let (ok, v) = keel_testkit::run(Command::new("sgdisk").arg("-v").arg(&target.dev));
    assert!(
        ok && v.contains("No problems found"),
        "sgdisk -v {}:\n{v}",
        target.dev.display()
    );
    let disk_sectors = target.size() / 512;
    // The primary header's AlternateLBA (offset 32) names the backup header: the last sector.
    let header = read_range(&target.dev, 512, 512);
    assert_eq!(&header[..8], b"EFI PART");
    let alternate = u64::from_le_bytes(header[32..40].try_into().unwrap());
    assert_eq!(
        alternate,
        disk_sectors - 1,
        "backup header not at the disk's end"
    );
    let backup = read_range(&target.dev, (disk_sectors - 1) * 512, 512);
    assert_eq!(
        &backup[..8],
        b"EFI PART",
        "no backup header in the last sector"
    );

    let table = sfdisk(&target.dev);
    let parts = partitions(&table);
    let numbers: Vec<u32> = parts.iter().map(|p| p.0).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 6, 9], "{table}");
    let image_sectors = fs::metadata(image).unwrap().len() / 512;
    let image_table = sfdisk(image);
    let image_parts = partitions(&image_table);
    let root = parts.iter().find(|p| p.0 == 9).unwrap();
    let image_root = image_parts.iter().find(|p| p.0 == 9).unwrap();
    assert_eq!(root.1, image_root.1, "ROOT moved");
    assert!(
        root.1 + root.2 > image_sectors && root.1 + root.2 + 4096 + 34 > disk_sectors,
        "ROOT not grown to the disk's end: {root:?}, disk {disk_sectors} sectors"
    );
    for p in parts.iter().filter(|p| p.0 != 9) {
        assert!(
            image_parts.contains(p),
            "partition {p:?} differs from the image"
        );
    }
    // USR-A is the image's, byte for byte.
    let usr_a = parts.iter().find(|p| p.0 == 3).unwrap();
    assert_eq!(
        sha256_range(&target.dev, usr_a.1 * 512, usr_a.2 * 512),
        sha256_range(image, usr_a.1 * 512, usr_a.2 * 512),
        "USR-A differs from the image's"
    );
    for n in [6, 9] {
        let (ok, out) = keel_testkit::run(Command::new("e2fsck").arg("-fn").arg(target.part(n)));
        assert!(ok, "e2fsck -fn {}:\n{out}", target.part(n).display());
    }
    let (ok, cat) = keel_testkit::run(
        Command::new("debugfs")
            .arg("-R")
            .arg("cat /cloud-config.yml")
            .arg(target.part(6)),
    );
    if with_cloud_config {
        assert!(ok && cat.contains(CLOUD_CONFIG), "debugfs cat:\n{cat}");
        let (_, stat) = keel_testkit::run(
            Command::new("debugfs")
                .arg("-R")
                .arg("stat /cloud-config.yml")
                .arg(target.part(6)),
        );
        assert!(stat.contains("Mode:  0600"), "cloud-config mode:\n{stat}");
    } else {
        assert!(
            !cat.contains("#cloud-config"),
            "unexpected cloud-config:\n{cat}"
        );
    }
}

#[test]
fn installs_from_a_file_onto_a_larger_disk() {
    let img = keel_testkit::default_image();
    let size = fs::metadata(&img.disk).unwrap().len();
    let target = Loop::sparse(size + 512 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let cc = dir.path().join("user.yml");
    fs::write(&cc, CLOUD_CONFIG).unwrap();
    let out = install(&[
        "--image",
        img.disk.to_str().unwrap(),
        "--device",
        target.dev.to_str().unwrap(),
        "--cloud-config",
        cc.to_str().unwrap(),
        "--key",
        &pubkey(),
        "--json",
    ]);
    assert!(out.status.success(), "keel install: {}", text(&out));
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(r["image_bytes"], size);
    assert_eq!(r["layout"]["relocated"], true);
    assert_eq!(r["usr_a"]["version"], "1.0.0");
    assert_eq!(r["cloud_config"], "/oem/cloud-config.yml");
    check_installed(&target, &img.disk, true);
}

/// `python3 -m http.server` serving `dir` on a free loopback port; killed on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn serve(dir: &Path) -> HttpServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = keel_testkit::spawn_tied(
            Command::new("python3")
                .args(["-m", "http.server", "--bind", "127.0.0.1"])
                .arg(port.to_string())
                .arg("--directory")
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("python3 -m http.server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        HttpServer { child, port }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn installs_from_an_http_url() {
    let img = keel_testkit::default_image();
    let size = fs::metadata(&img.disk).unwrap().len();
    let server = HttpServer::serve(&img.dir);
    let target = Loop::sparse(size + 256 * MIB);
    let out = install(&[
        "--image",
        &server.url("disk.raw"),
        "--device",
        target.dev.to_str().unwrap(),
        "--key",
        &pubkey(),
    ]);
    assert!(
        out.status.success(),
        "keel install over http: {}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("installed Keel 1.0.0"), "{}", text(&out));
    check_installed(&target, &img.disk, false);

    // A URL whose signature is missing (404) installs nothing.
    let blank = Loop::sparse(size + 256 * MIB);
    let out = install(&[
        "--image",
        &server.url("usr.img"),
        "--device",
        blank.dev.to_str().unwrap(),
        "--key",
        &pubkey(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit::VERIFICATION),
        "{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("usr.img.sig") && err.contains("404"), "{err}");
    assert!(read_range(&blank.dev, 0, MIB).iter().all(|&b| b == 0));
}

/// The genuine image laid onto a disk of `size` bytes (what a previous install leaves).
fn previously_installed(img: &Path, size: u64) -> Loop {
    let dir = tempfile::tempdir().unwrap();
    let file = keel_testkit::sparse_copy(img, dir.path());
    fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(size)
        .unwrap();
    let l = Loop::over(dir, &file);
    // This host's kernel has no GPT parser (CONFIG_EFI_PARTITION unset): add them from user space.
    if !l.part(6).exists() {
        let (ok, out) = keel_testkit::run(Command::new("partx").arg("-a").arg(&l.dev));
        assert!(
            ok && l.part(6).exists(),
            "partx -a {}: {out}",
            l.dev.display()
        );
    }
    l
}

#[test]
fn a_tampered_image_leaves_no_bootable_disk() {
    let img = keel_testkit::default_image();
    let size = fs::metadata(&img.disk).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    let bad = keel_testkit::sparse_copy(&img.disk, dir.path());
    fs::copy(
        img.dir.join("disk.raw.sig"),
        dir.path().join("disk.raw.sig"),
    )
    .unwrap();
    // One bit inside USR-A's filesystem.
    let usr_a = partitions(&sfdisk(&img.disk))
        .into_iter()
        .find(|p| p.0 == 3)
        .unwrap();
    keel_testkit::flip_byte(&bad, usr_a.1 * 512 + 40960);
    let target = previously_installed(&img.disk, size + 64 * MIB);
    assert_eq!(
        partitions(&sfdisk(&target.dev)).len(),
        6,
        "no table to start from"
    );

    let out = install(&[
        "--image",
        bad.to_str().unwrap(),
        "--device",
        target.dev.to_str().unwrap(),
        "--key",
        &pubkey(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit::VERIFICATION),
        "{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SHA-256")
            && err.contains("does not match its signature")
            && err.contains("wiped"),
        "{err}"
    );
    // No tool finds a partition table: no MBR, no primary, no backup.
    let st = Command::new("sfdisk")
        .arg("--json")
        .arg(&target.dev)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&st.stdout);
    assert!(
        !listed.contains("\"partitions\""),
        "a table survived: {listed}"
    );
    let (_, v) = keel_testkit::run(Command::new("sgdisk").arg("-v").arg(&target.dev));
    assert!(
        v.contains("Creating new GPT entries in memory"),
        "sgdisk still finds a GPT:\n{v}"
    );
    assert!(read_range(&target.dev, 0, MIB).iter().all(|&b| b == 0));
    assert!(read_range(&target.dev, size - MIB, MIB)
        .iter()
        .all(|&b| b == 0));
    assert!(read_range(&target.dev, target.size() - MIB, MIB)
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn refuses_missing_or_unsigned_signatures_and_wrong_keys() {
    let img = keel_testkit::default_image();
    let size = fs::metadata(&img.disk).unwrap().len();
    let target = Loop::sparse(size + 64 * MIB);
    let dev = target.dev.to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let lone = dir.path().join("lone.raw");
    std::os::unix::fs::symlink(&img.disk, &lone).unwrap();

    // No .sig beside the image.
    let err = refused(lone.to_str().unwrap(), &dev, &pubkey(), exit::VERIFICATION);
    assert!(
        err.contains("lone.raw.sig") && err.contains("signature"),
        "{err}"
    );

    // A .sig that is no signature (a checksum list).
    fs::write(dir.path().join("lone.raw.sig"), "0123abcd  disk.raw\n").unwrap();
    let err = refused(lone.to_str().unwrap(), &dev, &pubkey(), exit::VERIFICATION);
    assert!(err.contains("not a Keel image signature"), "{err}");

    // A signature whose size was edited no longer verifies.
    let mut sig: serde_json::Value =
        serde_json::from_slice(&fs::read(img.dir.join("disk.raw.sig")).unwrap()).unwrap();
    sig["size"] = (size + 512).into();
    fs::write(dir.path().join("lone.raw.sig"), sig.to_string()).unwrap();
    let out = install(&[
        "--image",
        lone.to_str().unwrap(),
        "--device",
        &dev,
        "--key",
        &pubkey(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit::VERIFICATION),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signature does not verify"),
        "{}",
        text(&out)
    );

    // The genuine signature, but another key is trusted.
    let other = dir.path().join("other-key");
    let k = keel_testkit::keel(&["keygen", "--out", other.to_str().unwrap()]);
    assert!(k.status.success(), "{}", text(&k));
    let err = refused(
        img.disk.to_str().unwrap(),
        &dev,
        other.join("keel-signing.pub").to_str().unwrap(),
        exit::VERIFICATION,
    );
    assert!(err.contains("not among the trusted keys"), "{err}");

    // A truncated image with the genuine signature: refused before anything is written.
    let short = dir.path().join("short.raw");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&img.disk)
        .arg(&short)
        .status()
        .unwrap();
    assert!(st.success());
    fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap()
        .set_len(size - MIB)
        .unwrap();
    fs::copy(
        img.dir.join("disk.raw.sig"),
        dir.path().join("short.raw.sig"),
    )
    .unwrap();
    let err = refused(short.to_str().unwrap(), &dev, &pubkey(), exit::VERIFICATION);
    assert!(err.contains("its signature covers"), "{err}");

    // A missing image.
    let err = refused("/nonexistent/disk.raw", &dev, &pubkey(), exit::USAGE);
    assert!(
        err.contains("/nonexistent/disk.raw") && err.contains("No such file"),
        "{err}"
    );

    // Nothing was written by any of them.
    assert!(read_range(&target.dev, 0, MIB).iter().all(|&b| b == 0));
}

#[test]
fn refuses_busy_small_or_partial_devices() {
    let img = keel_testkit::default_image();
    let size = fs::metadata(&img.disk).unwrap().len();
    let key = pubkey();
    let image = img.disk.to_str().unwrap();

    // Too small.
    let small = Loop::sparse(size - 64 * MIB);
    let out = install(&[
        "--image",
        image,
        "--device",
        small.dev.to_str().unwrap(),
        "--key",
        &key,
    ]);
    assert_eq!(out.status.code(), Some(exit::REFUSED), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the image needs"),
        "{}",
        text(&out)
    );

    // A partition rather than a disk, and a mounted partition of a disk.
    let used = previously_installed(&img.disk, size);
    let out = install(&[
        "--image",
        image,
        "--device",
        used.part(6).to_str().unwrap(),
        "--key",
        &key,
    ]);
    assert_eq!(out.status.code(), Some(exit::REFUSED), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is a partition"),
        "{}",
        text(&out)
    );
    let mnt = tempfile::tempdir().unwrap();
    let (ok, m) = keel_testkit::run(
        Command::new("mount")
            .arg("-o")
            .arg("ro")
            .arg(used.part(6))
            .arg(mnt.path()),
    );
    assert!(ok, "mount: {m}");
    let out = install(&[
        "--image",
        image,
        "--device",
        used.dev.to_str().unwrap(),
        "--key",
        &key,
    ]);
    let _ = Command::new("umount").arg(mnt.path()).status();
    assert_eq!(out.status.code(), Some(exit::REFUSED), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} is mounted at {}",
            used.part(6).display(),
            mnt.path().display()
        )),
        "{err}"
    );
    // The mounted disk was not touched.
    let (ok, v) = keel_testkit::run(Command::new("sgdisk").arg("-v").arg(&used.dev));
    assert!(ok && v.contains("No problems found"), "{v}");

    // A bad cloud-config is refused before anything is written.
    let blank = Loop::sparse(size);
    let dir = tempfile::tempdir().unwrap();
    let cc = dir.path().join("user.yml");
    fs::write(&cc, "hostname: no-header\n").unwrap();
    let out = install(&[
        "--image",
        image,
        "--device",
        blank.dev.to_str().unwrap(),
        "--key",
        &key,
        "--cloud-config",
        cc.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(exit::USAGE), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("user.yml") && err.contains("#cloud-config"),
        "{err}"
    );
    assert!(read_range(&blank.dev, 0, MIB).iter().all(|&b| b == 0));
}

/// A swap area on the disk (here the whole loop device, enabled only for the length of one
/// install call) makes it a disk in use.
#[test]
fn refuses_a_disk_used_as_swap() {
    struct SwapOff(PathBuf);
    impl Drop for SwapOff {
        fn drop(&mut self) {
            let _ = Command::new("swapoff").arg(&self.0).status();
        }
    }
    let img = keel_testkit::default_image();
    let size = fs::metadata(&img.disk).unwrap().len();
    let disk = Loop::sparse(size);
    let (ok, o) = keel_testkit::run(Command::new("mkswap").arg(&disk.dev));
    assert!(ok, "mkswap: {o}");
    let (ok, o) = keel_testkit::run(Command::new("swapon").args(["-p", "0"]).arg(&disk.dev));
    assert!(ok, "swapon: {o}");
    let swap = SwapOff(disk.dev.clone());
    let err = refused(
        img.disk.to_str().unwrap(),
        disk.dev.to_str().unwrap(),
        &pubkey(),
        exit::REFUSED,
    );
    drop(swap);
    assert!(err.contains("is in use as swap"), "{err}");
    // Untouched: the swap signature is still where mkswap put it (the end of the first page).
    assert_eq!(&read_range(&disk.dev, 4096 - 10, 10), b"SWAPSPACE2");
}

/// A device that does not exist, or a file that is no block device, is bad input (a usage error) and
/// named; nothing is written.
#[test]
fn refuses_a_missing_or_non_block_device() {
    let img = keel_testkit::default_image();
    let image = img.disk.to_str().unwrap();
    let err = refused(image, "/dev/keel-no-such-disk", &pubkey(), exit::USAGE);
    assert!(
        err.contains("--device /dev/keel-no-such-disk: No such file"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-disk");
    fs::write(&file, b"").unwrap();
    let err = refused(image, file.to_str().unwrap(), &pubkey(), exit::USAGE);
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("not a block device"),
        "{err}"
    );
    assert_eq!(fs::metadata(&file).unwrap().len(), 0);
}
