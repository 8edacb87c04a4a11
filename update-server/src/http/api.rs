//! The operators' JSON API under `/api/`, behind the configuration's bearer token: groups,
//! channels, packages, instances (search, history, hide, retire) and the activity log.
//! Runs on a blocking thread (every handler talks to the store).

use hyper::header::{self, HeaderValue};
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::body::{self, text, Body};
use super::query::parse_query;
use super::State;
use crate::store::{InstanceFilter, Policy, StoreError};

/// The parts of a request the API needs, read off the async side.
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub body: bytes::Bytes,
}

fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut text = serde_json::to_vec_pretty(value).expect("plain data serialises");
    text.push(b'\n');
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn ok(value: &impl serde::Serialize) -> Response<Body> {
    json_response(StatusCode::OK, value)
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `None` when the request carries the configured token, else the refusal.
pub fn check_token(state: &State, authorization: Option<&str>) -> Option<Response<Body>> {
    let Some(token) = state.api_token.as_deref() else {
        return Some(text(
            StatusCode::FORBIDDEN,
            "the JSON API is off: the configuration has no api_token",
        ));
    };
    let given = authorization.and_then(|h| h.strip_prefix("Bearer "));
    if given.is_some_and(|g| same_secret(g.trim().as_bytes(), token.as_bytes())) {
        return None;
    }
    let mut r = text(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token (Authorization: Bearer TOKEN)",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

/// A refused API request: the status and the reason sent as text.
pub struct Fail(StatusCode, String);

impl Fail {
    fn bad(message: impl Into<String>) -> Fail {
        Fail(StatusCode::BAD_REQUEST, message.into())
    }

    fn into_response(self) -> Response<Body> {
        let mut r = text(self.0, self.1);
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        r
    }
}

fn store_error(e: StoreError) -> Fail {
    match e {
        StoreError::NotFound(what) => Fail(StatusCode::NOT_FOUND, format!("{what} not found")),
        StoreError::Conflict(why) => Fail(StatusCode::CONFLICT, why),
        e @ (StoreError::Unavailable(_) | StoreError::WouldBlock) => {
            Fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Fail> {
    serde_json::from_slice(body).map_err(|e| Fail::bad(format!("request body: {e}")))
}

/// A name for a group or channel: what the Omaha `track` can carry.
fn valid_name(name: &str) -> Result<(), Fail> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Fail::bad(format!(
            "name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn filter_from_query(query: Option<&str>) -> Result<InstanceFilter, String> {
    let mut f = InstanceFilter::default();
    for (k, v) in parse_query(query)? {
        let int = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("{k}={v:?} is not a unix time"))
        };
        match k.as_str() {
            "q" => f.q = Some(v),
            "group" => f.group = Some(v),
            "version" => f.version = Some(v),
            "status" => f.status = Some(v),
            "app_id" => f.app_id = Some(v),
            "seen_before" => f.seen_before = Some(int(&v)?),
            "seen_after" => f.seen_after = Some(int(&v)?),
            "include_hidden" => f.include_hidden = matches!(v.as_str(), "1" | "true" | ""),
            "limit" => {
                f.limit = Some(
                    v.parse()
                        .map_err(|_| format!("limit={v:?} is not a count"))?,
                )
            }
            other => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    Ok(f)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGroup {
    name: String,
    channel: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupChange {
    allow_downgrade: Option<bool>,
    /// Policy fields to change; the others keep their values.
    policy: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `current` with the fields of `patch` replaced, checked.
pub fn patched_policy(
    current: &Policy,
    patch: &serde_json::Map<String, serde_json::Value>,
) -> Result<Policy, String> {
    let mut value = serde_json::to_value(current).expect("plain data");
    let obj = value.as_object_mut().expect("an object");
    for (k, v) in patch {
        obj.insert(k.clone(), v.clone());
    }
    let p: Policy = serde_json::from_value(value).map_err(|e| format!("policy: {e}"))?;
    if p.period_seconds <= 0 || p.update_timeout_seconds <= 0 {
        return Err("policy: period_seconds and update_timeout_seconds must be positive".into());
    }
    crate::policy::check_time_zone(&p.timezone).map_err(|e| format!("policy: {e}"))?;
    Ok(p)
}

fn describe(p: &serde_json::Map<String, serde_json::Value>) -> String {
    let parts: Vec<String> = p.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    parts.join(", ")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewChannel {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Promote {
    from: String,
}

/// Answer one API request (the token already checked).
pub fn handle(state: &State, req: ApiRequest) -> Response<Body> {
    route(state, &req).unwrap_or_else(Fail::into_response)
}

fn route(state: &State, req: &ApiRequest) -> Result<Response<Body>, Fail> {
    let store = &*state.store;
    let parts: Vec<&str> = req.path.trim_matches('/').split('/').collect();
    let m = &req.method;
    Ok(match (m, &parts[1..]) {
        (&Method::GET, ["groups"]) => ok(&store.groups().map_err(store_error)?),
        (&Method::POST, ["groups"]) => {
            let g: NewGroup = parse_body(&req.body)?;
            valid_name(&g.name)?;
            store
                .create_group(&g.name, &g.channel)
                .map_err(store_error)?;
            json_response(
                StatusCode::CREATED,
                &store.group(&g.name).map_err(store_error)?,
            )
        }
        (&Method::GET, ["groups", name]) => match store.group(name).map_err(store_error)? {
            Some(g) => ok(&g),
            None => return Err(store_error(StoreError::NotFound(format!("group {name}")))),
        },
        (&Method::PATCH, ["groups", name]) => {
            let c: GroupChange = parse_body(&req.body)?;
            let Some(group) = store.group(name).map_err(store_error)? else {
                return Err(store_error(StoreError::NotFound(format!("group {name}"))));
            };
            // Check everything before changing anything.
            let policy = match &c.policy {
                Some(patch) => Some((
                    patched_policy(&group.policy, patch).map_err(Fail::bad)?,
                    describe(patch),
                )),
                None => None,
            };
            if let Some(a) = c.allow_downgrade {
                store.set_allow_downgrade(name, a).map_err(store_error)?;
            }
            if let Some((p, why)) = policy {
                store.set_policy(name, &p, &why).map_err(store_error)?;
            }
            match store.group(name).map_err(store_error)? {
                Some(g) => ok(&g),
                None => return Err(store_error(StoreError::NotFound(format!("group {name}")))),
            }
        }
        (&Method::POST, ["groups", name, action @ ("pause" | "resume")]) => {
            let Some(group) = store.group(name).map_err(store_error)? else {
                return Err(store_error(StoreError::NotFound(format!("group {name}"))));
            };
            let mut p = group.policy.clone();
            p.paused = *action == "pause";
            let why = if p.paused { "paused" } else { "resumed" };
            store.set_policy(name, &p, why).map_err(store_error)?;
            ok(&store.group(name).map_err(store_error)?)
        }
        (&Method::GET, ["groups", name, "rollout"]) => {
            let Some(group) = store.group(name).map_err(store_error)? else {
                return Err(store_error(StoreError::NotFound(format!("group {name}"))));
            };
            let package = store
                .channel_package(keel_omaha::KEEL_APP_ID, &group.channel)
                .map_err(store_error)?;
            let counts = match &package {
                Some(p) => Some(
                    store
                        .rollout(&group, &p.version, crate::clock::now())
                        .map_err(store_error)?,
                ),
                None => None,
            };
            ok(&json!({
                "group": group,
                "version": package.map(|p| p.version),
                "rollout": counts,
            }))
        }
        (&Method::GET, ["channels"]) => {
            let mut out = Vec::new();
            for name in store.channels().map_err(store_error)? {
                let mut packages = Vec::new();
                for app in [keel_omaha::KEEL_APP_ID, keel_omaha::FLATCAR_APP_ID] {
                    if let Some(p) = store.channel_package(app, &name).map_err(store_error)? {
                        packages.push(p);
                    }
                }
                out.push(json!({ "name": name, "packages": packages }));
            }
            ok(&out)
        }
        (&Method::POST, ["channels"]) => {
            let c: NewChannel = parse_body(&req.body)?;
            valid_name(&c.name)?;
            store.create_channel(&c.name).map_err(store_error)?;
            json_response(StatusCode::CREATED, &json!({ "name": c.name }))
        }
        (&Method::POST, ["channels", to, "promote"]) => {
            let p: Promote = parse_body(&req.body)?;
            ok(&store.promote(&p.from, to).map_err(store_error)?)
        }
        (&Method::GET, ["packages"]) => ok(&store.packages().map_err(store_error)?),
        (&Method::GET, ["instances"]) => {
            let f = filter_from_query(req.query.as_deref()).map_err(Fail::bad)?;
            ok(&store.search(&f).map_err(store_error)?)
        }
        (&Method::GET, ["instances", machine]) => {
            let f = InstanceFilter {
                include_hidden: true,
                ..Default::default()
            };
            let mut out = Vec::new();
            for i in store.search(&f).map_err(store_error)? {
                if i.machine_id == *machine {
                    let events = store.events(machine, &i.app_id).map_err(store_error)?;
                    out.push(json!({ "instance": i, "events": events }));
                }
            }
            if out.is_empty() {
                return Err(store_error(StoreError::NotFound(format!(
                    "instance {machine}"
                ))));
            }
            ok(&out)
        }
        (&Method::POST, ["instances", machine, action @ ("hide" | "show")]) => {
            let n = store
                .set_hidden(machine, *action == "hide")
                .map_err(store_error)?;
            if n == 0 {
                return Err(store_error(StoreError::NotFound(format!(
                    "instance {machine}"
                ))));
            }
            ok(&json!({ "machine_id": machine, "hidden": *action == "hide" }))
        }
        (&Method::DELETE, ["instances", machine]) => {
            let n = store.retire(machine).map_err(store_error)?;
            if n == 0 {
                return Err(store_error(StoreError::NotFound(format!(
                    "instance {machine}"
                ))));
            }
            ok(&json!({ "machine_id": machine, "retired": n }))
        }
        (&Method::GET, ["activity"]) => {
            let mut limit = 100;
            for (k, v) in parse_query(req.query.as_deref()).map_err(Fail::bad)? {
                match (k.as_str(), v.parse::<u32>()) {
                    ("limit", Ok(n)) => limit = n,
                    _ => {
                        return Err(Fail::bad(format!(
                            "unknown or bad query parameter {k}={v:?}"
                        )))
                    }
                }
            }
            ok(&store.activity(limit).map_err(store_error)?)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!("no API endpoint {} {}", req.method, req.path),
        ),
    })
}
