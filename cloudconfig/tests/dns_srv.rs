//! etcd-member's DNS client against a real DNS server (Debian's dnsmasq on the host's loopback):
//! the SRV and A records of `discovery-srv` become the initial cluster the guests use, and a
//! domain without the records is said naming the key.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keel_cloudconfig::boot::dns::Client;
use keel_cloudconfig::boot::etcd_srv;
use keel_testkit::KillOnDrop;

fn dnsmasq(port: u16, records: &[String]) -> KillOnDrop {
    let child = keel_testkit::spawn_tied(
        Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--user=root",
                "--pid-file=",
                "--local=/keel.test/",
            ])
            .arg(format!("--port={port}"))
            .args(records)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .expect("dnsmasq (Debian's dnsmasq-base)");
    KillOnDrop(child)
}

#[test]
fn srv_records_from_dnsmasq_make_the_initial_cluster() {
    let port = keel_testkit::etcd::free_ports(1)[0];
    let mut records = Vec::new();
    for n in 1..=3 {
        records.push(format!("--host-record=core-0{n}.keel.test,192.168.77.1{n}"));
        // Priorities out of order on purpose: the client sorts them.
        records.push(format!(
            "--srv-host=_etcd-server._tcp.keel.test,core-0{n}.keel.test,2380,{},0",
            4 - n
        ));
        records.push(format!(
            "--srv-host=_etcd-client._tcp.keel.test,core-0{n}.keel.test,2379"
        ));
    }
    let mut server = dnsmasq(port, &records);
    let client = Client {
        servers: vec![format!("127.0.0.1:{port}").parse().unwrap()],
    };
    // dnsmasq answers once it has bound its port.
    let deadline = Instant::now() + Duration::from_secs(20);
    let servers = loop {
        match client.srv("_etcd-server._tcp.keel.test") {
            Ok(s) if !s.is_empty() => break s,
            other if Instant::now() > deadline => {
                let _ = server.0.kill();
                let mut log = String::new();
                if let Some(mut e) = server.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut log);
                }
                panic!("dnsmasq never answered: {other:?}\n{log}");
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let targets: Vec<&str> = servers.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "core-03.keel.test",
            "core-02.keel.test",
            "core-01.keel.test"
        ]
    );
    assert_eq!(
        client.ipv4("core-02.keel.test").unwrap(),
        ["192.168.77.12".parse::<std::net::Ipv4Addr>().unwrap()]
    );

    let members = etcd_srv::lookup(&client, "etcd-server", "keel.test").unwrap();
    assert!(members.iter().all(|t| t.scheme == "http"), "{members:?}");
    let cluster = etcd_srv::initial_cluster(
        "keel.test",
        "core-01",
        &["http://192.168.77.11:2380".into()],
        &members,
    )
    .unwrap();
    assert_eq!(
        cluster,
        "core-03=http://core-03.keel.test:2380,core-02=http://core-02.keel.test:2380,\
         core-01=http://core-01.keel.test:2380"
    );
    let proxies = etcd_srv::lookup(&client, "etcd-client", "keel.test").unwrap();
    assert_eq!(etcd_srv::client_urls(&proxies).len(), 3);

    let none = etcd_srv::lookup(&client, "etcd-server", "other.keel.test").unwrap();
    let e = etcd_srv::initial_cluster(
        "other.keel.test",
        "core-01",
        &["http://192.168.77.11:2380".into()],
        &none,
    )
    .unwrap_err();
    assert!(
        e.contains("coreos.etcd2.discovery-srv: other.keel.test has no"),
        "{e}"
    );
}

#[test]
fn a_silent_server_is_named_with_its_address() {
    // A UDP port nobody answers on (bound here, never read).
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = Client {
        servers: vec![socket.local_addr().unwrap()],
    };
    let e = etcd_srv::lookup(&client, "etcd-server", "keel.test").unwrap_err();
    assert!(
        e.starts_with("coreos.etcd2.discovery-srv: _etcd-server-ssl._tcp.keel.test: no answer from 127.0.0.1:"),
        "{e}"
    );
}
