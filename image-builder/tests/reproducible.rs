//! Same inputs and SOURCE_DATE_EPOCH: bit-identical outputs (disk.raw, usr.img and every
//! format the board lists).

use keel_testkit::*;
use serde_json::Value;

/// The shipped image (the board's formats, qcow2 among them) is the first build. A second
/// build of its inputs into a fresh directory (printing its manifest with --json), making
/// every piece again (`--no-reuse`), gives the same bytes, and leaves nothing but its outputs
/// behind. A third, reusing what the first two kept, says so and gives
/// the same bytes again.
#[test]
fn two_builds_are_bit_identical() {
    let first = build_image(&shipped_opts());
    let d = tempfile::tempdir_in(images_dir()).unwrap();
    let out = d.path().join("again");
    let mut args = build_args(&shipped_opts(), &out);
    args.push("--json".into());
    args.push("--no-reuse".into());
    // Without --quiet: stderr is a pipe here, so there must be no progress output at all.
    args.retain(|a| a != "--quiet");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = keel(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        r.stderr.is_empty(),
        "chatter on a non-terminal stderr:\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let names = listing(&out);
    assert_eq!(
        names,
        listing(&first.dir),
        "the two builds wrote different files"
    );
    for required in ["disk.raw", "manifest.json", "usr.img"] {
        assert!(
            names.iter().any(|n| n == required),
            "no {required} in {names:?}"
        );
    }
    for name in names.iter().filter(|n| out.join(n).is_file()) {
        let (ok, text) = run(std::process::Command::new("cmp")
            .arg(first.dir.join(name))
            .arg(out.join(name)));
        assert!(ok, "{name} differs between two builds: {text}");
    }

    let printed: Value = serde_json::from_slice(&r.stdout).unwrap();
    let written: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(printed, written);

    // The same inputs once more: the USR filesystem, UKI and qcow2 come from the cache (the
    // build before this one kept them even if the first image was built before reuse was).
    let reused_out = d.path().join("reused");
    let mut args = build_args(&shipped_opts(), &reused_out);
    args.retain(|a| a != "--quiet");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = keel(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let said = String::from_utf8_lossy(&r.stdout);
    assert!(
        said.contains("reused: rootfs, USR filesystem, UKI, qcow2"),
        "the third build did not say it reused every piece:\n{said}"
    );
    assert_eq!(listing(&reused_out), names);
    for name in names.iter().filter(|n| out.join(n).is_file()) {
        let (ok, text) = run(std::process::Command::new("cmp")
            .arg(first.dir.join(name))
            .arg(reused_out.join(name)));
        assert!(ok, "{name} differs in the build that reused pieces: {text}");
    }
}

/// The metal board (GRUB in the MBR and BIOS-BOOT, GRUB's files on the ESP, the PXE directory,
/// the ISO): a second build gives the same bytes.
#[test]
fn metal_media_are_bit_identical() {
    let opts = metal_opts();
    let first = build_image(&opts);
    let d = tempfile::tempdir_in(images_dir()).unwrap();
    let out = d.path().join("again");
    let mut args = build_args(&opts, &out);
    args.push("--no-reuse".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = keel(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    for name in [
        "disk.raw",
        "usr.img",
        "manifest.json",
        "keel-metal-x86_64-1.0.0.iso",
        "pxe/vmlinuz",
        "pxe/initramfs.img",
        "pxe/keel.ipxe",
    ] {
        let (ok, text) = run(std::process::Command::new("cmp")
            .arg(first.dir.join(name))
            .arg(out.join(name)));
        assert!(ok, "{name} differs between two builds: {text}");
    }
}
