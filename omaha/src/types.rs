//! Omaha 3.0 as Flatcar's update_engine and Nebraska speak it: plain data, no behaviour.
//!
//! Attribute names are noted on each field. An attribute this crate does not know, or a known
//! one whose value is not in canonical form (a size that is not a decimal number, a boolean
//! that is not `true`/`false` in a response), stays verbatim in the element's `extra` map, so
//! nothing a peer sent is lost and the writers put it back.

use std::collections::BTreeMap;

/// Unknown (or non-canonical) attributes of one element, by name.
pub type Extra = BTreeMap<String, String>;

/// Flatcar's application id (`FLATCAR_RELEASE_APPID`, without the braces update_engine sends).
pub const FLATCAR_APP_ID: &str = "e96281a6-d1af-4bde-9a0a-97b76e56dc57";
/// Keel images' application id: what the agent sends and the server serves Keel payloads under.
pub const KEEL_APP_ID: &str = "4f428835-5a21-4171-960c-95d18c2cbcd3";

/// Event types update_engine sends (`omaha_request_action.h`).
pub mod event_type {
    pub const DOWNLOAD_COMPLETE: u32 = 1;
    pub const INSTALL_COMPLETE: u32 = 2;
    /// Installed (result 1) or rebooted into the new version (result 2) or failed (result 0).
    pub const UPDATE_COMPLETE: u32 = 3;
    pub const UPDATE_DOWNLOAD_STARTED: u32 = 13;
    pub const UPDATE_DOWNLOAD_FINISHED: u32 = 14;
}

/// Event results update_engine sends.
pub mod event_result {
    pub const ERROR: u32 = 0;
    pub const SUCCESS: u32 = 1;
    pub const SUCCESS_REBOOT: u32 = 2;
    pub const UPDATE_DEFERRED: u32 = 9;
}

/// Keel's own attributes on the `postinstall` action (they live in [`Action::extra`]).
pub mod keel_attr {
    /// Id of the Ed25519 key the payload is signed with.
    pub const KEY_ID: &str = "KeelKeyId";
    /// The Keel version the payload installs.
    pub const VERSION: &str = "KeelVersion";
}

// ---------------------------------------------------------------------------------------------
// Requests (client → server)

/// `<request>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `protocol`, "3.0".
    pub protocol: Option<String>,
    /// `version`: the client, e.g. `update_engine-0.4.10`.
    pub version: Option<String>,
    /// `updaterversion`.
    pub updater_version: Option<String>,
    /// `installsource`: `scheduler` or `ondemandupdate`.
    pub install_source: Option<String>,
    /// `ismachine` (`1`/`0`).
    pub is_machine: Option<bool>,
    /// `<os>` (the first; the CoreUpdate docs' minimal request has none).
    pub os: Option<Os>,
    pub apps: Vec<App>,
    /// e.g. `sessionid`, `requestid`, `userid`, `testsource`.
    pub extra: Extra,
}

/// `<os>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Os {
    /// `platform`: `CoreOS` for Flatcar.
    pub platform: Option<String>,
    /// `version`: `Chateau` for Flatcar.
    pub version: Option<String>,
    /// `sp`: `<app version>_<uname -m>` for Flatcar.
    pub sp: Option<String>,
    /// `arch`.
    pub arch: Option<String>,
    pub extra: Extra,
}

/// `<app>` in a request: one machine's view of one application.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct App {
    /// `appid` (required), with or without braces as the client sent it.
    pub appid: String,
    /// `version`: the version running now.
    pub version: Option<String>,
    /// `track`: the group / channel (`GROUP=` in update.conf).
    pub track: Option<String>,
    /// `bootid`.
    pub bootid: Option<String>,
    /// `machineid` (`/etc/machine-id`).
    pub machineid: Option<String>,
    /// `machinealias` (Kinvolk/Flatcar extension, `MACHINE_ALIAS=`).
    pub alias: Option<String>,
    /// `oem`.
    pub oem: Option<String>,
    /// `oemversion`.
    pub oem_version: Option<String>,
    /// `alephversion`: the version first installed.
    pub aleph_version: Option<String>,
    /// `lang`.
    pub lang: Option<String>,
    /// `board`, e.g. `amd64-usr`.
    pub board: Option<String>,
    /// `hardware_class`.
    pub hardware_class: Option<String>,
    /// `delta_okay`.
    pub delta_okay: Option<bool>,
    /// `<updatecheck>`: present when the client asks for an update.
    pub updatecheck: Option<UpdateCheckRequest>,
    /// `<ping>`.
    pub ping: Option<Ping>,
    /// `<event>`s, in order.
    pub events: Vec<Event>,
    /// e.g. `from_track`, `nextversion`, `brand`, `client`, `installage`.
    pub extra: Extra,
}

/// `<updatecheck>` in a request (update_engine sends it empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateCheckRequest {
    /// e.g. `targetversionprefix`.
    pub extra: Extra,
}

/// `<ping>` in a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ping {
    /// `active`.
    pub active: Option<i64>,
    /// `a`: days since the last active ping (-1: first).
    pub a: Option<i64>,
    /// `r`: days since the last roll-call ping (-1: first).
    pub r: Option<i64>,
    pub extra: Extra,
}

/// `<event>` in a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `eventtype` (see [`event_type`]).
    pub event_type: u32,
    /// `eventresult` (see [`event_result`]).
    pub event_result: u32,
    /// `errorcode`: an update_engine `ActionExitCode`, flag bits included (it may be
    /// negative when the top bit is set, as update_engine prints it with `%d`).
    pub error_code: Option<i64>,
    /// `previousversion` (sent with 3/2 after the reboot).
    pub previous_version: Option<String>,
    pub extra: Extra,
}

// ---------------------------------------------------------------------------------------------
// Responses (server → client)

/// `<response>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// `protocol`, "3.0".
    pub protocol: Option<String>,
    /// `server`.
    pub server: Option<String>,
    /// `<daystart>`.
    pub daystart: Option<DayStart>,
    pub apps: Vec<AppResponse>,
    pub extra: Extra,
}

/// `<daystart>`: seconds since the server's midnight, for the client's ping bookkeeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayStart {
    /// `elapsed_seconds` (a non-number is tolerated, as update_engine does, and kept in `extra`).
    pub elapsed_seconds: Option<u64>,
    /// `elapsed_days`.
    pub elapsed_days: Option<u64>,
    pub extra: Extra,
}

/// `<app>` in a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppResponse {
    /// `appid`.
    pub appid: String,
    /// `status`: `ok`, or e.g. `error-unknownApplication`.
    pub status: Option<String>,
    /// `<ping status="ok">`.
    pub ping: Option<Ack>,
    /// `<updatecheck>`.
    pub updatecheck: Option<UpdateCheck>,
    /// `<event status="ok">`, one per event received.
    pub events: Vec<Ack>,
    pub extra: Extra,
}

/// A `<ping>` or `<event>` acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    /// `status`, normally `ok`.
    pub status: Option<String>,
    pub extra: Extra,
}

impl Ack {
    pub fn ok() -> Self {
        Ack {
            status: Some("ok".into()),
            extra: Extra::new(),
        }
    }
}

/// `<updatecheck status>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStatus {
    /// `ok`: an update follows.
    Ok,
    /// `noupdate`.
    NoUpdate,
    /// `error-…`, e.g. `error-internal`, `error-unknownApplication` (the whole string).
    Error(String),
    /// Anything else, verbatim.
    Other(String),
}

impl UpdateStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "ok" => UpdateStatus::Ok,
            "noupdate" => UpdateStatus::NoUpdate,
            e if e.starts_with("error-") => UpdateStatus::Error(e.to_owned()),
            other => UpdateStatus::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            UpdateStatus::Ok => "ok",
            UpdateStatus::NoUpdate => "noupdate",
            UpdateStatus::Error(s) | UpdateStatus::Other(s) => s,
        }
    }
}

/// `<updatecheck>` in a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateCheck {
    /// `status` (update_engine refuses a response without one).
    pub status: Option<UpdateStatus>,
    /// `PollInterval`, seconds: replaces the client's check interval.
    pub poll_interval: Option<u32>,
    /// `<urls><url codebase>`: where the package is, tried in order.
    pub urls: Vec<Url>,
    /// `<manifest>`s. One, except in Nebraska's multi-step (floor) answers to its own syncer.
    pub manifests: Vec<Manifest>,
    pub extra: Extra,
}

/// `<url>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Url {
    /// `codebase`: the package name is appended (after a `/` if it lacks one).
    pub codebase: String,
    pub extra: Extra,
}

/// `<manifest>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// `version`: the version the update installs.
    pub version: String,
    /// `<packages><package>`: update_engine downloads only the first.
    pub packages: Vec<Package>,
    /// `<actions><action>`: update_engine reads the one with `event="postinstall"`.
    pub actions: Vec<Action>,
    /// e.g. Nebraska's `is_floor`, `floor_reason`, `is_target`.
    pub extra: Extra,
}

/// `<package>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Package {
    /// `name`: the file name appended to each codebase.
    pub name: String,
    /// `hash`: base64 SHA-1 of the file (not checked by update_engine).
    pub hash: Option<String>,
    /// `hash_sha256`: hex SHA-256 (Nebraska's extra files, Chromium's devserver).
    pub hash_sha256: Option<String>,
    /// `size` in bytes (decimal; anything else stays in `extra` and counts as absent).
    pub size: Option<u64>,
    /// `required`.
    pub required: Option<bool>,
    /// e.g. `fp`.
    pub extra: Extra,
}

/// `<action>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Action {
    /// `event`: `postinstall` (the one that matters), `update`, …
    pub event: String,
    /// `sha256`: base64 SHA-256 of the whole payload (update_engine requires it; it treats it
    /// as an opaque string and compares it with its own digest).
    pub sha256: Option<String>,
    /// `ChromeOSVersion`.
    pub chromeos_version: Option<String>,
    /// `needsadmin`.
    pub needs_admin: Option<bool>,
    /// `IsDeltaPayload` (only `true` makes a delta).
    pub is_delta_payload: Option<bool>,
    /// `DisablePayloadBackoff`.
    pub disable_payload_backoff: Option<bool>,
    /// `MetadataSignatureRsa`.
    pub metadata_signature_rsa: Option<String>,
    /// `MetadataSize`.
    pub metadata_size: Option<u64>,
    /// `MaxFailureCountPerUrl`.
    pub max_failure_count_per_url: Option<u32>,
    /// Everything else: `IsDelta`, `ChromeVersion`, `MaxDaysToScatter`, `run`, and Keel's own
    /// attributes ([`keel_attr`]).
    pub extra: Extra,
}

impl Action {
    /// Keel's payload signing key id (`KeelKeyId`).
    pub fn keel_key_id(&self) -> Option<&str> {
        self.extra.get(keel_attr::KEY_ID).map(String::as_str)
    }

    /// Keel's version of the payload (`KeelVersion`).
    pub fn keel_version(&self) -> Option<&str> {
        self.extra.get(keel_attr::VERSION).map(String::as_str)
    }
}
