//! The source document's example cloud-config (issue #10, indentation restored) read end to end.

use crate::*;

const EXAMPLE: &str = include_str!("issue10_example.yml");

#[test]
fn issue_example_parses_into_typed_data() {
    let UserData::CloudConfig(cc) = parse(EXAMPLE.as_bytes()).unwrap() else {
        panic!("not a cloud-config")
    };
    assert_eq!(cc.hostname.as_deref(), Some("core-01"));
    let update = cc.coreos.update.as_ref().unwrap();
    // `reboot-strategy: off`, hyphen and a YAML 1.1 boolean-looking word: the string "off".
    assert_eq!(update.reboot_strategy, Some(RebootStrategy::Off));

    let etcd2 = cc.coreos.etcd2.as_ref().unwrap();
    assert_eq!(etcd2.line, 6);
    assert_eq!(etcd2.settings.len(), 8);
    assert_eq!(etcd2.settings[0], ("name".into(), "core-01".into()));
    assert!(etcd2.settings.contains(&(
        "advertise_client_urls".into(),
        "http://0.0.0.0:2379,http://0.0.0.0:4001".into()
    )));

    let units = &cc.coreos.units;
    assert_eq!(units.len(), 4);
    let names: Vec<_> = units.iter().map(|u| u.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "etcd2.service",
            "fleet.service",
            "docker-tcp.socket",
            "docker.service"
        ]
    );
    assert!(units.iter().all(|u| u.command == Some(UnitCommand::Start)));
    let socket = &units[2];
    assert!(socket.enable && !socket.runtime && !socket.mask);
    assert_eq!(socket.line, 20);
    let content = socket.content.as_deref().unwrap();
    assert!(content.starts_with("[Unit]\nDescription=Docker Socket for the API\n\n[Socket]\n"));
    assert!(content.ends_with("[Install]\nWantedBy=sockets.target\n"));
    let docker = &units[3];
    assert!(!docker.enable);
    assert_eq!(docker.drop_ins.len(), 1);
    assert_eq!(
        docker.drop_ins[0].name.as_deref(),
        Some("50-insecure-registry.conf")
    );
    assert_eq!(
        docker.drop_ins[0].content.as_deref(),
        Some("[Unit]\n[Service]\nEnvironment=DOCKER_OPTS='--insecure-registry=\"0.0.0.0/0\"'\n")
    );

    assert_eq!(cc.write_files.len(), 1);
    let nfs = &cc.write_files[0];
    assert_eq!(nfs.path.as_deref(), Some("/etc/conf.d/nfs"));
    assert_eq!(nfs.mode(), Some(0o644));
    assert_eq!(nfs.decoded_content().unwrap(), b"OPTS_RPC_MOUNTD=\"\"\n");

    assert_eq!(
        cc.ssh_authorized_keys,
        ["ssh-rsa 121313dqx1e123e12\u{2026} user@my_mac"]
    );
    assert!(cc.users.is_empty());
}

#[test]
fn issue_example_validates_like_coreos_cloudinit() {
    let r = validate(EXAMPLE.as_bytes());
    assert_eq!(r.document, Document::CloudConfig);
    assert!(!r.has_errors(), "{}", r.to_human());
    // etcd2 and fleet are not shipped: said, not silent (etcd2 here; fleet.service is only a unit).
    assert_eq!(
        r.entries,
        [Entry {
            kind: Kind::Warning,
            line: 6,
            message: "deprecated key \"etcd2\" (etcd2 is no longer shipped in Container Linux)"
                .into()
        }]
    );
}

#[test]
fn documents_of_every_kind() {
    assert_eq!(parse(b"").unwrap(), UserData::Empty);
    assert_eq!(
        parse(b"#!/bin/sh\necho hi\n").unwrap(),
        UserData::Script("#!/bin/sh\necho hi\n".into())
    );
    assert_eq!(
        parse(b"{\"ignitionVersion\":1}").unwrap(),
        UserData::Ignition
    );
    assert_eq!(
        parse(b"#cloud-config\n").unwrap(),
        UserData::CloudConfig(Box::default())
    );
    assert!(matches!(parse(b"hostname: a\n"), Err(Error::Header)));
    let multipart = b"Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\n";
    assert!(matches!(parse(multipart), Err(Error::Multipart)));
    let r = validate(multipart);
    assert_eq!((r.entries[0].kind, r.entries[0].line), (Kind::Error, 1));
    assert!(matches!(
        parse(b"#cloud-config\n- a\n"),
        Err(Error::NotMapping { line: 2 })
    ));
    assert!(validate(b"#cloud-config\n- a\n").has_errors());
    let e = parse(b"#cloud-config\nhostname: [a\n").unwrap_err();
    assert!(matches!(e, Error::Syntax(_)), "{e}");
}

#[test]
fn users_and_files_typed() {
    let text = "#cloud-config\nusers:\n  - name: elroy\n    passwd: $6$x\n    groups: [sudo, docker]\n    ssh-authorized-keys: [\"ssh-ed25519 AAAA k\"]\n    homedir: /home/e\n    shell: /bin/bash\n    primary-group: staff\n    no-create-home: yes\n    system: true\n    gecos: Elroy\n    no_user_group: on\n    no-log-init: false\nwrite_files:\n  - path: /tmp/x\n    encoding: gzip+base64\n    content: H4sIAOC3tVQAA8tIzcnJ5wIAIDA6NgYAAAA=\n    owner: core:core\n";
    let UserData::CloudConfig(cc) = parse(text.as_bytes()).unwrap() else {
        panic!()
    };
    let u = &cc.users[0];
    assert_eq!(u.line, 3);
    assert_eq!(u.name.as_deref(), Some("elroy"));
    assert_eq!(u.passwd.as_deref(), Some("$6$x"));
    assert_eq!(u.groups, ["sudo", "docker"]);
    assert_eq!(u.ssh_authorized_keys, ["ssh-ed25519 AAAA k"]);
    assert_eq!(u.homedir.as_deref(), Some("/home/e"));
    assert_eq!(u.shell.as_deref(), Some("/bin/bash"));
    assert_eq!(u.primary_group.as_deref(), Some("staff"));
    assert_eq!(u.gecos.as_deref(), Some("Elroy"));
    assert!(u.no_create_home && u.system && u.no_user_group && !u.no_log_init);
    let f = &cc.write_files[0];
    assert_eq!(f.decoded_content().unwrap(), b"hello\n");
    assert_eq!(f.owner.as_deref(), Some("core:core"));
    assert!(validate(text.as_bytes()).entries.is_empty());
}
