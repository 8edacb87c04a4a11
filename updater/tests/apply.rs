//! Applying payloads to real disk images: the good case, every refusal (checked to leave the
//! disk byte-for-byte untouched), interruptions, and independent checks with sfdisk, sgdisk
//! and veritysetup.

mod common;

use std::io::Cursor;
use std::process::Command;

use common::*;
use keel_cli_support::exit;
use keel_format::attrs::SlotAttrs;
use keel_format::metadata::METADATA_SIZE;
use keel_update::progress::Silent;
use keel_update::{apply, ApplyOptions, PayloadSource, Target, UpdateError};

fn opts() -> ApplyOptions {
    ApplyOptions::new(vec![key().public()])
}

fn apply_file(
    w: &World,
    payload: &std::path::Path,
    o: &ApplyOptions,
) -> Result<keel_update::Applied, UpdateError> {
    apply(
        PayloadSource::File(payload.to_path_buf()),
        &Target::offline(&w.disk),
        o,
        &Silent,
    )
}

#[test]
fn apply_v2_writes_the_passive_slot_and_stages_it() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 5 << 20);
    let payload = w.write_payload("v2.img", &v2.payload());
    let usr_a_before = partition_bytes(&w.disk, 3);

    let applied = apply_file(&w, &payload, &opts()).unwrap();
    assert_eq!(applied.version, "2.0.0");
    assert_eq!(applied.previous_version, "1.0.0");
    assert_eq!(applied.slot, "USR-B");
    assert_eq!(applied.slot_guid, keel_format::layout::USR_B_GUID);
    assert!(
        applied.direct_io,
        "an image on a regular file system takes O_DIRECT"
    );

    let usr_b = partition_bytes(&w.disk, 4);
    assert_eq!(&usr_b[..v2.body.len()], &v2.body[..], "body at offset 0");
    assert_eq!(
        &usr_b[usr_b.len() - METADATA_SIZE..],
        &v2.block[..],
        "metadata in the last 4 KiB"
    );
    assert_eq!(
        partition_bytes(&w.disk, 3),
        usr_a_before,
        "the active slot is untouched"
    );
    assert_eq!(attrs(&w.disk, 3), SlotAttrs::new(1, 0, true));
    assert_eq!(attrs(&w.disk, 4), SlotAttrs::new(2, 1, false));

    // sfdisk reads the same attribute bits: A priority 1 (bit 48) + successful (56),
    // B priority 2 (bit 49) + one try (52).
    let (code, out, err) = run(Command::new("sfdisk").arg("--json").arg(&w.disk));
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let parts = json["partitiontable"]["partitions"].as_array().unwrap();
    let attrs_of = |name: &str| {
        parts.iter().find(|p| p["name"] == name).unwrap()["attrs"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(attrs_of("USR-A"), "GUID:48,56");
    assert_eq!(attrs_of("USR-B"), "GUID:49,52");
    let (code, out, err) = run(Command::new("sgdisk").arg("-v").arg(&w.disk));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("No problems found"), "{out}");

    // veritysetup, independently, accepts the written slot with the signed root hash.
    let slot = w.write_payload("usr-b.part", &usr_b);
    let st = Command::new("veritysetup")
        .arg("verify")
        .arg(format!("--hash-offset={}", v2.metadata.verity.hash_offset))
        .arg(&slot)
        .arg(&slot)
        .arg(&v2.metadata.verity.root_hash)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Each bad payload is refused before the disk changes at all (every byte compared).
#[test]
fn refusals_leave_the_disk_untouched() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 1 << 20);
    let good = v2.payload();

    let mut body_flip = good.clone();
    body_flip[METADATA_SIZE + 5000] ^= 1;
    let mut meta_flip = good.clone();
    let pos = 80 + good[80..].windows(5).position(|x| x == b"2.0.0").unwrap();
    meta_flip[pos] = b'3';
    let mut other_signer = v2.metadata.clone();
    other_signer.key_id = other_key().key_id();
    let mut other_key_payload = sign(&other_signer, &other_key());
    other_key_payload.extend_from_slice(&v2.body);
    let other_board = build_usr("2.0.0", "rpi4", &key(), 1 << 20).payload();
    let downgrade = build_usr("0.9.0", "qemu-x86_64", &key(), 1 << 20).payload();
    let same = build_usr("1.0.0", "qemu-x86_64", &key(), 1 << 20).payload();
    let mut too_long = good.clone();
    too_long.extend_from_slice(&[0u8; 4096]);

    let cases: Vec<(&str, Vec<u8>, i32, &str)> = vec![
        ("flipped body byte", body_flip, 3, "SHA-256 of its body"),
        ("flipped metadata byte", meta_flip, 3, "signature check"),
        ("signed by another key", other_key_payload, 3, "not trusted"),
        ("another board", other_board, 4, "board rpi4"),
        (
            "downgrade",
            downgrade,
            4,
            "older than the running version 1.0.0",
        ),
        ("same version", same, 4, "the same as the running version"),
        ("trailing bytes", too_long, 3, "bytes long"),
    ];
    for (name, bytes, code, needle) in cases {
        let before = std::fs::read(&w.disk).unwrap();
        let payload = w.write_payload("bad.img", &bytes);
        let err = apply_file(&w, &payload, &opts()).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.exit_code(), code, "{name}: {msg}");
        assert!(msg.contains(needle), "{name}: {msg}");
        assert!(
            msg.contains("bad.img"),
            "{name}: the message names the payload: {msg}"
        );
        assert!(
            std::fs::read(&w.disk).unwrap() == before,
            "{name}: the disk changed"
        );
    }

    // The same streamed (no second read possible): signature-level refusals still come first.
    let before = std::fs::read(&w.disk).unwrap();
    let mut bad = good.clone();
    bad[20] ^= 1; // inside the signature
    let err = apply(
        PayloadSource::Reader {
            name: "pipe".into(),
            reader: Box::new(Cursor::new(bad)),
        },
        &Target::offline(&w.disk),
        &opts(),
        &Silent,
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), exit::VERIFICATION, "{err}");
    assert!(std::fs::read(&w.disk).unwrap() == before);
}

#[test]
fn allow_downgrade_applies_an_older_version() {
    let w = world();
    let old = build_usr("0.9.0", "qemu-x86_64", &key(), 1 << 20);
    let payload = w.write_payload("old.img", &old.payload());
    let mut o = opts();
    o.allow_downgrade = true;
    o.tries = 3;
    let a = apply_file(&w, &payload, &o).unwrap();
    assert_eq!(a.version, "0.9.0");
    assert_eq!(attrs(&w.disk, 4), SlotAttrs::new(2, 3, false));
}

/// A stream that ends early: the passive slot was invalidated first, so it can never boot;
/// the active slot is untouched.
#[test]
fn truncated_stream_leaves_the_passive_slot_invalid() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 6 << 20);
    // Stage v2 on B first, so that the invalidation of a staged slot is visible.
    let payload = w.write_payload("v2.img", &v2.payload());
    apply_file(&w, &payload, &opts()).unwrap();
    assert_eq!(attrs(&w.disk, 4), SlotAttrs::new(2, 1, false));
    let v3 = build_usr("3.0.0", "qemu-x86_64", &key(), 6 << 20);
    let full = v3.payload();
    let cut = full[..METADATA_SIZE + (5 << 20) + 123].to_vec();
    let usr_a_before = partition_bytes(&w.disk, 3);
    // A is the running system (as /usr would say in the guest); on an offline image the boot
    // rule would now pick the staged B as the running slot.
    let a_running = Target {
        running: keel_update::slots::RunningSlot::Mounted(keel_format::layout::USR_A_GUID),
        ..Target::offline(&w.disk)
    };
    let err = apply(
        PayloadSource::Reader {
            name: "cut-stream".into(),
            reader: Box::new(Cursor::new(cut)),
        },
        &a_running,
        &opts(),
        &Silent,
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), exit::UNREADABLE, "{err}");
    assert!(err.to_string().contains("ended early"), "{err}");
    assert_eq!(
        attrs(&w.disk, 4),
        SlotAttrs::new(0, 0, false),
        "passive not bootable"
    );
    let usr_b = partition_bytes(&w.disk, 4);
    assert!(
        usr_b[usr_b.len() - METADATA_SIZE..].iter().all(|&b| b == 0),
        "metadata zeroed"
    );
    assert_eq!(partition_bytes(&w.disk, 3), usr_a_before);
    assert_eq!(attrs(&w.disk, 3), SlotAttrs::new(1, 0, true));

    // The same with a streamed body whose bytes are wrong: written, found, slot stays invalid.
    let mut wrong = full.clone();
    wrong[METADATA_SIZE + 7] ^= 0x80;
    let err = apply(
        PayloadSource::Reader {
            name: "bad-stream".into(),
            reader: Box::new(Cursor::new(wrong)),
        },
        &a_running,
        &opts(),
        &Silent,
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), exit::VERIFICATION, "{err}");
    assert_eq!(attrs(&w.disk, 4), SlotAttrs::new(0, 0, false));
    assert_eq!(partition_bytes(&w.disk, 3), usr_a_before);
}

#[test]
fn an_unproven_running_slot_is_not_overwritten() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 1 << 20);
    let payload = w.write_payload("v2.img", &v2.payload());
    set_attrs(&w.disk, 3, SlotAttrs::new(1, 1, false));
    let before = std::fs::read(&w.disk).unwrap();
    let err = apply_file(&w, &payload, &opts()).unwrap_err();
    assert_eq!(err.exit_code(), exit::REFUSED, "{err}");
    assert!(err.to_string().contains("not been marked good"), "{err}");
    assert!(std::fs::read(&w.disk).unwrap() == before);
}

#[test]
fn a_busy_or_locked_image_is_refused() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 1 << 20);
    let payload = w.write_payload("v2.img", &v2.payload());
    let before = std::fs::read(&w.disk).unwrap();

    // Another updater holds the lock.
    let holder = nix::fcntl::Flock::lock(
        std::fs::File::open(&w.disk).unwrap(),
        nix::fcntl::FlockArg::LockExclusive,
    )
    .map_err(|(_, e)| e)
    .unwrap();
    let err = apply_file(&w, &payload, &opts()).unwrap_err();
    assert!(err.to_string().contains("update lock"), "{err}");
    drop(holder);

    // A loop device uses the image.
    let (code, out, err) = run(Command::new("losetup").args(["-f", "--show"]).arg(&w.disk));
    assert_eq!(code, 0, "losetup: {err}");
    let loopdev = out.trim().to_string();
    let result = apply_file(&w, &payload, &opts());
    let _ = Command::new("losetup").args(["-d", &loopdev]).status();
    let err = result.unwrap_err();
    assert_eq!(err.exit_code(), exit::DISK, "{err}");
    assert!(err.to_string().contains(&loopdev), "{err}");
    assert!(std::fs::read(&w.disk).unwrap() == before);
}

/// udev holds a shared flock on a disk while it probes it (after mark-good rewrote the table,
/// say): apply waits for it instead of failing as if another updater were at work.
#[test]
fn a_shared_lock_like_udevs_is_waited_for() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 1 << 20);
    let payload = w.write_payload("v2.img", &v2.payload());
    let holder = nix::fcntl::Flock::lock(
        std::fs::File::open(&w.disk).unwrap(),
        nix::fcntl::FlockArg::LockShared,
    )
    .map_err(|(_, e)| e)
    .unwrap();
    let released = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(holder);
        std::time::Instant::now()
    });
    let result = apply_file(&w, &payload, &opts());
    let finished = std::time::Instant::now();
    let released_at = released.join().unwrap();
    result.unwrap();
    assert!(
        finished >= released_at,
        "apply finished before udev's lock was released"
    );
}

/// tmpfs refused O_DIRECT before Linux 6.6 (the apply then falls back to buffered writes and
/// fsync); newer kernels accept it. Either way the slot must come out right.
#[test]
fn apply_on_tmpfs() {
    if !std::path::Path::new("/dev/shm").is_dir() {
        eprintln!("no /dev/shm tmpfs; skipping");
        return;
    }
    let w = world_in(Some(std::path::Path::new("/dev/shm")));
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 1 << 20);
    let payload = w.write_payload("v2.img", &v2.payload());
    let a = apply_file(&w, &payload, &opts()).unwrap();
    eprintln!(
        "tmpfs: direct I/O {}",
        if a.direct_io {
            "accepted"
        } else {
            "refused, buffered"
        }
    );
    assert_eq!(&partition_bytes(&w.disk, 4)[..v2.body.len()], &v2.body[..]);
}

/// A payload "file" that is a pipe (e.g. `keel-update apply <(curl …)`) is streamed: no length
/// check, no second read.
#[test]
fn a_fifo_payload_is_streamed() {
    let w = world();
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 1 << 20);
    let fifo = w.dir.path().join("payload.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let bytes = v2.payload();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, bytes))
    };
    let a = apply_file(&w, &fifo, &opts()).unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(a.version, "2.0.0");
    assert_eq!(&partition_bytes(&w.disk, 4)[..v2.body.len()], &v2.body[..]);
}
