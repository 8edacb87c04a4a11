//! The boot media of the metal board (`firmware: [uefi, bios]`, `formats: [raw, pxe, iso]`),
//! one image per test run: disk.raw under SeaBIOS through GRUB i386-pc and under OVMF, the PXE
//! directory over QEMU's TFTP through the NIC's iPXE ROM, and the hybrid ISO under both
//! firmwares. Each checked by its peer tool (sgdisk, sfdisk, fsck.vfat, mtools, xorriso) and
//! booted to the demo unit. One guest at a time.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_cli_support::exit;
use keel_testkit::{build_image, keel_bin, metal_opts, repo_root, run, Image};

static ONE_GUEST: Mutex<()> = Mutex::new(());
const ISO: &str = "keel-metal-x86_64-1.0.0.iso";

fn metal() -> Image {
    build_image(&metal_opts())
}

fn one_guest() -> std::sync::MutexGuard<'static, ()> {
    ONE_GUEST.lock().unwrap_or_else(|e| e.into_inner())
}

/// `keel boot ARGS --expect "Hello World"`; the console log, asserted to hold the line.
fn boot_to_hello(args: &[&str], what: &str) -> String {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("console.log");
    let _guest = one_guest();
    let out = Command::new(keel_bin())
        .args([
            "boot",
            "--expect",
            "Hello World",
            "--timeout",
            "600",
            "--log",
        ])
        .arg(&log)
        .args(args)
        .output()
        .unwrap();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let tail: Vec<&str> = console.lines().rev().take(40).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: keel boot {args:?}: {}\nconsole tail:\n{}",
        String::from_utf8_lossy(&out.stderr),
        tail.join("\n")
    );
    console
}

fn sfdisk_part(disk: &Path, number: u64) -> serde_json::Value {
    let (ok, text) = run(Command::new("sfdisk").arg("--json").arg(disk));
    assert!(ok, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["node"]
                .as_str()
                .unwrap()
                .ends_with(&format!("raw{number}"))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no partition {number} in {text}"))
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact(&mut b).unwrap();
    b
}

/// GRUB's boot.img is in the MBR pointing at core.img in BIOS-BOOT (values read with sfdisk),
/// the protective MBR entry and the GPT stay valid, and the ESP holds grub.cfg, kernel and
/// initramfs with the image's command line.
#[test]
fn disk_carries_grub_for_bios_and_stays_a_clean_gpt() {
    let img = metal();
    let (ok, text) = run(Command::new("sgdisk").arg("-v").arg(&img.disk));
    assert!(ok && text.contains("No problems found"), "{text}");

    let bios_boot = sfdisk_part(&img.disk, 2);
    assert_eq!(bios_boot["type"], "21686148-6449-6E6F-744E-656564454649");
    let start = bios_boot["start"].as_u64().unwrap();
    let mbr = read_at(&img.disk, 0, 512);
    let boot_img = std::fs::read("/usr/lib/grub/i386-pc/boot.img").unwrap();
    assert_eq!(
        &mbr[..2],
        &boot_img[..2],
        "MBR does not start with boot.img"
    );
    assert_eq!(
        &mbr[0x68..0x1b8],
        &boot_img[0x68..0x1b8],
        "MBR code is not boot.img's"
    );
    assert_eq!(
        u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap()),
        start,
        "boot.img's kernel sector is not BIOS-BOOT's first sector"
    );
    assert_eq!(mbr[0x1c2], 0xee, "protective MBR entry lost");
    assert_eq!(&mbr[0x1fe..], &[0x55, 0xaa]);

    // core.img: diskboot.img first, its blocklist naming the rest of core.img right behind it.
    let core0 = read_at(&img.disk, start * 512, 512);
    let diskboot = std::fs::read("/usr/lib/grub/i386-pc/diskboot.img").unwrap();
    assert_eq!(&core0[..0x1a0], &diskboot[..0x1a0]);
    let list = &core0[500..512];
    assert_eq!(u64::from_le_bytes(list[..8].try_into().unwrap()), start + 1);
    let rest = u16::from_le_bytes([list[8], list[9]]) as usize;
    assert!(rest > 10, "core.img of {rest} more sectors");
    assert_eq!(u16::from_le_bytes([list[10], list[11]]), 0x820);
    // Then GRUB's LZMA decompressor, only its size fields (0x08..0x10) filled in by grub-mkimage.
    let core = read_at(&img.disk, start * 512, (rest + 1) * 512);
    let lzma = std::fs::read("/usr/lib/grub/i386-pc/lzma_decompress.img").unwrap();
    assert_eq!(&core[512..520], &lzma[..8]);
    assert_eq!(&core[512 + 0x10..512 + lzma.len()], &lzma[0x10..]);
    assert!(core[512 + lzma.len()..].iter().any(|&b| b != 0));

    // The ESP: a clean FAT with the UKI and GRUB's files.
    let esp = sfdisk_part(&img.disk, 1);
    let d = tempfile::tempdir().unwrap();
    let esp_img = d.path().join("esp.img");
    keel_testkit::extract(
        &img.disk,
        esp["start"].as_u64().unwrap() * 512,
        esp["size"].as_u64().unwrap() * 512,
        &esp_img,
    );
    let (ok, text) = run(Command::new("fsck.vfat").arg("-n").arg(&esp_img));
    assert!(ok, "{text}");
    let mtype = |p: &str| {
        let (ok, text) = run(Command::new("mtype")
            .arg("-i")
            .arg(&esp_img)
            .arg(format!("::/{p}")));
        assert!(ok, "{p}: {text}");
        text
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&img.manifest).unwrap()).unwrap();
    let cmdline = manifest["kernel"]["cmdline"].as_str().unwrap();
    let cfg = mtype("grub/grub.cfg");
    assert!(
        cfg.contains(&format!("linux /keel/vmlinuz {cmdline}\n"))
            && cfg.contains("initrd /keel/initramfs.img"),
        "{cfg}"
    );
    let kernel = d.path().join("vmlinuz");
    let (ok, text) = run(Command::new("mcopy")
        .arg("-i")
        .arg(&esp_img)
        .arg("::/keel/vmlinuz")
        .arg(&kernel));
    assert!(ok, "{text}");
    let (ok, text) = run(Command::new("cmp")
        .arg(&kernel)
        .arg(img.dir.join("pxe/vmlinuz")));
    assert!(ok, "{text}");
}

/// SeaBIOS → GRUB i386-pc → keel-init picks USR-A → systemd; then the same image under OVMF.
/// Under UEFI the disk boots in nearly every other QEMU test; the second boot is full-tier only.
#[test]
fn disk_boots_under_seabios_through_grub_and_under_uefi() {
    let img = metal();
    let disk = img.disk.to_str().unwrap();
    let console = boot_to_hello(&["--firmware", "bios", disk], "BIOS");
    for needle in [
        "SeaBIOS",
        "GRUB: loading /keel/vmlinuz and /keel/initramfs.img",
        "keel-init: ",
        "booting USR-A",
    ] {
        assert!(
            console.contains(needle),
            "BIOS boot: no {needle:?} on the console"
        );
    }
    if keel_testkit::tier::full() {
        let console = boot_to_hello(&["--firmware", "uefi", disk], "UEFI");
        assert!(console.contains("booting USR-A") && !console.contains("GRUB"));
    }
}

/// `keel boot --pxe`: DHCP names keel.ipxe, iPXE (the NIC's ROM under SeaBIOS) fetches it,
/// the kernel and the initramfs with the payload over TFTP, and keel-init boots diskless.
/// Prints how long the initramfs took over TFTP.
#[test]
#[ignore = "full tier (ci/test.sh --full): formats.rs boots the PXE files diskless through iPXE over TFTP (under UEFI)"]
fn pxe_boots_over_tftp_through_ipxe() {
    use keel_qemu::{BootOptions, Firmware, Session};
    let img = metal();
    let d = tempfile::tempdir().unwrap();
    let blank = d.path().join("blank.raw");
    std::fs::File::create(&blank)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut opts = BootOptions::new(&blank);
    opts.firmware = Firmware::Bios;
    opts.mem_mb = 2048;
    opts.log_path = Some(d.path().join("console.log"));
    opts.net = Some(keel_qemu::pxe_network(&img.dir).unwrap());
    let size = std::fs::metadata(img.dir.join("pxe/initramfs.img"))
        .unwrap()
        .len();
    let _guest = one_guest();
    let mut vm = Session::start(&opts).unwrap();
    let step = |vm: &mut Session, text: &str, secs: u64| {
        if let Err(e) = vm.wait_for(text, Duration::from_secs(secs)) {
            panic!("PXE boot: {e}");
        }
    };
    step(&mut vm, "tftp://10.0.2.2/keel.ipxe... ok", 300);
    step(&mut vm, "vmlinuz... ok", 300);
    step(&mut vm, "initramfs.img...", 300);
    let started = Instant::now();
    step(&mut vm, "ok", 900);
    let tftp = started.elapsed();
    step(&mut vm, "/usr.img is in the initramfs: diskless boot", 300);
    step(&mut vm, "(diskless, ROOT in RAM)", 300);
    step(&mut vm, "Hello World", 300);
    eprintln!(
        "PXE ({:?}): initramfs.img, {} MiB, over TFTP in {:.1} s ({:.1} MiB/s)",
        vm.accel(),
        size >> 20,
        tftp.as_secs_f64(),
        (size >> 20) as f64 / tftp.as_secs_f64()
    );
    vm.kill().unwrap();
}

/// Both El Torito entries (xorriso reads them back), the EFI image as a GPT partition for USB
/// sticks, and the live initramfs identical to the PXE one.
#[test]
fn iso_has_bios_and_uefi_el_torito_entries() {
    let img = metal();
    let iso = img.dir.join(ISO);
    let (ok, text) = run(Command::new("xorriso")
        .args(["-indev"])
        .arg(&iso)
        .args(["-report_el_torito", "plain"]));
    assert!(ok, "{text}");
    let entry = |platform: &str| {
        text.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            l.starts_with("El Torito boot img :")
                && w.get(6) == Some(&platform)
                && w.get(7) == Some(&"y")
        })
    };
    assert!(entry("BIOS") && entry("UEFI"), "{text}");
    assert!(
        text.contains("/boot/grub/i386-pc/eltorito.img") && text.contains("/efi.img"),
        "{text}"
    );
    assert!(text.contains("grub2-mbr") && text.contains("GPT"), "{text}");
    let (ok, text) = run(Command::new("sgdisk").arg("-p").arg(&iso));
    assert!(ok && text.contains("EF00"), "{text}");
    let d = tempfile::tempdir().unwrap();
    let live = d.path().join("initramfs.img");
    let (ok, text) = run(Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(&iso)
        .args(["-extract", "/live/initramfs.img"])
        .arg(&live));
    assert!(ok, "{text}");
    let (ok, text) = run(Command::new("cmp")
        .arg(&live)
        .arg(img.dir.join("pxe/initramfs.img")));
    assert!(ok, "{text}");
}

/// Without --mem: keel boot sizes the guest for the ISO's live system. The CI tier boots it
/// under UEFI, the full tier under SeaBIOS too.
#[test]
fn iso_boots_under_uefi_and_bios() {
    let img = metal();
    let iso = img.dir.join(ISO);
    for fw in keel_testkit::tier::pick(&["uefi"][..], &["uefi", "bios"][..]) {
        let console = boot_to_hello(&["--iso", iso.to_str().unwrap(), "--firmware", fw], fw);
        assert!(
            console.contains("GRUB: loading /live/vmlinuz and /live/initramfs.img")
                && console.contains("(diskless, ROOT in RAM)"),
            "{fw}: the live system did not boot from the ISO"
        );
    }
}

/// A board without what iso needs is refused before any work, naming the file and field.
#[test]
fn iso_needs_loop_and_both_firmwares() {
    let d = tempfile::tempdir().unwrap();
    let base = std::fs::read_to_string(repo_root().join("boards/metal-x86_64.yaml"))
        .unwrap()
        .replace("../rootfs/", &format!("{}/rootfs/", repo_root().display()));
    for (name, text, field) in [
        (
            "no-bios.yaml",
            base.replace("firmware: [uefi, bios]", "firmware: [uefi]"),
            "firmware: ",
        ),
        (
            "no-loop.yaml",
            base.replace("  - loop\n", ""),
            "boot_modules: ",
        ),
    ] {
        let board = d.path().join(name);
        std::fs::write(&board, text).unwrap();
        let out_dir = d.path().join("out");
        let out = Command::new(keel_bin())
            .args(["build", "--quiet", "--format", "iso", "--out"])
            .arg(&out_dir)
            .arg("--board")
            .arg(&board)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(exit::USAGE), "{err}");
        assert!(
            err.contains(&format!("{name}: {field}")) && err.contains("iso"),
            "{err}"
        );
        assert!(!out_dir.exists() || std::fs::read_dir(&out_dir).unwrap().next().is_none());
    }
}
