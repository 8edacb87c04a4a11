//! The end-to-end test driver baked into test images (`--extra-file`), through which tests talk
//! to a booted guest: the files' texts and how they are written. Which image gets them, and
//! where they are kept, is `image.rs`'s business.

use std::fs;
use std::path::Path;

/// TEST IMAGES ONLY. The e2e test driver: a unit that, at every boot, once multi-user.target
/// is reached, runs the script on /dev/vdb (the first extra disk: a shell script padded with
/// zeros) with its output on the serial console. Serial console input does not reach the
/// guest's shell, so tests talk to the guest through scripts and console output.
///
/// The driver says on the console that it started, or that /dev/vdb holds no script (CI once
/// booted with its virtio disks swapped, and the driver's silence hid it). The unit starts with
/// basic.target and waits for multi-user.target itself, rather than being ordered after it: a
/// boot that never gets there says every two minutes which jobs hold it, instead of only
/// timing out.
pub const DRIVER: &str = "#!/bin/sh\n\
    # Keel e2e TEST IMAGE ONLY: runs the script on /dev/vdb as root at every boot.\n\
    if [ \"$(head -c 2 /dev/vdb 2>/dev/null)\" != '#!' ]; then\n\
    \x20   echo 'keel-e2e: no script on /dev/vdb, nothing to run'; exit 0\n\
    fi\n\
    echo 'keel-e2e: driver started; the script runs once multi-user.target is reached'\n\
    waited=0\n\
    until systemctl -q is-active multi-user.target; do\n\
    \x20   sleep 1; waited=$((waited + 1))\n\
    \x20   [ $((waited % 120)) -eq 0 ] || continue\n\
    \x20   echo \"keel-e2e: multi-user.target not reached after $waited s; its jobs:\"\n\
    \x20   systemctl list-jobs --no-pager --full\n\
    \x20   systemctl list-jobs --no-legend | awk '$4 == \"running\" { print $2 }' |\n\
    \x20       xargs -r systemctl status --no-pager --full -n 20\n\
    \x20   systemctl --failed --no-pager --full\n\
    done\n\
    tr -d '\\000' < /dev/vdb > /run/keel-e2e.sh\n\
    exec /bin/sh /run/keel-e2e.sh\n";
pub const DRIVER_UNIT: &str = "[Unit]\n\
    Description=Keel e2e test driver (TEST IMAGE ONLY)\n\
    After=basic.target\n\n\
    [Service]\n\
    Type=simple\n\
    ExecStart=/usr/lib/keel-e2e/driver\n\
    StandardOutput=journal+console\n\
    StandardError=journal+console\n";

/// TEST IMAGES ONLY. The boot marker: the image's hello.service (a busybox container that needs
/// Docker and a registry) replaced by a shell loop saying `Hello World` every second on the
/// console, from `/etc/systemd/system`, which wins over the demo in /usr/lib. Boot tests read
/// its line as "userspace is up" without starting Docker; the container-host test boots the
/// demo as shipped ([`crate::image::shipped_opts`]).
pub const BOOT_MARKER_UNIT: &str = "[Unit]\n\
    Description=Keel boot marker: Hello World every second (TEST IMAGE ONLY)\n\n\
    [Service]\n\
    ExecStart=/bin/sh -c 'while true; do echo \"Hello World\"; sleep 1; done'\n\
    StandardOutput=journal+console\n\
    Restart=always\n\n\
    [Install]\n\
    WantedBy=multi-user.target\n";

/// The boot marker as `--extra-file` entries (see [`driver_files`] for the format).
pub fn boot_marker_files() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![(
        "hello.service",
        "/etc/systemd/system/hello.service",
        BOOT_MARKER_UNIT,
    )]
}

/// The driver and its unit, enabled as `systemctl enable` would (a symlink in
/// multi-user.target.wants): (file name, destination in the image, text or `symlink:TARGET`).
pub fn driver_files() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("driver", "/usr/lib/keel-e2e/driver", DRIVER),
        (
            "keel-e2e-driver.service",
            "/usr/lib/systemd/system/keel-e2e-driver.service",
            DRIVER_UNIT,
        ),
        (
            "keel-e2e-driver.service.wants",
            "/usr/lib/systemd/system/multi-user.target.wants/keel-e2e-driver.service",
            "symlink:../keel-e2e-driver.service",
        ),
    ]
}

/// `files` written into `dir` (made if missing), as `--extra-file` arguments for `keel build`:
/// scripts (`#!`) mode 0755, other text 0644, `symlink:TARGET` a symlink (an existing one
/// stands: parallel callers make the same links).
pub fn write_extra_files(dir: &Path, files: &[(&str, &str, &str)]) -> Vec<String> {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let mut args = Vec::new();
    for (name, dest, text) in files {
        let src = dir.join(name);
        if let Some(target) = text.strip_prefix("symlink:") {
            match std::os::unix::fs::symlink(target, &src) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    panic!("symlink {}: {e}", src.display())
                }
                _ => {}
            }
        } else {
            fs::write(&src, text).unwrap_or_else(|e| panic!("write {}: {e}", src.display()));
            let mode = if text.starts_with("#!") { 0o755 } else { 0o644 };
            fs::set_permissions(&src, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        }
        args.push("--extra-file".to_string());
        args.push(format!("{}={dest}", src.display()));
    }
    args
}
