//! The CLI surface: help on every command, keygen, exit codes for bad arguments.

use keel_cli_support::exit;
use keel_testkit::*;

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["build", "--help"],
        vec!["inspect", "--help"],
        vec!["verify", "--help"],
        vec!["keygen", "--help"],
        vec!["apply", "--help"],
        vec!["boot", "--help"],
        vec!["install", "--help"],
        vec!["validate-config", "--help"],
    ] {
        let r = keel(&cmd);
        assert!(r.status.success(), "{cmd:?}");
        assert!(
            String::from_utf8_lossy(&r.stdout).contains("Usage: keel"),
            "{cmd:?}"
        );
    }
    let r = keel(&["build", "--no-such-flag"]);
    assert_eq!(r.status.code(), Some(exit::USAGE));
}

/// `keel serve`, `keel lockd` and `keel fleet` hand over to the binaries beside keel (built by the same
/// `cargo build`/`cargo test` of the workspace): their own help comes back.
#[test]
fn serve_lockd_and_fleet_are_the_service_binaries() {
    for (cmd, tool, tool_usage) in [
        (
            "serve",
            "keel-update-server",
            "Usage: keel-update-server serve",
        ),
        (
            "lockd",
            "keel-reboot-manager",
            "Usage: keel-reboot-manager lockd",
        ),
        (
            "fleet",
            "keel-fleet",
            "Usage: keel-fleet [OPTIONS] <COMMAND>",
        ),
    ] {
        let beside = keel_bin().with_file_name(tool);
        if !beside.exists() {
            panic!("{} missing: ci/build.sh builds it", beside.display());
        }
        let r = keel(&[cmd, "--help"]);
        let out = String::from_utf8_lossy(&r.stdout);
        assert!(
            r.status.success() && out.contains(tool_usage),
            "{cmd}: {out}"
        );
    }
}

/// `keel validate-config`: the source document's "validate before deploying", with the same
/// validator the image uses; its findings name the file and line.
#[test]
fn validate_config_names_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let good = d.path().join("good.yml");
    std::fs::write(
        &good,
        "#cloud-config\nhostname: core-01\ncoreos:\n  update:\n    reboot-strategy: off\n",
    )
    .unwrap();
    let r = keel(&["validate-config", good.to_str().unwrap()]);
    assert_eq!(
        r.status.code(),
        Some(exit::OK),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    let bad = d.path().join("bad.yml");
    std::fs::write(
        &bad,
        "#cloud-config\ncoreos:\n  update:\n    reboot-strategy: always\n",
    )
    .unwrap();
    let r = keel(&["validate-config", bad.to_str().unwrap(), "--json"]);
    assert_eq!(r.status.code(), Some(exit::VERIFICATION));
    let report: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(report.to_string().contains("always"), "{report}");
    let r = keel(&["validate-config", bad.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.contains("bad.yml:4: error: invalid value always"),
        "{out}"
    );

    let r = keel(&[
        "validate-config",
        d.path().join("missing.yml").to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(exit::USAGE));
}

#[test]
fn a_kernel_arg_is_one_word() {
    let r = keel(&[
        "build",
        "--kernel-arg",
        "quiet splash",
        "--out",
        "/nonexistent",
    ]);
    assert_eq!(r.status.code(), Some(exit::USAGE));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("--kernel-arg") && err.contains("without spaces"),
        "{err}"
    );
}

#[test]
fn keygen_makes_keys_openssl_reads_and_refuses_to_overwrite() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("k");
    let r = keel(&["keygen", "--json", "--out", dir.to_str().unwrap()]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["key_id"].as_str().unwrap().len(), 16);
    let (ok, text) = run(std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(dir.join("keel-signing.key")));
    assert!(ok);
    assert_eq!(
        text,
        std::fs::read_to_string(dir.join("keel-signing.pub")).unwrap()
    );

    let r = keel(&["keygen", "--out", dir.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(exit::USAGE));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--force"));
    let r = keel(&["keygen", "--force", "--out", dir.to_str().unwrap()]);
    assert!(r.status.success());
}

#[test]
fn inspect_and_verify_refuse_what_is_not_an_image() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("junk");
    std::fs::write(&f, vec![0x55u8; 8192]).unwrap();
    let r = keel(&["inspect", f.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(exit::USAGE));
    assert!(String::from_utf8_lossy(&r.stderr).contains("neither a Keel disk image"));
    let r = keel(&[
        "verify",
        "--pubkey",
        test_key_dir().join("keel-signing.pub").to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(exit::USAGE));
    let r = keel(&["inspect", d.path().join("missing").to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(exit::USAGE));
}
