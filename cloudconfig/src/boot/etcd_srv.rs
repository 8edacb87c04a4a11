//! `coreos.etcd2.discovery-srv` done by etcd-member rather than by etcd: the domain's
//! `_etcd-server-ssl._tcp` and `_etcd-server._tcp` records become an `initial-cluster` (as etcd
//! would build it: each target as `scheme://target:port`, this machine's under its own name),
//! and `_etcd-client-ssl._tcp` / `_etcd-client._tcp` a proxy's endpoints. Debian's etcd 3.4.23
//! would refuse a domain with only the plain records ("_etcd-server-ssl … no such host"): its
//! `GetDNSClusterNames` keeps the http results only when their lookup failed.

use std::net::{IpAddr, Ipv4Addr};

use super::dns::{Client, DnsError, Srv};

/// One SRV target, the scheme its service name implies, and what its name resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub scheme: &'static str,
    pub srv: Srv,
    pub addresses: Vec<Ipv4Addr>,
}

const KEY: &str = "coreos.etcd2.discovery-srv";

/// The `initial-cluster` for the member `name` advertising `advertise` (its peer URLs,
/// placeholders filled in): this machine is the target with the same port whose name or one
/// of whose addresses is the advertised host; the others are named by their host's first label.
pub fn initial_cluster(
    domain: &str,
    name: &str,
    advertise: &[String],
    targets: &[Target],
) -> Result<String, String> {
    if targets.is_empty() {
        return Err(format!(
            "{KEY}: {domain} has no _etcd-server-ssl._tcp or _etcd-server._tcp records"
        ));
    }
    let ours: Vec<(String, u16)> = advertise.iter().filter_map(|u| url_host_port(u)).collect();
    let is_ours = |t: &Target| {
        ours.iter().any(|(host, port)| {
            *port == t.srv.port
                && (host.eq_ignore_ascii_case(&t.srv.target)
                    || host
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| t.addresses.iter().any(|a| IpAddr::V4(*a) == ip)))
        })
    };
    let mut members = Vec::new();
    let mut found_self = false;
    for t in targets {
        let url = format!("{}://{}:{}", t.scheme, t.srv.target, t.srv.port);
        let member = if is_ours(t) && !found_self {
            found_self = true;
            name.to_string()
        } else {
            let label = t.srv.target.split('.').next().unwrap_or("member");
            let mut candidate = label.to_string();
            let mut n = 2;
            while candidate == name || members.iter().any(|(m, _)| *m == candidate) {
                candidate = format!("{label}-{n}");
                n += 1;
            }
            candidate
        };
        members.push((member, url));
    }
    if !found_self {
        let seen: Vec<String> = targets
            .iter()
            .map(|t| {
                let addrs: Vec<String> = t.addresses.iter().map(ToString::to_string).collect();
                format!("{}:{} ({})", t.srv.target, t.srv.port, addrs.join(" "))
            })
            .collect();
        return Err(format!(
            "{KEY}: this machine's initial-advertise-peer-urls ({}) is none of {domain}'s \
             targets: {}",
            advertise.join(","),
            seen.join(", ")
        ));
    }
    Ok(members
        .iter()
        .map(|(m, u)| format!("{m}={u}"))
        .collect::<Vec<_>>()
        .join(","))
}

/// `http://h:p/...` → (h, p); IPv6 brackets removed; the scheme's port when none is given.
fn url_host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split('/').next()?;
    let default = if scheme == "https" { 443 } else { 80 };
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(default), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), default)),
    }
}

/// The records of `service` (`etcd-server` or `etcd-client`) under `domain`, TLS ones first.
pub fn lookup(client: &Client, service: &str, domain: &str) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for (scheme, name) in [
        ("https", format!("_{service}-ssl._tcp.{domain}")),
        ("http", format!("_{service}._tcp.{domain}")),
    ] {
        let records = client.srv(&name).map_err(|e| dns_error(&e))?;
        for srv in records {
            let addresses = client.ipv4(&srv.target).map_err(|e| dns_error(&e))?;
            out.push(Target {
                scheme,
                srv,
                addresses,
            });
        }
    }
    Ok(out)
}

fn dns_error(e: &DnsError) -> String {
    format!("{KEY}: {e}")
}

/// The client URLs of the client records, for a proxy.
pub fn client_urls(targets: &[Target]) -> Vec<String> {
    targets
        .iter()
        .map(|t| format!("{}://{}:{}", t.scheme, t.srv.target, t.srv.port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, ip: [u8; 4]) -> Target {
        Target {
            scheme: "http",
            srv: Srv {
                priority: 0,
                weight: 0,
                port,
                target: host.into(),
            },
            addresses: vec![Ipv4Addr::from(ip)],
        }
    }

    fn three() -> Vec<Target> {
        (1..=3)
            .map(|n| {
                target(
                    &format!("core-0{n}.keel.test"),
                    2380,
                    [192, 168, 77, 10 + n],
                )
            })
            .collect()
    }

    #[test]
    fn this_machine_by_its_address_the_others_by_their_names() {
        let cluster = initial_cluster(
            "keel.test",
            "m2",
            &["http://192.168.77.12:2380".into()],
            &three(),
        )
        .unwrap();
        assert_eq!(
            cluster,
            "core-01=http://core-01.keel.test:2380,m2=http://core-02.keel.test:2380,\
             core-03=http://core-03.keel.test:2380"
        );
        // By name too, and a name that clashes with a target's label is not reused.
        let cluster = initial_cluster(
            "keel.test",
            "core-01",
            &["http://CORE-03.keel.test:2380".into()],
            &three(),
        )
        .unwrap();
        assert_eq!(
            cluster,
            "core-01-2=http://core-01.keel.test:2380,core-02=http://core-02.keel.test:2380,\
             core-01=http://core-03.keel.test:2380"
        );
    }

    #[test]
    fn no_records_or_not_among_them_names_the_key() {
        let e =
            initial_cluster("keel.test", "m1", &["http://10.0.0.1:2380".into()], &[]).unwrap_err();
        assert_eq!(
            e,
            "coreos.etcd2.discovery-srv: keel.test has no _etcd-server-ssl._tcp or \
             _etcd-server._tcp records"
        );
        // The right address on another port is not this machine.
        let e = initial_cluster(
            "keel.test",
            "m1",
            &["http://192.168.77.11:7001".into()],
            &three(),
        )
        .unwrap_err();
        assert!(
            e.starts_with(
                "coreos.etcd2.discovery-srv: this machine's initial-advertise-peer-urls \
                 (http://192.168.77.11:7001) is none of keel.test's targets: \
                 core-01.keel.test:2380 (192.168.77.11)"
            ),
            "{e}"
        );
    }

    #[test]
    fn url_parts() {
        assert_eq!(
            url_host_port("http://10.0.0.1:2380"),
            Some(("10.0.0.1".into(), 2380))
        );
        assert_eq!(
            url_host_port("https://[fd00::1]:2380/"),
            Some(("fd00::1".into(), 2380))
        );
        assert_eq!(url_host_port("http://a.b"), Some(("a.b".into(), 80)));
        assert_eq!(url_host_port("a.b:1"), None);
    }
}
