//! `keel install` inside a booted Keel system (QEMU, TCG, UEFI through OVMF), then the
//! installed disk booted alone, under UEFI and under legacy BIOS. The installed image is the
//! metal board's (`firmware: [uefi, bios]`: GRUB i386-pc in the MBR and BIOS-BOOT). The guest is a debug image whose test driver runs the script on
//! /dev/vdb at boot (the pattern of updater/tests/qemu_update.rs); /dev/vdc is an ext4
//! filesystem (made by mke2fs -d) holding the metal image and its `disk.raw.sig`, as a USB
//! stick would (attached raw, its GPT would carry the boot disk GUID a second time and keel-init
//! rightly refuses to guess); /dev/vdd is a blank, larger disk. The guest runs the
//! static `keel install` every image ships at /usr/bin/keel, trusting the keys the system
//! trusts (/usr/share/keel/keys). After it powers off, the host reads the target with `sgdisk`
//! and `debugfs`, then boots it alone to the demo unit's `Hello World` under each firmware.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use keel_cli_support::exit;
use keel_qemu::{BootOptions, Firmware, Session};

const BOOT: Duration = Duration::from_secs(300);
/// Reading and hashing the 4.4 GiB image under TCG.
const INSTALL: Duration = Duration::from_secs(900);
const MIB: u64 = 1 << 20;
const CLOUD_CONFIG: &str = "#cloud-config\nhostname: installed-in-qemu\n";

/// The driver image: the default image plus the test driver.
/// The default image with the test driver (the update tests' 1.0.0: one build for all).
fn driver_image() -> keel_testkit::Image {
    keel_testkit::build_image(&keel_testkit::e2e_opts("e2e-v1", "1.0.0"))
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn expect(s: &mut Session, pattern: &str, timeout: Duration) {
    if let Err(e) = s.wait_for(pattern, timeout) {
        panic!(
            "waiting for {pattern:?}: {e}\n--- console tail:\n{}\n--- full log: {}",
            tail(&s.log(), 60),
            s.log_path().display()
        );
    }
}

/// The text between `@@NAME` and `@@END-NAME` on the console.
fn section(s: &mut Session, name: &str, timeout: Duration) -> String {
    expect(s, &format!("@@{name}"), timeout);
    let from = s.cursor();
    let end = format!("@@END-{name}");
    expect(s, &end, timeout);
    let text = s.output_since(from);
    let text = &text[..text.find(&end).unwrap_or(text.len())];
    // Lines come through the journal to the console: `[  12.3] driver[231]: text`.
    text.lines()
        .map(|l| match l.find("driver[") {
            Some(i) => l[i..].split_once("]: ").map_or("", |(_, t)| t),
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The guest's script: install the image from the ext4 stick on /dev/vdc onto /dev/vdd, after
/// trying (with `refuse_own_disk`) to install onto its own boot disk /dev/vda.
fn script(dir: &Path, refuse_own_disk: bool) -> PathBuf {
    let refuse = if refuse_own_disk {
        "echo @@REFUSE\n\
         keel install --image /run/src/disk.raw --device /dev/vda 2>&1\n\
         echo \"rc=$?\"\n\
         echo @@END-REFUSE\n"
    } else {
        ""
    };
    let text = format!(
        "#!/bin/sh\n\
         systemctl stop hello.service\n\
         mkdir -p /run/src && mount -o ro /dev/vdc /run/src\n\
         printf '%s' '{CLOUD_CONFIG}' > /run/user.yml\n\
         {refuse}\
         keel install --image /run/src/disk.raw --device /dev/vdd \
            --cloud-config /run/user.yml --json > /run/install.json 2> /run/install.err\n\
         rc=$?\n\
         echo @@INSTALL\n\
         echo \"rc=$rc\"\n\
         cat /run/install.json /run/install.err\n\
         echo @@END-INSTALL\n\
         umount /run/src\n\
         sync\n\
         systemctl poweroff\n"
    );
    let mut bytes = text.into_bytes();
    bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
    let p = dir.join("script.img");
    fs::write(&p, bytes).unwrap();
    p
}

/// An ext4 filesystem image holding the image and its signature (sparse, by mke2fs -d).
fn source_disk(dir: &Path, image: &keel_testkit::Image) -> PathBuf {
    let tree = dir.join("source-tree");
    fs::create_dir_all(&tree).unwrap();
    for name in ["disk.raw", "disk.raw.sig"] {
        let from = image.dir.join(name);
        if fs::hard_link(&from, tree.join(name)).is_err() {
            keel_testkit::sparse_copy(&from, &tree);
        }
    }
    let size = fs::metadata(&image.disk).unwrap().len() + 128 * MIB;
    let out = dir.join("source.ext4");
    let (ok, o) = keel_testkit::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
            .arg(&tree)
            .arg(&out)
            .arg(format!("{}M", size / MIB)),
    );
    assert!(ok, "mkfs.ext4 -d: {o}");
    out
}

/// A loop device with the target's partitions (added from user space: this host's kernel may
/// have no GPT parser), detached on drop.
struct Loop(String);
impl Loop {
    fn new(file: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["-P", "-f", "--show"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let l = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
        if !Path::new(&format!("{}p6", l.0)).exists() {
            let (ok, o) = keel_testkit::run(Command::new("partx").arg("-a").arg(&l.0));
            assert!(ok, "partx -a: {o}");
        }
        l
    }
}
impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// Read the INSTALL section of the guest's run, wait for it to power off, and check what it
/// wrote onto `target` with the host's own tools.
fn check_install(s: &mut Session, image: &keel_testkit::Image, target: &Path) {
    let installed = section(s, "INSTALL", INSTALL);
    assert!(
        installed.contains("rc=0"),
        "keel install in the guest failed:\n{installed}\n--- console tail:\n{}",
        tail(&s.log(), 40)
    );
    let json_start = installed.find('{').expect("JSON summary");
    let json_end = installed.rfind('}').expect("JSON summary") + 1;
    let report: serde_json::Value = serde_json::from_str(&installed[json_start..json_end])
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}):\n{installed}"));
    assert_eq!(
        report["image_bytes"],
        fs::metadata(&image.disk).unwrap().len()
    );
    assert_eq!(report["layout"]["relocated"], true);
    assert_eq!(report["layout"]["root_grown"], true);
    assert_eq!(report["cloud_config"], "/oem/cloud-config.yml");
    if let Err(e) = s.wait_exit(Duration::from_secs(180)) {
        panic!("the guest did not power off: {e}\n{}", tail(&s.log(), 40));
    }

    // The host's own tools read what the guest wrote.
    {
        let l = Loop::new(target);
        let (ok, v) = keel_testkit::run(Command::new("sgdisk").arg("-v").arg(&l.0));
        assert!(ok && v.contains("No problems found"), "sgdisk -v:\n{v}");
        let (ok, cat) = keel_testkit::run(
            Command::new("debugfs")
                .args(["-R", "cat /cloud-config.yml"])
                .arg(format!("{}p6", l.0)),
        );
        assert!(
            ok && cat.contains(CLOUD_CONFIG),
            "cloud-config on OEM:\n{cat}"
        );
    }
}

#[test]
fn install_from_a_running_keel_system_then_boot_the_installed_disk() {
    let driver = driver_image();
    // The metal board's image, shared with image-builder/tests/boot_media.rs.
    let image = keel_testkit::build_image(&keel_testkit::metal_opts());
    let dir = tempfile::tempdir().unwrap();
    let image_size = fs::metadata(&image.disk).unwrap().len();
    let target = dir.path().join("target.raw");
    fs::File::create(&target)
        .unwrap()
        .set_len(image_size + 1024 * MIB)
        .unwrap();
    let source = source_disk(dir.path(), &image);
    let script = script(dir.path(), true);
    let guest_disk = keel_testkit::sparse_copy(&driver.disk, &{
        let d = dir.path().join("guest");
        fs::create_dir_all(&d).unwrap();
        d
    });

    let mut opts = BootOptions::new(&guest_disk);
    opts.mem_mb = 1024;
    // The only guest of the CI tier's run of this file: both host cores are its.
    opts.smp = 2;
    opts.extra_disks = vec![script, source, target.clone()];
    let mut s = Session::start(&opts).unwrap_or_else(|e| panic!("QEMU did not start: {e}"));
    let refused = section(&mut s, "REFUSE", BOOT);
    assert!(
        refused.contains("holds the running system")
            && refused.contains(&format!("rc={}", exit::REFUSED)),
        "installing onto the running disk was not refused:\n{refused}"
    );
    check_install(&mut s, &image, &target);

    // The installed disk alone (each boot on its own overlay): keel-init grows ROOT's
    // filesystem into the grown partition, the demo unit runs. Under UEFI; the full tier also
    // under SeaBIOS (the CI tier boots the metal disk's GRUB in boot_media.rs).
    for firmware in
        keel_testkit::tier::pick(vec![Firmware::Uefi], vec![Firmware::Uefi, Firmware::Bios])
    {
        let mut opts = BootOptions::new(&target);
        opts.mem_mb = 1024;
        opts.smp = 2;
        opts.firmware = firmware.clone();
        let mut s = Session::start(&opts).unwrap_or_else(|e| panic!("QEMU did not start: {e}"));
        // The firmware's own line first: OVMF's boot manager, or SeaBIOS handing to GRUB's
        // boot.img in the MBR the installer wrote.
        let loader = if firmware == Firmware::Bios {
            "GRUB loading"
        } else {
            "BdsDxe: starting"
        };
        for p in [
            loader,
            "grew the filesystem on vda9",
            "booting USR-A version 1.0.0",
            "Hello World",
        ] {
            if let Err(e) = s.wait_for(p, BOOT) {
                panic!(
                    "{firmware:?} boot of the installed disk, waiting for {p:?}: {e}\n--- console tail:\n{}",
                    tail(&s.log(), 60)
                );
            }
        }
        let _ = s.kill();
    }
}

/// The live system of the ISO (root in RAM, /usr from the signed payload in the initramfs)
/// carries the same installer: booted from the CD, it installs the metal image onto a blank disk.
#[test]
#[ignore = "full tier (ci/test.sh --full): a second image build and a live boot"]
fn install_from_the_live_iso() {
    let mut live_opts = keel_testkit::metal_opts();
    live_opts.name = "live-installer".into();
    live_opts
        .extra_args
        .extend(keel_testkit::extra_file_args(&keel_testkit::driver_files()));
    let live = keel_testkit::build_image(&live_opts);
    let image = keel_testkit::build_image(&keel_testkit::metal_opts());
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.raw");
    fs::File::create(&blank).unwrap().set_len(64 * MIB).unwrap();
    let target = dir.path().join("target.raw");
    fs::File::create(&target)
        .unwrap()
        .set_len(fs::metadata(&image.disk).unwrap().len() + 1024 * MIB)
        .unwrap();

    let mut opts = BootOptions::new(&blank);
    opts.mem_mb = 2048;
    opts.cdrom = Some(live.dir.join("keel-metal-x86_64-1.0.0.iso"));
    opts.extra_disks = vec![
        script(dir.path(), false),
        source_disk(dir.path(), &image),
        target.clone(),
    ];
    let mut s = Session::start(&opts).unwrap_or_else(|e| panic!("QEMU did not start: {e}"));
    expect(&mut s, "(diskless, ROOT in RAM)", BOOT);
    check_install(&mut s, &image, &target);
}
