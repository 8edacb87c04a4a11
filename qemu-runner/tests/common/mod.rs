//! Real guests for the runner's tests: Debian's cloud kernel and a busybox
//! initramfs with a root shell on ttyS0, both fetched by keel-testkit (apt-get,
//! cached in `$KEEL_TEST_CACHE`). A missing tool or package fails the test with
//! a message saying what to install.

#![allow(dead_code)] // each test binary uses a different part

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keel_qemu::{BootOptions, Firmware};
pub use keel_testkit::debian::{self, Kernel};
use keel_testkit::initramfs::{self, Newc};
use keel_testkit::stdout_of;

/// Printed by the test initramfs once the shell is about to start.
pub const SHELL_READY: &str = "keel-test-shell: ready";
/// Generous: several TCG guests may share two host cores.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Direct-kernel options for `kernel` with no initramfs: the kernel boots, finds
/// no root file system and panics.
pub fn panicking_kernel_options(image: &Path, kernel: &Kernel) -> BootOptions {
    BootOptions {
        firmware: Firmware::Direct {
            kernel: kernel.vmlinuz.clone(),
            initrd: None,
            append: "console=ttyS0 panic=-1".into(),
        },
        mem_mb: 512,
        ..BootOptions::new(image)
    }
}

/// Direct-kernel options booting into the busybox shell of [`shell_initramfs`].
pub fn shell_options(image: &Path, kernel: &Kernel, initramfs: &Path) -> BootOptions {
    BootOptions {
        firmware: Firmware::Direct {
            kernel: kernel.vmlinuz.clone(),
            initrd: Some(initramfs.to_path_buf()),
            append: "console=ttyS0 panic=-1 quiet".into(),
        },
        mem_mb: 512,
        ..BootOptions::new(image)
    }
}

/// A zero-filled raw disk of `mib` MiB.
pub fn blank_disk(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    let file = File::create(&path).unwrap();
    file.set_len(mib << 20).unwrap();
    path
}

const INIT_SCRIPT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in $(cat /lib/modules/load-order); do
    insmod /lib/modules/$module.ko || echo "keel-test-shell: insmod $module failed"
done
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.1; done
# acpid watches the input devices present when it starts: wait for their nodes.
for i in $(seq 50); do
    missing=0
    for e in /sys/class/input/event*; do [ -e /dev/input/${e##*/} ] || missing=1; done
    [ $missing = 0 ] && break
    sleep 0.1
done
acpid -c /etc/acpi -l /tmp/acpid.log
echo "keel-test-shell: ready"
grep -q keel-test.poweroff /proc/cmdline && poweroff -f
exec sh
"#;

/// Prints what QEMU's DHCP server offered (udhcpc calls it with the lease in
/// its environment).
const DHCP_SCRIPT: &str = "#!/bin/sh\n[ \"$1\" = bound ] && echo \"keel-test-dhcp: ip=$ip boot_file=$boot_file\"\nexit 0\n";

/// Run by busybox acpid when the ACPI power button is pressed.
const POWER_BUTTON_SCRIPT: &str =
    "#!/bin/sh\necho 'keel-test-shell: power button' > /dev/console\npoweroff -f\n";

/// Modules the shell needs: virtio disks, NIC and a virtio-scsi CD-ROM, and the
/// ACPI power button as an input device for acpid.
const WANTED_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "sr_mod",
    "button",
    "evdev",
];

/// A gzip-free newc initramfs: busybox-static, the virtio modules of `kernel`
/// (dependencies first), and an /init that starts a root shell on the console.
pub fn shell_initramfs(dir: &Path, kernel: &Kernel) -> PathBuf {
    let busybox = debian::package("busybox-static").join("bin/busybox");
    assert!(busybox.is_file(), "{} missing", busybox.display());
    let modules = initramfs::modules(kernel, WANTED_MODULES);

    let mut cpio = Newc::default();
    for dir in [
        "bin",
        "dev",
        "etc",
        "etc/acpi",
        "etc/acpi/PWRF",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "tmp",
    ] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &fs::read(&busybox).unwrap());
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
    cpio.file("bin/dhcp-report", 0o755, DHCP_SCRIPT.as_bytes());
    cpio.file(
        "etc/acpi/PWRF/00000080",
        0o755,
        POWER_BUTTON_SCRIPT.as_bytes(),
    );
    let mut order = String::new();
    for (name, path) in &modules {
        cpio.file(
            &format!("lib/modules/{name}.ko"),
            0o644,
            &fs::read(path).unwrap(),
        );
        order.push_str(name);
        order.push('\n');
    }
    cpio.file("lib/modules/load-order", 0o644, order.as_bytes());
    let path = dir.join("shell-initramfs.cpio");
    fs::write(&path, cpio.finish()).unwrap();
    path
}

/// A raw GPT disk of 64 MiB whose EFI system partition holds
/// `EFI/BOOT/BOOTX64.EFI`: a unified kernel image (systemd-stub from Debian's
/// systemd-boot-efi + the test kernel + `initramfs` + `cmdline`), the way Keel
/// images boot.
pub fn uefi_disk(dir: &Path, kernel: &Kernel, initramfs: &Path, cmdline: &str) -> PathBuf {
    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    assert!(
        Path::new(STUB).is_file(),
        "{STUB} missing (install Debian's systemd-boot-efi package)"
    );
    let cmdline_file = dir.join("cmdline.txt");
    fs::write(&cmdline_file, cmdline).unwrap();
    let osrel = dir.join("os-release");
    fs::write(&osrel, "NAME=keel-qemu-test\nID=keel-qemu-test\n").unwrap();
    let uki = dir.join("BOOTX64.EFI");
    // Section addresses above the stub's own (which end below 0x20000).
    let section = |name: &str, file: &Path, vma: &str| {
        vec![
            "--add-section".to_string(),
            format!("{name}={}", file.display()),
            "--change-section-vma".to_string(),
            format!("{name}={vma}"),
        ]
    };
    let mut args = Vec::new();
    args.extend(section(".osrel", &osrel, "0x20000"));
    args.extend(section(".cmdline", &cmdline_file, "0x30000"));
    args.extend(section(".linux", &kernel.vmlinuz, "0x2000000"));
    args.extend(section(".initrd", initramfs, "0x3000000"));
    stdout_of(Command::new("objcopy").args(&args).arg(STUB).arg(&uki))
        .unwrap_or_else(|e| panic!("{e} (install Debian's binutils package)"));

    let esp = dir.join("esp.fat");
    stdout_of(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-C"])
            .arg(&esp)
            .arg("61440"),
    )
    .unwrap_or_else(|e| panic!("{e} (install Debian's dosfstools package)"));
    let mtools = |args: &[&str]| {
        stdout_of(Command::new(args[0]).arg("-i").arg(&esp).args(&args[1..]))
            .unwrap_or_else(|e| panic!("{e} (install Debian's mtools package)"));
    };
    mtools(&["mmd", "::/EFI", "::/EFI/BOOT"]);
    mtools(&["mcopy", uki.to_str().unwrap(), "::/EFI/BOOT/BOOTX64.EFI"]);

    let disk = blank_disk(dir, "uefi.raw", 64);
    stdout_of(
        Command::new("sgdisk")
            .args(["-n", "1:2048:+60M", "-t", "1:EF00", "-c", "1:EFI-SYSTEM"])
            .arg(&disk),
    )
    .unwrap_or_else(|e| panic!("{e} (install Debian's gdisk package)"));
    let esp_bytes = fs::read(&esp).unwrap();
    use std::io::{Seek, SeekFrom, Write};
    let mut file = fs::OpenOptions::new().write(true).open(&disk).unwrap();
    file.seek(SeekFrom::Start(2048 * 512)).unwrap();
    file.write_all(&esp_bytes).unwrap();
    disk
}

/// A raw disk whose MBR boot sector prints `KEEL-BIOS-BOOT` on COM1 and halts.
pub fn bios_disk(dir: &Path) -> PathBuf {
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xfa,                   // cli
        0x31, 0xc0,             // xor ax, ax
        0x8e, 0xd8,             // mov ds, ax
        0xbe, 0x16, 0x7c,       // mov si, 0x7c16 (message)
        0xba, 0xf8, 0x03,       // mov dx, 0x3f8 (COM1)
        0xac,                   // next: lodsb
        0x84, 0xc0,             // test al, al
        0x74, 0x03,             // jz done
        0xee,                   // out dx, al
        0xeb, 0xf8,             // jmp next
        0xf4,                   // done: hlt
        0xeb, 0xfd,             // jmp done
    ];
    let mut sector = vec![0u8; 512];
    sector[..code.len()].copy_from_slice(code);
    let message = b"KEEL-BIOS-BOOT\r\n\0";
    sector[0x16..0x16 + message.len()].copy_from_slice(message);
    sector[510] = 0x55;
    sector[511] = 0xaa;
    let disk = blank_disk(dir, "bios.raw", 1);
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .write_all(&sector)
        .unwrap();
    disk
}
