//! `keel verify` must notice a changed byte anywhere that matters, and say where: in USR-A's
//! filesystem, in its hash tree, in its signed metadata, and a key that did not sign it.

use std::path::Path;

use keel_cli_support::exit;
use keel_testkit::*;
use serde_json::Value;

fn usr_a(img: &Image) -> (u64, u64, Value) {
    let out = keel(&[
        "inspect",
        "--json",
        "--pubkey",
        img.pubkey.to_str().unwrap(),
        img.disk.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["label"] == "USR-A")
        .unwrap()
        .clone();
    let s = v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "USR-A")
        .unwrap()
        .clone();
    (
        p["start"].as_u64().unwrap(),
        p["size"].as_u64().unwrap(),
        s["metadata"].clone(),
    )
}

fn verify_fails(path: &Path, pubkey: &Path, expect: &[&str]) {
    let out = keel(&[
        "verify",
        "--quiet",
        "--pubkey",
        pubkey.to_str().unwrap(),
        path.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(exit::VERIFICATION),
        "verify should fail with a verification error:\n{err}"
    );
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in:\n{err}");
    }
}

#[test]
fn flipped_byte_in_the_filesystem() {
    let img = default_image();
    let (start, _, _) = usr_a(&img);
    let d = tempfile::tempdir().unwrap();
    let disk = sparse_copy(&img.disk, d.path());
    // Block 100 of the filesystem.
    flip_byte(&disk, start + 100 * 4096 + 7);
    verify_fails(
        &disk,
        &img.pubkey,
        &["USR-A: verity: data block 100 ", "USR-A: body sha256: "],
    );
}

#[test]
fn flipped_byte_in_the_hash_tree() {
    let img = default_image();
    let (start, _, meta) = usr_a(&img);
    let d = tempfile::tempdir().unwrap();
    let disk = sparse_copy(&img.disk, d.path());
    let hash_offset = meta["verity"]["hash_offset"].as_u64().unwrap();
    let hash_size = meta["verity"]["hash_size"].as_u64().unwrap();
    // Inside the last hash block (level 0), past the superblock.
    flip_byte(&disk, start + hash_offset + hash_size - 4096 + 5);
    verify_fails(&disk, &img.pubkey, &["USR-A: verity: hash area block"]);
}

#[test]
fn flipped_byte_in_the_verity_superblock() {
    let img = default_image();
    let (start, _, meta) = usr_a(&img);
    let d = tempfile::tempdir().unwrap();
    let disk = sparse_copy(&img.disk, d.path());
    flip_byte(
        &disk,
        start + meta["verity"]["hash_offset"].as_u64().unwrap() + 72,
    );
    verify_fails(
        &disk,
        &img.pubkey,
        &["USR-A: verity: the verity superblock does not match"],
    );
}

#[test]
fn flipped_byte_in_the_metadata() {
    let img = default_image();
    let (start, size, _) = usr_a(&img);
    let d = tempfile::tempdir().unwrap();
    let disk = sparse_copy(&img.disk, d.path());
    // The version string inside the signed JSON: '1' becomes '0'.
    let block_at = start + size - 4096;
    let mut block = vec![0u8; 4096];
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&disk).unwrap();
        f.seek(SeekFrom::Start(block_at)).unwrap();
        f.read_exact(&mut block).unwrap();
    }
    let at = block
        .windows(17)
        .position(|w| w == b"\"version\":\"1.0.0\"")
        .expect("version in metadata");
    flip_byte(&disk, block_at + at as u64 + 11);
    verify_fails(
        &disk,
        &img.pubkey,
        &["USR-A: signature: metadata signature does not verify"],
    );

    // The signature itself.
    let disk2 = d.path().join("sig.raw");
    std::fs::rename(&disk, &disk2).unwrap();
    flip_byte(&disk2, block_at + at as u64 + 11); // restore the version byte
    flip_byte(&disk2, block_at + 30);
    verify_fails(&disk2, &img.pubkey, &["USR-A: signature: "]);
}

#[test]
fn a_key_that_did_not_sign_it() {
    let img = default_image();
    let d = tempfile::tempdir().unwrap();
    let out = keel(&["keygen", "--out", d.path().to_str().unwrap()]);
    assert!(out.status.success());
    let other = d.path().join("keel-signing.pub");
    verify_fails(&img.disk, &other, &["USR-A: signature: ", "not trusted"]);
    verify_fails(
        &img.payload,
        &other,
        &["payload: signature: ", "not trusted"],
    );
}

#[test]
fn tampered_payload() {
    let img = default_image();
    let d = tempfile::tempdir().unwrap();
    let payload = sparse_copy(&img.payload, d.path());
    flip_byte(&payload, 4096 + 50 * 4096 + 1);
    verify_fails(&payload, &img.pubkey, &["payload: verity: data block 50 "]);
}
