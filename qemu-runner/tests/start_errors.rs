//! Failures to start are reported before anything boots, with a clear cause.

mod common;

use common::*;
use keel_qemu::{BootOptions, Firmware, Session, StartError};

#[test]
fn missing_image_is_named() {
    let error = Session::start(&BootOptions::new("/nonexistent/keel.img"))
        .err()
        .expect("start must fail");
    assert!(
        matches!(
            error,
            StartError::Missing {
                what: "disk image",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("/nonexistent/keel.img"));
}

#[test]
fn missing_kernel_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let image = blank_disk(dir.path(), "disk.raw", 1);
    let error = Session::start(&BootOptions {
        firmware: Firmware::Direct {
            kernel: "/nonexistent/vmlinuz".into(),
            initrd: None,
            append: String::new(),
        },
        ..BootOptions::new(&image)
    })
    .err()
    .expect("start must fail");
    assert!(
        matches!(error, StartError::Missing { what: "kernel", .. }),
        "{error}"
    );
}

#[test]
fn qemu_refusing_the_image_reports_its_own_error() {
    let dir = tempfile::tempdir().unwrap();
    // qcow2 magic followed by garbage: QEMU itself rejects it while starting.
    let image = dir.path().join("broken.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.extend_from_slice(&[0xff; 4096]);
    std::fs::write(&image, bytes).unwrap();
    let error = Session::start(&BootOptions {
        persist: true,
        firmware: Firmware::Bios,
        ..BootOptions::new(&image)
    })
    .err()
    .expect("start must fail");
    match &error {
        StartError::QemuExited { status, stderr } => {
            assert!(!status.success());
            assert!(stderr.contains("broken.qcow2"), "{stderr}");
        }
        other => panic!("expected QemuExited, got {other}"),
    }
}

#[test]
fn overlay_over_a_broken_image_fails_in_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("broken.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.extend_from_slice(&[0xff; 4096]);
    std::fs::write(&image, bytes).unwrap();
    let error = Session::start(&BootOptions::new(&image))
        .err()
        .expect("start must fail");
    assert!(matches!(error, StartError::Tool(_)), "{error}");
    assert!(error.to_string().contains("qemu-img create"), "{error}");
}
