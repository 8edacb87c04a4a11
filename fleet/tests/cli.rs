//! The `keel-fleet` binary's verbs against a real single-member etcd on loopback: what is
//! printed, the exit codes, and the errors for bad unit files and an unreachable cluster.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use keel_testkit::etcd::Cluster;

fn fleet(endpoint: &str, dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel-fleet"))
        .current_dir(dir)
        .env("FLEETCTL_ENDPOINT", endpoint)
        .env("FLEETCTL_ETCD_KEY_PREFIX", "/cli-test/")
        .args(args)
        .output()
        .unwrap()
}

fn out(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn verbs_outputs_and_errors() {
    let cluster = Cluster::start(1);
    let ep = cluster.client_urls();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("hello.service"),
        "[Unit]\nDescription=Hello\n[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineMetadata=group=web\n",
    )
    .unwrap();
    std::fs::write(
        d.join("bad.service"),
        "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\nConflicts=x*\n",
    )
    .unwrap();
    std::fs::write(d.join("typo.service"), "[X-Fleet]\nMachineMetaData=a=b\n").unwrap();
    std::fs::write(d.join("web@.service"), "[Service]\nExecStart=/bin/true\n").unwrap();

    // Nothing registered yet: the legend only; JSON is an empty list.
    let (code, stdout, _) = out(&fleet(&ep, d, &["list-machines"]));
    assert_eq!((code, stdout.as_str()), (0, "MACHINE\tIP\tMETADATA\n"));
    let (_, stdout, _) = out(&fleet(&ep, d, &["list-units", "--json"]));
    assert_eq!(stdout.trim(), "[]");

    // Bad unit files: exit 2 (usage), the file's line and key named, nothing stored.
    let (code, _, stderr) = out(&fleet(&ep, d, &["submit", "typo.service"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("typo.service: line 2: MachineMetaData: unknown option"),
        "{stderr}"
    );
    let (code, _, stderr) = out(&fleet(&ep, d, &["submit", "bad.service"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("Global cannot be used with Conflicts"),
        "{stderr}"
    );
    let (code, _, stderr) = out(&fleet(&ep, d, &["cat", "bad.service"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("Unit bad.service not found"), "{stderr}");

    // Submitted, listed with fleetctl's columns, printed back as it was.
    let (code, _, stderr) = out(&fleet(&ep, d, &["submit", "hello.service", "web@.service"]));
    assert_eq!(code, 0, "{stderr}");
    let (_, stdout, _) = out(&fleet(
        &ep,
        d,
        &[
            "list-unit-files",
            "--no-legend",
            "--fields",
            "unit,dstate,state,target",
        ],
    ));
    assert_eq!(
        stdout,
        "hello.service\tinactive\tinactive\t-\nweb@.service\tinactive\tinactive\t-\n"
    );
    let (_, stdout, _) = out(&fleet(&ep, d, &["cat", "hello"]));
    assert!(
        stdout.starts_with("[Unit]\nDescription=Hello\n"),
        "{stdout}"
    );
    let (code, _, stderr) = out(&fleet(&ep, d, &["list-units", "--fields", "unit,colour"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("Invalid key in output format: \"colour\""),
        "{stderr}"
    );

    // A template cannot start; an instance comes from it. No machine: the wait is bounded
    // and says why the unit is not placed.
    let (code, _, stderr) = out(&fleet(&ep, d, &["start", "web@.service"]));
    assert_eq!(code, 9, "{stderr}");
    assert!(stderr.contains("cannot activate template"), "{stderr}");
    let started = Instant::now();
    let (code, stdout, stderr) = out(&fleet(
        &ep,
        d,
        &["start", "--block-attempts", "4", "web@1.service"],
    ));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("timed out waiting for unit web@1.service to report state launched"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let (_, stdout, _) = out(&fleet(&ep, d, &["cat", "web@1.service"]));
    assert_eq!(stdout, "[Service]\nExecStart=/bin/true\n");
    let (code, stdout, _) = out(&fleet(&ep, d, &["destroy", "web@1.service"]));
    assert_eq!((code, stdout.as_str()), (0, "Destroyed web@1.service\n"));

    // An unreachable cluster: the endpoint named, within the request timeout.
    let dead = format!("http://127.0.0.1:{}", keel_testkit::etcd::free_port());
    let started = Instant::now();
    let (code, _, stderr) = out(&fleet(
        &dead,
        d,
        &["--request-timeout", "1", "list-machines"],
    ));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&dead), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(cluster);
}
