//! The Omaha endpoint's logic, without HTTP: a request body in, a response document out (or
//! the reason it is refused), instances and events recorded on the way.
//!
//! A request is checked whole before anything is stored: malformed XML, no app this server
//! knows, an unknown group or a version that is not one is a 400 and leaves no trace.

use keel_omaha::{
    event_result, event_type, keel_attr, parse_request, write_response, Ack, Action, App,
    AppResponse, DayStart, Extra, Manifest, Package as OmahaPackage, Response, UpdateCheck,
    UpdateStatus, Url, FLATCAR_APP_ID, KEEL_APP_ID,
};
use semver::Version;

use crate::metrics::Metrics;
use crate::policy;
use crate::store::{Change, Contact, EventRecord, Group, Package, Policy, Store, StoreError};

/// Why a request is not answered with a response document.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The client sent something wrong (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The store cannot be used (HTTP 503: the client backs off and retries).
    #[error("{0}")]
    Unavailable(String),
    /// An in-memory view of the store could not answer: answer again with the store itself.
    #[error("the database is needed")]
    WouldBlock,
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WouldBlock => Refusal::WouldBlock,
            e => Refusal::Unavailable(e.to_string()),
        }
    }
}

/// What the endpoint needs besides the store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Base URL of this server, no trailing slash (payload codebases start with it).
    pub public_url: String,
    pub poll_interval: Option<u32>,
}

/// What answering needs besides the body.
pub struct Context<'a> {
    pub store: &'a dyn Store,
    pub settings: &'a Settings,
    pub metrics: &'a Metrics,
}

/// An application id without braces, lower case.
pub fn bare_appid(id: &str) -> String {
    id.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

fn known_app(bare: &str) -> bool {
    bare == KEEL_APP_ID || bare == FLATCAR_APP_ID
}

/// A checked app of the request, ready to be answered.
struct Planned<'a> {
    app: &'a App,
    bare: String,
    group: Group,
    version: Version,
    /// The machine id, when the request has a non-empty one.
    machine: Option<String>,
}

/// The group a request's `track` names; update_engine's default `GROUP` is `stable`.
fn group_name(app: &App) -> &str {
    match app.track.as_deref().map(str::trim) {
        None | Some("") => "stable",
        Some(t) => t,
    }
}

/// The instance status an event moves a machine to, if any (Nebraska's mapping, events.go).
pub fn status_after(e: &keel_omaha::Event) -> Option<(&'static str, Option<i64>)> {
    if e.event_result == event_result::ERROR {
        return Some(("error", e.error_code));
    }
    match (e.event_type, e.event_result) {
        (event_type::UPDATE_DOWNLOAD_STARTED, event_result::SUCCESS) => Some(("downloading", None)),
        (event_type::UPDATE_DOWNLOAD_FINISHED, event_result::SUCCESS) => Some(("downloaded", None)),
        (event_type::UPDATE_COMPLETE, event_result::SUCCESS) | (800, event_result::SUCCESS) => {
            Some(("installed", None))
        }
        (event_type::UPDATE_COMPLETE, event_result::SUCCESS_REBOOT) => {
            // As Nebraska: a 3/2 without a real previous version is a first boot, not an update.
            match e.previous_version.as_deref().map(str::trim) {
                None | Some("") | Some("0.0.0.0") => None,
                Some(_) => Some(("complete", None)),
            }
        }
        _ => None,
    }
}

/// Answer one Omaha request body at unix time `now`.
pub fn answer(cx: &Context, body: &[u8], now: i64) -> Result<String, Refusal> {
    let store = cx.store;
    let request = parse_request(body).map_err(|e| Refusal::BadRequest(e.to_string()))?;
    if request.apps.is_empty() {
        return Err(Refusal::BadRequest("the request has no <app>".into()));
    }
    // Check everything first; nothing is written for a request that is refused.
    let mut plans: Vec<Option<Planned>> = Vec::with_capacity(request.apps.len());
    for app in &request.apps {
        let bare = bare_appid(&app.appid);
        if !known_app(&bare) {
            plans.push(None);
            continue;
        }
        let name = group_name(app);
        let group = match store.group(name)? {
            Some(g) => g,
            // Flatcar machines keep their own tracks (lts, lts-2022, …): answered noupdate
            // (no channel), still recorded under their track.
            None if bare == FLATCAR_APP_ID => Group {
                name: name.to_owned(),
                channel: String::new(),
                allow_downgrade: false,
                policy: Policy::default(),
            },
            None => {
                return Err(Refusal::BadRequest(format!(
                    "unknown group {name:?} (track of app {})",
                    app.appid
                )))
            }
        };
        let raw = app.version.as_deref().ok_or_else(|| {
            Refusal::BadRequest(format!("app {} has no version attribute", app.appid))
        })?;
        let version = Version::parse(raw.trim()).map_err(|e| {
            Refusal::BadRequest(format!(
                "app {} version {raw:?} is not a version: {e}",
                app.appid
            ))
        })?;
        let machine = app
            .machineid
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        plans.push(Some(Planned {
            app,
            bare,
            group,
            version,
            machine,
        }));
    }
    if plans.iter().all(Option::is_none) {
        let ids: Vec<&str> = request.apps.iter().map(|a| a.appid.as_str()).collect();
        return Err(Refusal::BadRequest(format!(
            "unknown application id {} (this server serves {KEEL_APP_ID} and {FLATCAR_APP_ID})",
            ids.join(", ")
        )));
    }
    let mut apps = Vec::with_capacity(plans.len());
    for (app, plan) in request.apps.iter().zip(plans) {
        apps.push(match plan {
            None => AppResponse {
                appid: app.appid.clone(),
                status: Some("error-unknownApplication".into()),
                ..Default::default()
            },
            Some(p) => answer_app(cx, &p, now)?,
        });
    }
    let response = Response {
        protocol: Some("3.0".into()),
        server: Some("keel-update-server".into()),
        daystart: Some(DayStart {
            elapsed_seconds: Some(now.rem_euclid(86_400) as u64),
            ..Default::default()
        }),
        apps,
        extra: Extra::new(),
    };
    Ok(write_response(&response))
}

/// The package to offer, if any: newer than what runs (or different, when the group allows
/// downgrades), and the group's rollout policy lets one more machine have it now.
/// `reported` is the status this request's own events move the instance to.
fn offer(
    store: &dyn Store,
    p: &Planned,
    reported: Option<&str>,
    now: i64,
) -> Result<Offer, Refusal> {
    let Some(package) = store.channel_package(&p.bare, &p.group.channel)? else {
        return Ok(Offer::Nothing);
    };
    let Ok(target) = Version::parse(&package.version) else {
        return Ok(Offer::Nothing);
    };
    let wanted = target > p.version || (p.group.allow_downgrade && target != p.version);
    if !wanted {
        return Ok(Offer::Nothing);
    }
    let mut instance = match &p.machine {
        Some(m) => store.instance(m, &p.bare)?,
        None => None,
    };
    if let (Some(i), Some(status)) = (instance.as_mut(), reported) {
        i.status = status.to_owned();
    }
    let counts = store.rollout(&p.group, &package.version, now)?;
    match policy::decide(
        &p.group.policy,
        &counts,
        instance.as_ref(),
        &package.version,
        now,
    ) {
        Ok(()) => Ok(Offer::Grant(package)),
        Err(hold) => Ok(Offer::Held(hold)),
    }
}

/// The answer to an update check.
enum Offer {
    /// Nothing newer (or different, with downgrades allowed) on the channel.
    Nothing,
    /// Something to offer, but the rollout policy holds it back now.
    Held(policy::Hold),
    Grant(Package),
}

/// Safe mode: after a failure report, pause the group once enough machines failed to update
/// to the channel's version.
fn safe_mode(store: &dyn Store, p: &Planned, now: i64) -> Result<(), Refusal> {
    let policy = &p.group.policy;
    if !policy.safe_mode || policy.paused {
        return Ok(());
    }
    let Some(package) = store.channel_package(&p.bare, &p.group.channel)? else {
        return Ok(());
    };
    let counts = store.rollout(&p.group, &package.version, now)?;
    if policy::safe_mode_trips(policy, &counts) {
        let mut paused = policy.clone();
        paused.paused = true;
        let why = format!(
            "safe mode: paused after {} machines failed to update to {}",
            counts.failed, package.version
        );
        store.set_policy(&p.group.name, &paused, &why)?;
    }
    Ok(())
}

fn answer_app(cx: &Context, p: &Planned, now: i64) -> Result<AppResponse, Refusal> {
    let (store, settings) = (cx.store, cx.settings);
    let mut change = Change::default();
    for e in &p.app.events {
        change.events.push(EventRecord {
            at: now,
            event_type: e.event_type,
            event_result: e.event_result,
            error_code: e.error_code,
            previous_version: e.previous_version.clone(),
            version: p.version.to_string(),
        });
        if let Some((status, code)) = status_after(e) {
            change.status = Some((status.to_owned(), code));
        }
    }
    let mut held = false;
    let updatecheck = match &p.app.updatecheck {
        None => None,
        Some(_) => {
            let reported = change.status.as_ref().map(|(s, _)| s.as_str());
            Some(match offer(store, p, reported, now)? {
                Offer::Grant(package) => {
                    change.status = Some(("granted".to_owned(), None));
                    change.granted = Some(package.version.clone());
                    update_ok(settings, &package)
                }
                other => {
                    let mut extra = Extra::new();
                    if let Offer::Held(hold) = other {
                        // Ignored by update_engine; tells the agent and operators why.
                        extra.insert("KeelHold".into(), hold.name().into());
                        held = true;
                    }
                    UpdateCheck {
                        status: Some(UpdateStatus::NoUpdate),
                        poll_interval: settings.poll_interval,
                        extra,
                        ..Default::default()
                    }
                }
            })
        }
    };
    if let Some(machine_id) = &p.machine {
        let contact = Contact {
            machine_id: machine_id.clone(),
            app_id: p.bare.clone(),
            alias: p.app.alias.clone().filter(|a| !a.is_empty()),
            group: p.group.name.clone(),
            version: p.version.to_string(),
            at: now,
        };
        store.record(&contact, &change)?;
        if p.app
            .events
            .iter()
            .any(|e| e.event_result == event_result::ERROR)
        {
            safe_mode(store, p, now)?;
        }
    }
    let succeeded = p
        .app
        .events
        .iter()
        .filter(|e| status_after(e).is_some_and(|(s, _)| s == "complete"))
        .count() as u64;
    let failed = p
        .app
        .events
        .iter()
        .filter(|e| e.event_result == event_result::ERROR)
        .count() as u64;
    cx.metrics.add(&p.group.name, |c| {
        c.checks += u64::from(updatecheck.is_some());
        c.granted += u64::from(change.granted.is_some());
        c.held += u64::from(held);
        c.succeeded += succeeded;
        c.failed += failed;
    });
    Ok(AppResponse {
        appid: p.app.appid.clone(),
        status: Some("ok".into()),
        ping: p.app.ping.as_ref().map(|_| Ack::ok()),
        updatecheck,
        events: p.app.events.iter().map(|_| Ack::ok()).collect(),
        extra: Extra::new(),
    })
}

/// `<updatecheck status="ok">` for `package`, with everything update_engine requires and
/// Keel's key id and version.
pub fn update_ok(settings: &Settings, package: &Package) -> UpdateCheck {
    let (codebase, name) = match &package.external_url {
        Some(url) => {
            let (base, name) = url.rsplit_once('/').unwrap_or((url.as_str(), ""));
            (format!("{base}/"), name.to_owned())
        }
        None => (
            format!(
                "{}/v1/packages/{}/",
                settings.public_url, package.sha256_hex
            ),
            package.file_name.clone(),
        ),
    };
    let mut extra = Extra::new();
    extra.insert(keel_attr::KEY_ID.into(), package.key_id.clone());
    extra.insert(keel_attr::VERSION.into(), package.version.clone());
    UpdateCheck {
        status: Some(UpdateStatus::Ok),
        poll_interval: settings.poll_interval,
        urls: vec![Url {
            codebase,
            extra: Extra::new(),
        }],
        manifests: vec![Manifest {
            version: package.version.clone(),
            packages: vec![OmahaPackage {
                name,
                hash: Some(package.sha1_base64.clone()),
                hash_sha256: Some(package.sha256_hex.clone()),
                size: Some(package.size),
                required: Some(true),
                extra: Extra::new(),
            }],
            actions: vec![Action {
                event: "postinstall".into(),
                sha256: Some(package.sha256_base64.clone()),
                chromeos_version: Some(package.version.clone()),
                needs_admin: Some(false),
                is_delta_payload: Some(false),
                disable_payload_backoff: Some(true),
                extra,
                ..Default::default()
            }],
            extra: Extra::new(),
        }],
        extra: Extra::new(),
    }
}
