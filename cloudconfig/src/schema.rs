//! The shape of a cloud-config: every key coreos-cloudinit's `config.CloudConfig` knows (key
//! names as its `yaml:` tags, after `-` → `_`), its type, its `valid:` check and its
//! `deprecated:` note. The validator walks a document against this tree.

use crate::values::Check;

#[derive(Debug)]
pub enum Ty {
    Str(Option<Check>),
    Bool,
    Int,
    Float,
    Struct(&'static [Field]),
    List(&'static Ty),
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub deprecated: Option<&'static str>,
}

impl Ty {
    /// Go's name for the type, as the upstream warning prints it (`want struct`, `want []string`).
    pub fn human(&self) -> String {
        match self {
            Ty::Str(_) => "string".into(),
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Float => "float64".into(),
            Ty::Struct(_) => "struct".into(),
            Ty::List(t) => format!("[]{}", t.human()),
        }
    }

    pub fn field(&self, name: &str) -> Option<&'static Field> {
        match self {
            Ty::Struct(fields) => fields.iter().find(|f| f.name == name),
            _ => None,
        }
    }
}

const STR: Ty = Ty::Str(None);

const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        deprecated: None,
    }
}

const fn old(name: &'static str, ty: Ty, why: &'static str) -> Field {
    Field {
        name,
        ty,
        deprecated: Some(why),
    }
}

const ETCD2_OPT: &str = "etcd2 options no longer work for etcd";
const REMOTE_KEYS: &str =
    "trying to fetch from a remote endpoint introduces too many intermittent errors";

pub const FILE: Ty = Ty::Struct(&[
    f("encoding", Ty::Str(Some(Check::Encoding))),
    f("content", STR),
    f("owner", STR),
    f("path", STR),
    f("permissions", Ty::Str(Some(Check::Permissions))),
]);

pub const USER: Ty = Ty::Struct(&[
    f("name", STR),
    f("passwd", STR),
    f("ssh_authorized_keys", Ty::List(&STR)),
    old("coreos_ssh_import_github", STR, REMOTE_KEYS),
    old(
        "coreos_ssh_import_github_users",
        Ty::List(&STR),
        REMOTE_KEYS,
    ),
    old("coreos_ssh_import_url", STR, REMOTE_KEYS),
    f("gecos", STR),
    f("homedir", STR),
    f("no_create_home", Ty::Bool),
    f("primary_group", STR),
    f("groups", Ty::List(&STR)),
    f("no_user_group", Ty::Bool),
    f("system", Ty::Bool),
    f("no_log_init", Ty::Bool),
    f("shell", STR),
]);

pub const DROP_IN: Ty = Ty::Struct(&[f("name", STR), f("content", STR)]);

pub const UNIT: Ty = Ty::Struct(&[
    f("name", STR),
    f("mask", Ty::Bool),
    f("enable", Ty::Bool),
    f("runtime", Ty::Bool),
    f("content", STR),
    f("command", Ty::Str(Some(Check::UnitCommand))),
    f("drop_ins", Ty::List(&DROP_IN)),
]);

const ETCD: Ty = Ty::Struct(&[
    f("addr", STR),
    old("advertise_client_urls", STR, ETCD2_OPT),
    f("bind_addr", STR),
    f("ca_file", STR),
    f("cert_file", STR),
    f("cluster_active_size", Ty::Int),
    f("cluster_remove_delay", Ty::Float),
    f("cluster_sync_interval", Ty::Float),
    f("cors", STR),
    f("data_dir", STR),
    f("discovery", STR),
    old("discovery_fallback", STR, ETCD2_OPT),
    old("discovery_srv", STR, ETCD2_OPT),
    old("discovery_proxy", STR, ETCD2_OPT),
    old("election_timeout", Ty::Int, ETCD2_OPT),
    old("force_new_cluster", Ty::Bool, ETCD2_OPT),
    f("graphite_host", STR),
    old("heartbeat_interval", Ty::Int, ETCD2_OPT),
    f("http_read_timeout", Ty::Float),
    f("http_write_timeout", Ty::Float),
    old("initial_advertise_peer_urls", STR, ETCD2_OPT),
    old("initial_cluster", STR, ETCD2_OPT),
    old("initial_cluster_state", STR, ETCD2_OPT),
    old("initial_cluster_token", STR, ETCD2_OPT),
    f("key_file", STR),
    old("listen_client_urls", STR, ETCD2_OPT),
    old("listen_peer_urls", STR, ETCD2_OPT),
    f("max_result_buffer", Ty::Int),
    f("max_retry_attempts", Ty::Int),
    old("max_snapshots", Ty::Int, ETCD2_OPT),
    old("max_wals", Ty::Int, ETCD2_OPT),
    f("name", STR),
    f("peer_addr", STR),
    f("peer_bind_addr", STR),
    f("peer_ca_file", STR),
    f("peer_cert_file", STR),
    f("peer_election_timeout", Ty::Int),
    f("peer_heartbeat_interval", Ty::Int),
    f("peer_key_file", STR),
    f("peers", STR),
    f("peers_file", STR),
    old("proxy", STR, ETCD2_OPT),
    f("retry_interval", Ty::Float),
    f("snapshot", Ty::Bool),
    f("snapshot_count", Ty::Int),
    f("trace", STR),
    f("verbose", Ty::Bool),
    f("very_verbose", Ty::Bool),
    f("very_very_verbose", Ty::Bool),
]);

const ETCD2: Ty = Ty::Struct(&[
    f("advertise_client_urls", STR),
    old(
        "ca_file",
        STR,
        "ca_file obsoleted by trusted_ca_file and client_cert_auth",
    ),
    f("cert_file", STR),
    f("client_cert_auth", Ty::Bool),
    f("cors", STR),
    f("data_dir", STR),
    f("debug", Ty::Bool),
    f("discovery", STR),
    f("discovery_fallback", STR),
    f("discovery_srv", STR),
    f("discovery_proxy", STR),
    f("election_timeout", Ty::Int),
    f("enable_pprof", Ty::Bool),
    f("force_new_cluster", Ty::Bool),
    f("heartbeat_interval", Ty::Int),
    f("initial_advertise_peer_urls", STR),
    f("initial_cluster", STR),
    f("initial_cluster_state", STR),
    f("initial_cluster_token", STR),
    f("key_file", STR),
    f("listen_client_urls", STR),
    f("listen_peer_urls", STR),
    f("log_package_levels", STR),
    f("max_snapshots", Ty::Int),
    f("max_wals", Ty::Int),
    f("name", STR),
    old(
        "peer_ca_file",
        STR,
        "peer_ca_file obsoleted peer_trusted_ca_file and peer_client_cert_auth",
    ),
    f("peer_cert_file", STR),
    f("peer_key_file", STR),
    f("peer_client_cert_auth", Ty::Bool),
    f("peer_trusted_ca_file", STR),
    f("proxy", Ty::Str(Some(Check::EtcdProxy))),
    f("proxy_dial_timeout", Ty::Int),
    f("proxy_failure_wait", Ty::Int),
    f("proxy_read_timeout", Ty::Int),
    f("proxy_refresh_interval", Ty::Int),
    f("proxy_write_timeout", Ty::Int),
    f("snapshot_count", Ty::Int),
    f("strict_reconfig_check", Ty::Bool),
    f("trusted_ca_file", STR),
    f("wal_dir", STR),
]);

const FLANNEL: Ty = Ty::Struct(&[
    f("etcd_endpoints", STR),
    f("etcd_cafile", STR),
    f("etcd_certfile", STR),
    f("etcd_keyfile", STR),
    f("etcd_prefix", STR),
    f("etcd_username", STR),
    f("etcd_password", STR),
    f("ip_masq", STR),
    f("subnet_file", STR),
    f("interface", STR),
    f("public_ip", STR),
]);

const FLEET: Ty = Ty::Struct(&[
    f("agent_ttl", STR),
    f("authorized_keys_file", STR),
    f("disable_engine", Ty::Bool),
    f("engine_reconcile_interval", Ty::Float),
    f("etcd_cafile", STR),
    f("etcd_certfile", STR),
    f("etcd_keyfile", STR),
    f("etcd_key_prefix", STR),
    f("etcd_request_timeout", Ty::Float),
    f("etcd_servers", STR),
    f("etcd_username", STR),
    f("etcd_password", STR),
    f("metadata", STR),
    f("public_ip", STR),
    f("token_limit", Ty::Int),
    f("verbosity", Ty::Int),
    f("verify_units", Ty::Bool),
]);

const LOCKSMITH: Ty = Ty::Struct(&[
    f("endpoint", STR),
    f("etcd_cafile", STR),
    f("etcd_certfile", STR),
    f("etcd_keyfile", STR),
    f("etcd_username", STR),
    f("etcd_password", STR),
    f("group", STR),
    f("window_start", Ty::Str(Some(Check::WindowStart))),
    f("window_length", Ty::Str(Some(Check::WindowLength))),
]);

const OEM: Ty = Ty::Struct(&[
    f("id", STR),
    f("name", STR),
    f("version_id", STR),
    f("home_url", STR),
    f("bug_report_url", STR),
]);

const UPDATE: Ty = Ty::Struct(&[
    f("reboot_strategy", Ty::Str(Some(Check::RebootStrategy))),
    f("group", STR),
    f("server", STR),
]);

const COREOS: Ty = Ty::Struct(&[
    old("etcd", ETCD, "etcd is no longer shipped in Container Linux"),
    old(
        "etcd2",
        ETCD2,
        "etcd2 is no longer shipped in Container Linux",
    ),
    f("flannel", FLANNEL),
    old(
        "fleet",
        FLEET,
        "fleet is no longer shipped in Container Linux",
    ),
    f("locksmith", LOCKSMITH),
    f("oem", OEM),
    f("update", UPDATE),
    f("units", Ty::List(&UNIT)),
]);

pub const CLOUD_CONFIG: Ty = Ty::Struct(&[
    f("ssh_authorized_keys", Ty::List(&STR)),
    f("coreos", COREOS),
    f("write_files", Ty::List(&FILE)),
    f("hostname", STR),
    f("users", Ty::List(&USER)),
    f("manage_etc_hosts", STR),
]);

/// The document's root, as a `'static` place to walk from.
pub static ROOT: Ty = CLOUD_CONFIG;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_lookups() {
        let coreos = &ROOT.field("coreos").unwrap().ty;
        assert_eq!(coreos.human(), "struct");
        let etcd = coreos.field("etcd").unwrap();
        assert!(etcd.deprecated.is_some());
        assert!(etcd.ty.field("proxy").unwrap().deprecated.is_some());
        assert_eq!(ROOT.field("users").unwrap().ty.human(), "[]struct");
        assert_eq!(
            ROOT.field("ssh_authorized_keys").unwrap().ty.human(),
            "[]string"
        );
        assert!(ROOT.field("nope").is_none());
    }
}
