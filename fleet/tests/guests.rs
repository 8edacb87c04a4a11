//! fleet on three Keel guests in QEMU (issue #16's proof), driven from the host with the real
//! `keel-fleet` CLI:
//!
//! * each guest's cloud-config has the static etcd cluster of the etcd issue and a
//!   `coreos.fleet` section (metadata `group=hw_webservers` on core-01 and core-02 only,
//!   `agent-ttl: 30s`, fleet's default), which starts the agent;
//! * the source document's `hello_world@1`/`@2` (`MachineMetadata=group=hw_webservers`,
//!   `Conflicts=hello_world@*`), started as `start 'hello_world@*'`, land on core-01 and
//!   core-02, one each, and print Docker's `Hello World` (busybox from a registry on the host's
//!   loopback), read with `journal` through `FLEETCTL_TUNNEL` (SSH to core-01, then on to the
//!   unit's machine);
//! * `Global=true` runs on all three, `MachineOf=` follows its unit, a unit that fits nowhere
//!   is reported, `fleetctl list-machines` works inside a guest against its local etcd;
//! * powering off core-03 moves its unit to another machine within a bounded time.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use keel_qemu::Lan;
use keel_testkit::etcd_guests::{address, fail, static_member, until_ok, Guest, Spec, FORM};
use keel_testkit::registry::Registry;

const MIRROR: [u8; 4] = [10, 0, 2, 100];
const MIRROR_PORT: u16 = 5000;

/// The source document's unit, as it is written there.
const HELLO: &str = "[Unit]\nDescription=HelloWorldApp\nAfter=docker.service\nRequires=docker.service\n\n\
[Service]\nTimeoutStartSec=0\nExecStartPre=-/usr/bin/docker rm busybox1\n\
ExecStartPre=/usr/bin/docker pull busybox\n\
ExecStart=/usr/bin/docker run --rm  --name busybox1 busybox /bin/sh -c \"while true; do echo Hello World; sleep 1; done\"\n\
ExecStop=/usr/bin/docker stop busybox1\n\n\
[X-Fleet]\nMachineMetadata=group=hw_webservers\nConflicts=hello_world@*\n";

const GLOBAL: &str = "[Service]\nExecStart=/bin/sh -c 'echo global unit on $(hostname); exec sleep infinity'\n\n[X-Fleet]\nGlobal=true\n";
const SIDECAR: &str = "[Service]\nExecStart=/bin/sh -c 'echo sidecar; exec sleep infinity'\n\n[X-Fleet]\nMachineOf=hello_world@1.service\n";
const MOVER: &str =
    "[Service]\nExecStart=/bin/sh -c 'echo mover on $(hostname); exec sleep infinity'\n";
const NOWHERE: &str = "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nMachineMetadata=group=db\n";

fn fleet_section(n: u8) -> String {
    let metadata = if n <= 2 {
        format!("group=hw_webservers,name=core-0{n}")
    } else {
        format!("name=core-0{n}")
    };
    format!(
        "  fleet:\n    public-ip: {}\n    metadata: {metadata}\n    agent-ttl: 30s\n    \
         etcd-request-timeout: 10\n",
        address(n)
    )
}

fn units() -> String {
    format!(
        "    - name: docker.service\n      drop-ins:\n        - name: 50-mirror.conf\n          \
         content: |\n            [Service]\n            \
         Environment=DOCKER_OPTS='--insecure-registry=\"0.0.0.0/0\" --registry-mirror=http://{}.{}.{}.{}:{MIRROR_PORT}'\n    \
         - name: fleet.service\n      drop-ins:\n        - name: 90-console.conf\n          \
         content: |\n            [Service]\n            StandardError=journal+console\n",
        MIRROR[0], MIRROR[1], MIRROR[2], MIRROR[3]
    ) + keel_testkit::etcd_guests::ETCD_ON_CONSOLE
}

fn keypair(dir: &Path) -> (std::path::PathBuf, String) {
    let key = dir.join("id_ed25519");
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "keel-fleet-test",
            "-f",
        ])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

struct Fleetctl {
    endpoints: String,
    tunnel: String,
    key: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Fleetctl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_keel-fleet"))
            .current_dir(&self.dir)
            .env("FLEETCTL_ENDPOINT", &self.endpoints)
            .args(args)
            .output()
            .unwrap()
    }

    /// Through the tunnel (SSH to core-01), as the source document's `FLEETCTL_TUNNEL`.
    fn tunneled(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_keel-fleet"))
            .env_remove("FLEETCTL_ENDPOINT")
            .env("FLEETCTL_TUNNEL", &self.tunnel)
            .env("FLEETCTL_SSH_IDENTITY", &self.key)
            .env("FLEETCTL_STRICT_HOST_KEY_CHECKING", "false")
            // sshd in a guest under TCG can take longer than ssh's 10 s to say hello.
            .env("FLEETCTL_SSH_TIMEOUT", "90")
            .args(args)
            .output()
            .unwrap()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `f` until it returns Some, within `limit`; else fails with the guests' consoles.
fn until<T>(
    guests: &[Guest],
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if started.elapsed() > limit {
            fail(
                guests,
                &format!("{what}: not within {limit:?}; last: {last}"),
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// Fails with the cluster's view and every guest's console tail.
fn die(guests: &[Guest], f: &Fleetctl, why: &str) -> ! {
    let views: Vec<String> = [
        vec!["list-machines", "--full"],
        vec!["list-unit-files"],
        vec!["list-units", "--full"],
    ]
    .iter()
    .map(|a| format!("$ keel-fleet {}\n{}", a.join(" "), text(&f.run(a))))
    .collect();
    fail(guests, &format!("{why}\n{}", views.join("\n")))
}

/// `assert!` that fails with [`die`].
macro_rules! ensure {
    ($g:expr, $f:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            die($g, $f, &format!($($fmt)+))
        }
    };
}

fn units_json(f: &Fleetctl) -> Result<Vec<serde_json::Value>, String> {
    let o = f.run(&["list-units", "--json"]);
    if !o.status.success() {
        return Err(text(&o));
    }
    serde_json::from_slice(&o.stdout).map_err(|e| format!("{e}: {}", text(&o)))
}

fn machines_of(rows: &[serde_json::Value], unit: &str) -> Vec<String> {
    rows.iter()
        .filter(|r| r["unit"] == unit)
        .map(|r| r["machine"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
#[ignore = "full tier (ci/test.sh --full): three guests at once with etcd, Docker and fleet"]
fn the_source_documents_fleet_units_on_three_guests() {
    let image = keel_testkit::default_image();
    let registry = Registry::start();
    registry.push_busybox();
    // Kept when the test fails (consoles, cloud-configs); removed at the end of a pass.
    let dir = tempfile::Builder::new()
        .prefix("keel-fleet-guests-")
        .tempdir()
        .unwrap()
        .keep();
    eprintln!("consoles and configs in {}", dir.display());
    let (key, public) = keypair(&dir);
    let lan = Lan::start().unwrap();
    let ssh_port = keel_testkit::etcd::free_port();
    let started = Instant::now();
    let unit_lines = units();
    let top = format!("ssh_authorized_keys:\n  - {public}\n");
    let mut guests: Vec<Guest> = (1..=3u8)
        .map(|n| {
            // The fleet section follows etcd2's lines inside `coreos:`.
            let coreos = format!("{}{}", static_member(n), fleet_section(n));
            let spec = Spec {
                etcd2: &coreos,
                units: &unit_lines,
                top: &top,
                host_forwards: if n == 1 { vec![(ssh_port, 22)] } else { vec![] },
                guest_forwards: vec![(MIRROR, MIRROR_PORT, registry.port)],
                memory_mib: Some(1280),
                ..Spec::default()
            };
            Guest::boot_spec(&image.disk, &dir, n, &lan, &spec)
        })
        .collect();
    let members: Vec<String> = guests.iter().map(Guest::endpoint).collect();
    until_ok(&guests, &members, &["endpoint", "health"], FORM);
    eprintln!("etcd healthy after {:.0}s", started.elapsed().as_secs_f64());

    let work = dir.join("units");
    std::fs::create_dir(&work).unwrap();
    for (name, text) in [
        ("hello_world@1.service", HELLO),
        ("hello_world@2.service", HELLO),
        ("global.service", GLOBAL),
        ("sidecar.service", SIDECAR),
        ("mover.service", MOVER),
        ("nowhere.service", NOWHERE),
    ] {
        std::fs::write(work.join(name), text).unwrap();
    }
    let f = Fleetctl {
        endpoints: members.join(","),
        tunnel: format!("127.0.0.1:{ssh_port}"),
        key: key.clone(),
        dir: work.clone(),
    };

    // Three agents registered, with the metadata their cloud-configs gave.
    let machines: Vec<serde_json::Value> =
        until(&guests, "three machines registered", FORM, || {
            let o = f.run(&["list-machines", "--json"]);
            let v: Vec<serde_json::Value> =
                serde_json::from_slice(&o.stdout).map_err(|e| format!("{e}: {}", text(&o)))?;
            if v.len() == 3 {
                Ok(v)
            } else {
                Err(text(&o))
            }
        });
    let id_of = |n: u8| -> String {
        machines
            .iter()
            .find(|m| {
                m["metadata"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("name=core-0{n}"))
            })
            .and_then(|m| m["machine"].as_str())
            .unwrap_or_else(|| fail(&guests, &format!("no machine core-0{n}: {machines:?}")))
            .to_string()
    };
    let ids: Vec<String> = (1..=3).map(id_of).collect();
    let table = text(&f.run(&["list-machines"]));
    for n in 1..=3u8 {
        ensure!(&guests, &f, table.contains(&address(n)), "{table}");
    }
    ensure!(
        &guests,
        &f,
        table.starts_with("MACHINE\t\tIP\t\tMETADATA\n"),
        "{table}"
    );

    // The document's `fleetctl start hello_world@*` (the glob matches the two files here).
    let o = f.run(&["start", "--block-attempts", "600", "hello_world@*"]);
    let said = text(&o);
    ensure!(&guests, &f, o.status.success(), "{said}");
    for n in 1..=2 {
        ensure!(
            &guests,
            &f,
            said.contains(&format!("Unit hello_world@{n}.service launched on ")),
            "{said}"
        );
    }
    let o = f.run(&[
        "start",
        "--block-attempts",
        "600",
        "global.service",
        "sidecar.service",
        "mover.service",
    ]);
    ensure!(&guests, &f, o.status.success(), "{}", text(&o));
    ensure!(
        &guests,
        &f,
        text(&o).contains("Triggered global unit global.service start"),
        "{}",
        text(&o)
    );
    let o = f.run(&["start", "--no-block", "nowhere.service"]);
    ensure!(&guests, &f, o.status.success(), "{}", text(&o));

    let rows = until(&guests, "every unit placed and active", FORM, || {
        let rows = units_json(&f)?;
        let active = rows.iter().filter(|r| r["active"] == "active").count();
        if active == 2 + 3 + 2 {
            Ok(rows)
        } else {
            Err(format!("{rows:?}"))
        }
    });
    let h1 = machines_of(&rows, "hello_world@1.service");
    let h2 = machines_of(&rows, "hello_world@2.service");
    ensure!(&guests, &f, h1.len() == 1, "{:?} vs {:?}", h1.len(), 1);
    ensure!(
        &guests,
        &f,
        h1 != h2,
        "Conflicts=hello_world@* shared a machine ({:?} vs {:?})",
        h1,
        h2
    );
    for h in [&h1[0], &h2[0]] {
        ensure!(
            &guests,
            &f,
            *h == ids[0] || *h == ids[1],
            "hello_world on a machine without the metadata"
        );
    }
    let mut global = machines_of(&rows, "global.service");
    global.sort();
    let mut all = ids.clone();
    all.sort();
    ensure!(
        &guests,
        &f,
        global == all,
        "Global=true ({:?} vs {:?})",
        global,
        all
    );
    ensure!(
        &guests,
        &f,
        machines_of(&rows, "sidecar.service") == h1,
        "MachineOf=hello_world@1.service ({:?} vs {:?})",
        machines_of(&rows, "sidecar.service"),
        h1
    );
    ensure!(
        &guests,
        &f,
        machines_of(&rows, "mover.service") == [ids[2].clone()],
        "least loaded: core-03 ({:?} vs {:?})",
        machines_of(&rows, "mover.service"),
        [ids[2].clone()]
    );
    let files = f.run(&["list-unit-files", "--json"]);
    let files: Vec<serde_json::Value> = serde_json::from_slice(&files.stdout).unwrap();
    let nowhere = files
        .iter()
        .find(|u| u["unit"] == "nowhere.service")
        .unwrap();
    ensure!(
        &guests,
        &f,
        nowhere["unplaced"] == "no registered machine has metadata group=db",
        "{files:?} ({:?} vs {:?})",
        nowhere["unplaced"],
        "no registered machine has metadata group=db"
    );

    // Docker's Hello World from each instance, read from the host through the tunnel.
    for unit in ["hello_world@1.service", "hello_world@2.service"] {
        let log = until(&guests, &format!("{unit} says Hello World"), FORM, || {
            let o = f.tunneled(&["journal", "--lines", "20", unit]);
            let t = text(&o);
            if t.contains("Hello World") {
                Ok(t)
            } else {
                Err(t)
            }
        });
        eprintln!("{unit} via FLEETCTL_TUNNEL:\n{log}");
    }
    let o = f.tunneled(&["status", "sidecar.service"]);
    ensure!(
        &guests,
        &f,
        text(&o).contains("Active: active (running)"),
        "{}",
        text(&o)
    );
    // Inside a guest, against its own etcd, as `fleetctl`.
    let o = Command::new("ssh")
        .args(["-i"])
        .arg(&key)
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
        .args(["-o", "ConnectTimeout=90"])
        .arg("-o")
        .arg(format!(
            "ProxyCommand=ssh -i {} -o BatchMode=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=90 \
             -p {ssh_port} -W %h:%p core@127.0.0.1",
            key.display()
        ))
        .arg(format!("core@{}", address(3)))
        .args(["fleetctl", "list-units"])
        .output()
        .unwrap();
    ensure!(
        &guests,
        &f,
        o.status.success() && text(&o).contains("mover.service"),
        "{}",
        text(&o)
    );

    // core-03 goes away: its unit moves within the agent TTL plus scheduling.
    guests[2].power_off();
    let off = Instant::now();
    let moved = until(
        &guests,
        "mover.service moves off core-03",
        Duration::from_secs(300),
        || {
            let rows = units_json(&f)?;
            let on = machines_of(&rows, "mover.service");
            let active = rows
                .iter()
                .any(|r| r["unit"] == "mover.service" && r["active"] == "active");
            if on.len() == 1 && on[0] != ids[2] && active {
                Ok(on)
            } else {
                Err(format!("{rows:?}"))
            }
        },
    );
    eprintln!(
        "mover.service active on {} {:.0}s after core-03 was powered off (agent-ttl 30s); whole test {:.0}s",
        moved[0],
        off.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    let rows = units_json(&f).unwrap();
    ensure!(
        &guests,
        &f,
        machines_of(&rows, "global.service").len() == 2,
        "{:?} vs {:?}",
        machines_of(&rows, "global.service").len(),
        2
    );
    let o = f.run(&["destroy", "mover.service"]);
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(
        &guests,
        &f,
        text(&o).contains("Destroyed mover.service"),
        "{}",
        text(&o)
    );
}
