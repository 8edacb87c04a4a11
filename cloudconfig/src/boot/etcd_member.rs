//! What `etcd-member.service` runs (`keel-cloudinit --exec-etcd`): the `ETCD_*` environment
//! the cloud-config drop-in set, with `$private_ipv4` and the like filled in from the machine's
//! addresses, then etcd itself, or with `proxy: on` etcd's gateway on the client address to the
//! cluster's members. The config's errors (see [`crate::etcd`]) are printed, naming the key,
//! and etcd is not started.

use std::net::IpAddr;

use super::etcd_srv;
use crate::etcd::{ERROR_VAR, PLACEHOLDERS, PROXY_VAR};

/// The machine's addresses that placeholders stand for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Addresses {
    pub private_ipv4: Option<String>,
    pub public_ipv4: Option<String>,
    pub private_ipv6: Option<String>,
    pub public_ipv6: Option<String>,
}

impl Addresses {
    /// From `ip -o addr show scope global`, in interface order: the first private (RFC 1918,
    /// RFC 6598 shared, IPv6 ULA) address is the private one, the first other one the public
    /// one; a machine with only private addresses uses it for both, as on a LAN.
    pub fn from_ip_addr(output: &str) -> Addresses {
        let mut a = Addresses::default();
        for line in output.lines() {
            let mut words = line.split_whitespace();
            let Some(addr) = words
                .find(|w| *w == "inet" || *w == "inet6")
                .and_then(|_| words.next())
            else {
                continue;
            };
            let addr = addr.split('/').next().unwrap_or("");
            let Ok(ip) = addr.parse::<IpAddr>() else {
                continue;
            };
            let (private, public) = match ip {
                IpAddr::V4(_) => (&mut a.private_ipv4, &mut a.public_ipv4),
                IpAddr::V6(_) => (&mut a.private_ipv6, &mut a.public_ipv6),
            };
            let slot = if is_private(ip) { private } else { public };
            if slot.is_none() {
                *slot = Some(ip.to_string());
            }
        }
        a.public_ipv4 = a.public_ipv4.or(a.private_ipv4.clone());
        a.public_ipv6 = a.public_ipv6.or(a.private_ipv6.clone());
        a
    }

    /// The metadata source's addresses, where it gave them, over the machine's own
    /// (`COREOS_EC2_IPV4_LOCAL` and `_PUBLIC` from `/run/metadata/flatcar`, the unit's
    /// `EnvironmentFile=`), as coreos-cloudinit preferred its metadata.
    pub fn with_attributes(mut self, env: &[(String, String)]) -> Addresses {
        let get = |k: &str| {
            env.iter()
                .find(|(n, v)| n == k && v.parse::<IpAddr>().is_ok())
                .map(|(_, v)| v.clone())
        };
        if let Some(local) = get("COREOS_EC2_IPV4_LOCAL") {
            self.private_ipv4 = Some(local);
        }
        if let Some(public) = get("COREOS_EC2_IPV4_PUBLIC") {
            self.public_ipv4 = Some(public);
        }
        self
    }

    fn value(&self, placeholder: &str) -> Option<String> {
        match placeholder {
            "$private_ipv4" => self.private_ipv4.clone(),
            "$public_ipv4" => self.public_ipv4.clone(),
            "$private_ipv6" => self.private_ipv6.as_ref().map(|a| format!("[{a}]")),
            "$public_ipv6" => self.public_ipv6.as_ref().map(|a| format!("[{a}]")),
            _ => None,
        }
    }
}

fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// What to exec.
#[derive(Debug, PartialEq)]
pub enum Launch {
    /// `etcd` with this environment (the `ETCD_*` variables, placeholders filled in).
    Member { env: Vec<(String, String)> },
    /// `etcd gateway start ARGS`, once the members' client URLs are known.
    Gateway { listen: String, find: FindMembers },
}

/// Where a gateway finds the cluster's members.
#[derive(Debug, PartialEq)]
pub enum FindMembers {
    /// Ask these peer URLs for `/members` (from `initial-cluster`).
    Peers(Vec<String>),
    /// Read the discovery token's registrations, then ask them.
    Discovery(String),
    /// The domain's `_etcd-client(-ssl)._tcp` records ([`etcd_srv`]).
    Srv(String),
}

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum LaunchError {
    #[error("the cloud-config's coreos.etcd2 has errors: {0}")]
    Config(String),
    #[error(
        "{var} (coreos.etcd2.{key}) uses {placeholder}, but this machine has no such address yet"
    )]
    NoAddress {
        var: String,
        key: String,
        placeholder: &'static str,
    },
}

/// Decide what to run from the environment etcd-member.service was given.
pub fn plan(env: &[(String, String)], addrs: &Addresses) -> Result<Launch, LaunchError> {
    if let Some((_, e)) = env.iter().find(|(k, _)| k == ERROR_VAR) {
        return Err(LaunchError::Config(e.clone()));
    }
    let mut out = Vec::new();
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with("ETCD_")) {
        let mut value = v.clone();
        for p in PLACEHOLDERS {
            if value.contains(p) {
                let Some(a) = addrs.value(p) else {
                    return Err(LaunchError::NoAddress {
                        var: k.clone(),
                        key: k["ETCD_".len()..].to_ascii_lowercase().replace('_', "-"),
                        placeholder: p,
                    });
                };
                value = value.replace(p, &a);
            }
        }
        out.push((k.clone(), value));
    }
    if !env.iter().any(|(k, v)| k == PROXY_VAR && v == "on") {
        return Ok(Launch::Member { env: out });
    }
    let get = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let listen = get("ETCD_LISTEN_CLIENT_URLS")
        .and_then(|urls| urls.split(',').next().map(host_port))
        .unwrap_or_else(|| "127.0.0.1:2379".into());
    let find = if let Some(srv) = get("ETCD_DISCOVERY_SRV") {
        FindMembers::Srv(srv)
    } else if let Some(url) = get("ETCD_DISCOVERY") {
        FindMembers::Discovery(url)
    } else {
        let cluster = get("ETCD_INITIAL_CLUSTER").unwrap_or_default();
        FindMembers::Peers(
            cluster
                .split(',')
                .filter_map(|m| m.split_once('=').map(|(_, u)| u.trim().to_string()))
                .collect(),
        )
    };
    Ok(Launch::Gateway { listen, find })
}

/// `http://a:2379/x` → `a:2379` (etcd's gateway takes bare addresses).
pub fn host_port(url: &str) -> String {
    let rest = url
        .trim()
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// The peer URLs registered under a v2 discovery token (`GET <token URL>`): each node's value
/// is `name=peerURL[,peerURL]`.
pub fn discovery_peers(body: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("not the discovery service's JSON: {e}"))?;
    let nodes = v["node"]["nodes"].as_array().cloned().unwrap_or_default();
    let mut peers = Vec::new();
    for n in nodes {
        if n["key"].as_str().is_some_and(|k| k.ends_with("/_config")) {
            continue;
        }
        if let Some((_, urls)) = n["value"].as_str().and_then(|v| v.split_once('=')) {
            peers.extend(urls.split(',').map(|u| u.trim().to_string()));
        }
    }
    Ok(peers)
}

/// The client URLs from a peer's `/members` answer.
pub fn member_client_urls(body: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not etcd's /members JSON: {e}"))?;
    let members = v
        .as_array()
        .ok_or_else(|| "not etcd's /members JSON: not a list".to_string())?;
    Ok(members
        .iter()
        .flat_map(|m| m["clientURLs"].as_array().cloned().unwrap_or_default())
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect())
}

/// Where etcd is (Debian's etcd-server).
pub const ETCD: &str = "/usr/bin/etcd";
/// etcd-member.service does not restart on this exit status: the config must change first.
pub const EXIT_CONFIG: u8 = 78;

/// Run etcd-member: never returns on success (etcd replaces this process, or the gateway runs
/// as its child until it exits). `err` gets the messages that go to the journal.
pub fn run(err: &mut dyn std::io::Write) -> u8 {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let addrs = match std::process::Command::new("ip")
        .args(["-o", "addr", "show", "scope", "global"])
        .output()
    {
        Ok(o) => Addresses::from_ip_addr(&String::from_utf8_lossy(&o.stdout)),
        Err(e) => {
            let _ = writeln!(err, "etcd-member: ip -o addr: {e}");
            Addresses::default()
        }
    }
    .with_attributes(&env);
    let launch = match plan(&env, &addrs) {
        Ok(l) => l,
        Err(e @ LaunchError::Config(_)) => {
            let _ = writeln!(err, "etcd-member: {e}; not starting etcd");
            return EXIT_CONFIG;
        }
        Err(e) => {
            let _ = writeln!(err, "etcd-member: {e}; systemd tries again");
            return 1;
        }
    };
    match launch {
        Launch::Member { mut env } => {
            use std::os::unix::process::CommandExt;
            let name = env
                .iter()
                .find(|(k, _)| k == "ETCD_NAME")
                .map_or("default", |(_, v)| v)
                .to_string();
            let _ = writeln!(err, "etcd-member: starting etcd member {name}");
            let data_dir = env
                .iter()
                .find(|(k, _)| k == "ETCD_DATA_DIR")
                .map_or("/var/lib/etcd", |(_, v)| v);
            // A member that has joined before (its data is there) no longer asks the token.
            let joined = std::path::Path::new(data_dir).join("member").exists();
            if let Some(at) = env.iter().position(|(k, _)| k == "ETCD_DISCOVERY_SRV") {
                let (_, domain) = env.remove(at);
                // A member that has joined reads the cluster from its data.
                if !joined {
                    match cluster_from_dns(&domain, &name, &env) {
                        Ok(cluster) => {
                            let _ = writeln!(
                                err,
                                "etcd-member: coreos.etcd2.discovery-srv: {domain}'s records \
                                 make the initial cluster {cluster}"
                            );
                            env.push(("ETCD_INITIAL_CLUSTER".into(), cluster));
                        }
                        Err(e) => {
                            let _ = writeln!(err, "etcd-member: {e}; systemd tries again");
                            return 1;
                        }
                    }
                }
            }
            let discovery = env.iter().find(|(k, _)| k == "ETCD_DISCOVERY");
            if let (Some((_, url)), false) = (discovery, joined) {
                match check_discovery(url) {
                    Ok(line) => {
                        let _ = writeln!(err, "etcd-member: {line}");
                    }
                    Err(e) => {
                        let _ = writeln!(err, "etcd-member: {e}; systemd tries again");
                        return 1;
                    }
                }
            }
            // The unit's own ETCD_* (ETCD_DISCOVERY_SRV, placeholders) give way to `env`.
            let mut etcd = std::process::Command::new(ETCD);
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ETCD_")) {
                etcd.env_remove(k);
            }
            let e = etcd.env_remove(PROXY_VAR).envs(env).exec();
            let _ = writeln!(err, "etcd-member: {ETCD}: {e}");
            1
        }
        Launch::Gateway { listen, find } => gateway(&listen, find, err),
    }
}

fn gateway(listen: &str, find: FindMembers, err: &mut dyn std::io::Write) -> u8 {
    let mut args: Vec<String> = vec!["gateway".into(), "start".into()];
    args.push(format!("--listen-addr={listen}"));
    match client_urls(find) {
        Ok(urls) if !urls.is_empty() => {
            let eps: Vec<String> = urls.iter().map(|u| host_port(u)).collect();
            args.push(format!("--endpoints={}", eps.join(",")));
        }
        Ok(_) => {
            let _ = writeln!(err, "etcd-member: proxy: the cluster has no member with a client URL yet; systemd tries again");
            return 1;
        }
        Err(e) => {
            let _ = writeln!(err, "etcd-member: proxy: {e}; systemd tries again");
            return 1;
        }
    }
    let _ = writeln!(err, "etcd-member: starting etcd {}", args.join(" "));
    let mut cmd = std::process::Command::new(ETCD);
    cmd.args(&args);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ETCD_")) {
        cmd.env_remove(k);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "etcd-member: {ETCD}: {e}");
            return 1;
        }
    };
    // The gateway does not tell systemd it is ready: its port answering is the sign.
    let probe = listen.replacen("0.0.0.0:", "127.0.0.1:", 1);
    for _ in 0..300 {
        if std::net::TcpStream::connect(&probe).is_ok() {
            notify_ready();
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    match child.wait() {
        Ok(s) => s.code().map_or(1, |c| c as u8),
        Err(_) => 1,
    }
}

/// The initial cluster from `domain`'s SRV records, for the member `name` ([`etcd_srv`]).
fn cluster_from_dns(domain: &str, name: &str, env: &[(String, String)]) -> Result<String, String> {
    let client = super::dns::Client::from_system()
        .map_err(|e| format!("coreos.etcd2.discovery-srv: {e}"))?;
    let targets = etcd_srv::lookup(&client, "etcd-server", domain)?;
    let advertise: Vec<String> = env
        .iter()
        .find(|(k, _)| k == "ETCD_INITIAL_ADVERTISE_PEER_URLS")
        .map(|(_, v)| v.split(',').map(|u| u.trim().to_string()).collect())
        .unwrap_or_else(|| vec!["http://localhost:2380".into()]);
    etcd_srv::initial_cluster(domain, name, &advertise, &targets)
}

/// Ask the discovery service about the token before etcd does, so that an unreachable URL
/// or a token that will not fit is said in etcd-member's own words, naming the key.
fn check_discovery(url: &str) -> Result<String, String> {
    let client = super::http::Client::new(std::time::Duration::from_secs(10));
    let key = "coreos.etcd2.discovery";
    let size_url = format!("{}/_config/size", url.trim_end_matches('/'));
    let size = client
        .get_ok(&size_url, &[])
        .map_err(|e| format!("{key}: {e}"))
        .and_then(|b| token_size(&b).map_err(|e| format!("{key}: {size_url}: {e}")))?;
    let registered = client
        .get_ok(url, &[])
        .map_err(|e| format!("{key}: {e}"))
        .and_then(|b| discovery_peers(&b).map_err(|e| format!("{key}: {url}: {e}")))?
        .len();
    Ok(token_summary(size, registered))
}

/// The size a token was made for (`/_config/size`'s value).
pub fn token_size(body: &[u8]) -> Result<usize, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("not the discovery service's JSON: {e}"))?;
    v["node"]["value"]
        .as_str()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("no cluster size in {}", String::from_utf8_lossy(body)))
}

pub fn token_summary(size: usize, registered: usize) -> String {
    let mut s = format!(
        "coreos.etcd2.discovery: the token is for a cluster of {size}, {registered} registered so far"
    );
    if registered >= size {
        s.push_str(": it is full, etcd will not let this machine in as a member");
    } else if registered + 1 < size {
        s.push_str(&format!(
            "; etcd waits until {} more register",
            size - registered - 1
        ));
    }
    if size % 2 == 0 {
        s.push_str(" (an even size tolerates no more failures than one less)");
    }
    s
}

/// The members' client URLs, asked of the peers (`/members`) the config or the discovery
/// token names (the first peer that answers is enough), or the domain's client records.
fn client_urls(find: FindMembers) -> Result<Vec<String>, String> {
    let client = super::http::Client::new(std::time::Duration::from_secs(5));
    let peers = match find {
        FindMembers::Peers(p) => p,
        FindMembers::Discovery(url) => {
            let body = client.get_ok(&url, &[]).map_err(|e| e.to_string())?;
            discovery_peers(&body).map_err(|e| format!("{url}: {e}"))?
        }
        FindMembers::Srv(domain) => {
            let client = super::dns::Client::from_system()
                .map_err(|e| format!("coreos.etcd2.discovery-srv: {e}"))?;
            let targets = etcd_srv::lookup(&client, "etcd-client", &domain)?;
            return Ok(etcd_srv::client_urls(&targets));
        }
    };
    let mut last = String::from("no peer URL to ask");
    for peer in peers {
        let url = format!("{}/members", peer.trim_end_matches('/'));
        match client.get_ok(&url, &[]) {
            Ok(body) => return member_client_urls(&body).map_err(|e| format!("{url}: {e}")),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

/// `READY=1` to systemd's notify socket (Type=notify), if there is one.
fn notify_ready() {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(b"READY=1", &addr);
        }
    } else {
        let _ = sock.send_to(b"READY=1", &path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_ADDR: &str = "\
2: enp0s3    inet 192.168.77.11/24 brd 192.168.77.255 scope global enp0s3\\       valid_lft forever preferred_lft forever
3: enp0s4    inet 10.0.2.15/24 metric 1024 brd 10.0.2.255 scope global dynamic enp0s4\\       valid_lft 86385sec preferred_lft 86385sec
3: enp0s4    inet6 fec0::5054:ff:fe12:3456/64 scope site dynamic mngtmpaddr noprefixroute \\       valid_lft 86385sec preferred_lft 14385sec
";

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_first_private_address_in_interface_order() {
        let a = Addresses::from_ip_addr(IP_ADDR);
        assert_eq!(a.private_ipv4.as_deref(), Some("192.168.77.11"));
        assert_eq!(a.public_ipv4.as_deref(), Some("192.168.77.11"));
        let a = Addresses::from_ip_addr(
            "2: eth0    inet 203.0.113.5/24 scope global eth0\n3: eth1    inet 100.64.0.9/10 scope global eth1\n",
        );
        assert_eq!(a.private_ipv4.as_deref(), Some("100.64.0.9"));
        assert_eq!(a.public_ipv4.as_deref(), Some("203.0.113.5"));
    }

    #[test]
    fn the_metadata_sources_addresses_come_first() {
        let a = Addresses::from_ip_addr(IP_ADDR).with_attributes(&env(&[
            ("COREOS_EC2_IPV4_LOCAL", "172.31.5.6"),
            ("COREOS_EC2_IPV4_PUBLIC", "not an address"),
        ]));
        assert_eq!(a.private_ipv4.as_deref(), Some("172.31.5.6"));
        assert_eq!(a.public_ipv4.as_deref(), Some("192.168.77.11"));
    }

    #[test]
    fn placeholders_are_filled_in_or_named() {
        let a = Addresses::from_ip_addr(IP_ADDR);
        let e = env(&[
            ("ETCD_NAME", "m1"),
            ("ETCD_ADVERTISE_CLIENT_URLS", "http://$private_ipv4:2379"),
            ("PATH", "/usr/bin"),
        ]);
        assert_eq!(
            plan(&e, &a).unwrap(),
            Launch::Member {
                env: env(&[
                    ("ETCD_NAME", "m1"),
                    ("ETCD_ADVERTISE_CLIENT_URLS", "http://192.168.77.11:2379")
                ])
            }
        );
        let err = plan(&e, &Addresses::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ETCD_ADVERTISE_CLIENT_URLS (coreos.etcd2.advertise-client-urls) uses $private_ipv4, but this machine has no such address yet"
        );
        let err = plan(
            &env(&[(
                ERROR_VAR,
                "coreos.etcd2.initial-cluster: \"x\" is not name=URL",
            )]),
            &a,
        )
        .unwrap_err();
        assert!(err.to_string().contains("initial-cluster"), "{err}");
    }

    #[test]
    fn a_proxy_finds_its_members_the_way_the_config_says() {
        let a = Addresses::default();
        let p = plan(
            &env(&[
                (PROXY_VAR, "on"),
                (
                    "ETCD_INITIAL_CLUSTER",
                    "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380",
                ),
                (
                    "ETCD_LISTEN_CLIENT_URLS",
                    "http://0.0.0.0:2379,http://0.0.0.0:4001",
                ),
            ]),
            &a,
        )
        .unwrap();
        assert_eq!(
            p,
            Launch::Gateway {
                listen: "0.0.0.0:2379".into(),
                find: FindMembers::Peers(vec![
                    "http://10.0.0.1:2380".into(),
                    "http://10.0.0.2:2380".into()
                ])
            }
        );
        let p = plan(
            &env(&[(PROXY_VAR, "on"), ("ETCD_DISCOVERY_SRV", "keel.test")]),
            &a,
        )
        .unwrap();
        assert_eq!(
            p,
            Launch::Gateway {
                listen: "127.0.0.1:2379".into(),
                find: FindMembers::Srv("keel.test".into())
            }
        );
    }

    #[test]
    fn discovery_and_members_json() {
        let token = br#"{"action":"get","node":{"key":"/_etcd/registry/abc","dir":true,"nodes":[
            {"key":"/_etcd/registry/abc/_config","dir":true},
            {"key":"/_etcd/registry/abc/1a","value":"m1=http://192.168.77.11:2380","modifiedIndex":5},
            {"key":"/_etcd/registry/abc/2b","value":"m2=http://192.168.77.12:2380"}]}}"#;
        assert_eq!(
            discovery_peers(token).unwrap(),
            ["http://192.168.77.11:2380", "http://192.168.77.12:2380"]
        );
        let members = br#"[{"id":1,"name":"m1","peerURLs":["http://192.168.77.11:2380"],"clientURLs":["http://192.168.77.11:2379"]},{"id":2,"name":"","peerURLs":["http://x:2380"],"clientURLs":[]}]"#;
        assert_eq!(
            member_client_urls(members).unwrap(),
            ["http://192.168.77.11:2379"]
        );
        assert!(member_client_urls(b"<html>").is_err());
        let size =
            br#"{"action":"get","node":{"key":"/_etcd/registry/abc/_config/size","value":"3"}}"#;
        assert_eq!(token_size(size).unwrap(), 3);
        assert!(token_size(b"{}").unwrap_err().contains("no cluster size"));
        assert_eq!(
            token_summary(3, 3),
            "coreos.etcd2.discovery: the token is for a cluster of 3, 3 registered so far: it is full, etcd will not let this machine in as a member"
        );
        assert!(token_summary(5, 1).ends_with("; etcd waits until 3 more register"));
        assert!(token_summary(4, 3).contains("even size"));
        assert_eq!(host_port("https://10.0.0.1:2379/"), "10.0.0.1:2379");
    }
}
