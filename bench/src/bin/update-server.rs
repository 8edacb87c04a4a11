//! Update checks per second against keel-update-server on loopback, with instance tracking on
//! (every check upserts its machine), on SQLite and on PostgreSQL, beside the same HTTP stack
//! answering an empty handler: N concurrent keep-alive clients, a bounded number of requests
//! and a time cap; throughput, p50/p99 latency and the ratio to the empty handler.
//!
//! cargo run --release -p keel-bench --bin update-server -- [--clients 32] [--requests 20000]
//!     [--seconds 20] [--fleet 10000] [--no-postgres]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use http_body_util::BodyExt;
use keel_bench::machine;
use keel_omaha::{client_outcome_from_body, Outcome, KEEL_APP_ID};
use keel_update_server::config::Config;
use keel_update_server::server::{self, RunningServer};
use keel_update_server::store::batched::Batched;
use keel_update_server::store::{Package, Store};

// As `keel-update-server` runs; the empty handler shares it.
#[global_allocator]
static ALLOCATOR: keel_update_server::Allocator = keel_update_server::Allocator;

#[derive(Parser)]
struct Args {
    /// Concurrent clients (threads, one keep-alive connection each).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Requests per run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Stop a run after this many seconds even if not all requests were sent.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Distinct machine ids the requests cycle through (the instance table's size).
    #[arg(long, default_value_t = 10_000)]
    fleet: usize,
    /// Skip the PostgreSQL run.
    #[arg(long)]
    no_postgres: bool,
}

fn request(machine: usize) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">
<os version="Chateau" platform="CoreOS" sp="1.0.0_x86_64"></os>
<app appid="{{{KEEL_APP_ID}}}" version="1.0.0" track="stable" bootid="{{77feca82-1f05-46ac-abd3-3bdb2d8ce497}}" machineid="bench{machine:08x}" machinealias="" lang="en-US" board="amd64-usr" hardware_class="" delta_okay="false">
<ping active="1"></ping><updatecheck></updatecheck>
</app>
</request>"#
    )
}

struct Run {
    done: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }

    fn line(&self, name: &str) -> String {
        format!(
            "{name:<16} {:>6} checks in {:>6.2} s = {:>8.0}/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            self.done,
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.99)
        )
    }
}

fn load(url: &str, args: &Args) -> Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut threads = Vec::new();
    for _ in 0..args.clients {
        let (next, url) = (next.clone(), url.to_owned());
        let (total, fleet) = (args.requests, args.fleet);
        threads.push(std::thread::spawn(move || -> Result<Vec<u64>> {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut lat = Vec::with_capacity(total / 8 + 1);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total || Instant::now() > deadline {
                    return Ok(lat);
                }
                let body = request(n % fleet);
                let t = Instant::now();
                let mut r = agent.post(&url).send(&body)?;
                let text = r.body_mut().read_to_string()?;
                lat.push(t.elapsed().as_micros() as u64);
                ensure!(r.status() == 200, "HTTP {}: {text}", r.status());
            }
        }));
    }
    let mut latencies_us = Vec::new();
    for t in threads {
        latencies_us.extend(t.join().expect("client thread")?);
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    ensure!(!latencies_us.is_empty(), "no request completed");
    Ok(Run {
        done: latencies_us.len(),
        elapsed,
        latencies_us,
    })
}

/// A server on `store` whose stable channel offers 1.0.0: every check is a noupdate that
/// records its machine.
fn keel_server(dir: &std::path::Path, store: Arc<dyn Store>) -> Result<RunningServer> {
    std::fs::create_dir_all(dir.join("keys"))?;
    let file = dir.join("server.yaml");
    std::fs::write(
        &file,
        "listen: 127.0.0.1:0\ndatabase: db.sqlite\npayloads: payloads\ntrusted_keys: keys\n",
    )?;
    let config = Config::load(&file)?;
    store.publish(
        &Package {
            id: 0,
            app_id: KEEL_APP_ID.into(),
            version: "1.0.0".into(),
            file_name: "usr.img".into(),
            size: 1 << 30,
            sha1_base64: "AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            sha256_base64: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            sha256_hex: "00".repeat(32),
            key_id: "0000000000000000".into(),
            external_url: None,
            created_at: 0,
        },
        "stable",
    )?;
    Ok(server::start_with(&config, store)?)
}

fn check_answer(url: &str) -> Result<bytes::Bytes> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.post(url).send(request(0))?;
    let body = r.body_mut().read_to_vec()?;
    match client_outcome_from_body(&body, KEEL_APP_ID) {
        Outcome::NoUpdate { .. } => Ok(body.into()),
        other => bail!("the server answered {other:?}"),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("machine: {}", machine::describe());
    println!(
        "update checks: {} clients, {} requests (cap {} s), fleet of {} machines, loopback",
        args.clients, args.requests, args.seconds, args.fleet
    );
    let dir = tempfile::tempdir()?;

    // SQLite first: its answer is also the empty handler's fixed body, so both send the same
    // bytes.
    let sqlite_dir = dir.path().join("sqlite");
    std::fs::create_dir_all(&sqlite_dir)?;
    let backend: Arc<dyn Store> = Arc::new(keel_update_server::store::sqlite::SqliteStore::open(
        &sqlite_dir.join("db.sqlite"),
        server::DB_BUSY_TIMEOUT,
    )?);
    // What `keel serve` runs on: the database behind the batching layer.
    let store: Arc<dyn Store> = Arc::new(Batched::new(backend.clone()));
    let keel = keel_server(&sqlite_dir, store.clone())?;
    let url = format!("http://{}/v1/update/", keel.addr);
    let answer = check_answer(&url)?;

    let empty = server::start_handler("127.0.0.1:0".parse()?, move |req| {
        let answer = answer.clone();
        async move {
            // Read the request as the real handler does, then answer the same bytes.
            let _ = req.into_body().collect().await;
            hyper::Response::new(keel_update_server::http::body::full(answer))
        }
    })?;
    let empty_url = format!("http://{}/v1/update/", empty.addr);
    // Warm both (connections, page cache, the instance table).
    load(
        &empty_url,
        &Args {
            requests: 2000,
            ..clone_args(&args)
        },
    )?;
    load(
        &url,
        &Args {
            requests: 2000,
            ..clone_args(&args)
        },
    )?;

    let base = load(&empty_url, &args)?;
    println!("{}", base.line("empty handler"));
    println!("  load: {}", machine::load());
    let sqlite = load(&url, &args)?;
    println!(
        "{}   ratio {:.2}",
        sqlite.line("sqlite"),
        sqlite.rate() / base.rate()
    );
    println!("  load: {}", machine::load());
    let tracked = store.instances()?.len();
    ensure!(
        tracked == args.fleet.min(args.requests),
        "{tracked} instances tracked"
    );
    keel.stop();
    // The same database without the layer: each check-in its own transaction, every lookup
    // a query.
    let keel = keel_server(&sqlite_dir, backend)?;
    let url = format!("http://{}/v1/update/", keel.addr);
    let run = load(&url, &args)?;
    println!(
        "{}   ratio {:.2}",
        run.line("sqlite unbatched"),
        run.rate() / base.rate()
    );
    keel.stop();

    if !args.no_postgres {
        let pg = keel_testkit::postgres::PgCluster::start();
        let pg_store: Arc<dyn Store> = Arc::new(Batched::new(Arc::new(
            keel_update_server::store::postgres::PostgresStore::connect(&pg.params())
                .context("connecting to the throwaway PostgreSQL")?,
        )));
        let pg_dir = dir.path().join("pg");
        let keel = keel_server(&pg_dir, pg_store.clone())?;
        let url = format!("http://{}/v1/update/", keel.addr);
        check_answer(&url)?;
        load(
            &url,
            &Args {
                requests: 2000,
                ..clone_args(&args)
            },
        )?;
        let run = load(&url, &args)?;
        println!(
            "{}   ratio {:.2}",
            run.line("postgresql"),
            run.rate() / base.rate()
        );
        println!("  load: {}", machine::load());
        keel.stop();
    }
    println!(
        "fleet served at one check per 45 min (2700 s) at the SQLite rate: {:.0} machines",
        sqlite.rate() * 2700.0
    );
    empty.stop();
    Ok(())
}

fn clone_args(a: &Args) -> Args {
    Args {
        clients: a.clients,
        requests: a.requests,
        seconds: a.seconds,
        fleet: a.fleet,
        no_postgres: a.no_postgres,
    }
}
