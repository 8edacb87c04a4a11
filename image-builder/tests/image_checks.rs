//! The default image checked with independent tools: sgdisk, sfdisk, fsck.vfat, e2fsck,
//! fsck.erofs, veritysetup, GNU cpio, objdump (and goblin for the UKI's sections).

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_testkit::*;
use serde_json::Value;

fn inspect_json(path: &Path, pubkey: &Path) -> Value {
    let out = keel(&[
        "inspect",
        "--json",
        "--pubkey",
        pubkey.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn partition(v: &Value, label: &str) -> (u64, u64) {
    let p = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == label)
        .unwrap_or_else(|| panic!("no partition {label}"));
    (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap())
}

fn slot<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

/// USR-A's filesystem unpacked by fsck.erofs (once per image, kept beside its directory:
/// inside it, other test binaries would see a file the build never wrote).
fn usr_tree(img: &Image) -> PathBuf {
    let beside = |suffix: &str| PathBuf::from(format!("{}.{suffix}", img.dir.display()));
    let dest = beside("check-usr");
    let _l = lock();
    if dest.is_dir() {
        return dest;
    }
    let v = inspect_json(&img.disk, &img.pubkey);
    let (start, _) = partition(&v, "USR-A");
    let data = slot(&v, "USR-A")["metadata"]["verity"]["data_size"]
        .as_u64()
        .unwrap();
    let fs = beside("check-usr.erofs");
    extract(&img.disk, start, data, &fs);
    let tmp = beside("check-usr.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let (ok, text) = run(Command::new("fsck.erofs")
        .arg(format!("--extract={}", tmp.display()))
        .arg(&fs));
    assert!(ok, "fsck.erofs --extract: {text}");
    std::fs::rename(&tmp, &dest).unwrap();
    std::fs::remove_file(&fs).unwrap();
    dest
}

fn manifest(img: &Image) -> Value {
    serde_json::from_slice(&std::fs::read(&img.manifest).unwrap()).unwrap()
}

#[test]
fn sgdisk_finds_no_problems() {
    let img = default_image();
    let (ok, text) = run(Command::new("sgdisk").arg("-v").arg(&img.disk));
    assert!(ok && text.contains("No problems found"), "{text}");
}

#[test]
fn sfdisk_sees_labels_types_guids_and_slot_attributes() {
    let img = default_image();
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(&img.disk)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["partitiontable"];
    assert_eq!(t["label"], "gpt");
    assert_eq!(t["id"], "00000000-0000-0000-0000-000000000001");
    let parts = t["partitions"].as_array().unwrap();
    let get = |name: &str| {
        parts
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {v}"))
    };
    let want = [
        ("EFI-SYSTEM", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "1"),
        ("BIOS-BOOT", "21686148-6449-6E6F-744E-656564454649", "2"),
        ("USR-A", "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6", "3"),
        ("USR-B", "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6", "4"),
        ("OEM", "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "6"),
        ("ROOT", "3884DD41-8582-4404-B9A8-E9B84F2DF50E", "9"),
    ];
    assert_eq!(parts.len(), want.len());
    for (name, ty, num) in want {
        let p = get(name);
        assert_eq!(p["type"], ty, "{name}");
        assert!(
            p["node"].as_str().unwrap().ends_with(num),
            "{name} is not partition {num}: {p}"
        );
        assert_eq!(
            p["start"].as_u64().unwrap() % 4096,
            0,
            "{name} not 2 MiB aligned"
        );
    }
    assert_eq!(get("USR-A")["uuid"], "7130C94A-213A-4E5A-8E26-6CCE9662F132");
    assert_eq!(get("USR-B")["uuid"], "E03DD35C-7C2D-4A47-B3FE-27F15780A57C");
    assert_eq!(get("USR-A")["attrs"], "GUID:48,56");
    assert!(
        get("USR-B").get("attrs").is_none(),
        "USR-B has attributes: {}",
        get("USR-B")
    );
}

#[test]
fn esp_passes_fsck_vfat_and_holds_a_uki_with_the_kernel_initramfs_and_cmdline() {
    let img = default_image();
    let v = inspect_json(&img.disk, &img.pubkey);
    let (start, size) = partition(&v, "EFI-SYSTEM");
    let d = tempfile::tempdir().unwrap();
    let esp = d.path().join("esp.img");
    extract(&img.disk, start, size, &esp);
    let (ok, text) = run(Command::new("fsck.vfat").arg("-n").arg(&esp));
    assert!(ok, "fsck.vfat: {text}");
    let uki = d.path().join("BOOTX64.EFI");
    let (ok, text) = run(Command::new("mcopy")
        .arg("-i")
        .arg(&esp)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(&uki));
    assert!(ok, "mcopy: {text}");

    let bytes = std::fs::read(&uki).unwrap();
    let pe = goblin::pe::PE::parse(&bytes).unwrap();
    let section = |name: &str| -> &[u8] {
        let s = pe
            .sections
            .iter()
            .find(|s| s.name().unwrap() == name)
            .unwrap_or_else(|| panic!("no {name}"));
        let len = s.virtual_size.min(s.size_of_raw_data) as usize;
        &bytes[s.pointer_to_raw_data as usize..s.pointer_to_raw_data as usize + len]
    };
    let m = manifest(&img);
    assert_eq!(
        section(".cmdline"),
        m["kernel"]["cmdline"].as_str().unwrap().as_bytes()
    );
    assert!(std::str::from_utf8(section(".cmdline"))
        .unwrap()
        .contains("console=ttyS0,115200n8"));
    assert!(std::str::from_utf8(section(".osrel"))
        .unwrap()
        .starts_with("NAME=Keel\n"));
    let usr = usr_tree(&img);
    let rel = m["kernel"]["release"].as_str().unwrap();
    let kdir = usr.join("lib/modules").join(rel);
    assert_eq!(
        section(".linux"),
        &std::fs::read(kdir.join("vmlinuz")).unwrap()[..],
        ".linux is not /usr's kernel"
    );
    assert_eq!(
        section(".initrd"),
        &std::fs::read(kdir.join("keel-initramfs.img")).unwrap()[..],
        ".initrd is not /usr's initramfs"
    );

    let (ok, text) = run(Command::new("objdump").arg("-h").arg(&uki));
    assert!(ok, "{text}");
    for n in [".text", ".sbat", ".osrel", ".cmdline", ".linux", ".initrd"] {
        assert!(text.contains(n), "objdump does not list {n}:\n{text}");
    }
}

#[test]
fn root_and_oem_pass_e2fsck_carry_their_labels_and_root_holds_var() {
    let img = default_image();
    let v = inspect_json(&img.disk, &img.pubkey);
    let d = tempfile::tempdir().unwrap();
    for label in ["ROOT", "OEM"] {
        let (start, size) = partition(&v, label);
        let f = d.path().join(label);
        extract(&img.disk, start, size, &f);
        let (ok, text) = run(Command::new("e2fsck").arg("-fn").arg(&f));
        assert!(ok, "e2fsck {label}: {text}");
        let (ok, text) = run(Command::new("e2label").arg(&f));
        assert!(ok && text.trim() == label, "e2label {label}: {text}");
    }
    // ROOT already holds the factory /var and keel-init's marker: a first boot copies nothing.
    let root = d.path().join("ROOT");
    let debugfs = |request: &str| run(Command::new("debugfs").args(["-R", request]).arg(&root));
    let (ok, listing) = debugfs("ls -p /.keel");
    assert!(ok && listing.contains("/var-populated/"), "{listing}");
    let (ok, listing) = debugfs("ls -p /var/lib");
    assert!(ok && listing.contains("/systemd/"), "{listing}");
    // Every time in it is the build's (reproducible), the change times too.
    let (ok, stat) = debugfs("stat /var/lib/systemd");
    assert!(ok, "{stat}");
    let times: Vec<&str> = stat
        .lines()
        .filter(|l| l.trim_start().starts_with("ctime:") || l.trim_start().starts_with("mtime:"))
        .map(|l| l.split("--").next().unwrap_or("").trim())
        .collect();
    assert_eq!(times.len(), 2, "{stat}");
    assert!(
        times
            .iter()
            .all(|t| t[t.find(':').unwrap()..] == times[0][times[0].find(':').unwrap()..]),
        "change time differs from the modification time: {stat}"
    );
}

#[test]
fn usr_a_passes_fsck_erofs_and_veritysetup() {
    let img = default_image();
    let v = inspect_json(&img.disk, &img.pubkey);
    let (start, size) = partition(&v, "USR-A");
    let verity = &slot(&v, "USR-A")["metadata"]["verity"];
    let d = tempfile::tempdir().unwrap();
    let part = d.path().join("usr-a");
    extract(&img.disk, start, size, &part);

    let fs = d.path().join("fs");
    extract(&part, 0, verity["data_size"].as_u64().unwrap(), &fs);
    let (ok, text) = run(Command::new("fsck.erofs").arg(&fs));
    assert!(ok, "fsck.erofs: {text}");

    let (ok, text) = run(Command::new("veritysetup")
        .arg("verify")
        .arg(format!("--hash-offset={}", verity["hash_offset"]))
        .arg(&part)
        .arg(&part)
        .arg(verity["root_hash"].as_str().unwrap()));
    assert!(ok, "veritysetup verify: {text}");
    // The same check fails with another root hash: veritysetup really compared.
    let (ok, _) = run(Command::new("veritysetup")
        .arg("verify")
        .arg(format!("--hash-offset={}", verity["hash_offset"]))
        .arg(&part)
        .arg(&part)
        .arg("00".repeat(32)));
    assert!(!ok);
}

#[test]
fn usr_tree_has_the_keel_layout() {
    let img = default_image();
    let usr = usr_tree(&img);
    let m = manifest(&img);
    let rel = m["kernel"]["release"].as_str().unwrap();
    assert!(usr.join(format!("lib/modules/{rel}/vmlinuz")).is_file());
    assert!(usr.join(format!("lib/modules/{rel}/modules.dep")).is_file());
    assert_eq!(
        std::fs::metadata(usr.join("share/keel/etc/machine-id"))
            .unwrap()
            .len(),
        0
    );
    assert!(usr.join("share/keel/etc/passwd").is_file());
    // The dpkg database lives in the slot; the factory /var links to it.
    assert!(usr.join("share/keel/dpkg/status").is_file());
    assert_eq!(
        std::fs::read_link(usr.join("share/keel/var/lib/dpkg")).unwrap(),
        Path::new("/usr/share/keel/dpkg")
    );
    let release = std::fs::read_to_string(usr.join("share/keel/release")).unwrap();
    assert_eq!(
        release,
        "KEEL_VERSION=1.0.0\nKEEL_CHANNEL=stable\nKEEL_BOARD=qemu-x86_64\nKEEL_ARCH=x86_64\n"
    );
    let osrel = std::fs::read_to_string(usr.join("lib/os-release")).unwrap();
    assert!(
        osrel.starts_with("NAME=Keel\n") && osrel.contains("VERSION_ID=1.0.0\n"),
        "{osrel}"
    );
    let unit = std::fs::read_to_string(usr.join("lib/systemd/system/hello.service")).unwrap();
    assert!(unit.contains("StandardOutput=journal+console") && unit.contains("Hello World"));
    assert!(
        unit.contains("ExecStartPre=/usr/bin/docker pull busybox")
            && unit.contains("/usr/bin/docker run --rm --name busybox1 busybox"),
        "{unit}"
    );
    // The container host: sshd enabled with no host keys shipped, Docker on demand.
    let etc = usr.join("share/keel/etc");
    assert!(etc.join("ssh/sshd_config").is_file());
    let shipped_keys: Vec<_> = std::fs::read_dir(etc.join("ssh"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    assert!(shipped_keys.is_empty(), "{shipped_keys:?}");
    let wants = |target: &str, unit: &str| {
        etc.join(format!("systemd/system/{target}.wants/{unit}"))
            .symlink_metadata()
            .is_ok()
    };
    assert!(wants("multi-user.target", "ssh.service"));
    assert!(wants("multi-user.target", "keel-ssh-host-keys.service"));
    let drop_in =
        std::fs::read_to_string(usr.join("lib/systemd/system/ssh.service.d/keel-host-keys.conf"))
            .unwrap();
    assert!(
        drop_in.contains("DefaultDependencies=no")
            && drop_in.contains("Requires=keel-ssh-host-keys.service"),
        "sshd must wait for the host keys and multi-user.target must not wait for sshd:\n{drop_in}"
    );
    assert!(wants("sockets.target", "docker.socket"));
    assert!(!wants("multi-user.target", "docker.service"));
    assert!(!wants("multi-user.target", "containerd.service"));
    for bin in [
        "bin/docker",
        "sbin/dockerd",
        "bin/containerd",
        "sbin/runc",
        "sbin/sshd",
    ] {
        assert!(usr.join(bin).is_file(), "/usr/{bin} missing");
    }
    let link = usr.join("share/keel/etc/systemd/system/multi-user.target.wants/hello.service");
    assert_eq!(
        std::fs::read_link(link).unwrap(),
        Path::new("/usr/lib/systemd/system/hello.service")
    );
    assert_eq!(
        std::fs::read_to_string(usr.join("share/keel/etc/hostname")).unwrap(),
        "keel\n"
    );
    assert!(usr.join("lib/systemd/systemd").is_file());
    // The installer, static, and `keel` as its alias (tree unpacked by fsck.erofs --extract).
    let installer = std::fs::read(usr.join("bin/keel-install")).unwrap();
    assert_eq!(installer, std::fs::read(keel_install()).unwrap());
    assert_eq!(
        std::fs::read_link(usr.join("bin/keel")).unwrap(),
        Path::new("keel-install")
    );
    // cloud-config at boot: the static keel-cloudinit, its unit enabled before sysinit.target,
    // networkd enabled with the DHCP default.
    let cloudinit = std::fs::read(usr.join("bin/keel-cloudinit")).unwrap();
    assert_eq!(cloudinit, std::fs::read(keel_cloudinit()).unwrap());
    assert_eq!(
        std::fs::read_link(
            usr.join("share/keel/etc/systemd/system/sysinit.target.wants/keel-cloudinit.service")
        )
        .unwrap(),
        Path::new("/usr/lib/systemd/system/keel-cloudinit.service")
    );
    assert!(usr
        .join("share/keel/etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
        .symlink_metadata()
        .is_ok());
    let dhcp =
        std::fs::read_to_string(usr.join("lib/systemd/network/99-keel-default-dhcp.network"))
            .unwrap();
    assert!(dhcp.contains("DHCP=yes"), "{dhcp}");
}

#[test]
fn initramfs_follows_the_contract() {
    let img = default_image();
    let m = manifest(&img);
    let rel = m["kernel"]["release"].as_str().unwrap();
    let usr = usr_tree(&img);
    let ramfs = usr.join(format!("lib/modules/{rel}/keel-initramfs.img"));
    assert_eq!(
        std::fs::metadata(&ramfs).unwrap().len(),
        m["initramfs"]["size"].as_u64().unwrap()
    );
    let d = tempfile::tempdir().unwrap();
    let (ok, text) = run(Command::new("sh").arg("-c").arg(format!(
        "cd {} && zcat {} | cpio -i -d --quiet --no-absolute-filenames 2>&1 && zcat {} | cpio -t -v --quiet",
        d.path().display(),
        ramfs.display(),
        ramfs.display()
    )));
    assert!(ok, "{text}");
    let root = d.path();
    assert_eq!(
        std::fs::read(root.join("init")).unwrap(),
        std::fs::read(keel_init()).unwrap()
    );
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(root.join("etc/keel/init.json")).unwrap()).unwrap();
    assert_eq!(cfg["kernel_release"], rel);
    assert_eq!(cfg["disk_guid"], "00000000-0000-0000-0000-000000000001");
    assert_eq!(cfg["hand_off"], "/usr/lib/systemd/systemd");
    let modules: Vec<&str> = cfg["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for name in [
        "virtio_blk.ko",
        "virtio_pci.ko",
        "dm-verity.ko",
        "dm-mod.ko",
        "erofs.ko",
        "overlay.ko",
    ] {
        assert!(
            modules.iter().any(|m| m.ends_with(&format!("/{name}"))),
            "{name} not in {modules:?}"
        );
    }
    let pos = |n: &str| modules.iter().position(|m| m.ends_with(n)).unwrap();
    assert!(pos("/dm-mod.ko") < pos("/dm-verity.ko"));
    for m in &modules {
        let f = root.join(format!("lib/modules/{rel}/{m}"));
        let head = std::fs::read(&f).unwrap_or_else(|_| panic!("{m} listed but missing"));
        assert_eq!(
            &head[..4],
            b"\x7fELF",
            "{m} is not an uncompressed ELF module"
        );
    }
    let key_id = m["inputs"]["key_id"].as_str().unwrap();
    let pem = std::fs::read_to_string(root.join(format!("etc/keel/keys/{key_id}.pem"))).unwrap();
    assert_eq!(pem, std::fs::read_to_string(&img.pubkey).unwrap());
    let console = text
        .lines()
        .find(|l| l.ends_with(" dev/console"))
        .expect("dev/console");
    assert!(
        console.starts_with("crw-------") && console.contains("5,"),
        "{console}"
    );
    let null = text
        .lines()
        .find(|l| l.ends_with(" dev/null"))
        .expect("dev/null");
    assert!(
        null.starts_with("crw-rw-rw-") && null.contains("1,"),
        "{null}"
    );
}

#[test]
fn inspect_reports_partitions_and_slots() {
    let img = default_image();
    let v = inspect_json(&img.disk, &img.pubkey);
    assert_eq!(v["kind"], "disk");
    assert_eq!(v["disk_guid"], "00000000-0000-0000-0000-000000000001");
    let a = slot(&v, "USR-A");
    assert_eq!(a["state"], "present");
    assert_eq!(a["signature"], "valid");
    assert_eq!(a["metadata"]["version"], "1.0.0");
    assert_eq!(a["metadata"]["board"], "qemu-x86_64");
    assert_eq!(slot(&v, "USR-B")["state"], "empty");
    let usr_a = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == "USR-A")
        .unwrap();
    assert_eq!(
        (
            usr_a["priority"].as_u64(),
            usr_a["tries"].as_u64(),
            usr_a["successful"].as_bool()
        ),
        (Some(1), Some(0), Some(true))
    );

    let p = inspect_json(&img.payload, &img.pubkey);
    assert_eq!(p["kind"], "payload");
    let s = slot(&p, "payload");
    assert_eq!(s["signature"], "valid");
    assert_eq!(s["metadata"], a["metadata"]);

    // Without a key nothing is claimed about the signature.
    let out = Command::new(keel_bin())
        .args(["inspect", "--json"])
        .arg(&img.disk)
        .env("KEEL_REPO", "/nonexistent")
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(slot(&v, "USR-A")["signature"], "unchecked");
}

#[test]
fn verify_accepts_the_disk_and_the_payload() {
    let img = default_image();
    for path in [&img.disk, &img.payload] {
        let out = keel(&[
            "verify",
            "--pubkey",
            img.pubkey.to_str().unwrap(),
            path.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn manifest_records_inputs_and_outputs() {
    let img = default_image();
    let m = manifest(&img);
    for name in ["board", "rootfs", "keel_init", "keel_cloudinit"] {
        assert_eq!(
            m["inputs"][name]["sha256"].as_str().unwrap().len(),
            64,
            "{name}"
        );
    }
    assert!(m["inputs"]["kernel_package_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert_eq!(m["inputs"]["kernel_package"], "linux-image-cloud-amd64");
    for o in m["outputs"].as_array().unwrap() {
        let p = img.dir.join(o["name"].as_str().unwrap());
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            o["size"].as_u64().unwrap()
        );
        let (ok, text) = run(Command::new("sha256sum").arg(&p));
        assert!(ok);
        assert_eq!(
            text.split_whitespace().next().unwrap(),
            o["sha256"].as_str().unwrap()
        );
    }
}

/// disk.raw.sig names disk.raw's size and SHA-256 (sha256sum), and openssl, an independent
/// Ed25519 implementation, verifies its signature over the documented text with the public key.
#[test]
fn disk_signature_verifies_with_openssl() {
    let img = default_image();
    let sig: Value =
        serde_json::from_slice(&std::fs::read(img.dir.join("disk.raw.sig")).unwrap()).unwrap();
    assert_eq!(sig["format"], "keel-image-signature");
    assert_eq!(
        sig["size"].as_u64().unwrap(),
        std::fs::metadata(&img.disk).unwrap().len()
    );
    let (ok, text) = run(Command::new("sha256sum").arg(&img.disk));
    assert!(ok, "{text}");
    assert_eq!(text.split_whitespace().next().unwrap(), sig["sha256"]);
    let listed = manifest(&img)["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["name"] == "disk.raw.sig");
    assert!(listed, "manifest.json does not list disk.raw.sig");

    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("message");
    std::fs::write(
        &msg,
        format!(
            "keel-image-signature v1\nsize {}\nsha256 {}\n",
            sig["size"],
            sig["sha256"].as_str().unwrap()
        ),
    )
    .unwrap();
    let raw_sig = dir.path().join("sig.bin");
    let bytes: Vec<u8> = (0..64)
        .map(|i| {
            u8::from_str_radix(&sig["signature"].as_str().unwrap()[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect();
    std::fs::write(&raw_sig, bytes).unwrap();
    let verify = |message: &Path| {
        run(Command::new("openssl")
            .args(["pkeyutl", "-verify", "-pubin", "-rawin", "-inkey"])
            .arg(&img.pubkey)
            .arg("-in")
            .arg(message)
            .arg("-sigfile")
            .arg(&raw_sig))
    };
    let (ok, text) = verify(&msg);
    assert!(
        ok && text.contains("Signature Verified Successfully"),
        "openssl: {text}"
    );
    // The same signature over a different size must not verify.
    let other = dir.path().join("other");
    std::fs::write(
        &other,
        format!(
            "keel-image-signature v1\nsize {}\nsha256 {}\n",
            sig["size"].as_u64().unwrap() + 512,
            sig["sha256"].as_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, text) = verify(&other);
    assert!(!ok, "openssl accepted an altered message: {text}");
}
