//! The apply engine end to end against temporary roots: the issue's example, idempotence,
//! escapes refused with the line named, and `shared/conformance/cloudconfig/docs/` examples
//! (read in place, never copied here).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::{parse, UnitCommand};

/// A minimal root: passwd, group, shadow with root and core, a skeleton `.bashrc`.
pub(crate) fn fixture_root() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let etc = t.path().join("etc");
    fs::create_dir_all(etc.join("skel")).unwrap();
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/bash\ncore:x:500:500:Keel Admin:/home/core:/bin/bash\n",
    )
    .unwrap();
    fs::write(
        etc.join("group"),
        "root:x:0:\nwheel:x:10:root\ncore:x:500:\n",
    )
    .unwrap();
    fs::write(
        etc.join("shadow"),
        "root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n",
    )
    .unwrap();
    fs::set_permissions(etc.join("shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(etc.join("skel/.bashrc"), "# skel\n").unwrap();
    fs::set_permissions(etc.join("skel/.bashrc"), fs::Permissions::from_mode(0o644)).unwrap();
    t
}

fn actions(bytes: &[u8]) -> Vec<Action> {
    plan_user_data(&parse(bytes).unwrap())
}

fn read(root: &Path, p: &str) -> String {
    fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn mode(root: &Path, p: &str) -> u32 {
    fs::metadata(root.join(p)).unwrap().mode() & 0o7777
}

/// Applying again changes nothing: every outcome of the second run is unchanged (or the
/// same warning / error / command as before).
fn assert_idempotent(root: &Path, actions: &[Action], first: &Report) {
    let second = apply(root, actions);
    assert!(!second.changed(), "{}", second.to_human("again"));
    assert!(!second.daemon_reload);
    assert_eq!(second.commands, first.commands);
    assert_eq!(
        second.errors().count(),
        first.errors().count(),
        "{}",
        second.to_human("again")
    );
}

#[test]
fn the_issue_example() {
    let t = fixture_root();
    let root = t.path();
    let example = include_bytes!("../tests/issue10_example.yml");
    let plan = actions(example);
    let report = apply(root, &plan);
    let human = report.to_human("user-data");
    assert_eq!(report.errors().count(), 0, "{human}");

    assert_eq!(read(root, "etc/hostname"), "core-01\n");
    assert!(
        human.starts_with("user-data:2: hostname: changed: "),
        "{human}"
    );
    let socket = read(root, "etc/systemd/system/docker-tcp.socket");
    assert!(socket.starts_with("[Unit]\nDescription=Docker Socket for the API\n"));
    assert!(socket.contains("ListenStream=2375\n"));
    assert_eq!(
        fs::read_link(root.join("etc/systemd/system/sockets.target.wants/docker-tcp.socket"))
            .unwrap(),
        Path::new("/etc/systemd/system/docker-tcp.socket")
    );
    assert_eq!(
        read(
            root,
            "etc/systemd/system/docker.service.d/50-insecure-registry.conf"
        ),
        "[Unit]\n[Service]\nEnvironment=DOCKER_OPTS='--insecure-registry=\"0.0.0.0/0\"'\n"
    );
    assert_eq!(read(root, "etc/conf.d/nfs"), "OPTS_RPC_MOUNTD=\"\"\n");
    assert_eq!(mode(root, "etc/conf.d/nfs"), 0o644);
    assert_eq!(
        read(root, "home/core/.ssh/authorized_keys"),
        "ssh-rsa 121313dqx1e123e12… user@my_mac\n"
    );
    assert_eq!(mode(root, "home/core/.ssh/authorized_keys"), 0o600);
    assert_eq!(read(root, "etc/keel/update.conf"), "REBOOT_STRATEGY=off\n");

    // coreos.etcd2 becomes etcd 3.4's environment for etcd-member.service (etcd2.service).
    let etcd = read(
        root,
        "run/systemd/system/etcd-member.service.d/20-cloudinit.conf",
    );
    assert!(
        etcd.contains("Environment=\"ETCD_NAME=core-01\"\n"),
        "{etcd}"
    );
    assert!(
        etcd.contains("Environment=\"ETCD_INITIAL_CLUSTER=core-01=http://127.0.0.1:2380\"\n"),
        "{etcd}"
    );
    assert_eq!(etcd.matches("Environment=").count(), 8, "{etcd}");
    assert_eq!(report.warnings().count(), 0, "{human}");
    // fleet has no section here, only a unit command: it is listed like the others.
    let commands: Vec<(&str, UnitCommand)> = report
        .commands
        .iter()
        .map(|(u, c)| (u.as_str(), *c))
        .collect();
    assert_eq!(
        commands,
        [
            ("etcd2.service", UnitCommand::Start),
            ("fleet.service", UnitCommand::Start),
            ("docker-tcp.socket", UnitCommand::Start),
            ("docker.service", UnitCommand::Start),
        ]
    );
    assert!(report.daemon_reload);
    assert_idempotent(root, &plan, &report);
}

#[test]
fn the_issue_example_with_a_fleet_section_configures_the_agent_and_starts_it_once() {
    let t = fixture_root();
    let text = String::from_utf8(include_bytes!("../tests/issue10_example.yml").to_vec())
        .unwrap()
        .replace(
            "  units:\n",
            "  fleet:\n    metadata: region=us-west\n  units:\n",
        );
    let report = apply(t.path(), &actions(text.as_bytes()));
    assert_eq!(report.warnings().count(), 0);
    assert_eq!(
        read(
            t.path(),
            "run/systemd/system/fleet.service.d/20-cloudinit.conf"
        ),
        "# Written by keel-cloudinit from coreos.fleet at every boot.\n[Service]\n\
         Environment=\"FLEET_METADATA=region=us-west\"\n"
    );
    // The example's own `fleet.service` `command: start` is the only start.
    let starts = report
        .commands
        .iter()
        .filter(|(u, _)| u == "fleet.service")
        .count();
    assert_eq!(starts, 1);
}

#[test]
fn escapes_are_refused_with_the_line_and_the_rest_applied() {
    let t = fixture_root();
    let root = t.path();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.join("opt")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", root.join("opt/up")).unwrap();
    let doc = "#cloud-config\nwrite_files:\n  - path: /opt/up/x\n    content: bad\n  - path: /etc/../x\n    content: bad\n  - path: /etc/ok\n    owner: core:wheel\n    permissions: '0600'\n    content: good\n  - path: /etc/who\n    owner: nobody\n    content: x\nhostname: h1\n";
    let report = apply(root, &actions(doc.as_bytes()));
    let errors: Vec<String> = report
        .errors()
        .map(|o| format!("{}: {}", o.line, o.field))
        .collect();
    assert_eq!(
        errors,
        [
            "3: write_files[0] /opt/up/x",
            "5: write_files[1] /etc/../x",
            "11: write_files[3] /etc/who"
        ]
    );
    let human = report.to_human("ud");
    assert!(human.contains("ud:3: write_files[0] /opt/up/x: error: path \"/opt/up/x\": symlink /opt/up -> ../../../../../../.. leads out of the root"), "{human}");
    assert!(
        human.contains("user \"nobody\" is not in /etc/passwd"),
        "{human}"
    );
    assert_eq!(read(root, "etc/ok"), "good");
    let m = fs::metadata(root.join("etc/ok")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (500, 10, 0o600));
    assert_eq!(read(root, "etc/hostname"), "h1\n");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
}

#[test]
fn mask_runtime_and_script() {
    let t = fixture_root();
    let root = t.path();
    let doc = "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      mask: true\n    - name: b.service\n      runtime: true\n      enable: true\n      command: restart\n      content: |\n        [Install]\n        RequiredBy=x.target\n";
    let plan = actions(doc.as_bytes());
    let report = apply(root, &plan);
    assert_eq!(report.errors().count(), 0, "{}", report.to_human("ud"));
    assert_eq!(
        fs::read_link(root.join("etc/systemd/system/a.service")).unwrap(),
        Path::new("/dev/null")
    );
    assert_eq!(
        fs::read_link(root.join("run/systemd/system/x.target.requires/b.service")).unwrap(),
        Path::new("/run/systemd/system/b.service")
    );
    assert_eq!(
        report.commands,
        [("b.service".into(), UnitCommand::Restart)]
    );
    assert_idempotent(root, &plan, &report);

    let script = actions(b"#!/bin/sh\necho once\n");
    let r = apply(root, &script);
    assert_eq!(r.scripts.len(), 1);
    assert!(!r.scripts[0].already_ran);
    script::mark_ran(root, &r.scripts[0]).unwrap();
    let r = apply(root, &script);
    assert!(r.scripts[0].already_ran && !r.changed());
}

// --- shared/conformance/cloudconfig/docs ------------------------------------------------

fn docs() -> PathBuf {
    keel_testkit::conformance::dir("cloudconfig/docs", "")
}

/// Apply one docs example to a fresh fixture root (plus `groups`), check idempotence.
fn apply_doc(name: &str, groups: &str) -> (tempfile::TempDir, Report) {
    let t = fixture_root();
    if !groups.is_empty() {
        let mut g = read(t.path(), "etc/group");
        g.push_str(groups);
        fs::write(t.path().join("etc/group"), g).unwrap();
    }
    let bytes = fs::read(docs().join(name)).unwrap();
    let plan = actions(&bytes);
    let report = apply(t.path(), &plan);
    assert_eq!(
        report.errors().count(),
        0,
        "{name}:\n{}",
        report.to_human(name)
    );
    assert_idempotent(t.path(), &plan, &report);
    (t, report)
}

#[test]
fn docs_hostname_keys_hosts() {
    let (t, _) = apply_doc("cc11_hostname.yml", "");
    assert_eq!(read(t.path(), "etc/hostname"), "coreos1\n");

    let (t, _) = apply_doc("cc10_ssh_authorized_keys.yml", "");
    assert_eq!(
        read(t.path(), "home/core/.ssh/authorized_keys"),
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0g+ZTxC7weoIJLUafOgrm+h...\n"
    );

    let (t, _) = apply_doc("cc14_manage_etc_hosts.yml", "");
    assert!(read(t.path(), "etc/hosts").starts_with("127.0.0.1 localhost "));
}

#[test]
fn docs_users() {
    let (t, _) = apply_doc("cc12_users.yml", "sudo:x:27:\ndocker:x:233:\n");
    let root = t.path();
    assert!(read(root, "etc/passwd").contains("elroy:x:1000:1000::/home/elroy:/bin/bash\n"));
    assert!(read(root, "etc/shadow").contains(
        "elroy:$6$5s2u6/jR$un0AvWnqilcgaNB3Mkxd5yYv6mTlWfOoCYHZmfi3LDKVltj.E8XNKEcwWm...:"
    ));
    let group = read(root, "etc/group");
    assert!(group.contains("sudo:x:27:elroy\n") && group.contains("docker:x:233:elroy\n"));
    assert_eq!(
        read(root, "home/elroy/.ssh/authorized_keys"),
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0g+ZTxC7weoIJLUafOgrm+h...\n"
    );
    assert_eq!(
        fs::metadata(root.join("home/elroy/.ssh")).unwrap().uid(),
        1000
    );
}

#[test]
fn docs_write_files() {
    let (t, _) = apply_doc("cc13_write_files.yml", "");
    let root = t.path();
    assert_eq!(read(root, "etc/resolv.conf"), "nameserver 8.8.8.8\n");
    assert_eq!(read(root, "etc/motd"), "Good news, everyone!\n");
    // gzip (of a !!binary value) and gzip+base64 decode to the same text as the base64 one.
    for p in ["tmp/like_this", "tmp/or_like_this", "tmp/todolist"] {
        assert_eq!(read(root, p), "Pack my box with five dozen liquor jugs");
        assert_eq!(mode(root, p), 0o644);
    }
    assert_eq!(
        read(root, "tmp/todolist"),
        "Pack my box with five dozen liquor jugs"
    );
    assert_eq!(fs::metadata(root.join("etc/motd")).unwrap().uid(), 0);
}

#[test]
fn docs_units_update_locksmith() {
    let (t, r) = apply_doc("ex02_docker_enabling_the_remote_api.yml", "");
    assert!(t
        .path()
        .join("etc/systemd/system/sockets.target.wants/docker-tcp.socket")
        .symlink_metadata()
        .is_ok());
    assert_eq!(
        r.commands,
        [("docker-tcp.socket".into(), UnitCommand::Start)]
    );

    let (t, _) = apply_doc("cc08_units_dropin_docker_opts.yml", "");
    assert!(read(
        t.path(),
        "etc/systemd/system/docker.service.d/50-insecure-registry.conf"
    )
    .contains("10.0.1.0/24"));

    let (t, r) = apply_doc("cc07_units_write_and_start.yml", "");
    assert!(read(t.path(), "etc/systemd/system/docker-redis.service").contains("Author=Me\n"));
    assert_eq!(
        r.commands,
        [("docker-redis.service".into(), UnitCommand::Start)]
    );

    let (t, _) = apply_doc("cc06_update_reboot_strategy.yml", "");
    assert_eq!(
        read(t.path(), "etc/keel/update.conf"),
        "REBOOT_STRATEGY=etcd-lock\n"
    );

    let (t, _) = apply_doc("cc05_coreos_locksmith.yml", "");
    assert_eq!(
        read(t.path(), "etc/keel/update.conf"),
        "LOCKSMITHD_ENDPOINT=http://example.com:2379\n"
    );

    // coreos.fleet: coreos-cloudinit's documented drop-in (its addresses filled in at apply
    // time; Keel's agent fills in the placeholder when it starts), and the agent started.
    let (t, r) = apply_doc("cc03_coreos_fleet.yml", "");
    assert_eq!(r.warnings().count(), 0);
    let documented = fs::read_to_string(docs().join("cc03_coreos_fleet.dropin.conf"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("203.0.113.29", "$public_ipv4");
    let written = read(
        t.path(),
        "run/systemd/system/fleet.service.d/20-cloudinit.conf",
    );
    assert!(
        written.ends_with(&documented),
        "{written}\nvs\n{documented}"
    );
    assert_eq!(r.commands, [("fleet.service".into(), UnitCommand::Start)]);
}

/// Every docs example applies to a fixture root, idempotently, with only the errors listed.
#[test]
fn every_docs_example_applies() {
    let mut names: Vec<String> = fs::read_dir(docs())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.sort();
    assert!(names.len() >= 20);
    let mut errors = String::new();
    for n in names {
        let t = fixture_root();
        let plan = actions(&fs::read(docs().join(&n)).unwrap());
        let report = apply(t.path(), &plan);
        for o in report.errors() {
            errors.push_str(&format!("{n}:{}: {}: {:?}\n", o.line, o.field, o.status));
        }
        assert_idempotent(t.path(), &plan, &report);
    }
    // What a fixture root lacks and a real image may have, named with file:line; nothing
    // else fails. (cc12 with the groups present: `docs_users`.)
    assert_eq!(
        errors,
        "cc12_users.yml:5: users[0] elroy: Error(\"elroy was applied, but group(s) sudo, docker are not in /etc/group\")\n\
         ex10_time_using_ntpd_instead_of_timesyncd.yml:8: coreos.units[1] ntpd.service.enable: Error(\"unit ntpd.service not found (give content, or ship it in /usr/lib/systemd/system)\")\n"
    );
}
