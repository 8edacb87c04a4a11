//! fleetd's settings: `/etc/fleet/fleet.conf` (`key=value` lines, fleet's names), then
//! `FLEET_<KEY>` environment variables over it (what cloud-config's `coreos.fleet` writes).
//! Every error names the file and line, or the variable.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use keel_coordination::{EtcdConfig, GoDuration};
use thiserror::Error;

use crate::model::{parse_metadata, DEFAULT_PREFIX};

pub const CONF: &str = "/etc/fleet/fleet.conf";

#[derive(Debug, Error, PartialEq, Eq)]
#[error("{at}: {key}: {why}")]
pub struct ConfigError {
    /// `FILE:LINE` or `$FLEET_…`.
    pub at: String,
    pub key: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FleetConfig {
    pub etcd: EtcdConfig,
    pub key_prefix: String,
    pub metadata: BTreeMap<String, String>,
    pub public_ip: Option<String>,
    pub agent_ttl: Duration,
    pub disable_engine: bool,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            etcd: EtcdConfig {
                timeout: Duration::from_secs(3),
                ..EtcdConfig::default()
            },
            key_prefix: DEFAULT_PREFIX.to_string(),
            metadata: BTreeMap::new(),
            public_ip: None,
            agent_ttl: Duration::from_secs(30),
            disable_engine: false,
        }
    }
}

/// fleet's option names; the ones it deprecated are accepted and ignored.
const IGNORED: [&str; 6] = [
    "verbosity",
    "verify_units",
    "authorized_keys_file",
    "token_limit",
    "disable_watches",
    "engine_reconcile_interval",
];

impl FleetConfig {
    /// The file (when it exists) and then the environment.
    pub fn load(file: &Path, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut c = FleetConfig::default();
        if let Ok(text) = std::fs::read_to_string(file) {
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = format!("{}:{}", file.display(), i + 1);
                let Some((k, v)) = line.split_once('=') else {
                    return Err(ConfigError {
                        at,
                        key: line.into(),
                        why: "not key=value".into(),
                    });
                };
                c.set(k.trim(), unquote(v.trim()), &at)?;
            }
        }
        for (k, v) in env {
            if let Some(key) = k.strip_prefix("FLEET_") {
                c.set(&key.to_ascii_lowercase(), v, &format!("${k}"))?;
            }
        }
        Ok(c)
    }

    fn set(&mut self, key: &str, value: &str, at: &str) -> Result<(), ConfigError> {
        let err = |why: String| ConfigError {
            at: at.to_string(),
            key: key.to_string(),
            why,
        };
        match key {
            "etcd_servers" => {
                self.etcd.endpoints = keel_coordination::etcd::split_endpoints(value);
                if self.etcd.endpoints.is_empty() {
                    return Err(err("no endpoint given".into()));
                }
            }
            "etcd_key_prefix" => self.key_prefix = value.to_string(),
            "etcd_cafile" => self.etcd.ca_file = Some(value.into()),
            "etcd_certfile" => self.etcd.cert_file = Some(value.into()),
            "etcd_keyfile" => self.etcd.key_file = Some(value.into()),
            "etcd_username" => self.etcd.username = Some(value.into()),
            "etcd_password" => self.etcd.password = Some(value.into()),
            "etcd_request_timeout" => {
                let secs: f64 = value
                    .parse()
                    .map_err(|_| err(format!("{value:?} is not a number of seconds")))?;
                if !(0.1..=300.0).contains(&secs) {
                    return Err(err("must be between 0.1 and 300 seconds".into()));
                }
                self.etcd.timeout = Duration::from_secs_f64(secs);
            }
            "metadata" => self.metadata = parse_metadata(value).map_err(err)?,
            "public_ip" => self.public_ip = Some(value.to_string()).filter(|s| !s.is_empty()),
            "agent_ttl" => {
                let d = GoDuration::parse(value)
                    .map_err(|e| err(format!("{value:?}: {e}")))?
                    .to_std();
                if d < Duration::from_secs(2) {
                    return Err(err("must be at least 2s".into()));
                }
                self.agent_ttl = d;
            }
            "disable_engine" => {
                self.disable_engine = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" | "" => false,
                    _ => return Err(err(format!("{value:?} is not a boolean"))),
                }
            }
            k if IGNORED.contains(&k) => {}
            _ => return Err(err("unknown fleet option".into())),
        }
        Ok(())
    }
}

/// Where Keel (like Flatcar) writes the metadata source's addresses.
pub const METADATA_FILE: &str = "/run/metadata/flatcar";

/// coreos-cloudinit's `$private_ipv4`/`$public_ipv4` from the metadata file's
/// `…_IPV4_LOCAL`/`…_IPV4_PRIVATE` and `…_IPV4_PUBLIC` lines; `None` when it has none.
pub fn fill_placeholder(value: &str, metadata: &str) -> Option<String> {
    let suffixes: &[&str] = match value {
        "$private_ipv4" => &["_IPV4_LOCAL", "_IPV4_PRIVATE"],
        "$public_ipv4" => &["_IPV4_PUBLIC"],
        _ => return None,
    };
    metadata.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        let v = v.trim().trim_matches('"');
        (suffixes.iter().any(|s| k.trim().ends_with(s)) && !v.is_empty()).then(|| v.to_string())
    })
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fleet.conf");
        std::fs::write(&f, "# c\nmetadata=\"region=us-west\"\nagent_ttl=10s\n").unwrap();
        let c = FleetConfig::load(
            &f,
            &env(&[
                ("FLEET_METADATA", "group=hw_webservers"),
                (
                    "FLEET_ETCD_SERVERS",
                    "http://10.0.0.1:2379,http://10.0.0.2:2379",
                ),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.metadata["group"], "hw_webservers");
        assert!(!c.metadata.contains_key("region"));
        assert_eq!(c.agent_ttl, Duration::from_secs(10));
        assert_eq!(c.etcd.endpoints.len(), 2);
    }

    #[test]
    fn placeholders_from_the_metadata_file() {
        let md = "COREOS_EC2_IPV4_LOCAL=10.1.2.3\nCOREOS_EC2_IPV4_PUBLIC=203.0.113.29\n";
        assert_eq!(fill_placeholder("$private_ipv4", md).unwrap(), "10.1.2.3");
        assert_eq!(
            fill_placeholder("$public_ipv4", md).unwrap(),
            "203.0.113.29"
        );
        assert_eq!(fill_placeholder("$public_ipv4", ""), None);
        assert_eq!(fill_placeholder("10.0.0.1", md), None);
    }

    #[test]
    fn errors_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("fleet.conf");
        std::fs::write(&f, "\nagent_ttl=soon\n").unwrap();
        let e = FleetConfig::load(&f, &[]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:2: agent_ttl:", f.display())),
            "{e}"
        );
        let e = FleetConfig::load(&dir.path().join("none"), &env(&[("FLEET_METADATA", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("$FLEET_METADATA: metadata:"), "{e}");
        let e = FleetConfig::load(&dir.path().join("none"), &env(&[("FLEET_COLOUR", "x")]))
            .unwrap_err();
        assert_eq!(e.why, "unknown fleet option");
    }
}
