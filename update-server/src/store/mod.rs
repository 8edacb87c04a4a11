//! What the server remembers: channels and the package each points at, groups, payload
//! records, instances and their events. [`Store`] is the one interface; [`sqlite`] is the
//! implementation today, and a PostgreSQL one can follow with the same [`migrations`].

pub mod batched;
pub mod migrations;
pub mod postgres;
pub mod sqlite;

/// A named set of machines (the Omaha `track`) following one channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Group {
    pub name: String,
    pub channel: String,
    /// Offer the channel's package even when it is older than what a machine runs (nebraska#316).
    pub allow_downgrade: bool,
    pub policy: Policy,
}

/// A group's rollout policy (Nebraska's `policy_*` fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// No updates are granted while paused (set by an operator, or by safe mode).
    pub paused: bool,
    /// At most this many machines granted an update per period (none: no limit); also the
    /// most that may be updating at once.
    pub max_updates_per_period: Option<u32>,
    pub period_seconds: i64,
    /// A granted update not completed within this many seconds has timed out.
    pub update_timeout_seconds: i64,
    /// Grant only Monday to Friday, 09:00 to 17:00 in `timezone`.
    pub office_hours: bool,
    /// IANA time zone name, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// Pause the group by itself after `safe_mode_failures` machines failed to update to the
    /// channel's version, and grant one machine at a time until one has succeeded.
    pub safe_mode: bool,
    pub safe_mode_failures: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            paused: false,
            max_updates_per_period: None,
            period_seconds: 3600,
            update_timeout_seconds: 3600,
            office_hours: false,
            timezone: "UTC".into(),
            safe_mode: false,
            safe_mode_failures: 1,
        }
    }
}

/// How a group's rollout of one version stands, at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RolloutCounts {
    /// Machines granted an update in the current period.
    pub granted_in_period: u32,
    /// Machines granted, not yet complete, not timed out.
    pub in_progress: u32,
    /// Machines granted, not complete, past the timeout.
    pub timed_out: u32,
    /// Machines that failed updating to the version.
    pub failed: u32,
    /// Machines that completed the update to the version.
    pub completed: u32,
}

/// A published payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    pub id: i64,
    /// Omaha application id, lower case, no braces.
    pub app_id: String,
    pub version: String,
    /// File name appended to the codebase (`usr.img`).
    pub file_name: String,
    pub size: u64,
    /// Base64 SHA-1 of the file (`<package hash>`).
    pub sha1_base64: String,
    /// Base64 SHA-256 of the file (`<action sha256>`).
    pub sha256_base64: String,
    /// Hex SHA-256 of the file (`<package hash_sha256>`, and the stored file's name).
    pub sha256_hex: String,
    /// Id of the key the payload's metadata is signed with.
    pub key_id: String,
    /// Where machines download it when it is not served by this server (the full file URL).
    pub external_url: Option<String>,
    pub created_at: i64,
}

/// A machine's state as the server last saw it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Instance {
    pub machine_id: String,
    pub app_id: String,
    pub alias: Option<String>,
    pub group: String,
    pub version: String,
    /// `new`, `granted`, `downloading`, `downloaded`, `installed`, `complete`, `error`.
    pub status: String,
    pub error_code: Option<i64>,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Left out of lists and counts until shown again (nebraska#148).
    pub hidden: bool,
    /// When an update was last granted, and to which version.
    pub granted_at: Option<i64>,
    pub target_version: Option<String>,
}

/// Which instances a search returns (nebraska#351). Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstanceFilter {
    /// Part of the machine id or the alias (case-insensitive).
    pub q: Option<String>,
    pub group: Option<String>,
    pub version: Option<String>,
    pub status: Option<String>,
    pub app_id: Option<String>,
    /// Last seen before this unix time ("not checked in since").
    pub seen_before: Option<i64>,
    /// Last seen at or after this unix time.
    pub seen_after: Option<i64>,
    /// Include hidden instances.
    pub include_hidden: bool,
    /// At most this many (newest first); default 1000.
    pub limit: Option<u32>,
}

/// One line of the activity log: what operators did and what went wrong on machines.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Activity {
    pub at: i64,
    /// `publish`, `promote`, `group`, `channel`, `instance`, `policy`.
    pub kind: String,
    /// The group, channel or machine it is about.
    pub subject: String,
    pub message: String,
}

/// One request from a machine: who it is and what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub machine_id: String,
    pub app_id: String,
    pub alias: Option<String>,
    pub group: String,
    pub version: String,
    pub at: i64,
}

/// An event a machine reported, or a grant the server made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EventRecord {
    pub at: i64,
    pub event_type: u32,
    pub event_result: u32,
    pub error_code: Option<i64>,
    pub previous_version: Option<String>,
    /// The version the machine ran when it reported.
    pub version: String,
}

/// What a request changes about an instance: its new status (if any) and the events to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub status: Option<(String, Option<i64>)>,
    pub events: Vec<EventRecord>,
    /// An update to this version was granted now.
    pub granted: Option<String>,
}

impl Change {
    /// A plain check-in: nothing but the contact itself to record.
    pub fn is_empty(&self) -> bool {
        self.status.is_none() && self.events.is_empty() && self.granted.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be used right now (locked, gone, I/O): clients should retry.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// Only from an in-memory view ([`batched::InMemory`]): the answer needs the database, so
    /// it is computed again off the async workers.
    #[error("the database is needed")]
    WouldBlock,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The store every part of the server uses. Methods are blocking; the HTTP layer calls them
/// off the async workers.
pub trait Store: Send + Sync {
    fn channels(&self) -> Result<Vec<String>>;
    fn create_channel(&self, name: &str) -> Result<()>;
    fn groups(&self) -> Result<Vec<Group>>;
    fn group(&self, name: &str) -> Result<Option<Group>>;
    /// A new group following `channel` (which must exist).
    fn create_group(&self, name: &str, channel: &str) -> Result<()>;
    fn set_allow_downgrade(&self, group: &str, allow: bool) -> Result<()>;
    /// Replace a group's rollout policy; `why` goes to the activity log.
    fn set_policy(&self, group: &str, policy: &Policy, why: &str) -> Result<()>;
    /// The rollout of `version` in `group` at `now`, with the group's period and timeout.
    fn rollout(&self, group: &Group, version: &str, now: i64) -> Result<RolloutCounts>;
    /// Record a payload (or find the same file already recorded for its app) and point
    /// `channel` at it, in one transaction.
    fn publish(&self, package: &Package, channel: &str) -> Result<Package>;
    /// The package `channel` points at for `app_id`.
    fn channel_package(&self, app_id: &str, channel: &str) -> Result<Option<Package>>;
    /// Point `to` at what `from` points at, for every app; returns the packages moved.
    fn promote(&self, from: &str, to: &str) -> Result<Vec<Package>>;
    fn packages(&self) -> Result<Vec<Package>>;
    fn package_by_sha256(&self, sha256_hex: &str) -> Result<Option<Package>>;
    /// Create or refresh the instance of `contact` and apply `change`, in one transaction.
    fn record(&self, contact: &Contact, change: &Change) -> Result<()>;
    /// Create or refresh the instances of `contacts` (check-ins that change nothing else), in
    /// one transaction.
    fn record_contacts(&self, contacts: &[Contact]) -> Result<()>;
    /// Write what is held in memory (queued check-ins); a no-op for a store that holds nothing.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    /// A number that changes whenever another connection (another process, another replica)
    /// commits to the database; `None` when the backend cannot tell. Without `wait`, a
    /// connection busy elsewhere gives [`StoreError::WouldBlock`].
    fn outside_changes(&self, wait: bool) -> Result<Option<u64>> {
        let _ = wait;
        Ok(None)
    }
    /// A view that answers only from memory, for the async workers; `None` for a store that
    /// keeps nothing in memory.
    fn in_memory(&self) -> Option<batched::InMemory<'_>> {
        None
    }
    fn instance(&self, machine_id: &str, app_id: &str) -> Result<Option<Instance>>;
    fn instances(&self) -> Result<Vec<Instance>>;
    /// An instance's events, oldest first.
    fn events(&self, machine_id: &str, app_id: &str) -> Result<Vec<EventRecord>>;
    /// Instances matching `filter`, most recently seen first.
    fn search(&self, filter: &InstanceFilter) -> Result<Vec<Instance>>;
    /// Hide or show every instance of `machine_id`; how many there were.
    fn set_hidden(&self, machine_id: &str, hidden: bool) -> Result<usize>;
    /// Forget every instance of `machine_id` and its events; how many instances there were.
    fn retire(&self, machine_id: &str) -> Result<usize>;
    /// Retention: drop events older than `before` and instances not seen since; returns
    /// (instances, events) removed.
    fn prune(&self, before: i64) -> Result<(usize, usize)>;
    fn log_activity(&self, entry: &Activity) -> Result<()>;
    /// The newest `limit` activity entries, newest first.
    fn activity(&self, limit: u32) -> Result<Vec<Activity>>;
}
