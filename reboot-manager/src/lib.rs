//! The reboot manager (issue #14): once the update agent has staged an update, reboot by the
//! machine's `REBOOT_STRATEGY` (`best-effort`, `etcd-lock`, `reboot`, `off`, `fleetlock`),
//! inside the reboot window, holding the cluster's reboot lock until the new boot is good.
//! The pure rules (semaphore, window, strategies, FleetLock) live in keel-coordination.

#![forbid(unsafe_code)]

pub mod lock;
pub mod lock_cli;
pub mod lockd;
pub mod logins;
pub mod manager;
pub mod settings;
pub mod system;
