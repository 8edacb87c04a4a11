//! The cluster-wide reboot lock, whichever kind the strategy names: locksmith's semaphore in
//! etcd, or a FleetLock server. Both are idempotent per holder (Keel's `Acquire`/`Release`,
//! FleetLock's protocol), so a manager restarted mid-way simply asks again.

use std::time::Duration;

use keel_coordination::fleetlock::{
    self, Request, PRE_REBOOT_PATH, PROTOCOL_HEADER, STEADY_STATE_PATH,
};
use keel_coordination::store::{self, DEFAULT_ATTEMPTS};
use keel_coordination::{semaphore_key, EtcdConfig, EtcdStore, Op, Semaphore};

/// A lock the manager can take before rebooting and give back after a good boot.
pub enum RebootLock {
    Etcd {
        config: EtcdConfig,
        key: String,
        ttl: Option<Duration>,
    },
    FleetLock {
        url: String,
        group: String,
    },
}

impl RebootLock {
    pub fn etcd(config: EtcdConfig, group: Option<&str>, ttl: Option<Duration>) -> Self {
        RebootLock::Etcd {
            config,
            key: semaphore_key(group),
            ttl,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            RebootLock::Etcd { config, key, .. } => {
                format!("etcd semaphore {key} at {}", config.endpoints.join(","))
            }
            RebootLock::FleetLock { url, group } => format!("FleetLock {url} (group {group})"),
        }
    }

    /// Takes a slot for `id` (or confirms it holds one). `Err` says why not, in words.
    pub fn acquire(&self, id: &str, now_unix: i64) -> Result<(), String> {
        match self {
            RebootLock::Etcd { config, key, ttl } => {
                let op = Op::Acquire {
                    holder: id.into(),
                    now: now_unix,
                    ttl_secs: ttl.map(|t| t.as_secs()),
                };
                etcd_update(config, key, &op).map(|_| ())
            }
            RebootLock::FleetLock { url, group } => post(url, PRE_REBOOT_PATH, id, group),
        }
    }

    /// Gives `id`'s slot back (success when it holds none).
    pub fn release(&self, id: &str) -> Result<(), String> {
        match self {
            RebootLock::Etcd { config, key, .. } => {
                etcd_update(config, key, &Op::Release(id.into())).map(|_| ())
            }
            RebootLock::FleetLock { url, group } => post(url, STEADY_STATE_PATH, id, group),
        }
    }
}

fn etcd_update(config: &EtcdConfig, key: &str, op: &Op) -> Result<Semaphore, String> {
    let store = EtcdStore::connect(config, key).map_err(|e| e.to_string())?;
    store::update(&store, op, DEFAULT_ATTEMPTS).map_err(|e| match e {
        store::StoreError::Lock(l) => format!("{key}: {l}"),
        other => other.to_string(),
    })
}

fn post(url: &str, path: &str, id: &str, group: &str) -> Result<(), String> {
    let full = format!("{url}{path}");
    let client = keel_http::Client::new(keel_http::Timeouts::total(Duration::from_secs(30)));
    let body = Request::new(id, group).to_json();
    let resp = client
        .post(
            &full,
            body.as_bytes(),
            &[
                (PROTOCOL_HEADER, "true"),
                ("content-type", "application/json"),
            ],
        )
        .map_err(|e| e.to_string())?;
    let status = resp.status;
    let bytes = resp.read_to_vec(64 * 1024).unwrap_or_default();
    fleetlock::client_outcome(status, &bytes).map_err(|e| format!("POST {full}: {e}"))
}
