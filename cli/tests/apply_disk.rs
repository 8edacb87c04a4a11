//! `keel apply --disk IMAGE PAYLOAD` trusts what the image trusts: the keys in
//! /usr/share/keel/keys of the slot it boots, read from its erofs without mounting it.
//! `--pubkey` overrides; an image whose keys cannot be read is named with its slot.

use std::path::Path;

use keel_cli_support::exit;
use keel_testkit::*;

/// `keel apply --disk DISK PAYLOAD --allow-downgrade EXTRA...` (the payload is the image's own
/// version): its exit code and stdout, stderr.
fn apply(disk: &Path, payload: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = vec![
        "apply",
        "--disk",
        disk.to_str().unwrap(),
        payload.to_str().unwrap(),
        "--allow-downgrade",
    ];
    args.extend_from_slice(extra);
    let r = keel(&args);
    (
        r.status.code(),
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

fn copy_image(from: &Path, dir: &Path) -> std::path::PathBuf {
    let to = dir.join("disk.raw");
    let (ok, out) = run(std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(&to));
    assert!(ok, "cp: {out}");
    to
}

#[test]
fn apply_trusts_the_images_own_keys_unless_told_otherwise() {
    // Test images are signed with the test key, never the development key.
    let img = default_image();
    let dev_pub = repo_root().join("signing/dev-key/keel-signing.pub");
    assert_ne!(
        std::fs::read(&img.pubkey).unwrap(),
        std::fs::read(&dev_pub).unwrap_or_default(),
        "the test key must not be the development key"
    );
    let d = tempfile::tempdir().unwrap();

    // No --pubkey: the image's own keys verify the payload its key signed.
    let disk = copy_image(&img.disk, d.path());
    let (code, out, err) = apply(&disk, &img.payload, &[]);
    assert_eq!(code, Some(exit::OK), "{err}");
    assert!(out.contains("staged Keel 1.0.0 in USR-B"), "{out}");

    // --pubkey overrides: another key refuses the same payload.
    let other = d.path().join("other-key");
    let k = keel(&["keygen", "--out", other.to_str().unwrap()]);
    assert!(k.status.success());
    let disk = copy_image(&img.disk, d.path());
    let other_pub = other.join("keel-signing.pub");
    let (code, _, err) = apply(
        &disk,
        &img.payload,
        &["--pubkey", other_pub.to_str().unwrap()],
    );
    assert_eq!(code, Some(exit::VERIFICATION), "{err}");

    // A slot whose filesystem cannot be read: the error names the image and the slot.
    let disk = copy_image(&img.disk, d.path());
    let usr_a = usr_a_offset(&disk);
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 4096], usr_a).unwrap();
    drop(f);
    let (code, _, err) = apply(&disk, &img.payload, &[]);
    assert_eq!(code, Some(exit::KEYS), "{err}");
    assert!(
        err.contains(disk.to_str().unwrap()) && err.contains("USR-A"),
        "{err}"
    );
}

/// Where USR-A starts, from the image's GPT.
fn usr_a_offset(disk: &Path) -> u64 {
    let mut f = std::fs::File::open(disk).unwrap();
    let table = keel_format::gpt::DiskTable::read(&mut f).unwrap();
    table
        .by_label(keel_format::layout::USR_A.label)
        .expect("USR-A")
        .offset()
}
