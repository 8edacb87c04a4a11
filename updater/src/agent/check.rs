//! One update check, start to end: judge what the last staged update became, ask the server
//! (delivering queued events), and for an offered update stream it through `apply` into the
//! passive slot, reporting 13/1, 14/1 and 3/1 (or 3/0 with an errorcode). The outcome is what
//! `keel-update check` prints.

use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::VerifyingKey;
use keel_omaha::{event_result, event_type, ActionCode, Outcome};
use serde::Serialize;

use super::config::AgentConfig;
use super::errorcode;
use super::omaha::{ExchangeError, Identity, OmahaClient};
use crate::apply::ExpectedPayload;
use crate::compat::compare_versions;
use crate::disk::Disk;
use crate::download::ResumePolicy;
use crate::error::{Result, UpdateError};
use crate::lifecycle::{judge, Verdict};
use crate::slots::find_slots;
use crate::state::{Outcome as LastOutcome, PendingEvent, StagedUpdate, UpdateState};
use crate::{apply, ApplyOptions, PayloadSource, Target};
use keel_cli_support::progress::Progress;

/// How a check ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckResult {
    /// The server has nothing newer for this machine.
    NoUpdate,
    /// A new version is written and staged; reboot to run it.
    Staged,
    /// An update is already staged and waiting for the reboot, or booted and waiting for its
    /// health gate (no new check was made).
    AlreadyStaged,
    /// The server offers a version that failed on this machine before; it is not applied.
    SkippedFailedVersion,
    /// Asking the server failed (network, HTTP status, a response that is not Omaha).
    ServerError,
    /// The offered update could not be downloaded, verified or written; nothing is staged.
    UpdateFailed,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub result: CheckResult,
    /// update_engine's word for where the machine is now (`UPDATED_NEED_REBOOT`, `IDLE`, …).
    pub status: &'static str,
    pub server: String,
    pub group: String,
    pub running_version: String,
    pub offered_version: Option<String>,
    pub message: String,
    /// The server's PollInterval, seconds.
    pub poll_interval: Option<u32>,
    /// Events delivered to the server during this check (`13/1`, `3/0:9`, …).
    pub events_sent: Vec<String>,
    /// Events still queued on disk for the next check.
    pub events_queued: usize,
    /// The exit code `keel-update check` ends with.
    pub exit_code: i32,
    /// Whether a failure is the server's or the network's (the schedule backs off).
    #[serde(skip)]
    pub server_or_network: bool,
}

pub struct CheckContext<'a> {
    pub target: &'a Target,
    pub keys: Vec<VerifyingKey>,
    pub config: AgentConfig,
    pub state_file: Option<PathBuf>,
    /// Where `/run/reboot-required` goes (`None`: not on a running system, no flag).
    pub flag_root: Option<PathBuf>,
    pub resume: ResumePolicy,
    pub progress: &'a dyn Progress,
}

fn load(path: Option<&Path>) -> UpdateState {
    path.map(|p| {
        UpdateState::load(p).unwrap_or_else(|e| {
            eprintln!("keel-update: warning: {e}; starting a new state file");
            UpdateState::default()
        })
    })
    .unwrap_or_default()
}

fn save(state: &UpdateState, path: Option<&Path>) {
    if let Some(p) = path {
        if let Err(e) = state.save(p) {
            eprintln!("keel-update: warning: {e}");
        }
    }
}

/// The running system as the server is told about it.
pub fn identity(target: &Target, config: &AgentConfig) -> Result<Identity> {
    let mut disk = Disk::open_read(&target.disk)?;
    let table = disk.table()?;
    let slots = find_slots(&table, target.running, &disk.path)?;
    let info = target.system_info(&disk, &slots)?;
    Ok(Identity {
        machine_id: config.machine_id.clone(),
        group: config.group.clone(),
        version: info.version,
        board: info.board,
        arch: info.arch,
        channel: info.channel,
    })
}

/// The running version (for a rollback's record).
pub fn identity_version(target: &Target) -> Result<String> {
    let mut disk = Disk::open_read(&target.disk)?;
    let table = disk.table()?;
    let slots = find_slots(&table, target.running, &disk.path)?;
    Ok(target.system_info(&disk, &slots)?.version)
}

/// A rollback away from `version`: it is not applied again until a newer one is offered, and
/// the server hears of it as a failure of that version (3/0, errorcode 44).
pub fn record_rollback(state: &mut UpdateState, version: &str) {
    state.mark_failed(version);
    state.pending_events.push(pending(
        event_type::UPDATE_COMPLETE,
        event_result::ERROR,
        Some(ActionCode::ROLLBACK),
        version,
    ));
    state.record_attempt(
        version,
        version,
        "rolled-back",
        format!("rolled back from {version}"),
    );
}

fn pending(t: u32, r: u32, code: Option<ActionCode>, version: &str) -> PendingEvent {
    PendingEvent {
        event_type: t,
        event_result: r,
        error_code: code.map(|c| i64::from(c.0)),
        previous_version: None,
        version: version.to_string(),
    }
}

/// Learn from the verdict on a staged update (at mark-good, or at the next check): a version
/// that came back good is reported 3/2 with `previousversion`; one the machine fell back from
/// is remembered as failed and reported 3/0 (errorcode 44, update_engine's rollback).
pub fn absorb_verdict(state: &mut UpdateState, staged: &StagedUpdate, verdict: &Verdict) {
    match verdict {
        Verdict::Good { version, .. } => {
            state.pending_events.push(PendingEvent {
                previous_version: Some(staged.previous_version.clone()),
                ..pending(
                    event_type::UPDATE_COMPLETE,
                    event_result::SUCCESS_REBOOT,
                    None,
                    version,
                )
            });
            state.record_attempt(
                version,
                &staged.previous_version,
                "good",
                verdict.to_string(),
            );
        }
        Verdict::Failed { version, .. } => {
            state.mark_failed(version);
            state.pending_events.push(pending(
                event_type::UPDATE_COMPLETE,
                event_result::ERROR,
                Some(ActionCode::ROLLBACK),
                version,
            ));
            state.record_attempt(
                version,
                &staged.previous_version,
                "update-failed",
                verdict.to_string(),
            );
        }
        Verdict::RebootPending { .. } | Verdict::OnTrial { .. } | Verdict::Abandoned { .. } => {}
    }
}

/// Deliver the queued events (one request); they stay queued when the server cannot be reached.
pub fn flush_events(client: &OmahaClient, id: &Identity, state: &mut UpdateState) -> Vec<String> {
    if state.pending_events.is_empty() {
        return Vec::new();
    }
    match client.report(id, &state.pending_events) {
        Ok(()) => state
            .pending_events
            .drain(..)
            .map(|e| describe(&e))
            .collect(),
        Err(e) => {
            eprintln!(
                "keel-update: warning: {} event(s) stay queued for the next check: {e}",
                state.pending_events.len()
            );
            Vec::new()
        }
    }
}

fn describe(e: &PendingEvent) -> String {
    match e.error_code {
        Some(c) => format!("{}/{}:{c}", e.event_type, e.event_result),
        None => format!("{}/{}", e.event_type, e.event_result),
    }
}

/// Run one check. The report says how it ended; `Err` only for a machine the check cannot
/// even describe (no readable disk, no running version).
pub fn check(ctx: &CheckContext) -> Result<CheckReport> {
    let state_path = ctx.state_file.as_deref();
    let mut state = load(state_path);
    let id = identity(ctx.target, &ctx.config)?;
    let client = OmahaClient::new(&ctx.config.server);
    let mut report = CheckReport {
        result: CheckResult::NoUpdate,
        status: "IDLE",
        server: ctx.config.server.clone(),
        group: ctx.config.group.clone(),
        running_version: id.version.clone(),
        offered_version: None,
        message: String::new(),
        poll_interval: None,
        events_sent: Vec::new(),
        events_queued: 0,
        exit_code: keel_cli_support::exit::OK,
        server_or_network: false,
    };

    if let Some(staged) = state.staged.clone() {
        let verdict = staged_verdict(ctx.target, &staged)?;
        absorb_verdict(&mut state, &staged, &verdict);
        match verdict {
            Verdict::RebootPending { ref version, .. } | Verdict::OnTrial { ref version, .. } => {
                report.events_sent = flush_events(&client, &id, &mut state);
                report.events_queued = state.pending_events.len();
                save(&state, state_path);
                report.result = CheckResult::AlreadyStaged;
                // Booted into the new slot and waiting for its health gate is not a pending
                // reboot; on a disk image nothing has booted, so "on trial" still is.
                let offline = ctx.target.running == crate::slots::RunningSlot::Chosen;
                report.status = if matches!(verdict, Verdict::RebootPending { .. }) || offline {
                    "UPDATED_NEED_REBOOT"
                } else {
                    "IDLE"
                };
                report.offered_version = Some(version.clone());
                report.message = verdict.to_string();
                return Ok(report);
            }
            _ => state.staged = None,
        }
    }

    let sent_with_check = state.pending_events.clone();
    let outcome = match client.check(&id, &sent_with_check) {
        Ok(o) => o,
        Err(e) => {
            // An answer that came back 200 delivered the events (update_engine's rule), even
            // when the update check part of it is unusable.
            if matches!(e, ExchangeError::BadResponse { .. }) {
                report.events_sent = sent_with_check.iter().map(describe).collect();
                state.pending_events.clear();
            }
            report.events_queued = state.pending_events.len();
            save(&state, state_path);
            return Ok(server_error(report, &e));
        }
    };
    report.events_sent = sent_with_check.iter().map(describe).collect();
    state.pending_events.clear();

    let update = match outcome {
        Outcome::UpdateAvailable(u) => u,
        Outcome::NoUpdate { poll_interval } => {
            report.poll_interval = poll_interval;
            report.message = format!("no update for version {} in group {}", id.version, id.group);
            save(&state, state_path);
            return Ok(report);
        }
        Outcome::Error(code) => {
            // client.check turns these into errors; kept for completeness.
            let e = UpdateError::Server(format!("update_engine's error {code}"));
            report.result = CheckResult::ServerError;
            report.message = e.to_string();
            report.exit_code = e.exit_code();
            save(&state, state_path);
            return Ok(report);
        }
    };
    report.poll_interval = update.poll_interval;
    report.offered_version = Some(update.version.clone());

    if state.has_failed(&update.version) {
        report.result = CheckResult::SkippedFailedVersion;
        report.message = format!(
            "the server offers version {}, which failed on this machine before; waiting for a newer one",
            update.version
        );
        save(&state, state_path);
        return Ok(report);
    }
    let newer = compare_versions(&update.version, &id.version)
        .map(|o| o.is_gt())
        .unwrap_or(false);
    if !newer {
        report.message = format!(
            "the server offers version {}, not newer than the running {}: no downgrade",
            update.version, id.version
        );
        save(&state, state_path);
        return Ok(report);
    }

    let result = stage(ctx, &client, &id, &update, &mut state, &mut report);
    report.events_queued = state.pending_events.len();
    save(&state, state_path);
    result.map(|()| report)
}

fn staged_verdict(target: &Target, staged: &StagedUpdate) -> Result<Verdict> {
    let mut disk = Disk::open_read(&target.disk)?;
    let table = disk.table()?;
    let slots = find_slots(&table, target.running, &disk.path)?;
    Ok(judge(staged, &slots))
}

fn server_error(mut report: CheckReport, e: &ExchangeError) -> CheckReport {
    let err = UpdateError::Server(e.to_string());
    report.result = CheckResult::ServerError;
    report.status = "REPORTING_ERROR_EVENT";
    report.message = err.to_string();
    report.exit_code = err.exit_code();
    report.server_or_network = e.is_server_or_network();
    report
}

/// The server's announced SHA-256: the action's base64 `sha256`, or the package's hex one.
fn announced(update: &keel_omaha::Update) -> Option<ExpectedPayload> {
    let b64 = base64::engine::general_purpose::STANDARD
        .decode(update.sha256.trim())
        .ok();
    let hex = update
        .hash_sha256
        .as_deref()
        .and_then(|h| hex::decode(h.trim()).ok());
    let sha256 = b64.or(hex).and_then(|v| <[u8; 32]>::try_from(v).ok())?;
    Some(ExpectedPayload {
        size: update.size,
        sha256,
    })
}

fn send(
    client: &OmahaClient,
    id: &Identity,
    state: &mut UpdateState,
    report: &mut CheckReport,
    e: PendingEvent,
) {
    state.pending_events.push(e);
    report.events_sent.extend(flush_events(client, id, state));
}

fn stage(
    ctx: &CheckContext,
    client: &OmahaClient,
    id: &Identity,
    update: &keel_omaha::Update,
    state: &mut UpdateState,
    report: &mut CheckReport,
) -> Result<()> {
    let v = &update.version;
    let Some(expected) = announced(update) else {
        let e = UpdateError::Server(format!(
            "the offer of version {v} announces no usable SHA-256 ({:?})",
            update.sha256
        ));
        report.result = CheckResult::ServerError;
        report.message = e.to_string();
        report.exit_code = e.exit_code();
        return Ok(());
    };
    send(
        client,
        id,
        state,
        report,
        pending(
            event_type::UPDATE_DOWNLOAD_STARTED,
            event_result::SUCCESS,
            None,
            v,
        ),
    );
    let mut opts = ApplyOptions::new(ctx.keys.clone());
    opts.resume = ctx.resume;
    opts.expected = Some(expected);
    match apply(
        PayloadSource::Url(update.url.clone()),
        ctx.target,
        &opts,
        ctx.progress,
    ) {
        Ok(a) => {
            state.staged = Some(StagedUpdate {
                version: a.version.clone(),
                previous_version: a.previous_version.clone(),
                slot: a.slot.clone(),
                slot_guid: a.slot_guid,
                time: crate::state::now(),
            });
            let msg = format!(
                "version {} from {} is written to {} and staged; reboot to run it",
                a.version, update.url, a.slot
            );
            state.last = Some(LastOutcome::now("check", "ok", msg.clone()));
            state.record_attempt(&a.version, &a.previous_version, "staged", msg.clone());
            for t in [
                event_type::UPDATE_DOWNLOAD_FINISHED,
                event_type::UPDATE_COMPLETE,
            ] {
                send(
                    client,
                    id,
                    state,
                    report,
                    pending(t, event_result::SUCCESS, None, v),
                );
            }
            if let Some(root) = &ctx.flag_root {
                if let Err(e) = crate::reboot_required::set(root, &a.version) {
                    eprintln!("keel-update: warning: cannot write /run/reboot-required: {e}");
                }
            }
            report.result = CheckResult::Staged;
            report.status = "UPDATED_NEED_REBOOT";
            report.message = msg;
        }
        Err(e) => {
            let mismatch = e.to_string().contains("the update server announced");
            let code = errorcode::for_exit_code(e.exit_code(), mismatch);
            send(
                client,
                id,
                state,
                report,
                pending(
                    event_type::UPDATE_COMPLETE,
                    event_result::ERROR,
                    Some(code),
                    v,
                ),
            );
            let msg = format!("version {v}: {e}");
            state.last = Some(LastOutcome::now("check", "failed", msg.clone()));
            state.record_attempt(v, &id.version, "failed", msg.clone());
            report.result = CheckResult::UpdateFailed;
            report.status = "REPORTING_ERROR_EVENT";
            report.message = msg;
            report.exit_code = e.exit_code();
            report.server_or_network =
                matches!(e, UpdateError::Transport { .. } | UpdateError::Server(_));
        }
    }
    Ok(())
}
