//! `keel lockd`: a FleetLock server (airlock's role) over locksmith's etcd semaphore, so a
//! cluster without Kubernetes has one, and `fleetlock` machines and `etcd-lock` machines in
//! the default group count against one `max`. The answers are `keel_coordination::fleetlock`'s
//! (`validate`, then `decide` on the group's semaphore, written by compare-and-swap).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use keel_coordination::fleetlock::{self, HttpRequest, Reply, PROTOCOL_HEADER};
use keel_coordination::store::{Revision, SemaphoreStore};
use keel_coordination::{EtcdConfig, EtcdStore};

/// A FleetLock request body is two short strings.
const MAX_BODY: usize = 16 * 1024;
/// Read, decide, compare-and-swap: how many lost races before answering 500.
const ATTEMPTS: u32 = 16;

#[derive(Debug, Args)]
pub struct LockdArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:3333")]
    pub listen: SocketAddr,
    /// etcd endpoints, comma-separated
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub endpoint: String,
    /// Accept only these groups (repeatable); without it every valid group is accepted
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// A hold older than this many seconds is freed by the next pre-reboot (a gone machine)
    #[arg(long)]
    pub lock_ttl_secs: Option<u64>,
    #[arg(long)]
    pub etcd_cafile: Option<std::path::PathBuf>,
    #[arg(long)]
    pub etcd_certfile: Option<std::path::PathBuf>,
    #[arg(long)]
    pub etcd_keyfile: Option<std::path::PathBuf>,
}

struct Shared {
    etcd: EtcdConfig,
    groups: Vec<String>,
    ttl: Option<u64>,
    /// One store per semaphore key, each used by one request at a time.
    stores: Mutex<HashMap<String, Arc<Mutex<EtcdStore>>>>,
}

pub fn run(args: LockdArgs) -> Result<()> {
    let mut etcd = EtcdConfig::with_endpoints(&args.endpoint);
    etcd.ca_file = args.etcd_cafile;
    etcd.cert_file = args.etcd_certfile;
    etcd.key_file = args.etcd_keyfile;
    let shared = Arc::new(Shared {
        etcd,
        groups: args.groups,
        ttl: args.lock_ttl_secs,
        stores: Mutex::new(HashMap::new()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "keel lockd: FleetLock on http://{} over etcd {}",
            listener.local_addr()?,
            shared.etcd.endpoints.join(",")
        );
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("keel lockd: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(shared.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    })
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let header = req
        .headers()
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(reply(&Reply::error(
                413,
                "decode_error",
                format!("request body over {MAX_BODY} bytes"),
            )))
        }
    };
    let answer = tokio::task::spawn_blocking(move || {
        let http = HttpRequest {
            method: &method,
            path: &path,
            protocol_header: header.as_deref(),
            body: &body,
        };
        let groups: Vec<&str> = shared.groups.iter().map(String::as_str).collect();
        let known = (!groups.is_empty()).then_some(groups.as_slice());
        match fleetlock::validate(&http, known) {
            Err(r) => r,
            Ok((endpoint, params)) => shared.decide(endpoint, &params),
        }
    })
    .await
    .unwrap_or_else(|e| fleetlock::backend_error(&format!("request handler failed: {e}")));
    Ok(reply(&answer))
}

impl Shared {
    fn store(&self, key: &str) -> Result<Arc<Mutex<EtcdStore>>, String> {
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| "store map poisoned".to_string())?;
        if let Some(s) = stores.get(key) {
            return Ok(s.clone());
        }
        let store = EtcdStore::connect(&self.etcd, key).map_err(|e| e.to_string())?;
        let store = Arc::new(Mutex::new(store));
        stores.insert(key.to_string(), store.clone());
        Ok(store)
    }

    fn decide(&self, endpoint: fleetlock::Endpoint, params: &fleetlock::ClientParams) -> Reply {
        let key = fleetlock::group_key(&params.group);
        let store = match self.store(&key) {
            Ok(s) => s,
            Err(e) => return fleetlock::backend_error(&e),
        };
        let Ok(store) = store.lock() else {
            return fleetlock::backend_error("store poisoned");
        };
        for _ in 0..ATTEMPTS {
            let (state, rev): (_, Revision) = match store.get() {
                Ok(v) => v,
                Err(e) => return fleetlock::backend_error(&e.to_string()),
            };
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let (answer, write) = fleetlock::decide(endpoint, params, &state, now, self.ttl);
            let Some(new) = write else {
                return answer;
            };
            match store.compare_and_swap(rev, &new) {
                Ok(true) => return answer,
                Ok(false) => continue,
                Err(e) => return fleetlock::backend_error(&e.to_string()),
            }
        }
        fleetlock::backend_error(&format!("{key} changed under us {ATTEMPTS} times in a row"))
    }
}

fn reply(r: &Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body())));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if r.error.is_some() {
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    resp
}
