//! A damaged copy of the partition table is never silent: with one copy's header CRC zeroed,
//! `sgdisk -v` (an independent tool) reports the damage, `keel verify` fails naming that copy
//! unless `--accept-repairable`, and `keel inspect` shows it, as text and in `--json`.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use keel_cli_support::exit;
use keel_testkit::*;

/// Zero the CRC32 field (bytes 16..20) of the header at `lba`.
fn zero_header_crc(disk: &Path, lba: u64) {
    let mut f = OpenOptions::new().write(true).open(disk).unwrap();
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

fn check_damaged_copy(lba_of: impl Fn(u64) -> u64, sgdisk_says: &str, part: &str, words: &str) {
    let img = default_image();
    let d = tempfile::tempdir().unwrap();
    let disk = sparse_copy(&img.disk, d.path());
    let disk_s = disk.to_str().unwrap();
    let pubkey = img.pubkey.to_str().unwrap();
    let sectors = std::fs::metadata(&disk).unwrap().len() / 512;

    let clean = sgdisk_verify(&disk);
    assert!(
        !clean.contains("ERROR"),
        "sgdisk on the built image:\n{clean}"
    );
    let ok = keel(&["verify", "--quiet", "--pubkey", pubkey, disk_s]);
    assert_eq!(
        ok.status.code(),
        Some(exit::OK),
        "verify of the built image"
    );

    zero_header_crc(&disk, lba_of(sectors));
    let sg = sgdisk_verify(&disk);
    assert!(
        sg.contains(sgdisk_says),
        "sgdisk -v after the damage:\n{sg}"
    );

    let out = keel(&["verify", "--pubkey", pubkey, disk_s]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit::VERIFICATION),
        "verify must fail on a damaged {words}:\nstdout {}\nstderr {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains(&format!(
            "partition table: {words} is damaged: header CRC32 is 0x00000000"
        )),
        "the failure does not name the {words}:\n{err}"
    );

    let out = keel(&["verify", "--accept-repairable", "--pubkey", pubkey, disk_s]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(exit::OK),
        "--accept-repairable: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{words} is damaged")) && text.contains("USR-A: ok"),
        "the accepted damage is still shown:\n{text}"
    );

    let out = keel(&["inspect", "--pubkey", pubkey, disk_s]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("partition table: {words} is damaged")),
        "inspect:\n{text}"
    );
    let out = keel(&["inspect", "--json", "--pubkey", pubkey, disk_s]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = v["partition_table"]["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{v}");
    assert_eq!(damaged[0]["part"], part, "{v}");
}

#[test]
fn primary_header_crc_zeroed_fails_verify_and_shows_in_inspect() {
    check_damaged_copy(
        |_| 1,
        "Main header: ERROR",
        "primary_header",
        "primary GPT header",
    );
}

#[test]
fn backup_header_crc_zeroed_fails_verify_and_shows_in_inspect() {
    check_damaged_copy(
        |sectors| sectors - 1,
        "Backup header: ERROR",
        "backup_header",
        "backup GPT header",
    );
}

#[test]
fn an_intact_image_says_so() {
    let img = default_image();
    let out = keel(&["inspect", "--json", img.disk.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["partition_table"]["damaged"],
        serde_json::json!([]),
        "{v}"
    );
}
