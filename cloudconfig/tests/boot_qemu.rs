//! keel-cloudinit in a booted Keel image (QEMU; TCG here): each of the six sources delivers a
//! config in its own boot, and the guest checks what it did from inside. One image (the default
//! board plus the e2e test driver, which runs the script on /dev/vdb after multi-user.target)
//! serves every boot, each on its own overlay.
//!
//! * NoCloud (`cidata` vfat on /dev/vdc): the issue's example
//! * config drive (`config-2`): docs/examples/users.yml
//! * fw_cfg (`opt/org.keel/user-data`): docs/examples/write-files.yml
//! * `keel.config.url=` (direct kernel boot for the argument, HTTP from the host): units.yml
//! * EC2 IMDSv2 (`keel.config.imds=` at a host server speaking IMDSv2): update.yml
//! * OEM (`/oem/cloud-config.yml` written into the image's OEM partition): script.sh
//! * a bad config: named by file:line, the valid rest applied; `keel.config.strict=1` halts.
//!
//! The guest prints `CHK key=value` lines (file contents with newlines as `|`); a failure
//! shows the console log.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_qemu::{BootOptions, Firmware, NetOptions, Session};

const BOOT: Duration = Duration::from_secs(900);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn example(name: &str) -> Vec<u8> {
    fs::read(repo().join("docs/examples").join(name)).unwrap()
}

/// The default image plus the e2e driver, built once for every test here.
/// The default image with the test driver: the one the update and reboot tests boot as 1.0.0
/// (one build in the image cache for all of them).
fn image() -> keel_testkit::Image {
    keel_testkit::build_image(&keel_testkit::e2e_opts("e2e-v1", "1.0.0"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The guest's script (/dev/vdb): checks common to every boot, then `checks`, then power off.
fn script_disk(dir: &Path, checks: &str) -> PathBuf {
    let text = format!(
        "#!/bin/sh\n\
         systemctl stop hello.service\n\
         chk() {{ echo \"CHK $1=$2\"; }}\n\
         file() {{ tr '\\n' '|' < \"$1\" 2>&1; }}\n\
         chk hostname \"$(hostname)\"\n\
         chk cloudinit-active \"$(systemctl is-active keel-cloudinit.service)\"\n\
         chk core \"$(getent passwd core | cut -d: -f1,6,7)\"\n\
         {checks}\n\
         echo @@DONE\n\
         systemctl poweroff\n"
    );
    let mut bytes = text.into_bytes();
    bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
    let p = dir.join("script.img");
    fs::write(&p, bytes).unwrap();
    p
}

/// A vfat filesystem image labelled `label` holding `files` (made by mkfs.vfat and mtools).
fn vfat(dir: &Path, label: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let img = dir.join(format!("{label}.img"));
    run(Command::new("mkfs.vfat")
        .args(["-n", label, "-C"])
        .arg(&img)
        .arg("8192"));
    for (path, bytes) in files {
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            parent = format!("{parent}/{part}");
            run(Command::new("mmd")
                .arg("-D")
                .arg("s")
                .arg("-i")
                .arg(&img)
                .arg(format!("::{parent}")));
        }
        let src = dir.join("vfat-file");
        fs::write(&src, bytes).unwrap();
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&img)
            .arg(&src)
            .arg(format!("::/{path}")));
    }
    img
}

/// Partition `number`'s (offset, size) in bytes.
fn partition(disk: &Path, number: usize) -> (u64, u64) {
    let json = run(Command::new("sfdisk").arg("--json").arg(disk));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let p = v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"].as_str().unwrap().ends_with(&number.to_string()))
        .unwrap()
        .clone();
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

/// Kernel, initramfs and command line out of the image's unified kernel image (on the ESP),
/// for a direct kernel boot with more kernel arguments.
fn direct(image: &keel_testkit::Image, dir: &Path, extra: &str) -> Firmware {
    let (esp, _) = partition(&image.disk, 1);
    let uki = dir.join("uki.efi");
    run(Command::new("mcopy")
        .arg("-i")
        .arg(format!("{}@@{esp}", image.disk.display()))
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .arg(&uki));
    let section = |name: &str| {
        let out = dir.join(name.trim_start_matches('.'));
        run(Command::new("objcopy")
            .args(["-O", "binary", "--only-section", name])
            .arg(&uki)
            .arg(&out));
        out
    };
    let kernel = section(".linux");
    let initrd = section(".initrd");
    let cmdline = fs::read_to_string(section(".cmdline")).unwrap();
    Firmware::Direct {
        kernel,
        initrd: Some(initrd),
        append: format!("{} {extra}", cmdline.trim_end_matches('\0').trim()),
    }
}

struct Guest {
    session: Session,
    _dir: tempfile::TempDir,
}

/// Boot `image` with the script disk and `disks` after it, `tweak` adjusting the options.
fn boot(
    image: &keel_testkit::Image,
    dir: tempfile::TempDir,
    checks: &str,
    disks: Vec<PathBuf>,
    tweak: impl FnOnce(&mut BootOptions),
) -> Guest {
    let mut opts = BootOptions::new(&image.disk);
    opts.extra_disks = vec![script_disk(dir.path(), checks)];
    opts.extra_disks.extend(disks);
    opts.log_path = Some(dir.path().join("console.log"));
    tweak(&mut opts);
    let session = Session::start(&opts).unwrap_or_else(|e| panic!("QEMU did not start: {e}"));
    Guest { session, _dir: dir }
}

impl Guest {
    fn fail(&self, why: &str) -> ! {
        panic!(
            "{why}\n--- console log ({}):\n{}",
            self.session.log_path().display(),
            self.session.log().replace('\r', "")
        )
    }

    fn expect(&mut self, text: &str) {
        if let Err(e) = self.session.wait_for(text, BOOT) {
            self.fail(&format!("waiting for {text:?}: {e}"));
        }
    }

    /// Waits for the script to finish; its `CHK` lines.
    fn checks(&mut self) -> BTreeMap<String, String> {
        self.expect("@@DONE");
        let _ = self.session.wait_exit(Duration::from_secs(60));
        let mut m = BTreeMap::new();
        for line in self.session.log().replace('\r', "").lines() {
            if let Some((_, kv)) = line.split_once("CHK ") {
                if let Some((k, v)) = kv.split_once('=') {
                    m.insert(k.to_string(), v.to_string());
                }
            }
        }
        m
    }

    fn console(&self) -> String {
        self.session.log().replace('\r', "")
    }

    fn assert_eq(&self, checks: &BTreeMap<String, String>, key: &str, want: &str) {
        match checks.get(key) {
            Some(v) if v == want => {}
            other => self.fail(&format!("{key}: {other:?}, want {want:?}")),
        }
    }

    fn assert_has(&self, checks: &BTreeMap<String, String>, key: &str, want: &str) {
        match checks.get(key) {
            Some(v) if v.contains(want) => {}
            other => self.fail(&format!("{key}: {other:?}, want it to contain {want:?}")),
        }
    }

    fn assert_console(&self, want: &str) {
        if !self.console().contains(want) {
            self.fail(&format!("the console lacks {want:?}"));
        }
    }
}

/// Minimal HTTP server on 127.0.0.1 (the guest's 10.0.2.2): `handler(method, path, headers)`
/// → (status, body); every request is logged as `METHOD PATH token=...`.
fn serve(
    handler: impl Fn(&str, &str, &[(String, String)]) -> (u16, Vec<u8>) + Send + 'static,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
            }
            let token = headers
                .iter()
                .find(|(k, _)| k == "x-aws-ec2-metadata-token")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            seen.lock()
                .unwrap()
                .push(format!("{method} {path} token={token}"));
            let (status, body) = handler(&method, &path, &headers);
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    (port, log)
}

fn with_network(o: &mut BootOptions) {
    // Not restricted: the guest reaches the host's loopback at 10.0.2.2.
    o.net = Some(NetOptions {
        restrict: false,
        ..NetOptions::default()
    });
}

const ISSUE_EXAMPLE: &str = include_str!("../src/tests/issue10_example.yml");

#[test]
fn nocloud_applies_the_issue_example() {
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let seed = vfat(
        dir.path(),
        "cidata",
        &[
            ("user-data", ISSUE_EXAMPLE.as_bytes()),
            ("meta-data", b"instance-id: keel-test\n"),
        ],
    );
    let checks = "\
        chk socket-file \"$(grep -c '^ListenStream=2375$' /etc/systemd/system/docker-tcp.socket)\"\n\
        chk socket-enabled \"$(systemctl is-enabled docker-tcp.socket)\"\n\
        chk socket-link \"$(readlink /etc/systemd/system/sockets.target.wants/docker-tcp.socket)\"\n\
        chk socket-active \"$(systemctl is-active docker-tcp.socket)\"\n\
        chk docker-cat \"$(systemctl cat docker.service 2>&1 | tr '\\n' '|')\"\n\
        chk docker-dropin \"$(file /etc/systemd/system/docker.service.d/50-insecure-registry.conf)\"\n\
        chk nfs-mode \"$(stat -c %a /etc/conf.d/nfs)\"\n\
        chk nfs \"$(file /etc/conf.d/nfs)\"\n\
        chk core-keys \"$(file /home/core/.ssh/authorized_keys)\"\n\
        chk core-keys-mode \"$(stat -c '%a %U' /home/core/.ssh/authorized_keys)\"\n\
        chk update-conf \"$(file /etc/keel/update.conf)\"\n\
        chk etcd2 \"$(for i in $(seq 90); do systemctl -q is-active etcd2.service && break; sleep 2; done; systemctl is-active etcd2.service)\"\n\
        chk etcd-env \"$(systemctl show etcd-member.service -p Environment)\"\n\
        chk etcd-health \"$(etcdctl --endpoints=http://127.0.0.1:2379 endpoint health 2>&1 | tr '\\n' ' ')\"\n\
        chk etcd-put \"$( (etcdctl put /keel/nocloud hello; etcdctl --endpoints=http://127.0.0.1:4001 get --print-value-only /keel/nocloud) 2>&1 | paste -sd' ')\"\n\
        chk etcd-journal \"$(journalctl -u etcd-member -o cat | grep -e etcd-member: -e error | head -5 | paste -sd'|')\"\n\
        chk docker-env \"$(systemctl show docker.service -p Environment)\"\n\
        chk socket-listening \"$(ss -Hltn 'sport = :2375' | wc -l)\"\n\
        chk machine-id \"$(cat /etc/machine-id)\"\n\
        chk fleet \"$(for i in $(seq 60); do fleetctl list-machines --no-legend 2>/dev/null | grep -q . && break; sleep 2; done; fleetctl list-machines --full 2>&1 | tr -s '\\t' ' ' | paste -sd'|')\"\n\
        chk again \"$(mount -o ro /dev/vdc /mnt && keel-cloudinit --from-file /mnt/user-data | grep 'applied /mnt'; umount /mnt)\"\n";
    let mut g = boot(&image, dir, checks, vec![seed], |_| {});
    let c = g.checks();
    g.assert_eq(&c, "hostname", "core-01");
    g.assert_eq(&c, "cloudinit-active", "active");
    g.assert_has(&c, "core", "core:/home/core:/bin/bash");
    g.assert_eq(&c, "socket-file", "1");
    g.assert_eq(&c, "socket-enabled", "enabled");
    g.assert_eq(&c, "socket-link", "/etc/systemd/system/docker-tcp.socket");
    g.assert_has(
        &c,
        "docker-dropin",
        "DOCKER_OPTS='--insecure-registry=\"0.0.0.0/0\"'",
    );
    // The image's docker.service with the drop-in where cloud-config put it (the container
    // itself runs in image-builder/tests/container_host.rs).
    g.assert_has(
        &c,
        "docker-cat",
        "# /etc/systemd/system/docker.service.d/50-insecure-registry.conf|",
    );
    g.assert_eq(
        &c,
        "docker-env",
        r#"Environment="DOCKER_OPTS=--insecure-registry=\"0.0.0.0/0\"""#,
    );
    g.assert_eq(&c, "socket-active", "active");
    g.assert_eq(&c, "socket-listening", "1");
    g.assert_eq(&c, "nfs-mode", "644");
    g.assert_eq(&c, "nfs", "OPTS_RPC_MOUNTD=\"\"|");
    g.assert_eq(&c, "core-keys", "ssh-rsa 121313dqx1e123e12… user@my_mac|");
    g.assert_eq(&c, "core-keys-mode", "600 core");
    g.assert_has(&c, "update-conf", "REBOOT_STRATEGY=off|");
    // Applying the same config again changes nothing.
    g.assert_has(&c, "again", " 0 changed, ");
    g.assert_console("keel-cloudinit: user-data from nocloud: /dev/vdc:user-data");
    // coreos.etcd2 ran etcd 3.4 as the single-member cluster the example describes; its
    // client URLs answer on 2379 and on 4001.
    g.assert_eq(&c, "etcd2", "active");
    g.assert_has(
        &c,
        "etcd-env",
        "ETCD_INITIAL_CLUSTER=core-01=http://127.0.0.1:2380",
    );
    g.assert_has(&c, "etcd-health", "http://127.0.0.1:2379 is healthy");
    g.assert_eq(&c, "etcd-put", "OK hello");
    g.assert_has(
        &c,
        "etcd-journal",
        "etcd-member: starting etcd member core-01",
    );
    // The example's `fleet.service` `command: start` runs the fleet agent on the local etcd
    // (fleet/): `fleetctl` in the guest lists this machine.
    let id = c.get("machine-id").cloned().unwrap_or_default();
    g.assert_has(&c, "fleet", &format!("MACHINE IP METADATA|{id} "));
}

#[test]
#[ignore = "full tier (ci/test.sh --full): the CI tier boots NoCloud (users and keys from the issue's example), EC2 and a URL"]
fn config_drive_adds_users_and_keys() {
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let users = example("users.yml");
    let drive = vfat(
        dir.path(),
        "config-2",
        &[("openstack/latest/user_data", users.as_slice())],
    );
    let checks = "\
        chk elroy \"$(getent passwd elroy | cut -d: -f5-7)\"\n\
        chk elroy-groups \"$(id -nG elroy)\"\n\
        chk elroy-hash \"$(getent shadow elroy | cut -d: -f2 | cut -c1-12)\"\n\
        chk elroy-keys \"$(file /home/elroy/.ssh/authorized_keys)\"\n\
        chk elroy-home \"$(stat -c '%a %U' /home/elroy)\"\n\
        chk backup \"$(getent passwd backup-agent | cut -d: -f3,6,7)\"\n\
        chk backup-home \"$(test -e /home/backup-agent && echo exists || echo none)\"\n\
        chk core-keys \"$(file /home/core/.ssh/authorized_keys)\"\n";
    let mut g = boot(&image, dir, checks, vec![drive], |_| {});
    let c = g.checks();
    g.assert_console(
        "keel-cloudinit: user-data from config-drive: /dev/vdc:openstack/latest/user_data",
    );
    g.assert_eq(&c, "elroy", "Elroy Jetson:/home/elroy:/bin/bash");
    g.assert_has(&c, "elroy-groups", "sudo");
    g.assert_has(&c, "elroy-groups", "users");
    g.assert_eq(&c, "elroy-hash", "$6$5s2u6/jR$");
    g.assert_has(&c, "elroy-keys", "elroy@example|");
    g.assert_eq(&c, "elroy-home", "700 elroy");
    let uid: u32 = c["backup"].split(':').next().unwrap().parse().unwrap();
    assert!((101..1000).contains(&uid), "{:?}", c["backup"]);
    g.assert_has(&c, "backup", ":/usr/sbin/nologin");
    g.assert_eq(&c, "backup-home", "none");
    g.assert_has(&c, "core-keys", "admin@example|");
}

#[test]
#[ignore = "full tier (ci/test.sh --full): the CI tier boots NoCloud, EC2 and a URL"]
fn fw_cfg_writes_files() {
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let cc = repo().join("docs/examples/write-files.yml");
    let checks = "\
        chk motd \"$(file /etc/motd)\"\n\
        chk hello \"$(/opt/bin/hello)\"\n\
        chk hello-mode \"$(stat -c %a /opt/bin/hello)\"\n\
        chk b64 \"$(file /etc/keel/example/base64.txt)\"\n\
        chk gzip \"$(file /etc/keel/example/gzip.txt)\"\n\
        chk notes \"$(stat -c '%a %U:%G' /home/core/notes.txt) $(cat /home/core/notes.txt)\"\n";
    let mut g = boot(&image, dir, checks, vec![], |o| {
        o.fw_cfg = vec![("opt/org.keel/user-data".into(), cc)];
    });
    let c = g.checks();
    g.assert_console("keel-cloudinit: user-data from fw_cfg: fw_cfg:opt/org.keel/user-data");
    g.assert_eq(&c, "motd", "Welcome to Keel, configured by cloud-config.|");
    g.assert_eq(&c, "hello", "hello from write_files");
    g.assert_eq(&c, "hello-mode", "755");
    g.assert_eq(&c, "b64", "hello base64|");
    g.assert_eq(&c, "gzip", "hello gzip|");
    g.assert_eq(&c, "notes", "600 core:core only core reads this");
}

#[test]
fn kernel_command_line_url_starts_units() {
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let units = example("units.yml");
    let (port, log) = serve(move |_, path, _| match path {
        "/configs/units.yml" => (200, units.clone()),
        _ => (404, b"not here".to_vec()),
    });
    let url = format!("http://10.0.2.2:{port}/configs/units.yml");
    let firmware = direct(&image, dir.path(), &format!("keel.config.url={url}"));
    let checks = "\
        chk enabled-out \"$(file /run/keel-example.out)\"\n\
        chk enabled \"$(systemctl is-enabled keel-example.service)\"\n\
        chk command-out \"$(file /run/keel-example-now.out)\"\n\
        chk runtime-unit \"$(test -f /run/systemd/system/keel-example-now.service && echo yes)\"\n\
        chk hello-env \"$(systemctl show hello.service -p Environment)\"\n\
        chk masked \"$(systemctl is-enabled e2scrub_all.timer)\"\n\
        chk network-stage \"$(systemctl is-active keel-cloudinit-network.service)\"\n";
    let mut g = boot(&image, dir, checks, vec![], |o| {
        o.firmware = firmware;
        with_network(o);
    });
    let c = g.checks();
    g.assert_console(
        "keel-cloudinit: url needs the network: continuing in keel-cloudinit-network.service",
    );
    g.assert_console(&format!("keel-cloudinit: user-data from url: {url}"));
    // Enabled by the config and started on this same boot.
    g.assert_eq(&c, "enabled-out", "enabled-by-cloud-config|");
    g.assert_eq(&c, "enabled", "enabled");
    g.assert_eq(&c, "command-out", "started-by-command|");
    g.assert_eq(&c, "runtime-unit", "yes");
    g.assert_eq(&c, "hello-env", "Environment=GREETING=cloud-config");
    g.assert_eq(&c, "masked", "masked");
    g.assert_eq(&c, "network-stage", "active");
    assert_eq!(
        log.lock().unwrap().as_slice(),
        ["GET /configs/units.yml token="]
    );
}

#[test]
fn ec2_imds_v2_sets_hostname_and_update_conf() {
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let cc = example("update.yml");
    let (port, log) = serve(move |method, path, headers| {
        let token = headers
            .iter()
            .any(|(k, v)| k == "x-aws-ec2-metadata-token" && v == "keel-test-token");
        match (method, path) {
            ("PUT", "/latest/api/token") => (200, b"keel-test-token".to_vec()),
            ("GET", "/latest/user-data") if token => (200, cc.clone()),
            ("GET", "/latest/meta-data/local-ipv4") if token => (200, b"10.0.2.15".to_vec()),
            ("GET", "/latest/meta-data/instance-id") if token => (200, b"i-0keel".to_vec()),
            // No public address or hostname: as on an instance without them.
            ("GET", _) if token => (404, Vec::new()),
            _ => (401, Vec::new()),
        }
    });
    let firmware = direct(
        &image,
        dir.path(),
        &format!("keel.config.imds=http://10.0.2.2:{port}"),
    );
    let checks = "\
        chk hosts \"$(grep keel-node-7 /etc/hosts)\"\n\
        chk update-conf \"$(file /etc/keel/update.conf)\"\n\
        chk attributes \"$(file /run/metadata/flatcar)\"\n\
        chk etcd-reads \"$(systemctl show etcd-member -p EnvironmentFiles)\"\n";
    let mut g = boot(&image, dir, checks, vec![], |o| {
        o.firmware = firmware;
        with_network(o);
    });
    let c = g.checks();
    g.assert_console(&format!(
        "keel-cloudinit: user-data from ec2-imds: http://10.0.2.2:{port}/latest/user-data"
    ));
    g.assert_eq(&c, "hostname", "keel-node-7");
    g.assert_has(&c, "hosts", "127.0.0.1");
    // The instance's attributes, where Flatcar's units (and etcd-member) read them.
    g.assert_console("keel-cloudinit: ec2-imds: instance attributes in /run/metadata/flatcar: COREOS_EC2_IPV4_LOCAL, COREOS_EC2_INSTANCE_ID");
    g.assert_eq(
        &c,
        "attributes",
        "COREOS_EC2_IPV4_LOCAL=10.0.2.15|COREOS_EC2_INSTANCE_ID=i-0keel|",
    );
    g.assert_has(
        &c,
        "etcd-reads",
        "/run/metadata/flatcar (ignore_errors=yes)",
    );
    for line in [
        "REBOOT_STRATEGY=etcd-lock|",
        "GROUP=beta|",
        "SERVER=https://updates.example.com/v1/update/|",
        "REBOOT_WINDOW_START=Thu 04:00|",
        "REBOOT_WINDOW_LENGTH=1h30m|",
    ] {
        g.assert_has(&c, "update-conf", line);
    }
    assert_eq!(
        log.lock().unwrap().as_slice(),
        [
            "PUT /latest/api/token token=",
            "GET /latest/user-data token=keel-test-token",
            "GET /latest/meta-data/local-ipv4 token=keel-test-token",
            "GET /latest/meta-data/public-ipv4 token=keel-test-token",
            "GET /latest/meta-data/hostname token=keel-test-token",
            "GET /latest/meta-data/instance-id token=keel-test-token",
        ]
    );
}

/// The OEM partition (ext4, partition 6) of a copy of the image gets `/cloud-config.yml`, as
/// `keel install --cloud-config` writes it.
fn with_oem_file(image: &keel_testkit::Image, dir: &Path, bytes: &[u8]) -> PathBuf {
    let disk = keel_testkit::sparse_copy(&image.disk, dir);
    let (off, size) = partition(&disk, 6);
    let part = dir.join("oem.img");
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", part.display()))
        .args(["bs=1M", "status=none"])
        .arg(format!("skip={}", off >> 20))
        .arg(format!("count={}", size >> 20)));
    let src = dir.join("cloud-config.yml");
    fs::write(&src, bytes).unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} cloud-config.yml", src.display()))
        .arg(&part));
    run(Command::new("dd")
        .arg(format!("if={}", part.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "status=none", "conv=notrunc"])
        .arg(format!("seek={}", off >> 20)));
    disk
}

#[test]
#[ignore = "full tier (ci/test.sh --full): the CI tier boots NoCloud, EC2 and a URL"]
fn oem_script_runs_once() {
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let disk = with_oem_file(&image, dir.path(), &example("script.sh"));
    let checks = "\
        for i in $(seq 60); do [ -s /var/lib/keel-example-script.log ] && break; sleep 1; done\n\
        chk ran \"$(wc -l < /var/lib/keel-example-script.log)\"\n\
        chk marker \"$(ls /var/lib/keel/cloudinit/ | grep -c '^script-.*\\.ran$')\"\n\
        chk again \"$(keel-cloudinit --from-file /oem/cloud-config.yml | tail -1)\"\n\
        sleep 3\n\
        chk ran-after \"$(wc -l < /var/lib/keel-example-script.log)\"\n";
    let mut g = boot(&image, dir, checks, vec![], |o| o.image = disk);
    let c = g.checks();
    g.assert_console("keel-cloudinit: user-data from oem: /oem/cloud-config.yml");
    g.assert_console("keel example script: done");
    g.assert_eq(&c, "ran", "1");
    g.assert_eq(&c, "marker", "1");
    g.assert_has(&c, "again", "applied /oem/cloud-config.yml: 0 changed");
    g.assert_eq(&c, "ran-after", "1");
}

const BAD: &str = r#"#cloud-config
hostname: still-boots
write_files:
  - path: /etc/keel/good.txt
    content: good
  - path: /etc/keel/bad.txt
    permissions: '0999'
    content: bad
coreos:
  etcd2:
    name: core-01
    initial-cluster: core-01
  units:
    - name: etcd2.service
      command: start
"#;

#[test]
fn a_bad_config_boots_with_what_was_valid_and_strict_halts() {
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let seed = vfat(dir.path(), "cidata", &[("user-data", BAD.as_bytes())]);
    let checks = "\
        chk good \"$(file /etc/keel/good.txt)\"\n\
        chk bad \"$(test -e /etc/keel/bad.txt && echo exists || echo absent)\"\n\
        chk etcd \"$(for i in $(seq 60); do systemctl -q is-failed etcd-member && break; sleep 2; done; systemctl is-failed etcd-member)\"\n\
        chk etcd-journal \"$(journalctl -u etcd-member -o cat | grep etcd-member: | head -1)\"\n";
    let strict_dir = tempfile::tempdir().unwrap();
    let strict_seed = vfat(
        strict_dir.path(),
        "cidata",
        &[("user-data", BAD.as_bytes())],
    );
    let firmware = direct(&image, strict_dir.path(), "keel.config.strict=1");

    let mut g = boot(&image, dir, checks, vec![seed], |_| {});
    let c = g.checks();
    g.assert_console("keel-cloudinit: /dev/vdc:user-data:7: error: ");
    g.assert_eq(&c, "hostname", "still-boots");
    g.assert_eq(&c, "good", "good");
    g.assert_eq(&c, "bad", "absent");
    // A malformed coreos.etcd2: named on the console and in etcd-member's journal, which stops
    // (not restarted); the machine boots on.
    g.assert_console(
        "coreos.etcd2: error: coreos.etcd2.initial-cluster: \"core-01\" is not name=URL",
    );
    g.assert_eq(&c, "etcd", "failed");
    g.assert_has(
        &c,
        "etcd-journal",
        "etcd-member: the cloud-config's coreos.etcd2 has errors: coreos.etcd2.initial-cluster: \"core-01\" is not name=URL; not starting etcd",
    );

    let mut g = boot(&image, strict_dir, "", vec![strict_seed], |o| {
        o.firmware = firmware
    });
    g.expect("keel-cloudinit: /dev/vdc:user-data:7: error: ");
    g.expect("keel.config.strict=1: nothing applied, halting");
    g.expect("reboot: System halted");
    if g.console().contains("@@DONE") {
        g.fail("the strict machine booted on");
    }
}
