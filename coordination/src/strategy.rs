//! `REBOOT_STRATEGY`: what to do once an update is staged.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

pub const KEY: &str = "REBOOT_STRATEGY";

/// The values, in the order error messages list them.
pub const ALLOWED: [&str; 5] = ["best-effort", "etcd-lock", "reboot", "off", "fleetlock"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// `etcd-lock` when this machine is part of an etcd cluster, else `reboot` (CoreOS's
    /// default, removed from locksmith in 2017; Keel's default, issue #14).
    BestEffort,
    /// Take the cluster-wide semaphore in etcd before rebooting.
    EtcdLock,
    /// Reboot as soon as the update is staged (inside the window, if one is set).
    Reboot,
    /// Never reboot by itself.
    Off,
    /// Keel: ask a FleetLock server (`FLEETLOCK_URL`) before rebooting.
    FleetLock,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{KEY}={value:?} is not a reboot strategy; expected one of: best-effort, etcd-lock, reboot, off, fleetlock")]
pub struct StrategyError {
    pub value: String,
}

impl Strategy {
    /// Keel's default when `REBOOT_STRATEGY` is unset or empty (locksmith's is `reboot`).
    pub const DEFAULT: Strategy = Strategy::BestEffort;

    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::BestEffort => "best-effort",
            Strategy::EtcdLock => "etcd-lock",
            Strategy::Reboot => "reboot",
            Strategy::Off => "off",
            Strategy::FleetLock => "fleetlock",
        }
    }

    /// The variable's value as read from the file: `None` or empty is [`Strategy::DEFAULT`].
    pub fn from_value(value: Option<&str>) -> Result<Self, StrategyError> {
        match value {
            None | Some("") => Ok(Self::DEFAULT),
            Some(v) => v.parse(),
        }
    }
}

impl FromStr for Strategy {
    type Err = StrategyError;

    /// Exact, case-sensitive names, as locksmithd compares them.
    fn from_str(s: &str) -> Result<Self, StrategyError> {
        Ok(match s {
            "best-effort" => Strategy::BestEffort,
            "etcd-lock" => Strategy::EtcdLock,
            "reboot" => Strategy::Reboot,
            "off" => Strategy::Off,
            "fleetlock" => Strategy::FleetLock,
            _ => {
                return Err(StrategyError {
                    value: s.to_string(),
                })
            }
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        for v in ALLOWED {
            assert_eq!(v.parse::<Strategy>().unwrap().as_str(), v);
        }
        assert_eq!(Strategy::from_value(None), Ok(Strategy::BestEffort));
        assert_eq!(Strategy::from_value(Some("")), Ok(Strategy::BestEffort));
        assert_eq!(Strategy::from_value(Some("off")), Ok(Strategy::Off));
    }

    #[test]
    fn errors_name_the_key_and_the_values() {
        for bad in ["Reboot", "etcd_lock", " reboot", "fleet_lock", "immediate"] {
            let e = bad.parse::<Strategy>().unwrap_err().to_string();
            assert!(e.starts_with(&format!("REBOOT_STRATEGY={bad:?} ")), "{e}");
            for v in ALLOWED {
                assert!(e.contains(v), "{e}");
            }
        }
    }
}
