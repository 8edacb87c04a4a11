//! keel-init proven in QEMU (TCG, UEFI through OVMF): the default image boots to systemd and the
//! demo unit, and every rollback rule holds on a real boot. Each test boots its own copy of the
//! one image built for the test run, reads the serial console, and on failure shows its tail.
//! After a boot, the GPT is read back with `sfdisk --json`, an independent tool.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keel_format::attrs::SlotAttrs;
use keel_format::gpt::DiskTable;
use keel_format::layout::{USR_A, USR_B};
use keel_format::metadata::{self, METADATA_SIZE};
use keel_format::slot;
use keel_qemu::{BootOptions, Firmware, Session};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// A private, writable copy of the test image.
struct Disk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn fresh_disk() -> Disk {
    let image = keel_testkit::built_image();
    let dir = tempfile::tempdir().unwrap();
    let path = keel_testkit::sparse_copy(&image, dir.path());
    Disk { _dir: dir, path }
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new().read(true).write(true).open(p).unwrap()
}

fn set_attrs(disk: &Path, number: u32, a: SlotAttrs) {
    let mut f = open_rw(disk);
    let mut t = DiskTable::read(&mut f).unwrap();
    t.set_slot_attrs(number, a).unwrap();
    t.write(&mut f).unwrap();
}

/// Put an exact copy of USR-A's slot (body and signed metadata) into USR-B.
fn copy_a_to_b(disk: &Path) {
    let mut f = open_rw(disk);
    let t = DiskTable::read(&mut f).unwrap();
    let (a, b) = (
        t.partition(USR_A.number).unwrap(),
        t.partition(USR_B.number).unwrap(),
    );
    let meta = slot::read_partition_metadata(&mut f, a.offset(), a.size()).unwrap();
    let body = meta.claimed().body_size();
    let mut buf = vec![0u8; 4 << 20];
    let mut done = 0;
    while done < body {
        let n = (buf.len() as u64).min(body - done) as usize;
        f.seek(SeekFrom::Start(a.offset() + done)).unwrap();
        f.read_exact(&mut buf[..n]).unwrap();
        f.seek(SeekFrom::Start(b.offset() + done)).unwrap();
        f.write_all(&buf[..n]).unwrap();
        done += n as u64;
    }
    let mut block = vec![0u8; METADATA_SIZE];
    f.seek(SeekFrom::Start(
        a.offset() + slot::metadata_offset(a.size()),
    ))
    .unwrap();
    f.read_exact(&mut block).unwrap();
    f.seek(SeekFrom::Start(
        b.offset() + slot::metadata_offset(b.size()),
    ))
    .unwrap();
    f.write_all(&block).unwrap();
    f.sync_all().unwrap();
}

fn partition_offset(disk: &Path, number: u32) -> (u64, u64) {
    let t = DiskTable::read(&mut File::open(disk).unwrap()).unwrap();
    let p = t.partition(number).unwrap();
    (p.offset(), p.size())
}

/// Boot `disk` (through a qcow2 overlay) and wait for each pattern in turn.
fn boot_expecting(disk: &Path, patterns: &[&str]) -> Session {
    boot_expecting_with(disk, Firmware::Uefi, patterns)
}

fn boot_expecting_with(disk: &Path, firmware: Firmware, patterns: &[&str]) -> Session {
    let mut opts = BootOptions::new(disk);
    opts.mem_mb = 1024;
    opts.firmware = firmware;
    let mut s = Session::start(&opts).unwrap_or_else(|e| panic!("QEMU did not start: {e}"));
    for p in patterns {
        if let Err(e) = s.wait_for(p, BOOT_TIMEOUT) {
            panic!(
                "waiting for {p:?}: {e}\n--- full console log: {}",
                s.log_path().display()
            );
        }
    }
    s
}

/// Stop the VM and return the slot attributes of the disk it left, read by `sfdisk --json`.
fn attrs_after(mut s: Session, dir: &Path) -> (String, String) {
    s.kill().unwrap();
    let raw = dir.join("after.raw");
    s.export_disk_raw(&raw).unwrap();
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(&raw)
        .output()
        .expect("sfdisk (fdisk package)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let attr_of = |name: &str| {
        v["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {v}"))
            .get("attrs")
            .and_then(|a| a.as_str())
            .unwrap_or("")
            .to_string()
    };
    (attr_of("USR-A"), attr_of("USR-B"))
}

#[test]
fn default_image_boots_under_uefi_to_systemd_and_the_demo_unit() {
    let d = fresh_disk();
    let s = boot_expecting(
        &d.path,
        &[
            "booting USR-A version 1.0.0 (priority 1, tries 0, successful)",
            "Welcome to",
            "Hello World",
        ],
    );
    let log = s.log();
    // dm-verity was set up over the chosen slot before the hand-off.
    assert!(
        log.contains("dm-verity device"),
        "no dm-verity line in:\n{log}"
    );
}

/// (a) USR-A (higher priority, successful) has a flipped byte in its filesystem; USR-B holds a
/// good system. The boot ends in USR-B's system, the console names the failure, and USR-A is
/// marked failed on the disk.
#[test]
fn tampered_successful_slot_rolls_back_to_the_other() {
    let d = fresh_disk();
    copy_a_to_b(&d.path);
    set_attrs(&d.path, 3, SlotAttrs::new(2, 0, true));
    set_attrs(&d.path, 4, SlotAttrs::new(1, 0, true));
    let (a_off, _) = partition_offset(&d.path, 3);
    // Byte 1030 lies in the erofs superblock, which mounting reads through dm-verity.
    keel_testkit::flip_byte(&d.path, a_off + 1030);
    let s = boot_expecting(&d.path, &["USR-A failed", "booting USR-B", "Hello World"]);
    let log = s.log();
    assert!(
        log.contains("marked USR-A failed"),
        "USR-A was not marked failed:\n{log}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (a, _b) = attrs_after(s, dir.path());
    // priority 2 (bit 49), no tries, not successful (no bit 56).
    assert_eq!(a, "GUID:49", "USR-A attributes after the failed boot");
}

/// (a') A slot on its trial boot gets a full read through dm-verity: a flipped byte deep in
/// its data is found before hand-off, and the boot falls back.
#[test]
fn tampered_trial_slot_is_caught_by_the_full_read() {
    let d = fresh_disk();
    copy_a_to_b(&d.path);
    set_attrs(&d.path, 3, SlotAttrs::new(1, 0, true));
    set_attrs(&d.path, 4, SlotAttrs::new(2, 1, false));
    let (b_off, _) = partition_offset(&d.path, 4);
    let mut f = File::open(&d.path).unwrap();
    let (_, b_size) = partition_offset(&d.path, 4);
    let meta = slot::read_partition_metadata(&mut f, b_off, b_size).unwrap();
    let middle = (meta.claimed().verity.data_size / 2) & !4095;
    keel_testkit::flip_byte(&d.path, b_off + middle + 100);
    let s = boot_expecting(&d.path, &["USR-B failed", "booting USR-A", "Hello World"]);
    let dir = tempfile::tempdir().unwrap();
    let (_a, b) = attrs_after(s, dir.path());
    assert_eq!(
        b, "GUID:49",
        "USR-B after its failed trial: priority 2, no tries"
    );
}

/// (b) A slot whose metadata is signed by a key the initramfs does not trust is refused.
#[test]
fn slot_signed_by_another_key_is_refused() {
    let d = fresh_disk();
    copy_a_to_b(&d.path);
    set_attrs(&d.path, 3, SlotAttrs::new(1, 0, true));
    set_attrs(&d.path, 4, SlotAttrs::new(2, 0, true));
    let (b_off, b_size) = partition_offset(&d.path, 4);
    let mut f = open_rw(&d.path);
    let claimed = slot::read_partition_metadata(&mut f, b_off, b_size)
        .unwrap()
        .claimed()
        .clone();
    let stranger = keel_signing::Key::generate().unwrap();
    let mut meta = claimed;
    meta.key_id = stranger.key_id();
    let block = metadata::encode(&meta, |m| stranger.sign(m)).unwrap();
    f.seek(SeekFrom::Start(b_off + slot::metadata_offset(b_size)))
        .unwrap();
    f.write_all(&block).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let s = boot_expecting(&d.path, &["USR-B failed", "booting USR-A", "Hello World"]);
    let log = s.log();
    assert!(
        log.contains(&stranger.key_id()) && log.contains("not trusted"),
        "the refusal does not name the untrusted key:\n{log}"
    );
}

/// (c) A slot with a higher priority but no tries left and never successful is skipped without
/// a boot attempt.
#[test]
#[ignore = "full tier (ci/test.sh --full): the choice is unit-tested in initramfs/src/plan.rs; the CI tier boots trial slots in tampered_trial_slot_is_caught_by_the_full_read and updater/tests/qemu_update.rs"]
fn higher_priority_slot_without_tries_is_skipped() {
    let d = fresh_disk();
    copy_a_to_b(&d.path);
    set_attrs(&d.path, 3, SlotAttrs::new(1, 0, true));
    set_attrs(&d.path, 4, SlotAttrs::new(2, 0, false));
    let s = boot_expecting(
        &d.path,
        &[
            "chose USR-A",
            "booting USR-A version 1.0.0 (priority 1, tries 0, successful)",
            "Hello World",
        ],
    );
    let log = s.log();
    assert!(!log.contains("USR-B failed"), "USR-B was attempted:\n{log}");
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = attrs_after(s, dir.path());
    assert_eq!((a.as_str(), b.as_str()), ("GUID:48,56", "GUID:49"));
}

/// (d) A slot with one try left is booted once, and the try is spent on the disk.
#[test]
#[ignore = "full tier (ci/test.sh --full): the CI tier boots a trial slot and spends its try in updater/tests/qemu_update.rs (the agent's 2.0.0, marked good by the health gate)"]
fn slot_on_trial_spends_its_try() {
    let d = fresh_disk();
    set_attrs(&d.path, 3, SlotAttrs::new(1, 1, false));
    let s = boot_expecting(
        &d.path,
        &[
            "booting USR-A version 1.0.0 (priority 1, tries 1, not successful)",
            "Hello World",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = attrs_after(s, dir.path());
    assert_eq!(
        a, "GUID:48",
        "USR-A after its trial boot: priority 1, tries 0, not successful"
    );
}

/// A slot whose kernel is not the one the firmware started: the ESP's UKI carries Debian's cloud
/// kernel, v2 here was built with the generic one. keel-init verifies and mounts the slot, kexecs
/// into the slot's own kernel and initramfs with a command line naming the slot, and the second
/// stage boots that slot as is (no second choice, no second try spent) with its own modules.
#[test]
fn slot_with_another_kernel_is_booted_through_kexec() {
    let v2 = keel_testkit::build_image(&keel_testkit::BuildOpts {
        name: "generic-kernel-v2".into(),
        board: keel_testkit::repo_root()
            .join("initramfs/tests/boards/qemu-x86_64-generic-kernel.yaml"),
        version: "2.0.0".into(),
        ..keel_testkit::BuildOpts::default()
    });
    let release_of = |image: &keel_testkit::Image| {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&image.manifest).unwrap()).unwrap();
        m["usr"]["kernel"]["release"].as_str().unwrap().to_string()
    };
    let (v1_kernel, v2_kernel) = (release_of(&keel_testkit::default_image()), release_of(&v2));
    assert_ne!(v1_kernel, v2_kernel, "the test needs two different kernels");

    let d = fresh_disk();
    let pubkey = v2.pubkey.display().to_string();
    let out = keel_testkit::keel(&[
        "apply",
        "--disk",
        &d.path.display().to_string(),
        "--pubkey",
        &pubkey,
        &v2.payload.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "keel apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let s = boot_expecting(
        &d.path,
        &[
            &format!("Linux version {v1_kernel}"),
            &format!("kernel {v2_kernel}"),
            &format!("kexec into USR-B's kernel {v2_kernel} with command line:"),
            &format!("Linux version {v2_kernel}"),
            "USR-B named by keel.slot: booting it as is",
            "booting USR-B version 2.0.0",
            "Hello World",
        ],
    );
    let log = s.log();
    let second_stage = &log[log
        .find(&format!("Linux version {v2_kernel}"))
        .expect("second kernel's banner")..];
    assert!(
        second_stage.contains("keel.slot=USR-B"),
        "the second stage's command line does not name the slot:\n{second_stage}"
    );
    assert!(
        !second_stage.contains("!!! "),
        "the second stage complained (modules of another kernel?):\n{second_stage}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (_, b) = attrs_after(s, dir.path());
    // Staged with priority 2 and one try; the first stage spent the try, the kexec'd stage did
    // not spend another (none was left) and booted on: priority 2, tries 0, successful only if
    // mark-good already ran.
    let bits: Vec<u32> = b
        .split("GUID:")
        .nth(1)
        .unwrap_or("")
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    assert!(
        bits.contains(&49) && bits.iter().all(|n| [49, 56].contains(n)),
        "USR-B's attributes after the kexec boot: {b:?} (want priority 2, tries 0)"
    );
}

/// Zero the CRC32 field of the GPT header at `lba`.
fn zero_header_crc(disk: &Path, lba: u64) {
    let mut f = open_rw(disk);
    f.seek(SeekFrom::Start(lba * 512 + 16)).unwrap();
    f.write_all(&[0; 4]).unwrap();
    f.sync_all().unwrap();
}

fn sgdisk_verify(disk: &Path) -> String {
    let out = Command::new("sgdisk")
        .arg("-v")
        .arg(disk)
        .output()
        .expect("sgdisk (gdisk package)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Damage one copy of the GPT, boot, and check with `sgdisk -v` on the disk the VM left that
/// keel-init rewrote it from the other copy, and said so on the console. The boot is the metal
/// image's under legacy BIOS (SeaBIOS, GRUB): OVMF's partition driver would restore the copy
/// itself before keel-init ran, and GRUB only reads.
fn damaged_copy_is_repaired(lba_of: impl Fn(u64) -> u64, sgdisk_says: &str, words: &str) {
    let image = keel_testkit::build_image(&keel_testkit::metal_opts());
    let dir = tempfile::tempdir().unwrap();
    let d = Disk {
        path: keel_testkit::sparse_copy(&image.disk, dir.path()),
        _dir: dir,
    };
    let sectors = std::fs::metadata(&d.path).unwrap().len() / 512;
    zero_header_crc(&d.path, lba_of(sectors));
    let before = sgdisk_verify(&d.path);
    assert!(
        before.contains(sgdisk_says),
        "sgdisk -v before the boot:\n{before}"
    );
    let mut expect = vec![
        format!("{words} is damaged: header CRC32 is 0x00000000"),
        "repaired the GPT of /dev/".to_string(),
    ];
    if words.starts_with("primary") {
        // Linux showed no partitions on the damaged disk (it reads a backup only with `gpt`).
        expect.push("the kernel re-read the partitions of /dev/".into());
    }
    expect.push("booting USR-A version 1.0.0".into());
    expect.push("Hello World".into());
    let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
    let mut s = boot_expecting_with(&d.path, Firmware::Bios, &expect);
    let log = s.log();
    assert!(
        !log.contains("rebooting in"),
        "keel-init went down before the boot that followed the repair:\n{log}"
    );
    s.kill().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("after.raw");
    s.export_disk_raw(&raw).unwrap();
    let after = sgdisk_verify(&raw);
    assert!(
        !after.contains("ERROR") && after.contains("No problems found"),
        "sgdisk -v after the boot:\n{after}"
    );
    let t = DiskTable::read(&mut File::open(&raw).unwrap()).unwrap();
    assert!(t.health().is_clean(), "{:?}", t.health());
    assert_eq!(t.partition(USR_A.number).unwrap().label, "USR-A");
}

#[test]
fn damaged_primary_gpt_header_is_repaired_from_the_backup() {
    damaged_copy_is_repaired(|_| 1, "Main header: ERROR", "primary GPT header");
}

#[test]
#[ignore = "full tier (ci/test.sh --full): the CI tier repairs the primary copy from the backup through the same code"]
fn damaged_backup_gpt_header_is_repaired_from_the_primary() {
    damaged_copy_is_repaired(|n| n - 1, "Backup header: ERROR", "backup GPT header");
}
