//! Build options that change what goes into the image: version, channel, an extra binary.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use keel_testkit::*;
use serde_json::Value;

#[test]
fn version_channel_and_extra_binary_land_in_the_image() {
    let init = keel_init();
    let img = build_image(&BuildOpts {
        name: "variant".into(),
        version: "2.3.4".into(),
        channel: Some("beta".into()),
        extra_args: vec![
            "--extra-bin".into(),
            format!("keel-probe={}", init.display()),
        ],
        ..BuildOpts::default()
    });
    let m: Value = serde_json::from_slice(&std::fs::read(&img.manifest).unwrap()).unwrap();
    assert_eq!(m["usr"]["version"], "2.3.4");
    assert_eq!(m["usr"]["channel"], "beta");
    assert_eq!(m["inputs"]["extra_bins"][0]["name"], "keel-probe");

    let d = tempfile::tempdir().unwrap();
    let fs = d.path().join("fs");
    extract(
        &img.payload,
        4096,
        m["usr"]["verity"]["data_size"].as_u64().unwrap(),
        &fs,
    );
    let tree = d.path().join("tree");
    let (ok, text) = run(Command::new("fsck.erofs")
        .arg(format!("--extract={}", tree.display()))
        .arg(&fs));
    assert!(ok, "{text}");
    let bin = tree.join("bin/keel-probe");
    assert_eq!(std::fs::read(&bin).unwrap(), std::fs::read(&init).unwrap());
    assert_eq!(
        std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let release = std::fs::read_to_string(tree.join("share/keel/release")).unwrap();
    assert!(release.contains("KEEL_VERSION=2.3.4\n") && release.contains("KEEL_CHANNEL=beta\n"));
}
