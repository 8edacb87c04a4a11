//! Starting the server from its configuration: open the store, load TLS, bind, and run the
//! HTTP loop on its own tokio runtime thread until stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::http::{self, State, TlsError};
use crate::protocol::Settings;
use crate::store::batched::Batched;
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// How long a database statement waits for a lock before the request gets a 503.
pub const DB_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the database {what}: {error}")]
    Store { what: String, error: StoreError },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("listening on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

/// A server running on a background thread. Dropping it stops it.
pub struct RunningServer {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// Stop accepting, and wait for the loop to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Run until SIGINT or SIGTERM.
    pub fn wait_for_signal(self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        self.stop();
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Retention: drop what is older than `keep` seconds now and every hour after.
async fn prune_every_hour(store: Arc<dyn Store>, keep: i64, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let store = store.clone();
        let before = crate::clock::now() - keep;
        match tokio::task::spawn_blocking(move || store.prune(before)).await {
            Ok(Ok((0, 0))) => {}
            Ok(Ok((i, e))) => {
                eprintln!("keel-update-server: retention removed {i} instances, {e} events")
            }
            Ok(Err(e)) => eprintln!("keel-update-server: retention: {e}"),
            Err(e) => eprintln!("keel-update-server: retention: {e}"),
        }
    }
}

/// Open the configured store: PostgreSQL when `postgres` is set, else the SQLite file, behind
/// [`Batched`] (check-ins written in batches, groups and channel packages cached).
pub fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    open_backend(config).map(|backend| Arc::new(Batched::new(backend)) as Arc<dyn Store>)
}

/// The configured database itself, without [`Batched`].
pub fn open_backend(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    match (&config.postgres, &config.database) {
        (Some(params), _) => PostgresStore::connect(params)
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|error| StartError::Store {
                what: "(PostgreSQL)".into(),
                error,
            }),
        (None, Some(path)) => SqliteStore::open(path, DB_BUSY_TIMEOUT)
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|error| StartError::Store {
                what: path.display().to_string(),
                error,
            }),
        (None, None) => Err(StartError::Store {
            what: "(none configured)".into(),
            error: StoreError::NotFound("a database or postgres setting".into()),
        }),
    }
}

/// Start serving `config` with `store`.
pub fn start_with(config: &Config, store: Arc<dyn Store>) -> Result<RunningServer, StartError> {
    let tls = match &config.tls {
        Some(t) => Some(http::tls_acceptor(&t.cert, &t.key)?),
        None => None,
    };
    let (listener, addr) = bind(config.listen)?;
    let mut settings = Settings {
        public_url: config.public_url(),
        poll_interval: config.poll_interval,
    };
    if config.public_url.is_none() {
        // Port 0 in the configuration: the URL names the port actually bound.
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        settings.public_url = format!("{scheme}://{addr}");
    }
    let state = Arc::new(State {
        store,
        metrics: Default::default(),
        settings,
        payloads: config.payloads.clone(),
        api_token: config.api_token.clone(),
    });
    let retention = config
        .retention_days
        .map(|d| (state.store.clone(), i64::from(d) * 86_400));
    spawn(listener, addr, move |listener, stopped| async move {
        if let Some((store, keep)) = retention {
            tokio::spawn(prune_every_hour(store, keep, stopped.clone()));
        }
        let store = state.store.clone();
        http::serve(listener, tls, state, stopped).await;
        // What the store still holds (queued check-ins) is written before the server is gone.
        match tokio::task::spawn_blocking(move || store.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("keel-update-server: writing the last check-ins: {e}"),
            Err(e) => eprintln!("keel-update-server: writing the last check-ins: {e}"),
        }
    })
}

/// Bind `listen` and serve it with `handler` on the same HTTP stack (for the benchmark's empty
/// handler).
pub fn start_handler<H, F>(listen: SocketAddr, handler: H) -> Result<RunningServer, StartError>
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = hyper::Response<http::body::Body>> + Send + 'static,
{
    let (listener, addr) = bind(listen)?;
    spawn(listener, addr, move |listener, stopped| async move {
        http::serve_with(listener, None, stopped, handler).await
    })
}

fn bind(listen: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), StartError> {
    let bind_err = |addr, error| StartError::Bind { addr, error };
    let listener = std::net::TcpListener::bind(listen).map_err(|e| bind_err(listen, e))?;
    let addr = listener.local_addr().map_err(|e| bind_err(listen, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| bind_err(addr, e))?;
    Ok((listener, addr))
}

/// Run `serve` on a new 2-worker runtime on its own thread.
fn spawn<S, F>(
    listener: std::net::TcpListener,
    addr: SocketAddr,
    serve: S,
) -> Result<RunningServer, StartError>
where
    S: FnOnce(tokio::net::TcpListener, watch::Receiver<bool>) -> F + Send + 'static,
    F: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let (stop, stopped) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("keel-update-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("a non-blocking listener registers with the runtime");
                serve(listener, stopped).await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .map_err(StartError::Runtime)?;
    Ok(RunningServer {
        addr,
        stop,
        thread: Some(thread),
    })
}

/// Open the store and start serving `config`.
pub fn start(config: &Config) -> Result<RunningServer, StartError> {
    let store = open_store(config)?;
    start_with(config, store)
}
