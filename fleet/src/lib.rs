//! fleet's job on etcd v3: cluster-wide systemd units with `[X-Fleet]` constraints.
//!
//! - [`unit`]: unit names and the `[X-Fleet]` section, checked before anything is stored;
//! - [`schedule`]: placement as a pure function (fleet's rules, least loaded first);
//! - [`model`]: the keys and JSON values in etcd, the only state there is;
//! - [`store`]: the etcd calls, bounded and counted;
//! - [`engine`]: the one scheduling leader (etcd's election API);
//! - [`agent`]: each machine's agent, watching only its own keys;
//! - [`systemd`]: `systemctl`, or a recording stand-in;
//! - [`registry`]: fleetctl's side; [`table`]: its output; [`config`]: fleetd's settings;
//!   [`remote`]: `status`, `journal` and `ssh` on the unit's machine, and `--tunnel`.

#![forbid(unsafe_code)]

pub mod agent;
pub mod config;
pub mod engine;
pub mod glob;
pub mod model;
pub mod registry;
pub mod remote;
pub mod schedule;
pub mod store;
pub mod systemd;
pub mod table;
pub mod unit;

pub use store::{FleetError, Store};
