//! The `keel-update` binary on a disk image: apply, status --json, mark-good, rollback, and the
//! documented exit codes.

mod common;

use std::process::Command;

use common::*;
use keel_cli_support::exit;

fn keel_update() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keel-update"))
}

#[test]
fn apply_status_and_exit_codes() {
    let w = world();
    let state = w.dir.path().join("update-state.json");
    let v2 = build_usr("2.0.0", "qemu-x86_64", &key(), 1 << 20);
    let good = w.write_payload("v2.img", &v2.payload());
    let mut bad_bytes = v2.payload();
    bad_bytes[METADATA + 100] ^= 1;
    let bad = w.write_payload("bad.img", &bad_bytes);
    let disk = w.disk.to_str().unwrap();
    let pubkey = w.pubkey.to_str().unwrap();

    // Usage error.
    let (code, _, _) = run(keel_update().args(["apply"]));
    assert_eq!(code, exit::USAGE);

    // Bad body: a verification error, the message names the payload and the check.
    let (code, _, err) = run(keel_update()
        .args(["--disk", disk, "--state"])
        .arg(&state)
        .args(["apply", bad.to_str().unwrap(), "--pubkey", pubkey]));
    assert_eq!(code, exit::VERIFICATION, "{err}");
    assert!(err.contains("bad.img") && err.contains("SHA-256"), "{err}");

    // Untrusted key file: the keys could not be loaded.
    let (code, _, err) = run(keel_update().args([
        "--disk",
        disk,
        "apply",
        good.to_str().unwrap(),
        "--pubkey",
        "/nonexistent.pem",
    ]));
    assert_eq!(code, exit::KEYS, "{err}");

    let (code, out, err) = run(keel_update()
        .args(["--disk", disk, "--state"])
        .arg(&state)
        .args([
            "apply",
            good.to_str().unwrap(),
            "--pubkey",
            pubkey,
            "--tries",
            "2",
        ]));
    assert_eq!(code, exit::OK, "{err}");
    assert!(out.contains("Version 2.0.0 is written to USR-B"), "{out}");

    // On the image, the boot rule now picks the staged B; A is the passive slot.
    let (code, out, err) = run(keel_update()
        .args(["--disk", disk, "--state"])
        .arg(&state)
        .args(["status", "--json", "--pubkey", pubkey]));
    assert_eq!(code, exit::OK, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["running"]["label"], "USR-B");
    assert_eq!(s["running"]["version"], "2.0.0");
    assert_eq!(s["running"]["attrs"]["tries"], 2);
    assert_eq!(s["passive"]["version"], "1.0.0");
    assert_eq!(s["passive"]["verified"], true);
    assert_eq!(s["verdict"]["state"], "on-trial");
    assert_eq!(s["last"]["action"], "apply");

    // Text status works too.
    let (code, out, _) = run(keel_update().args(["--disk", disk, "status", "--pubkey", pubkey]));
    assert_eq!(code, exit::OK);
    assert!(
        out.contains("Running:   USR-B (partition 4) version 2.0.0 [verified]"),
        "{out}"
    );

    // Rollback to A (successful, verifies) works; a second one is refused (B never good): 9.
    let (code, out, err) =
        run(keel_update().args(["--disk", disk, "rollback", "--pubkey", pubkey]));
    assert_eq!(code, exit::OK, "{err}");
    assert!(out.contains("The next boot is USR-A"), "{out}");
    let (code, _, err) = run(keel_update().args(["--disk", disk, "rollback", "--pubkey", pubkey]));
    assert_eq!(code, exit::REFUSED, "{err}");

    let (code, out, err) = run(keel_update().args(["--disk", disk, "mark-good"]));
    assert_eq!(code, exit::OK, "{err}");
    assert!(out.contains("USR-A"), "{out}");

    let (code, out, _) = run(keel_update().arg("--help"));
    assert_eq!(code, exit::OK);
    for cmd in [
        "apply",
        "status",
        "mark-good",
        "rollback",
        "reboot",
        "health-check",
    ] {
        assert!(out.contains(cmd), "{cmd} missing from --help");
    }
}

const METADATA: usize = keel_format::metadata::METADATA_SIZE;
