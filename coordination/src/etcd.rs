//! The semaphore in etcd v3: one key holding locksmith's JSON, read with its `mod_revision` and
//! written only by a transaction that compares that revision (etcd's compare-and-swap).
//!
//! The client is async (etcd-client over tonic); the reboot manager, `keel lockd` and the CLI
//! are plain blocking code, so the store owns a small current-thread runtime and bounds every
//! call by a timeout. A lost connection is an error naming the endpoints, never a hang.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, TlsOptions, Txn, TxnOp,
};
use thiserror::Error;

use crate::semaphore::{ParseError, Semaphore};
use crate::store::{Revision, SemaphoreStore};

/// locksmith's default endpoints (`lock/etcd.go`).
pub const DEFAULT_ENDPOINTS: [&str; 2] = ["http://127.0.0.1:2379", "http://127.0.0.1:4001"];

/// How to reach etcd: locksmithctl's `-endpoint`, `-etcd-cafile/-certfile/-keyfile`,
/// `-etcd-username/-password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Bound on connecting and on each request.
    pub timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: DEFAULT_ENDPOINTS.iter().map(|s| s.to_string()).collect(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password: None,
            timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdConfig {
    /// Endpoints as locksmith takes them: a comma-separated list (repeated flags joined).
    pub fn with_endpoints(list: &str) -> Self {
        Self {
            endpoints: split_endpoints(list),
            ..Self::default()
        }
    }
}

/// `"a, b,,c"` → `["a","b","c"]`.
pub fn split_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

#[derive(Debug, Error)]
pub enum EtcdError {
    #[error("etcd at {endpoints}: cannot connect: {source}")]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints}: no answer within {secs} s ({what})")]
    Timeout {
        endpoints: String,
        secs: u64,
        what: &'static str,
    },
    #[error("etcd at {endpoints}: {what} {key}: {source}")]
    Request {
        endpoints: String,
        what: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd key {key}: {source}")]
    Value {
        key: String,
        #[source]
        source: ParseError,
    },
    #[error("reading {path}: {source}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd TLS: a client certificate needs both a certificate and a key file")]
    HalfIdentity,
    #[error("no etcd endpoint given")]
    NoEndpoints,
    #[error("starting the etcd client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// One semaphore key in one etcd cluster.
pub struct EtcdStore {
    runtime: tokio::runtime::Runtime,
    client: Client,
    key: String,
    endpoints: String,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("key", &self.key)
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdStore {
    /// Connects (bounded by `config.timeout`) and binds the store to `key`
    /// (see [`crate::semaphore_key`]).
    pub fn connect(config: &EtcdConfig, key: impl Into<String>) -> Result<Self, EtcdError> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let endpoints = config.endpoints.join(",");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(EtcdError::Runtime)?;
        let client = runtime.block_on(connect_client(config))?;
        Ok(Self {
            runtime,
            client,
            key: key.into(),
            endpoints,
            timeout: config.timeout,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Runs one request, bounded by the timeout. The client balances over every endpoint and
    /// does not drop a dead member from its list, so a request that finds its endpoint
    /// `Unavailable` is sent again (to the next one) until the timeout: a member that died
    /// mid-rollout costs a retry, not an error. Retrying is safe for the store's requests: a
    /// get has no effect, and a compare-and-swap that did land makes the retry's compare fail.
    fn call<T, F, Fut>(&self, what: &'static str, mut request: F) -> Result<T, EtcdError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let result = self.runtime.block_on(async {
            loop {
                let attempt = tokio::time::timeout_at(deadline, request()).await;
                match attempt {
                    Ok(Err(e)) if unavailable(&e) && tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => return other,
                }
            }
        });
        result
            .map_err(|_| EtcdError::Timeout {
                endpoints: self.endpoints.clone(),
                secs: self.timeout.as_secs(),
                what,
            })?
            .map_err(|source| EtcdError::Request {
                endpoints: self.endpoints.clone(),
                what,
                key: self.key.clone(),
                source,
            })
    }

    /// Every value the key has had, oldest first, from etcd's MVCC history (as long as it is
    /// not compacted). Tests use it to prove that no revision ever had too many holders.
    pub fn history(&self) -> Result<Vec<(i64, String)>, EtcdError> {
        let latest = self.call("get", || {
            let mut kv = self.client.kv_client();
            async move { kv.get(self.key.as_str(), None).await }
        })?;
        let Some(first) = latest.kvs().first() else {
            return Ok(Vec::new());
        };
        let (created, last) = (first.create_revision(), first.mod_revision());
        let mut out = Vec::new();
        let mut rev = last;
        // Walk back from the newest value: each value's mod_revision is where it was written;
        // the value before it is the one visible at mod_revision - 1.
        while rev >= created {
            let resp = self.call("get (history)", || {
                let mut kv = self.client.kv_client();
                let opts = etcd_client::GetOptions::new().with_revision(rev);
                async move { kv.get(self.key.as_str(), Some(opts)).await }
            })?;
            let Some(v) = resp.kvs().first() else { break };
            out.push((
                v.mod_revision(),
                String::from_utf8_lossy(v.value()).into_owned(),
            ));
            if v.mod_revision() == v.create_revision() {
                break;
            }
            rev = v.mod_revision() - 1;
        }
        out.reverse();
        Ok(out)
    }
}

/// An etcd v3 client for `config` (TLS, credentials), connecting bounded by `config.timeout`:
/// the one way every Keel component reaches etcd, from async code (the fleet agent) or through
/// [`EtcdStore`]'s own runtime.
pub async fn connect_client(config: &EtcdConfig) -> Result<Client, EtcdError> {
    if config.endpoints.is_empty() {
        return Err(EtcdError::NoEndpoints);
    }
    let endpoints = config.endpoints.join(",");
    let options = connect_options(config)?;
    let connecting = Client::connect(config.endpoints.clone(), Some(options));
    tokio::time::timeout(config.timeout, connecting)
        .await
        .map_err(|_| EtcdError::Timeout {
            endpoints: endpoints.clone(),
            secs: config.timeout.as_secs(),
            what: "connect",
        })?
        .map_err(|source| EtcdError::Connect { endpoints, source })
}

/// Whether a request failed because the member it reached is down (worth re-sending).
pub fn unavailable(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable)
}

fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions, EtcdError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(config.timeout)
        .with_timeout(config.timeout);
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        options = options.with_user(user.clone(), password.clone());
    }
    let tls_wanted = config.ca_file.is_some() || config.cert_file.is_some();
    if tls_wanted {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &config.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => return Err(EtcdError::HalfIdentity),
        }
        options = options.with_tls(tls);
    }
    Ok(options)
}

fn read(path: &PathBuf) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::TlsFile {
        path: path.clone(),
        source,
    })
}

impl SemaphoreStore for EtcdStore {
    type Error = EtcdError;

    fn get(&self) -> Result<(Semaphore, Revision), EtcdError> {
        let resp = self.call("get", || {
            let mut kv = self.client.kv_client();
            async move { kv.get(self.key.as_str(), None).await }
        })?;
        match resp.kvs().first() {
            None => Ok((Semaphore::initial(), Revision(0))),
            Some(v) => {
                let sem = Semaphore::from_json(v.value()).map_err(|source| EtcdError::Value {
                    key: self.key.clone(),
                    source,
                })?;
                Ok((sem, Revision(v.mod_revision())))
            }
        }
    }

    fn compare_and_swap(&self, expected: Revision, new: &Semaphore) -> Result<bool, EtcdError> {
        // mod_revision 0 is what etcd compares an absent key as, so one Txn covers create
        // (locksmith's `Init`) and update (`Set` with `PrevIndex`).
        let txn = Txn::new()
            .when([Compare::mod_revision(
                self.key.as_str(),
                CompareOp::Equal,
                expected.0,
            )])
            .and_then([TxnOp::put(self.key.as_str(), new.to_json(), None)]);
        let resp = self.call("compare-and-swap", || {
            let mut kv = self.client.kv_client();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })?;
        Ok(resp.succeeded())
    }
}
