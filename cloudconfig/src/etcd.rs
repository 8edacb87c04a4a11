//! cloud-config's `coreos.etcd2` → etcd 3.4's configuration: one `ETCD_*` variable per key
//! (etcd reads `--initial-cluster` from `ETCD_INITIAL_CLUSTER`), written as a drop-in of
//! `etcd-member.service`, as coreos-cloudinit wrote one for `etcd2.service`.
//!
//! Checked here, before etcd ever starts: URL lists, `initial-cluster`'s `name=URL` pairs, one
//! bootstrap mode, numbers. A key etcd 3.4 no longer has is a warning naming it. `$private_ipv4`
//! and the like stay in the values: `keel-cloudinit --exec-etcd` fills them in when etcd starts
//! (see [`crate::boot::etcd_member`]), once the machine has its addresses.

use std::fmt::Write as _;

use crate::config::Section;

pub const UNIT: &str = "etcd-member.service";
/// Runtime, as coreos-cloudinit's: cloud-config is applied again at every boot.
pub const DROP_IN: &str = "/run/systemd/system/etcd-member.service.d/20-cloudinit.conf";
/// `on`: run etcd's gateway on 127.0.0.1:2379 to the cluster's members instead of a member.
pub const PROXY_VAR: &str = "KEEL_ETCD_PROXY";
/// The config's errors, for etcd-member to print to its journal and stop on.
pub const ERROR_VAR: &str = "KEEL_ETCD_CONFIG_ERROR";

/// Address placeholders of coreos-cloudinit, filled in from the metadata source or the
/// machine's own addresses.
pub const PLACEHOLDERS: [&str; 4] = [
    "$private_ipv4",
    "$public_ipv4",
    "$private_ipv6",
    "$public_ipv6",
];

/// What a key becomes.
enum Kind {
    Str,
    Urls,
    Url,
    Int,
    Bool,
    InitialCluster,
    ClusterState,
    Proxy,
    /// etcd 3.4 has no such setting: (why).
    Gone(&'static str),
}

const GATEWAY: &str = "Keel runs etcd's gateway for proxy: on, which has no such setting";

/// The etcd2 keys coreos-cloudinit knew (normalised with `_`), in its order.
const KEYS: &[(&str, Kind)] = &[
    ("advertise_client_urls", Kind::Urls),
    (
        "ca_file",
        Kind::Gone("use trusted-ca-file and client-cert-auth"),
    ),
    ("cert_file", Kind::Str),
    ("client_cert_auth", Kind::Bool),
    ("cors", Kind::Str),
    ("data_dir", Kind::Str),
    ("debug", Kind::Bool),
    ("discovery", Kind::Url),
    ("discovery_fallback", Kind::Str),
    ("discovery_srv", Kind::Str),
    ("discovery_proxy", Kind::Url),
    ("election_timeout", Kind::Int),
    ("enable_pprof", Kind::Bool),
    ("force_new_cluster", Kind::Bool),
    ("heartbeat_interval", Kind::Int),
    ("initial_advertise_peer_urls", Kind::Urls),
    ("initial_cluster", Kind::InitialCluster),
    ("initial_cluster_state", Kind::ClusterState),
    ("initial_cluster_token", Kind::Str),
    ("key_file", Kind::Str),
    ("listen_client_urls", Kind::Urls),
    ("listen_peer_urls", Kind::Urls),
    ("log_package_levels", Kind::Str),
    ("max_snapshots", Kind::Int),
    ("max_wals", Kind::Int),
    ("name", Kind::Str),
    (
        "peer_ca_file",
        Kind::Gone("use peer-trusted-ca-file and peer-client-cert-auth"),
    ),
    ("peer_cert_file", Kind::Str),
    ("peer_key_file", Kind::Str),
    ("peer_client_cert_auth", Kind::Bool),
    ("peer_trusted_ca_file", Kind::Str),
    ("proxy", Kind::Proxy),
    ("proxy_dial_timeout", Kind::Gone(GATEWAY)),
    ("proxy_failure_wait", Kind::Gone(GATEWAY)),
    ("proxy_read_timeout", Kind::Gone(GATEWAY)),
    ("proxy_refresh_interval", Kind::Gone(GATEWAY)),
    ("proxy_write_timeout", Kind::Gone(GATEWAY)),
    ("snapshot_count", Kind::Int),
    ("strict_reconfig_check", Kind::Bool),
    ("trusted_ca_file", Kind::Str),
    ("wal_dir", Kind::Str),
];

/// `coreos.etcd2` read: the environment for etcd, and what was wrong or left out.
#[derive(Debug, Default, PartialEq)]
pub struct Translation {
    pub env: Vec<(String, String)>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// The key as users write it (`initial-cluster`), as etcd's flag is spelled.
pub fn key_name(key: &str) -> String {
    format!("coreos.etcd2.{}", key.replace('_', "-"))
}

pub fn env_name(key: &str) -> String {
    format!("ETCD_{}", key.to_ascii_uppercase())
}

pub fn translate(section: &Section) -> Translation {
    let mut t = Translation::default();
    let mut proxy = false;
    for (key, value) in &section.settings {
        let name = key_name(key);
        let Some((_, kind)) = KEYS.iter().find(|(k, _)| k == key) else {
            t.warnings
                .push(format!("{name}: not an etcd2 setting; ignored"));
            continue;
        };
        let checked = match kind {
            Kind::Gone(why) => {
                t.warnings.push(format!(
                    "{name}: etcd 3.4 has no such setting ({why}); ignored"
                ));
                continue;
            }
            Kind::Str => Ok(()),
            Kind::Url => check_url(value),
            Kind::Urls => check_urls(value),
            Kind::Int => value
                .parse::<u64>()
                .map(drop)
                .map_err(|_| format!("{value:?} is not a whole number")),
            Kind::Bool => match value.as_str() {
                "true" | "false" => Ok(()),
                _ => Err(format!("{value:?} is not true or false")),
            },
            Kind::InitialCluster => check_initial_cluster(value),
            Kind::ClusterState => match value.as_str() {
                "new" | "existing" => Ok(()),
                _ => Err(format!("{value:?} is neither new nor existing")),
            },
            Kind::Proxy => match value.as_str() {
                "off" => continue,
                "on" => {
                    proxy = true;
                    t.env.push((PROXY_VAR.into(), "on".into()));
                    continue;
                }
                "readonly" => {
                    t.warnings.push(format!(
                        "{name}: readonly: etcd 3.4's gateway cannot refuse writes; running it as on"
                    ));
                    proxy = true;
                    t.env.push((PROXY_VAR.into(), "on".into()));
                    continue;
                }
                _ => Err(format!("{value:?} is not off, on or readonly")),
            },
        };
        match checked {
            Ok(()) => t.env.push((env_name(key), value.clone())),
            Err(why) => t.errors.push(format!("{name}: {why}")),
        }
    }
    let set = |key: &str| section.settings.iter().find(|(k, _)| k == key);
    let modes: Vec<&str> = ["initial_cluster", "discovery", "discovery_srv"]
        .into_iter()
        .filter(|k| set(k).is_some())
        .collect();
    if modes.len() > 1 {
        let names: Vec<String> = modes.iter().map(|k| key_name(k)).collect();
        t.errors.push(format!(
            "{}: choose one way to find the cluster (etcd refuses more than one)",
            names.join(", ")
        ));
    }
    if proxy && modes.is_empty() {
        t.errors.push(format!(
            "{}: on needs the cluster's members: set initial-cluster, discovery or discovery-srv",
            key_name("proxy")
        ));
    }
    if let (Some((_, name)), Some((_, cluster)), false) =
        (set("name"), set("initial_cluster"), proxy)
    {
        let names: Vec<&str> = cluster
            .split(',')
            .filter_map(|m| m.split_once('=').map(|(n, _)| n.trim()))
            .collect();
        if !names.is_empty() && !names.contains(&name.as_str()) {
            t.errors.push(format!(
                "{}: {name:?} is not among {}'s members ({})",
                key_name("name"),
                key_name("initial_cluster"),
                names.join(", ")
            ));
        }
    }
    t
}

/// The drop-in's text: `Environment=` lines, quoted for systemd; the errors, if any, for
/// etcd-member to stop on.
pub fn drop_in(t: &Translation) -> String {
    let mut s =
        String::from("# Written by keel-cloudinit from coreos.etcd2 at every boot.\n[Service]\n");
    for (k, v) in &t.env {
        let _ = writeln!(s, "Environment=\"{}\"", quote(&format!("{k}={v}")));
    }
    if !t.errors.is_empty() {
        let _ = writeln!(
            s,
            "Environment=\"{}\"",
            quote(&format!("{ERROR_VAR}={}", t.errors.join("; ")))
        );
    }
    s
}

/// systemd's quoting inside `"…"`: backslash and quote escaped, `%` doubled (specifiers).
pub(crate) fn quote(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
}

/// A placeholder stands for an address in a URL while it is checked.
fn with_example_addresses(value: &str) -> String {
    value
        .replace("$private_ipv4", "192.0.2.1")
        .replace("$public_ipv4", "192.0.2.2")
        .replace("$private_ipv6", "[2001:db8::1]")
        .replace("$public_ipv6", "[2001:db8::2]")
}

fn check_urls(value: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err("no URL".into());
    }
    value.split(',').try_for_each(check_url)
}

/// `http(s)://host[:port][/path]`, as etcd parses its URL flags.
fn check_url(url: &str) -> Result<(), String> {
    let url = url.trim();
    let probe = with_example_addresses(url);
    let rest = probe
        .strip_prefix("http://")
        .or_else(|| probe.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !p.ends_with(']') => (h, Some(p)),
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if host.contains('$') {
        return Err(format!(
            "{url:?}: unknown placeholder (Keel fills in {})",
            PLACEHOLDERS.join(", ")
        ));
    }
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return Err(format!("{url:?}: port {p:?} is not a port number"));
        }
    }
    Ok(())
}

/// `name=URL,name=URL`: each member named, each URL a URL.
fn check_initial_cluster(value: &str) -> Result<(), String> {
    for member in value.split(',') {
        let Some((name, url)) = member.split_once('=') else {
            return Err(format!("{member:?} is not name=URL"));
        };
        if name.trim().is_empty() {
            return Err(format!("{member:?} has no name before \"=\""));
        }
        check_url(url).map_err(|e| format!("member {}: {e}", name.trim()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(pairs: &[(&str, &str)]) -> Section {
        Section {
            line: 5,
            settings: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_issue_example_becomes_etcd_variables() {
        let t = translate(&section(&[
            ("name", "core-01"),
            ("initial_advertise_peer_urls", "http://127.0.0.1:2380"),
            ("initial_cluster_token", "core-01_etcd"),
            ("initial_cluster", "core-01=http://127.0.0.1:2380"),
            ("initial_cluster_state", "new"),
            (
                "listen_peer_urls",
                "http://0.0.0.0:2380,http://0.0.0.0:7001",
            ),
            (
                "listen_client_urls",
                "http://0.0.0.0:2379,http://0.0.0.0:4001",
            ),
            (
                "advertise_client_urls",
                "http://0.0.0.0:2379,http://0.0.0.0:4001",
            ),
        ]));
        assert!(t.errors.is_empty() && t.warnings.is_empty(), "{t:?}");
        assert_eq!(t.env[0], ("ETCD_NAME".into(), "core-01".into()));
        assert_eq!(
            t.env[3],
            (
                "ETCD_INITIAL_CLUSTER".into(),
                "core-01=http://127.0.0.1:2380".into()
            )
        );
        let d = drop_in(&t);
        assert!(
            d.contains("Environment=\"ETCD_INITIAL_CLUSTER_STATE=new\"\n"),
            "{d}"
        );
        assert!(!d.contains(ERROR_VAR));
    }

    #[test]
    fn placeholders_pass_the_url_checks_and_stay() {
        let t = translate(&section(&[
            ("discovery", "http://10.0.2.2:8087/abc"),
            ("advertise_client_urls", "http://$private_ipv4:2379"),
            ("initial_advertise_peer_urls", "http://$private_ipv4:2380"),
            ("listen_peer_urls", "http://[::]:2380"),
        ]));
        assert!(t.errors.is_empty(), "{t:?}");
        assert!(t.env.contains(&(
            "ETCD_ADVERTISE_CLIENT_URLS".into(),
            "http://$private_ipv4:2379".into()
        )));
        let t = translate(&section(&[(
            "advertise_client_urls",
            "http://$private_ip:2379",
        )]));
        assert!(t.errors[0].contains("unknown placeholder"), "{t:?}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                "initial_cluster",
                "core-01",
                "coreos.etcd2.initial-cluster: \"core-01\" is not name=URL",
            ),
            (
                "initial_cluster",
                "a=http://x:2380,=http://y:2380",
                "has no name",
            ),
            (
                "initial_cluster",
                "a=ftp://x",
                "member a: \"ftp://x\" is not an http",
            ),
            (
                "listen_client_urls",
                "http://0.0.0.0:99999",
                "port \"99999\"",
            ),
            (
                "heartbeat_interval",
                "fast",
                "coreos.etcd2.heartbeat-interval: \"fast\"",
            ),
            ("initial_cluster_state", "old", "neither new nor existing"),
            (
                "discovery",
                "discovery.etcd.io/abc",
                "not an http:// or https:// URL",
            ),
        ];
        for (key, value, want) in cases {
            let t = translate(&section(&[(key, value)]));
            assert_eq!(t.errors.len(), 1, "{key}={value}: {t:?}");
            assert!(t.errors[0].contains(want), "{key}={value}: {:?}", t.errors);
            assert!(t.env.is_empty(), "{key}={value}: {t:?}");
            assert!(drop_in(&t).contains(ERROR_VAR));
        }
    }

    #[test]
    fn one_bootstrap_mode_and_the_name_among_the_members() {
        let t = translate(&section(&[
            ("initial_cluster", "a=http://x:2380"),
            ("discovery", "http://d/t"),
        ]));
        assert!(t.errors[0].contains("choose one way"), "{t:?}");
        let t = translate(&section(&[
            ("name", "c"),
            ("initial_cluster", "a=http://x:2380,b=http://y:2380"),
        ]));
        assert_eq!(
            t.errors,
            ["coreos.etcd2.name: \"c\" is not among coreos.etcd2.initial-cluster's members (a, b)"]
        );
    }

    #[test]
    fn gone_keys_warn_and_proxy_becomes_keels_gateway() {
        let t = translate(&section(&[
            ("ca_file", "/etc/ssl/ca.pem"),
            ("proxy", "on"),
            ("proxy_dial_timeout", "1000"),
            ("discovery_srv", "keel.test"),
            ("colour", "blue"),
        ]));
        assert!(t.errors.is_empty(), "{t:?}");
        assert_eq!(t.warnings.len(), 3, "{t:?}");
        assert!(t.warnings[0].starts_with("coreos.etcd2.ca-file: etcd 3.4 has no such setting"));
        assert!(t.warnings[2].contains("colour: not an etcd2 setting"));
        assert!(t.env.contains(&(PROXY_VAR.into(), "on".into())));
        let t = translate(&section(&[("proxy", "on")]));
        assert!(t.errors[0].contains("needs the cluster's members"), "{t:?}");
    }

    #[test]
    fn systemd_quoting() {
        let t = Translation {
            env: vec![("ETCD_CORS".into(), "a\"b%c\\d".into())],
            ..Default::default()
        };
        assert!(drop_in(&t).contains("Environment=\"ETCD_CORS=a\\\"b%%c\\\\d\"\n"));
    }
}
