//! The agent's Omaha exchanges: an update check (with a ping and any queued events) and event
//! reports, written with keel-omaha and judged with update_engine's verdict.

use std::time::Duration;

use keel_http::{Client, HttpError, Timeouts};
use keel_omaha::{
    client_outcome_from_body, write_request, App, Event, Os, Outcome, Ping, Request,
    UpdateCheckRequest, KEEL_APP_ID,
};

use crate::state::PendingEvent;

/// What the agent says about itself in every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub machine_id: String,
    pub group: String,
    /// The running version.
    pub version: String,
    pub board: String,
    pub arch: String,
    /// The running slot's channel (its build's), sent as `from_track`.
    pub channel: String,
}

/// The largest response the agent reads (Nebraska's responses are a few KiB).
pub const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// A request for `id` with `events`, and an update check with a ping when `check` is set.
pub fn request(id: &Identity, events: &[PendingEvent], check: bool) -> Request {
    let mut app = App {
        appid: format!("{{{KEEL_APP_ID}}}"),
        version: Some(id.version.clone()),
        track: Some(id.group.clone()),
        machineid: Some(id.machine_id.clone()),
        board: Some(id.board.clone()),
        delta_okay: Some(false),
        ..App::default()
    };
    if !id.channel.is_empty() {
        app.extra.insert("from_track".into(), id.channel.clone());
    }
    if check {
        app.ping = Some(Ping {
            active: Some(1),
            ..Ping::default()
        });
        app.updatecheck = Some(UpdateCheckRequest::default());
    }
    app.events = events.iter().map(event).collect();
    let updater = format!("keel-update-{}", env!("CARGO_PKG_VERSION"));
    Request {
        protocol: Some("3.0".into()),
        version: Some(updater.clone()),
        updater_version: Some(updater),
        install_source: Some(if check { "scheduler" } else { "ondemandupdate" }.into()),
        is_machine: Some(true),
        os: Some(Os {
            platform: Some("Keel".into()),
            version: Some("Keel".into()),
            sp: Some(format!("{}_{}", id.version, id.arch)),
            arch: Some(id.arch.clone()),
            ..Os::default()
        }),
        apps: vec![app],
        ..Request::default()
    }
}

fn event(e: &PendingEvent) -> Event {
    let mut extra = keel_omaha::Extra::new();
    if !e.version.is_empty() {
        extra.insert("nextversion".into(), e.version.clone());
    }
    Event {
        event_type: e.event_type,
        event_result: e.event_result,
        error_code: e.error_code,
        previous_version: e.previous_version.clone(),
        extra,
    }
}

/// Why an exchange with the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("{0}")]
    Http(#[from] HttpError),
    /// 200, but update_engine would refuse the body (`code` is its ActionExitCode).
    #[error("POST {url}: HTTP 200: the response is not a valid Omaha answer (update_engine's error {code}); it starts {excerpt}")]
    BadResponse {
        url: String,
        code: u32,
        excerpt: String,
    },
}

impl ExchangeError {
    /// A server-side or network problem (back off), as opposed to an answer that is wrong.
    pub fn is_server_or_network(&self) -> bool {
        match self {
            ExchangeError::Http(e) => e.status().is_none_or(|s| s >= 500),
            ExchangeError::BadResponse { .. } => false,
        }
    }
}

pub struct OmahaClient {
    http: Client,
    pub url: String,
}

impl OmahaClient {
    pub fn new(url: &str) -> OmahaClient {
        OmahaClient {
            http: Client::new(Timeouts::total(Duration::from_secs(60))),
            url: url.to_string(),
        }
    }

    /// POST the request; the body of a 200 answer.
    fn post(&self, req: &Request) -> Result<Vec<u8>, HttpError> {
        let xml = write_request(req);
        let r = self
            .http
            .post(&self.url, xml.as_bytes(), &[("content-type", "text/xml")])?;
        if r.status != 200 {
            return Err(r.status_error());
        }
        r.read_to_vec(MAX_RESPONSE_BYTES)
    }

    /// An update check: update_engine's verdict on the answer (a refused answer is an error
    /// that quotes it).
    pub fn check(&self, id: &Identity, events: &[PendingEvent]) -> Result<Outcome, ExchangeError> {
        let body = self.post(&request(id, events, true))?;
        match client_outcome_from_body(&body, KEEL_APP_ID) {
            Outcome::Error(code) => Err(ExchangeError::BadResponse {
                url: self.url.clone(),
                code: code.0,
                excerpt: keel_http::excerpt(&body),
            }),
            o => Ok(o),
        }
    }

    /// Report events; update_engine counts any HTTP 200 as delivered.
    pub fn report(&self, id: &Identity, events: &[PendingEvent]) -> Result<(), HttpError> {
        self.post(&request(id, events, false)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_well_formed_and_parse_back() {
        let id = Identity {
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            group: "beta".into(),
            version: "1.0.0".into(),
            board: "qemu-x86_64".into(),
            arch: "x86_64".into(),
            channel: "alpha".into(),
        };
        let ev = PendingEvent {
            event_type: 3,
            event_result: 2,
            error_code: None,
            previous_version: Some("0.9.0".into()),
            version: "1.0.0".into(),
        };
        let xml = write_request(&request(&id, &[ev], true));
        let back = keel_omaha::parse_request(xml.as_bytes()).unwrap();
        let app = &back.apps[0];
        assert_eq!(app.track.as_deref(), Some("beta"));
        assert_eq!(app.version.as_deref(), Some("1.0.0"));
        assert!(app.updatecheck.is_some() && app.ping.is_some());
        assert_eq!(app.events[0].previous_version.as_deref(), Some("0.9.0"));
        assert_eq!(back.os.unwrap().sp.as_deref(), Some("1.0.0_x86_64"));
        let only_events = request(&id, &[], false);
        assert!(only_events.apps[0].updatecheck.is_none());
    }
}
