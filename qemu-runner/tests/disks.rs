//! Where the guest's writes land: the overlay (image untouched), the image itself
//! with `persist`, extra disks; and reading the disk back after the guest stops.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use keel_qemu::{BootError, BootOptions, Session, SessionError};

const SECTOR: u64 = 512;
const MARK_SECTOR: u64 = 100;

/// Has the guest's shell write `mark` into sector 100 of `device`, flushed.
fn write_mark(vm: &mut Session, device: &str, mark: &str) {
    vm.send_line(&format!(
        "echo {mark} | dd of={device} bs=512 seek={MARK_SECTOR} conv=fsync && echo wrote-$((1+1))"
    ))
    .unwrap();
    vm.wait_for("wrote-2", Duration::from_secs(60)).unwrap();
}

fn mark_in(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let start = (MARK_SECTOR * SECTOR) as usize;
    String::from_utf8_lossy(&bytes[start..start + 64])
        .trim_end_matches('\0')
        .trim_end()
        .to_string()
}

fn boot_shell(options: &BootOptions) -> Session {
    let mut vm = Session::start(options).unwrap();
    vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
    vm
}

fn power_off(vm: &mut Session) {
    vm.send_line("poweroff -f").unwrap();
    assert!(vm.wait_exit(Duration::from_secs(60)).unwrap().success());
}

#[test]
fn overlay_takes_the_writes_and_the_image_stays_pristine() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let options = shell_options(&image, &kernel, &initramfs);

    let mut vm = boot_shell(&options);
    assert!(vm.uses_overlay());
    assert_ne!(vm.disk_path(), image.as_path());
    write_mark(&mut vm, "/dev/vda", "KEEL-OVERLAY-MARK");
    assert!(matches!(
        vm.export_disk_raw(&dir.path().join("too-early.raw")),
        Err(SessionError::StillRunning)
    ));
    power_off(&mut vm);

    assert_eq!(mark_in(&image), "", "the image must stay untouched");
    let exported = dir.path().join("after.raw");
    vm.export_disk_raw(&exported).unwrap();
    assert_eq!(mark_in(&exported), "KEEL-OVERLAY-MARK");
    assert_eq!(
        std::fs::metadata(&exported).unwrap().len(),
        std::fs::metadata(&image).unwrap().len()
    );

    // A following boot of the stopped session's disk sees the guest's write (a
    // new overlay over the old one), as reboot-across-sessions tests do.
    let mut next = boot_shell(&shell_options(vm.disk_path(), &kernel, &initramfs));
    next.send_line(&format!(
        "dd if=/dev/vda bs=512 skip={MARK_SECTOR} count=1 2>/dev/null | head -c 17; echo"
    ))
    .unwrap();
    next.wait_for("\nKEEL-OVERLAY-MARK", Duration::from_secs(60))
        .unwrap();
    power_off(&mut next);
}

#[test]
fn persist_and_extra_disks_are_written_in_place() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let extra = blank_disk(dir.path(), "extra.raw", 4);
    let options = BootOptions {
        persist: true,
        extra_disks: vec![extra.clone()],
        ..shell_options(&image, &kernel, &initramfs)
    };

    let mut vm = boot_shell(&options);
    assert!(!vm.uses_overlay());
    assert_eq!(vm.disk_path(), std::path::absolute(&image).unwrap());
    write_mark(&mut vm, "/dev/vda", "KEEL-PERSIST-MARK");
    write_mark(&mut vm, "/dev/vdb", "KEEL-EXTRA-MARK");
    power_off(&mut vm);

    assert_eq!(mark_in(&image), "KEEL-PERSIST-MARK");
    assert_eq!(mark_in(&extra), "KEEL-EXTRA-MARK");
}

#[test]
fn flushed_writes_survive_a_power_cut() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);

    let mut vm = boot_shell(&shell_options(&image, &kernel, &initramfs));
    write_mark(&mut vm, "/dev/vda", "KEEL-FLUSHED-MARK");
    vm.kill().unwrap();
    let exported = dir.path().join("after-cut.raw");
    vm.export_disk_raw(&exported).unwrap();
    assert_eq!(mark_in(&exported), "KEEL-FLUSHED-MARK");
}

#[test]
fn parallel_sessions_share_one_read_only_image() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "shared.raw", 8);
    let options = shell_options(&image, &kernel, &initramfs);

    // Start three guests before any finishes: each has its own overlay and console.
    let mut vms: Vec<Session> = (0..3).map(|_| Session::start(&options).unwrap()).collect();
    for (n, vm) in vms.iter_mut().enumerate() {
        vm.wait_for(SHELL_READY, BOOT_TIMEOUT).unwrap();
        write_mark(vm, "/dev/vda", &format!("KEEL-GUEST-{n}"));
    }
    for vm in &mut vms {
        power_off(vm);
    }
    let logs: Vec<_> = vms.iter().map(|vm| vm.log_path().to_path_buf()).collect();
    assert_eq!(
        logs.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );
    for (n, vm) in vms.iter_mut().enumerate() {
        let exported = dir.path().join(format!("guest-{n}.raw"));
        vm.export_disk_raw(&exported).unwrap();
        assert_eq!(mark_in(&exported), format!("KEEL-GUEST-{n}"));
    }
    assert_eq!(mark_in(&image), "");
}

/// A tmpfs of `size` mounted on a directory for as long as it lives (the test runs as root,
/// as CI does).
struct SmallFileSystem(std::path::PathBuf);

impl SmallFileSystem {
    fn mount(dir: &Path, size: &str) -> SmallFileSystem {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "keel-test-full",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount -t tmpfs on {} (run as root)",
            dir.display()
        );
        SmallFileSystem(dir.to_path_buf())
    }
}

impl Drop for SmallFileSystem {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_host_file_system_that_fills_up_ends_the_wait_naming_the_drive() {
    let kernel = debian::kernel();
    let dir = tempfile::tempdir().unwrap();
    let initramfs = shell_initramfs(dir.path(), &kernel);
    let image = blank_disk(dir.path(), "disk.raw", 8);
    let small = SmallFileSystem::mount(&dir.path().join("small"), "4m");
    // Sparse: 64 MiB that the 4 MiB file system cannot hold once written.
    let extra = blank_disk(&small.0, "extra.raw", 64);
    let options = BootOptions {
        extra_disks: vec![extra.clone()],
        ..shell_options(&image, &kernel, &initramfs)
    };

    let mut vm = boot_shell(&options);
    vm.send_line("dd if=/dev/urandom of=/dev/vdb bs=1M count=16 oflag=direct; echo dd-$((1+1))")
        .unwrap();
    // QEMU pauses the guest on ENOSPC: without the check this wait would take its whole minute
    // and say only that it timed out.
    let started = std::time::Instant::now();
    let error = vm
        .wait_for("dd-2", Duration::from_secs(60))
        .expect_err("a 16 MiB write onto a 4 MiB file system cannot finish");
    match &error {
        BootError::HostIoError { drives, .. } => {
            assert_eq!(drives.len(), 1, "{error}");
            assert!(
                drives[0].contains(&extra.display().to_string())
                    && drives[0].contains("no space left on the host's file system"),
                "{error}"
            );
        }
        other => panic!("expected a host I/O stop, got: {other}"),
    }
    assert!(started.elapsed() < Duration::from_secs(30), "{error}");
    let message = error.to_string();
    assert!(message.contains("MiB free there"), "{message}");
    vm.kill().unwrap();
}
