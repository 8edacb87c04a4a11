//! What the reboot manager is told to do, from `update.conf`'s layers (the keys locksmithd read
//! from the same file, plus Keel's). Every error names the file, line and key, and a machine
//! whose settings are wrong does not reboot.

use std::time::Duration;

use keel_coordination::etcd::{split_endpoints, EtcdConfig};
use keel_coordination::{GoDuration, Strategy, Window};
use keel_format::update_conf::UpdateConf;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub strategy: Strategy,
    /// Whether `LOCKSMITHD_ENDPOINT` was set (best-effort then means etcd-lock).
    pub etcd_configured: bool,
    pub etcd: EtcdConfig,
    /// locksmith's group (`LOCKSMITHD_GROUP`); `None` = the default semaphore.
    pub group: Option<String>,
    pub window: Option<Window>,
    /// Keel: a hold older than this is freed by the next acquire (`LOCK_TTL`).
    pub lock_ttl: Option<Duration>,
    /// Keel: keep the lock this long after the new boot is good, spacing reboots (`REBOOT_DELAY`).
    pub reboot_delay: Duration,
    /// How long a logged-in user is warned before the reboot (`LOGIN_GRACE`, locksmith: 5 min).
    pub login_grace: Duration,
    pub fleetlock_url: Option<String>,
    pub fleetlock_group: String,
}

#[derive(Debug, Error, PartialEq)]
pub enum SettingsError {
    #[error("{origin}: {key}: {message}")]
    Value {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Missing(String),
}

fn bad(conf: &UpdateConf, key: &str, message: impl Into<String>) -> SettingsError {
    let origin = conf
        .get_with_origin(key)
        .map(|(_, o)| o.to_string())
        .unwrap_or_else(|| "update.conf".into());
    SettingsError::Value {
        origin,
        key: key.into(),
        message: message.into(),
    }
}

fn set<'a>(conf: &'a UpdateConf, key: &str) -> Option<&'a str> {
    conf.get(key).filter(|v| !v.is_empty())
}

fn duration(conf: &UpdateConf, key: &str) -> Result<Option<Duration>, SettingsError> {
    let Some(v) = set(conf, key) else {
        return Ok(None);
    };
    match GoDuration::parse(v) {
        Ok(d) if d.0 >= 0 => Ok(Some(d.to_std())),
        Ok(_) => Err(bad(conf, key, format!("{v:?} is negative"))),
        Err(e) => Err(bad(conf, key, format!("{v:?}: {e} (e.g. 30s, 10m, 1h30m)"))),
    }
}

impl Settings {
    pub fn from_conf(conf: &UpdateConf) -> Result<Self, SettingsError> {
        let strategy = Strategy::from_value(conf.get("REBOOT_STRATEGY"))
            .map_err(|e| bad(conf, "REBOOT_STRATEGY", e.to_string()))?;

        let mut etcd = EtcdConfig::default();
        let endpoint = set(conf, "LOCKSMITHD_ENDPOINT");
        if let Some(list) = endpoint {
            etcd.endpoints = split_endpoints(list);
            for e in &etcd.endpoints {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(bad(
                        conf,
                        "LOCKSMITHD_ENDPOINT",
                        format!("{e:?} is not an http:// or https:// URL"),
                    ));
                }
            }
        }
        etcd.ca_file = set(conf, "LOCKSMITHD_ETCD_CAFILE").map(Into::into);
        etcd.cert_file = set(conf, "LOCKSMITHD_ETCD_CERTFILE").map(Into::into);
        etcd.key_file = set(conf, "LOCKSMITHD_ETCD_KEYFILE").map(Into::into);
        etcd.username = set(conf, "LOCKSMITHD_ETCD_USERNAME").map(Into::into);
        etcd.password = set(conf, "LOCKSMITHD_ETCD_PASSWORD").map(Into::into);

        let window = Window::from_vars(|k| set(conf, k).map(String::from)).map_err(|e| {
            let key = match &e {
                keel_coordination::window::WindowError::Key { key, .. } => key.clone(),
                _ => conf
                    .first_of(&[
                        "LOCKSMITHD_REBOOT_WINDOW_START",
                        "REBOOT_WINDOW_START",
                        "LOCKSMITHD_REBOOT_WINDOW_LENGTH",
                        "REBOOT_WINDOW_LENGTH",
                    ])
                    .map(|(k, _, _)| k.to_string())
                    .unwrap_or_else(|| "REBOOT_WINDOW_START".into()),
            };
            bad(conf, &key, e.to_string())
        })?;

        let fleetlock_url = set(conf, "FLEETLOCK_URL").map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &fleetlock_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(bad(
                    conf,
                    "FLEETLOCK_URL",
                    format!("{u:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if strategy == Strategy::FleetLock && fleetlock_url.is_none() {
            return Err(SettingsError::Missing(
                "REBOOT_STRATEGY=fleetlock needs FLEETLOCK_URL= in update.conf".into(),
            ));
        }
        let fleetlock_group = set(conf, "FLEETLOCK_GROUP")
            .unwrap_or(keel_coordination::fleetlock::DEFAULT_GROUP)
            .to_string();
        if !keel_coordination::fleetlock::valid_group(&fleetlock_group) {
            return Err(bad(
                conf,
                "FLEETLOCK_GROUP",
                format!("{fleetlock_group:?} must match ^[a-zA-Z0-9.-]+$"),
            ));
        }

        Ok(Self {
            strategy,
            etcd_configured: endpoint.is_some(),
            etcd,
            group: set(conf, "LOCKSMITHD_GROUP").map(String::from),
            window,
            lock_ttl: duration(conf, "LOCK_TTL")?,
            reboot_delay: duration(conf, "REBOOT_DELAY")?.unwrap_or_default(),
            login_grace: duration(conf, "LOGIN_GRACE")?.unwrap_or(Duration::from_secs(300)),
            fleetlock_url,
            fleetlock_group,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn conf(text: &str) -> UpdateConf {
        let mut c = UpdateConf::default();
        c.merge(Path::new("/etc/keel/update.conf"), text).unwrap();
        c
    }

    #[test]
    fn defaults_are_best_effort_without_window_or_lock_options() {
        let s = Settings::from_conf(&conf("")).unwrap();
        assert_eq!(s.strategy, Strategy::BestEffort);
        assert!(!s.etcd_configured);
        assert_eq!(
            s.etcd.endpoints,
            ["http://127.0.0.1:2379", "http://127.0.0.1:4001"]
        );
        assert_eq!((s.window, s.lock_ttl), (None, None));
        assert_eq!(s.login_grace, Duration::from_secs(300));
    }

    #[test]
    fn locksmith_keys_are_read() {
        let s = Settings::from_conf(&conf(
            "REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_ENDPOINT=http://10.0.0.1:2379,http://10.0.0.2:2379\n\
             LOCKSMITHD_GROUP=db\nREBOOT_WINDOW_START=Thu 04:00\nREBOOT_WINDOW_LENGTH=1h\nLOCK_TTL=2h\n",
        ))
        .unwrap();
        assert_eq!(s.strategy, Strategy::EtcdLock);
        assert_eq!(s.etcd.endpoints.len(), 2);
        assert_eq!(s.group.as_deref(), Some("db"));
        assert_eq!(s.window.unwrap().day, Some(4));
        assert_eq!(s.lock_ttl, Some(Duration::from_secs(7200)));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = Settings::from_conf(&conf("GROUP=a\nREBOOT_STRATEGY=sometimes\n")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/etc/keel/update.conf:2: REBOOT_STRATEGY: REBOOT_STRATEGY=\"sometimes\" is not a reboot strategy; \
             expected one of: best-effort, etcd-lock, reboot, off, fleetlock"
        );
        let e = Settings::from_conf(&conf(
            "REBOOT_WINDOW_START=Thu 25:00\nREBOOT_WINDOW_LENGTH=1h\n",
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/etc/keel/update.conf:1: REBOOT_WINDOW_START:"),
            "{e}"
        );
        let e = Settings::from_conf(&conf("REBOOT_WINDOW_START=Thu 04:00\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Either both or neither"), "{e}");
        let e = Settings::from_conf(&conf("LOCKSMITHD_ENDPOINT=10.0.0.1:2379\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/etc/keel/update.conf:1: LOCKSMITHD_ENDPOINT:"),
            "{e}"
        );
        let e = Settings::from_conf(&conf("REBOOT_STRATEGY=fleetlock\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("FLEETLOCK_URL"), "{e}");
        let e = Settings::from_conf(&conf("LOCK_TTL=soon\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/etc/keel/update.conf:1: LOCK_TTL:"), "{e}");
    }
}
