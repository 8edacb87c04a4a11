//! Which handler answers which request, and the handlers of the machine-facing endpoints:
//! Omaha at `/v1/update/` and payload downloads at `/v1/packages/SHA256/NAME`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use keel_omaha::MAX_REQUEST_BYTES;

use super::body::{self, text, Body};
use super::range::{parse_range, RangeAnswer};
use super::State;
use crate::clock::now;
use crate::metrics::Metrics;
use crate::protocol::{answer, Context, Refusal};
use crate::publish::stored_path;

fn unavailable(reason: impl Into<String>) -> Response<Body> {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, reason);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    r
}

pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::POST, "/v1/update" | "/v1/update/") => omaha(state, req).await,
        (_, "/v1/update" | "/v1/update/") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "Omaha requests are POSTed")
        }
        (Method::GET | Method::HEAD, p) if p.starts_with("/v1/packages/") => {
            package_file(state, req).await
        }
        (Method::GET, "/health") => text(StatusCode::OK, "ok"),
        (Method::GET, "/metrics") => metrics(state).await,
        (Method::GET, "/") => {
            let mut r = text(StatusCode::FOUND, "see /dashboard");
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
            r
        }
        (Method::GET, "/dashboard") => dashboard(state, req).await,
        (_, p) if p == "/api" || p.starts_with("/api/") => api(state, req).await,
        _ => text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    }
}

/// The dashboard takes the API token as `Authorization: Bearer` or, for a browser, `?token=`.
async fn dashboard(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let pairs = match super::query::parse_query(req.uri().query()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let mut filter = crate::store::InstanceFilter {
        limit: Some(200),
        ..Default::default()
    };
    let mut token = None;
    for (k, v) in pairs {
        let v = Some(v).filter(|v| !v.is_empty());
        match k.as_str() {
            "token" => token = v,
            "q" => filter.q = v,
            "group" => filter.group = v,
            "status" => filter.status = v,
            _ => {}
        }
    }
    let authorization = match &token {
        Some(t) => Some(format!("Bearer {t}")),
        None => req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    if let Some(refusal) = super::api::check_token(&state, authorization.as_deref()) {
        return refusal;
    }
    let page = tokio::task::spawn_blocking(move || {
        super::dashboard::render(&*state.store, &filter, token.as_deref(), now())
    })
    .await;
    match page {
        Ok(Ok(html)) => {
            let mut r = Response::new(body::full(html));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Ok(Err(e)) => unavailable(e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(state: Arc<State>) -> Response<Body> {
    let rendered = tokio::task::spawn_blocking(move || {
        crate::metrics::render(&state.metrics, &*state.store, now())
    })
    .await;
    match rendered {
        Ok(Ok(text_body)) => {
            let mut r = Response::new(body::full(text_body));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Ok(Err(e)) => unavailable(e.to_string()),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn api(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(refusal) = super::api::check_token(&state, authorization.as_deref()) {
        return refusal;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("request body: {e}")),
    };
    let request = super::api::ApiRequest {
        method,
        path,
        query,
        body,
    };
    tokio::task::spawn_blocking(move || super::api::handle(&state, request))
        .await
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn omaha(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let too_large = || {
        text(
            StatusCode::BAD_REQUEST,
            format!("request body over the {MAX_REQUEST_BYTES}-byte limit"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return too_large();
    }
    let body: Bytes = match Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    if let Some(answered) = answer_from_memory(&state, &body) {
        return omaha_response(Ok(answered));
    }
    let worker = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let cx = Context {
            store: &*worker.store,
            settings: &worker.settings,
            metrics: &worker.metrics,
        };
        answer(&cx, &body, now())
    })
    .await
    .map_err(|e| e.to_string());
    omaha_response(result)
}

/// The answer to a plain check, computed on the async worker from what the store holds in
/// memory; `None` when it needs the database (then it is computed off the workers).
fn answer_from_memory(state: &State, body: &[u8]) -> Option<Result<String, Refusal>> {
    let view = state.store.in_memory()?;
    let metrics = Metrics::default();
    let cx = Context {
        store: &view,
        settings: &state.settings,
        metrics: &metrics,
    };
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(&cx, body, now()))).ok()?;
    if matches!(result, Err(Refusal::WouldBlock)) || !view.commit() {
        return None;
    }
    state.metrics.merge(&metrics);
    Some(result)
}

fn omaha_response(result: Result<Result<String, Refusal>, String>) -> Response<Body> {
    match result {
        Ok(Ok(xml)) => {
            let mut r = Response::new(body::full(xml));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/xml; charset=utf-8"),
            );
            r
        }
        Ok(Err(Refusal::BadRequest(reason))) => text(StatusCode::BAD_REQUEST, reason),
        Ok(Err(Refusal::Unavailable(reason))) => unavailable(reason),
        // Only an in-memory view says WouldBlock, and its answers never get here.
        Ok(Err(Refusal::WouldBlock)) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request handler failed: the store would block".to_string(),
        ),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request handler failed: {e}"),
        ),
    }
}

/// `GET /v1/packages/SHA256/NAME`, with single byte ranges so a download resumes.
async fn package_file(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let rest = &req.uri().path()["/v1/packages/".len()..];
    let Some((sha, name)) = rest.split_once('/') else {
        return text(StatusCode::NOT_FOUND, "no such package");
    };
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return text(StatusCode::NOT_FOUND, "no such package");
    }
    let (sha, name) = (sha.to_ascii_lowercase(), name.to_owned());
    let store = state.store.clone();
    let found = tokio::task::spawn_blocking(move || store.package_by_sha256(&sha)).await;
    let package = match found {
        Ok(Ok(Some(p))) if p.file_name == name && p.external_url.is_none() => p,
        Ok(Ok(_)) => return text(StatusCode::NOT_FOUND, "no such package"),
        Ok(Err(e)) => return unavailable(e.to_string()),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let path = stored_path(&state.payloads, &package.sha256_hex);
    let len = match std::fs::metadata(&path) {
        Ok(m) if m.len() == package.size => m.len(),
        Ok(m) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "stored payload is {} bytes, {} were published",
                    m.len(),
                    package.size
                ),
            )
        }
        Err(e) => return unavailable(format!("stored payload unreadable: {e}")),
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (status, start, count) = match parse_range(range, len) {
        RangeAnswer::Whole => (StatusCode::OK, 0, len),
        RangeAnswer::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        RangeAnswer::Unsatisfiable => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range outside the file");
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            return r;
        }
    };
    let head = req.method() == Method::HEAD;
    let mut r = Response::new(if head {
        body::full(Bytes::new())
    } else {
        body::file(path, start, count)
    });
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", package.sha256_hex)).expect("hex"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {start}-{}/{len}", start + count - 1))
                .expect("ascii"),
        );
    }
    r
}
