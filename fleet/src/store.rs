//! The etcd calls fleet makes, each bounded by a timeout and failing with an error that names
//! the endpoints and the key. Counts requests and bytes sent, for the benchmark's
//! "requests and bytes per placement".

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
    WatchStream,
};
use keel_coordination::{EtcdConfig, EtcdError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use crate::model::Keys;
use crate::unit::UnitError;

/// Between attempts at a request that met a member that is down.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

#[derive(Debug, Error)]
pub enum FleetError {
    #[error(transparent)]
    Connect(#[from] EtcdError),
    #[error("etcd at {endpoints}: {what} {key}: {source}")]
    Request {
        endpoints: String,
        what: &'static str,
        key: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints}: no answer within {secs} s ({what} {key})")]
    Timeout {
        endpoints: String,
        secs: u64,
        what: &'static str,
        key: String,
    },
    #[error("etcd key {key}: not a valid {what}: {source}")]
    Decode {
        key: String,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Unit(#[from] UnitError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("no longer the scheduling leader (another machine was elected)")]
    NotLeader,
    #[error("{0}")]
    Lost(String),
}

pub type Result<T, E = FleetError> = std::result::Result<T, E>;

/// Requests and bytes sent, shared by every clone of a store.
#[derive(Debug, Default)]
pub struct Traffic {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    /// Of `requests`: lease keep-alives (periodic, whatever the scheduling does).
    pub keepalives: AtomicU64,
}

/// One etcd cluster and one key layout.
#[derive(Clone)]
pub struct Store {
    client: Client,
    config: EtcdConfig,
    pub keys: Keys,
    endpoints: String,
    timeout: Duration,
    pub traffic: Arc<Traffic>,
}

impl Store {
    pub async fn connect(config: &EtcdConfig, prefix: &str) -> Result<Self> {
        let client = keel_coordination::connect_client(config).await?;
        Ok(Self::with_client(client, config, prefix))
    }

    pub fn with_client(client: Client, config: &EtcdConfig, prefix: &str) -> Self {
        Self {
            client,
            config: config.clone(),
            keys: Keys::new(prefix),
            endpoints: config.endpoints.join(","),
            timeout: config.timeout,
            traffic: Arc::default(),
        }
    }

    /// A new client on the same connection settings is not needed for watches: the client is
    /// a handle over shared channels, cloned per call.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client whose requests may wait as long as they must (a campaign returns only once
    /// this candidate is elected); connecting is still bounded.
    pub async fn patient_client(&self) -> Result<Client> {
        let mut config = self.config.clone();
        config.timeout = Duration::from_secs(30 * 24 * 3600);
        match tokio::time::timeout(self.timeout, keel_coordination::connect_client(&config)).await {
            Ok(c) => Ok(c?),
            Err(_) => Err(FleetError::Timeout {
                endpoints: self.endpoints.clone(),
                secs: self.timeout.as_secs(),
                what: "connect",
                key: String::new(),
            }),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn count(&self, bytes: usize) {
        self.traffic.requests.fetch_add(1, Ordering::Relaxed);
        self.traffic
            .bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Runs `request` (a fresh attempt each call) within the timeout. A member that is down
    /// answers `Unavailable` while the client still balances onto it: such a request is sent
    /// again, to another member, until the timeout.
    async fn call<T, F, Fut>(&self, what: &'static str, key: &str, mut request: F) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match tokio::time::timeout_at(deadline, request(self.client())).await {
                Err(_) => {
                    return Err(FleetError::Timeout {
                        endpoints: self.endpoints.clone(),
                        secs: self.timeout.as_secs(),
                        what,
                        key: key.to_string(),
                    })
                }
                Ok(Err(e))
                    if keel_coordination::etcd::unavailable(&e)
                        && tokio::time::Instant::now() + RETRY_PAUSE < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Ok(Err(source)) => {
                    return Err(FleetError::Request {
                        endpoints: self.endpoints.clone(),
                        what,
                        key: key.to_string(),
                        source,
                    })
                }
                Ok(Ok(v)) => return Ok(v),
            }
        }
    }

    /// Every key under `dir` decoded as `T`, and the revision the read saw (or read at `rev`).
    /// Reads are serializable (answered by the member asked, without a raft round): a reader
    /// that then watches from the revision it saw misses nothing, and listings may lag by the
    /// member's replication delay, which is what fleetctl's listings showed too.
    pub async fn list<T: DeserializeOwned>(
        &self,
        dir: &str,
        what: &'static str,
        rev: Option<i64>,
    ) -> Result<(Vec<(String, T)>, i64)> {
        self.count(dir.len());
        let mut options = GetOptions::new().with_prefix().with_serializable();
        if let Some(r) = rev {
            options = options.with_revision(r);
        }
        let resp = self
            .call("get", dir, |mut c| {
                let o = options.clone();
                async move { c.get(dir, Some(o)).await }
            })
            .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut out = Vec::with_capacity(resp.kvs().len());
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let value = decode(&key, what, kv.value())?;
            out.push((key, value));
        }
        Ok((out, revision))
    }

    /// One key, read linearizably (a read-modify-write such as a target-state change must see
    /// the latest value).
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
        what: &'static str,
    ) -> Result<Option<T>> {
        self.count(key.len());
        let resp = self
            .call("get", key, |mut c| async move { c.get(key, None).await })
            .await?;
        resp.kvs()
            .first()
            .map(|kv| decode(key, what, kv.value()))
            .transpose()
    }

    pub async fn put<T: Serialize>(&self, key: &str, value: &T, lease: Option<i64>) -> Result<()> {
        let bytes = encode(value);
        self.count(key.len() + bytes.len());
        let options = lease.map(|l| PutOptions::new().with_lease(l));
        self.call("put", key, |mut c| {
            let (b, o) = (bytes.clone(), options.clone());
            async move { c.put(key, b, o).await }
        })
        .await?;
        Ok(())
    }

    /// Creates `key` only if it does not exist; `false` when it did.
    pub async fn create<T: Serialize>(&self, key: &str, value: &T) -> Result<bool> {
        let bytes = encode(value);
        self.count(key.len() + bytes.len());
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, bytes, None)]);
        let done = self
            .call("create", key, |mut c| {
                let t = txn.clone();
                async move { c.txn(t).await }
            })
            .await?;
        Ok(done.succeeded())
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        self.count(key.len());
        let done = self
            .call(
                "delete",
                key,
                |mut c| async move { c.delete(key, None).await },
            )
            .await?;
        Ok(done.deleted() > 0)
    }

    pub async fn delete_prefix(&self, dir: &str) -> Result<i64> {
        self.count(dir.len());
        let done = self
            .call("delete", dir, |mut c| async move {
                c.delete(dir, Some(DeleteOptions::new().with_prefix()))
                    .await
            })
            .await?;
        Ok(done.deleted())
    }

    /// Writes `ops` in transactions of at most [`MAX_TXN_OPS`], each only while `guard` holds
    /// (the leader's election key still has its creation revision). `NotLeader` when it does not.
    pub async fn write_guarded(&self, guard: &(String, i64), ops: Vec<Op>) -> Result<()> {
        let mut ops = ops;
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(MAX_TXN_OPS));
            let chunk = std::mem::replace(&mut ops, rest);
            let mut bytes = 0;
            let txn_ops: Vec<TxnOp> = chunk
                .into_iter()
                .map(|op| match op {
                    Op::Put(k, v) => {
                        bytes += k.len() + v.len();
                        TxnOp::put(k, v, None)
                    }
                    Op::Delete(k) => {
                        bytes += k.len();
                        TxnOp::delete(k, None)
                    }
                })
                .collect();
            self.count(bytes);
            let txn = Txn::new()
                .when([Compare::create_revision(
                    guard.0.clone(),
                    CompareOp::Equal,
                    guard.1,
                )])
                .and_then(txn_ops);
            let done = self
                .call("txn", &guard.0, |mut c| {
                    let t = txn.clone();
                    async move { c.txn(t).await }
                })
                .await?;
            if !done.succeeded() {
                return Err(FleetError::NotLeader);
            }
        }
        Ok(())
    }

    /// A watch on every key under `dir`, from revision `from`.
    pub async fn watch(&self, dir: &str, from: i64) -> Result<WatchStream> {
        self.count(dir.len());
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        self.call("watch", dir, |mut c| {
            let o = options.clone();
            async move { c.watch(dir, Some(o)).await }
        })
        .await
    }

    pub async fn grant(&self, ttl: Duration) -> Result<i64> {
        self.count(16);
        let secs = ttl.as_secs().max(1) as i64;
        let granted = self
            .call("lease grant", "", |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?;
        Ok(granted.id())
    }

    pub async fn revoke(&self, lease: i64) -> Result<()> {
        self.count(8);
        self.call("lease revoke", "", |mut c| async move {
            c.lease_revoke(lease).await
        })
        .await?;
        Ok(())
    }

    /// Keeps `lease` alive, refreshing every third of `ttl`; returns (why) once it cannot.
    pub async fn keep_alive(&self, lease: i64, ttl: Duration) -> String {
        let (mut keeper, mut responses) = match self
            .call("lease keep-alive", "", |mut c| async move {
                c.lease_keep_alive(lease).await
            })
            .await
        {
            Ok(k) => k,
            Err(e) => return e.to_string(),
        };
        let period = (ttl / 3).max(Duration::from_millis(300));
        loop {
            self.count(8);
            self.traffic.keepalives.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = keeper.keep_alive().await {
                return format!("lease keep-alive: {e}");
            }
            // A slow answer is not a lost lease: only silence for the whole TTL is.
            match tokio::time::timeout(ttl, responses.message()).await {
                Err(_) => return format!("lease keep-alive: no answer within the lease's {ttl:?}"),
                Ok(Err(e)) => return format!("lease keep-alive: {e}"),
                Ok(Ok(None)) => return "lease keep-alive: stream closed".into(),
                Ok(Ok(Some(r))) if r.ttl() <= 0 => return "lease expired".into(),
                Ok(Ok(Some(_))) => {}
            }
            tokio::time::sleep(period).await;
        }
    }
}

/// One write of a guarded transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain data serialises")
}

pub fn decode<T: DeserializeOwned>(key: &str, what: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| FleetError::Decode {
        key: key.to_string(),
        what,
        source,
    })
}
