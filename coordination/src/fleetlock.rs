//! The FleetLock protocol (Zincati's `docs/development/fleetlock/protocol.md`): the wire types
//! both ends use, and the decisions of Keel's server (`keel lockd`) as pure functions over the
//! semaphore, one answer per row of the server matrix in locksmith.md §5.
//!
//! Where airlock and poseidon/fleetlock answer differently, Keel takes one of the two answers
//! (status and `kind`), the one the protocol text or the client is better served by; the choice
//! is named at each row of the table test and in the README.

use serde::{Deserialize, Serialize};

use crate::key::{semaphore_key, SEMAPHORE_KEY};
use crate::semaphore::{apply, LockError, Op, Semaphore};

pub const PROTOCOL_HEADER: &str = "fleet-lock-protocol";
pub const PRE_REBOOT_PATH: &str = "/v1/pre-reboot";
pub const STEADY_STATE_PATH: &str = "/v1/steady-state";
/// Zincati's default group.
pub const DEFAULT_GROUP: &str = "default";

/// The request body: `{"client_params":{"id":…,"group":…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub client_params: ClientParams,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientParams {
    pub id: String,
    pub group: String,
}

/// The error body: `{"kind":…,"value":…}`, `kind` from a small fixed set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: String,
    pub value: String,
}

/// A server answer: 200 with an empty body, or a status and an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub error: Option<ErrorBody>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/pre-reboot`: take a slot.
    PreReboot,
    /// `POST /v1/steady-state`: give it back.
    SteadyState,
}

/// What the HTTP layer hands over.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The `fleet-lock-protocol` header's value, if present.
    pub protocol_header: Option<&'a str>,
    pub body: &'a [u8],
}

impl Reply {
    pub fn ok() -> Self {
        Reply {
            status: 200,
            error: None,
        }
    }

    pub fn error(status: u16, kind: &str, value: impl Into<String>) -> Self {
        Reply {
            status,
            error: Some(ErrorBody {
                kind: kind.into(),
                value: value.into(),
            }),
        }
    }

    /// The body to send: empty on success, the JSON error otherwise.
    pub fn body(&self) -> String {
        self.error
            .as_ref()
            .map(|e| serde_json::to_string(e).expect("two strings"))
            .unwrap_or_default()
    }
}

impl Request {
    pub fn new(id: &str, group: &str) -> Self {
        Request {
            client_params: ClientParams {
                id: id.into(),
                group: group.into(),
            },
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("two strings")
    }
}

/// The protocol's group syntax, `^[a-zA-Z0-9.-]+$`.
pub fn valid_group(g: &str) -> bool {
    !g.is_empty()
        && g.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// The semaphore a FleetLock group uses: `default` shares locksmith's default key, so
/// `etcd-lock` machines and FleetLock clients in the default group count against one `max`;
/// any other group is locksmith's group key.
pub fn group_key(group: &str) -> String {
    if group == DEFAULT_GROUP {
        SEMAPHORE_KEY.to_string()
    } else {
        semaphore_key(Some(group))
    }
}

/// Everything decided before the semaphore is read. `known_groups: None` accepts every valid
/// group (poseidon); `Some(list)` refuses others as airlock does.
pub fn validate(
    req: &HttpRequest,
    known_groups: Option<&[&str]>,
) -> Result<(Endpoint, ClientParams), Reply> {
    let endpoint = match req.path.trim_end_matches('/') {
        p if p.ends_with(PRE_REBOOT_PATH) => Endpoint::PreReboot,
        p if p.ends_with(STEADY_STATE_PATH) => Endpoint::SteadyState,
        _ => {
            return Err(Reply::error(
                404,
                "not_found",
                format!("no such endpoint {:?}", req.path),
            ))
        }
    };
    if req.method != "POST" {
        return Err(Reply::error(
            405,
            "method_not_allowed",
            "required method POST",
        ));
    }
    if req.protocol_header != Some("true") {
        return Err(Reply::error(
            400,
            "missing_header",
            "missing required header fleet-lock-protocol: true",
        ));
    }
    let params = serde_json::from_slice::<Request>(req.body)
        .map_err(|e| Reply::error(400, "decode_error", format!("error decoding message: {e}")))?
        .client_params;
    if params.id.is_empty() {
        return Err(Reply::error(
            400,
            "invalid_client_identity",
            "empty client ID",
        ));
    }
    if params.group.is_empty() {
        return Err(Reply::error(
            400,
            "invalid_client_identity",
            "empty client group",
        ));
    }
    if !valid_group(&params.group) {
        return Err(Reply::error(
            400,
            "invalid_client_identity",
            format!(
                "invalid client group {:?}: must match ^[a-zA-Z0-9.-]+$",
                params.group
            ),
        ));
    }
    if let Some(groups) = known_groups {
        if !groups.contains(&params.group.as_str()) {
            return Err(Reply::error(
                400,
                "unknown_group",
                format!("unknown group {:?}", params.group),
            ));
        }
    }
    Ok((endpoint, params))
}

/// The answer for a valid request given the group's semaphore, and the value to write (by
/// compare-and-swap; on a lost race the server reads again and decides again). Lock is Keel's
/// [`Op::Acquire`] (recursive, with the optional expiry), unlock is [`Op::Release`] (owned: a
/// non-holder's unlock changes nothing and succeeds).
pub fn decide(
    endpoint: Endpoint,
    params: &ClientParams,
    state: &Semaphore,
    now: i64,
    ttl_secs: Option<u64>,
) -> (Reply, Option<Semaphore>) {
    let op = match endpoint {
        Endpoint::PreReboot => Op::Acquire {
            holder: params.id.clone(),
            now,
            ttl_secs,
        },
        Endpoint::SteadyState => Op::Release(params.id.clone()),
    };
    match apply(state, &op) {
        Ok(new) if new == *state => (Reply::ok(), None),
        Ok(new) => (Reply::ok(), Some(new)),
        Err(e @ LockError::SemaphoreAt(_)) => (
            Reply::error(
                423,
                "lock_held",
                format!(
                    "reboot lock unavailable: {e} (max {}, held by {})",
                    state.max,
                    state.holders().join(", ")
                ),
            ),
            None,
        ),
        // Acquire and Release do not return these; kept total rather than panicking.
        Err(e) => (Reply::error(500, "internal_error", e.to_string()), None),
    }
}

/// The answer when the store failed (etcd unreachable, bad value, lost races without end).
pub fn backend_error(message: &str) -> Reply {
    Reply::error(500, "internal_error", message)
}

/// The client's reading of an answer: any 2xx is success (as Zincati); otherwise the error body
/// if it parses, else the status and the start of the body.
pub fn client_outcome(status: u16, body: &[u8]) -> Result<(), String> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => Err(format!(
            "FleetLock server answered {status} {}: {}",
            e.kind, e.value
        )),
        Err(_) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Err(format!("FleetLock server answered {status}: {text:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(
        method: &'a str,
        path: &'a str,
        header: Option<&'a str>,
        body: &'a [u8],
    ) -> HttpRequest<'a> {
        HttpRequest {
            method,
            path,
            protocol_header: header,
            body,
        }
    }

    const BODY: &[u8] = br#"{"client_params":{"id":"a","group":"default"}}"#;

    fn st(sem: i64, max: i64, holders: &[&str]) -> Semaphore {
        Semaphore {
            semaphore: sem,
            max,
            holders: Some(holders.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn kind(r: &Reply) -> Option<&str> {
        r.error.as_ref().map(|e| e.kind.as_str())
    }

    #[test]
    fn wire_types() {
        assert_eq!(
            Request::new("a", "default").to_json(),
            std::str::from_utf8(BODY).unwrap()
        );
        assert_eq!(Reply::ok().body(), "");
        assert_eq!(
            Reply::error(423, "lock_held", "x").body(),
            r#"{"kind":"lock_held","value":"x"}"#
        );
        assert!(
            valid_group("prod.db-1")
                && !valid_group("a/b")
                && !valid_group("")
                && !valid_group("a b")
        );
        assert_eq!(group_key("default"), SEMAPHORE_KEY);
        assert_eq!(
            group_key("db"),
            "coreos.com/updateengine/rebootlock/groups/db/semaphore"
        );
    }

    /// locksmith.md §5, the request rows: (case, airlock, poseidon, Keel) as (status, kind).
    #[test]
    fn server_matrix_request_rows() {
        type Row<'a> = (
            &'a str,
            HttpRequest<'a>,
            Option<&'a [&'a str]>,
            (u16, &'a str),
            (u16, &'a str),
            (u16, &'a str),
        );
        let rows: Vec<Row> = vec![
            // airlock has no method check (any method is handled as POST): Keel as poseidon.
            (
                "wrong method",
                req("GET", "/v1/pre-reboot", Some("true"), BODY),
                None,
                (200, ""),
                (405, "method_not_allowed"),
                (405, "method_not_allowed"),
            ),
            (
                "missing header",
                req("POST", "/v1/pre-reboot", None, BODY),
                None,
                (400, "invalid_client_identity"),
                (400, "missing_header"),
                (400, "missing_header"),
            ),
            (
                "wrong header",
                req("POST", "/v1/pre-reboot", Some("yes"), BODY),
                None,
                (400, "invalid_client_identity"),
                (400, "missing_header"),
                (400, "missing_header"),
            ),
            (
                "bad JSON",
                req("POST", "/v1/pre-reboot", Some("true"), b"{"),
                None,
                (400, "invalid_client_identity"),
                (400, "decode_error"),
                (400, "decode_error"),
            ),
            (
                "empty id",
                req(
                    "POST",
                    "/v1/pre-reboot",
                    Some("true"),
                    br#"{"client_params":{"id":"","group":"g"}}"#,
                ),
                None,
                (400, "invalid_client_identity"),
                (400, "decode_error"),
                (400, "invalid_client_identity"),
            ),
            (
                "empty group",
                req(
                    "POST",
                    "/v1/steady-state",
                    Some("true"),
                    br#"{"client_params":{"id":"a","group":""}}"#,
                ),
                None,
                (400, "invalid_client_identity"),
                (400, "decode_error"),
                (400, "invalid_client_identity"),
            ),
            // Keel configured with its groups behaves as airlock, unconfigured as poseidon.
            (
                "unknown group (groups configured)",
                req(
                    "POST",
                    "/v1/pre-reboot",
                    Some("true"),
                    br#"{"client_params":{"id":"a","group":"db"}}"#,
                ),
                Some(&["default"]),
                (400, "unknown_group"),
                (200, ""),
                (400, "unknown_group"),
            ),
        ];
        for (case, r, groups, airlock, poseidon, keel) in rows {
            let got = validate(&r, groups).unwrap_err();
            assert_eq!((got.status, kind(&got).unwrap()), keel, "{case}");
            assert!(
                keel == airlock || keel == poseidon,
                "{case}: Keel's answer is one of the two servers'"
            );
        }
        let ok = validate(
            &req(
                "POST",
                "/base/v1/pre-reboot",
                Some("true"),
                br#"{"client_params":{"id":"a","group":"db"}}"#,
            ),
            None,
        );
        assert_eq!(
            ok.unwrap(),
            (
                Endpoint::PreReboot,
                ClientParams {
                    id: "a".into(),
                    group: "db".into()
                }
            )
        );
        assert_eq!(
            validate(&req("POST", "/v1/reboot", Some("true"), BODY), None)
                .unwrap_err()
                .status,
            404
        );
        let e = validate(
            &req(
                "POST",
                "/v1/pre-reboot",
                Some("true"),
                br#"{"client_params":{"id":"a","group":"a/b"}}"#,
            ),
            None,
        );
        assert_eq!(kind(&e.unwrap_err()), Some("invalid_client_identity"));
    }

    /// locksmith.md §5, the semaphore rows: (case, endpoint, id, state, airlock, poseidon, Keel,
    /// written state).
    #[test]
    fn server_matrix_semaphore_rows() {
        use Endpoint::*;
        type Row<'a> = (
            &'a str,
            Endpoint,
            &'a str,
            Semaphore,
            (u16, &'a str),
            (u16, &'a str),
            (u16, &'a str),
            Option<Semaphore>,
        );
        let rows: Vec<Row> = vec![
            (
                "lock, free slot",
                PreReboot,
                "a",
                st(1, 1, &[]),
                (200, ""),
                (200, ""),
                (200, ""),
                Some(st(0, 1, &["a"])),
            ),
            (
                "lock, already holder",
                PreReboot,
                "a",
                st(0, 1, &["a"]),
                (200, ""),
                (200, ""),
                (200, ""),
                None,
            ),
            // airlock's 500 looks like a server fault; 423 Locked says "try later".
            (
                "lock, full",
                PreReboot,
                "b",
                st(0, 1, &["a"]),
                (500, "failed_lock"),
                (423, "lock_held"),
                (423, "lock_held"),
                None,
            ),
            (
                "unlock, holder",
                SteadyState,
                "a",
                st(0, 1, &["a"]),
                (200, ""),
                (200, ""),
                (200, ""),
                Some(st(1, 1, &[])),
            ),
            (
                "unlock, not holder, free",
                SteadyState,
                "a",
                st(1, 1, &[]),
                (200, ""),
                (200, ""),
                (200, ""),
                None,
            ),
            // The protocol: "unlock when not holder = ok"; poseidon's 423 would fail every
            // steady-state report of a machine that is not the holder.
            (
                "unlock, held by other",
                SteadyState,
                "b",
                st(0, 1, &["a"]),
                (200, ""),
                (423, "lock_held"),
                (200, ""),
                None,
            ),
        ];
        for (case, ep, id, state, airlock, poseidon, keel, write) in rows {
            let params = ClientParams {
                id: id.into(),
                group: "default".into(),
            };
            let (reply, new) = decide(ep, &params, &state, 0, None);
            assert_eq!((reply.status, kind(&reply).unwrap_or("")), keel, "{case}");
            assert_eq!(new, write, "{case}");
            assert!(keel == airlock || keel == poseidon, "{case}");
        }
        // Backend error: airlock 500 failed_lock/failed_sem_init, poseidon 500 internal_error.
        let r = backend_error("etcd unreachable");
        assert_eq!((r.status, kind(&r)), (500, Some("internal_error")));
        let (r, _) = decide(
            PreReboot,
            &ClientParams {
                id: "b".into(),
                group: "default".into(),
            },
            &st(0, 1, &["a"]),
            0,
            None,
        );
        assert_eq!(
            r.error.unwrap().value,
            "reboot lock unavailable: semaphore is at 0 (max 1, held by a)"
        );
    }

    #[test]
    fn expiry_through_the_server() {
        let p = |id: &str| ClientParams {
            id: id.into(),
            group: "default".into(),
        };
        let (_, s) = decide(
            Endpoint::PreReboot,
            &p("a"),
            &Semaphore::initial(),
            100,
            Some(60),
        );
        let s = s.unwrap();
        assert_eq!(
            decide(Endpoint::PreReboot, &p("b"), &s, 159, Some(60))
                .0
                .status,
            423
        );
        let (r, s) = decide(Endpoint::PreReboot, &p("b"), &s, 160, Some(60));
        assert_eq!(
            (r.status, s.unwrap().holders()),
            (200, &["b".to_string()][..])
        );
    }

    #[test]
    fn client_reading() {
        assert_eq!(client_outcome(200, b""), Ok(()));
        assert_eq!(client_outcome(204, b"x"), Ok(()));
        assert_eq!(
            client_outcome(423, br#"{"kind":"lock_held","value":"held by a"}"#),
            Err("FleetLock server answered 423 lock_held: held by a".into())
        );
        assert_eq!(
            client_outcome(502, b"<html>"),
            Err("FleetLock server answered 502: \"<html>\"".into())
        );
    }
}
