//! `keel build --format qcow2/vmdk/ova/pxe`: each form checked by its peer tool (qemu-img, GNU
//! tar, xmllint, sha256 manifest) and booted in QEMU to the demo unit.

use std::path::{Path, PathBuf};
use std::process::Command;

use keel_cli_support::exit;
use keel_testkit::{build_image, keel_bin, run, BuildOpts, Image};

/// The qemu board with `loop` (needed by pxe), every implemented format, kept in the test
/// image cache directory so that the image cache can key on its content.
fn formats_image() -> Image {
    let text = std::fs::read_to_string(keel_testkit::repo_root().join("boards/qemu-x86_64.yaml"))
        .unwrap()
        .replace(
            "../rootfs/",
            &format!("{}/rootfs/", keel_testkit::repo_root().display()),
        )
        .replace("name: qemu-x86_64", "name: qemu-formats")
        .replace("  - virtio_scsi\n", "  - virtio_scsi\n  - loop\n");
    assert!(text.contains("  - loop\n"));
    let dir = keel_testkit::images_dir().join("boards");
    std::fs::create_dir_all(&dir).unwrap();
    let board = dir.join("qemu-formats.yaml");
    if std::fs::read_to_string(&board).ok().as_deref() != Some(&text) {
        std::fs::write(&board, &text).unwrap();
    }
    build_image(&BuildOpts {
        name: format!("formats-{:x}", md5ish(&text)),
        board,
        // A comma list, as most CLIs take one.
        formats: vec!["qcow2,vmdk,ova,pxe".into()],
        ..BuildOpts::default()
    })
}

fn md5ish(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

fn boot(args: &[&str], image: Option<&Path>, dir: &Path) -> (i32, String) {
    let log = dir.join("console.log");
    let mut c = Command::new(keel_bin());
    c.args([
        "boot",
        "--expect",
        "Hello World",
        "--timeout",
        "300",
        "--log",
    ])
    .arg(&log)
    .args(args);
    if let Some(i) = image {
        c.arg(i);
    }
    let out = c.output().unwrap();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    (out.status.code().unwrap_or(-1), console)
}

fn assert_booted(code: i32, console: &str) {
    let tail: Vec<&str> = console.lines().rev().take(40).collect();
    assert_eq!(code, exit::OK, "console tail:\n{}", tail.join("\n"));
    assert!(console.contains("keel-init: ") && console.contains("Hello World"));
}

fn qemu_img_info(path: &Path) -> serde_json::Value {
    let (ok, text) = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path));
    assert!(ok, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn same_file(a: &Path, b: &Path) {
    let (ok, text) = run(Command::new("cmp").arg(a).arg(b));
    assert!(ok, "{} and {} differ: {text}", a.display(), b.display());
}

fn vmdk_path(img: &Image) -> PathBuf {
    img.dir.join("keel-qemu-formats-1.0.0.vmdk")
}

#[test]
fn qcow2_is_checked_converted_back_and_boots() {
    let img = formats_image();
    let qcow2 = img.dir.join("disk.qcow2");
    let (ok, text) = run(Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&qcow2));
    assert!(ok && text.contains("No errors"), "{text}");
    let info = qemu_img_info(&qcow2);
    assert_eq!(info["format"], "qcow2");
    let raw_size = std::fs::metadata(&img.disk).unwrap().len();
    assert_eq!(info["virtual-size"].as_u64(), Some(raw_size));
    let d = tempfile::tempdir().unwrap();
    let (code, console) = boot(&[], Some(&qcow2), d.path());
    assert_booted(code, &console);
}

#[test]
fn vmdk_is_stream_optimized_equals_the_raw_disk_and_boots() {
    let img = formats_image();
    let vmdk = vmdk_path(&img);
    let (ok, text) = run(Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(&vmdk));
    assert!(ok && text.contains("No errors"), "{text}");
    let info = qemu_img_info(&vmdk);
    assert_eq!(info["format"], "vmdk");
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "streamOptimized"
    );
    assert_eq!(
        info["format-specific"]["data"]["extents"][0]["compressed"],
        true
    );
    let raw_size = std::fs::metadata(&img.disk).unwrap().len();
    assert_eq!(info["virtual-size"].as_u64(), Some(raw_size));
    let d = tempfile::tempdir().unwrap();
    let back = d.path().join("back.raw");
    let (ok, text) = run(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(&vmdk)
        .arg(&back));
    assert!(ok, "{text}");
    same_file(&img.disk, &back);
    std::fs::remove_file(&back).unwrap();
    // The disk inside is the raw disk byte for byte (above), which the other tests boot; the
    // full tier boots the VMDK itself too.
    if keel_testkit::tier::full() {
        let (code, console) = boot(&[], Some(&vmdk), d.path());
        assert_booted(code, &console);
    }
}

#[test]
fn ova_holds_descriptor_disk_and_manifest_in_order() {
    let img = formats_image();
    let ova = img.dir.join("keel-qemu-formats-1.0.0.ova");
    let d = tempfile::tempdir().unwrap();
    let (ok, list) = run(Command::new("tar").arg("tf").arg(&ova));
    assert!(ok, "{list}");
    let names: Vec<&str> = list.lines().collect();
    assert_eq!(
        names,
        [
            "keel-qemu-formats-1.0.0.ovf",
            "keel-qemu-formats-1.0.0.vmdk",
            "keel-qemu-formats-1.0.0.mf"
        ]
    );
    let (ok, text) = run(Command::new("tar")
        .arg("xf")
        .arg(&ova)
        .arg("-C")
        .arg(d.path()));
    assert!(ok, "{text}");
    same_file(&vmdk_path(&img), &d.path().join(names[1]));
    // The .mf lines are what sha256sum computes for the members.
    let mf = std::fs::read_to_string(d.path().join(names[2])).unwrap();
    for name in &names[..2] {
        let (ok, sum) = run(Command::new("sha256sum").arg(d.path().join(name)));
        assert!(ok);
        let hex = sum.split_whitespace().next().unwrap();
        assert!(mf.contains(&format!("SHA256({name})= {hex}\n")), "{mf}");
    }
    // Well-formed XML (xmllint), with the parts an importer needs.
    let ovf_path = d.path().join(names[0]);
    let (ok, text) = run(Command::new("xmllint").arg("--noout").arg(&ovf_path));
    assert!(ok, "xmllint: {text}");
    let ovf = std::fs::read_to_string(&ovf_path).unwrap();
    let vmdk_size = std::fs::metadata(vmdk_path(&img)).unwrap().len();
    let raw_size = std::fs::metadata(&img.disk).unwrap().len();
    for needle in [
        format!("ovf:href=\"{}\" ovf:size=\"{vmdk_size}\"", names[1]),
        format!("ovf:capacity=\"{raw_size}\" ovf:capacityAllocationUnits=\"byte\""),
        "ovf:populatedSize=\"".to_string(),
        "vmdk.html#streamOptimized".to_string(),
        "<VirtualSystem ovf:id=\"keel-qemu-formats-1.0.0\">".to_string(),
        "<rasd:ResourceType>3</rasd:ResourceType>".to_string(),
        "<rasd:ResourceType>4</rasd:ResourceType>".to_string(),
        "<rasd:ResourceSubType>vmware.sata.ahci</rasd:ResourceSubType>".to_string(),
        "<rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>".to_string(),
        "vmw:key=\"firmware\" vmw:value=\"efi\"".to_string(),
    ] {
        assert!(ovf.contains(&needle), "{needle} missing from\n{ovf}");
    }
}

#[test]
fn pxe_initramfs_carries_the_payload_and_boots_diskless_over_tftp() {
    let img = formats_image();
    let pxe = img.dir.join("pxe");
    let script = std::fs::read_to_string(pxe.join("keel.ipxe")).unwrap();
    assert!(script.starts_with("#!ipxe\nkernel vmlinuz "), "{script}");
    assert!(
        script.contains("\ninitrd initramfs.img\nboot\n"),
        "{script}"
    );
    // The payload sits in the initramfs byte for byte (the uncompressed second archive).
    let ramfs = std::fs::read(pxe.join("initramfs.img")).unwrap();
    let payload = std::fs::read(&img.payload).unwrap();
    assert!(ramfs
        .windows(16)
        .position(|w| w == &payload[..16])
        .is_some_and(|at| ramfs[at..at + payload.len()] == payload[..]));
    drop(ramfs);
    let d = tempfile::tempdir().unwrap();
    // No --mem: keel boot gives the guest what this live initramfs needs (iPXE under UEFI,
    // the hungriest of the loaders).
    let (code, console) = boot(&["--pxe", img.dir.to_str().unwrap()], None, d.path());
    assert_booted(code, &console);
    assert!(
        console.contains("tftp://10.0.2.2/keel.ipxe... ok")
            && console.contains("initramfs.img...")
            && console.contains("diskless boot")
            && console.contains("(diskless, ROOT in RAM)"),
        "{console}"
    );

    // A --mem that cannot hold this live system is refused before QEMU starts, naming the
    // minimum.
    let out = Command::new(keel_bin())
        .args(["boot", "--pxe", img.dir.to_str().unwrap(), "--mem", "512"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::USAGE), "{err}");
    let minimum: u32 = err
        .split("needs at least ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no minimum in: {err}"));
    assert!(
        err.contains("--mem 512 is too small") && minimum > 512,
        "{err}"
    );

    // A machine with too little memory anyway (the kernel loaded directly): the kernel cannot
    // unpack the whole initramfs and keel-init says so instead of blaming verity. Twice the
    // initramfs and a little: enough to start the kernel, too little for the tmpfs it unpacks
    // into (half of what is left beside the loaded initramfs).
    let initramfs_mib = std::fs::metadata(pxe.join("initramfs.img")).unwrap().len() >> 20;
    let small = (2 * initramfs_mib + 128).next_multiple_of(64).to_string();
    let cmdline = script
        .lines()
        .find_map(|l| l.strip_prefix("kernel vmlinuz initrd=initramfs.img "))
        .unwrap();
    let log = d.path().join("small.log");
    let blank = d.path().join("blank.raw");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let out = Command::new(keel_bin())
        .args(["boot", "--firmware", "direct", "--kernel"])
        .arg(pxe.join("vmlinuz"))
        .arg("--initrd")
        .arg(pxe.join("initramfs.img"))
        .args(["--append", cmdline, "--mem", &small, "--timeout", "300"])
        .args([
            "--expect",
            "was cut short while the kernel unpacked the initramfs",
        ])
        .arg("--log")
        .arg(&log)
        .arg(&blank)
        .output()
        .unwrap();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{console}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        console.contains("Initramfs unpacking failed"),
        "the kernel's own word is missing: {console}"
    );
}

#[test]
fn pxe_without_loop_names_the_board_field() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(keel_bin())
        .args(["build", "--quiet", "--format", "pxe", "--out"])
        .arg(out_dir.path())
        .arg("--board")
        .arg(keel_testkit::repo_root().join("boards/qemu-x86_64.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::USAGE), "{err}");
    assert!(
        err.contains("qemu-x86_64.yaml: boot_modules: ") && err.contains("loop"),
        "{err}"
    );
    assert!(std::fs::read_dir(out_dir.path()).unwrap().next().is_none());
    let out = Command::new(keel_bin())
        .args(["build", "--quiet", "--format", "iso", "--out"])
        .arg(out_dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit::USAGE), "{err}");
    assert!(
        err.contains("qemu-x86_64.yaml: boot_modules: ") && err.contains("the iso format"),
        "{err}"
    );
}
