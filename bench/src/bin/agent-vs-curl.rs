//! agent-vs-curl: `keel-update check` (the agent's whole path: the Omaha check, the download
//! streamed into the passive slot with the signature, the server's SHA-256, the body hash and
//! the verity read-back all checked, the GPT staged, the events sent) against
//! `curl URL | dd of=<passive slot> oflag=direct` of the same payload from the same
//! keel-update-server on 127.0.0.1, into identical fresh disk images on the same filesystem.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use keel_bench::measure::{median, secs};
use keel_bench::slot_image::{check_slot, fresh_disk, make_payload, Payload};
use keel_bench::{command, machine};
use keel_update::agent::check::{check, CheckContext, CheckResult};
use keel_update::agent::config::AgentConfig;
use keel_update::download::ResumePolicy;
use keel_update::progress::Silent;
use keel_update::Target;
use keel_update_server::config::Config;
use keel_update_server::server::{self, RunningServer};
use keel_update_server::store::Store;

const MIB: f64 = (1 << 20) as f64;

#[derive(Parser)]
#[command(about = "keel-update check (download, verify, stage) against curl | dd oflag=direct")]
struct Args {
    /// Work directory; the filesystem both write to (not tmpfs: O_DIRECT)
    #[arg(long, default_value = "/var/tmp/keel-bench/agent")]
    work: PathBuf,
    /// Size of the payload's data area in MiB
    #[arg(long, default_value_t = 512)]
    mib: u64,
    /// Rounds; each runs both, the order alternating
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    for tool in ["curl", "dd"] {
        ensure!(command::exists(tool), "{tool} is not installed");
    }
    std::fs::create_dir_all(&args.work)?;
    let payload = make_payload(&args.work, args.mib << 20)?;
    let (server, store_dir) = start_server(&args.work, &payload)?;
    let base = format!("http://{}", server.addr);
    let package_url = package_url(&store_dir, &base)?;
    let total = std::fs::metadata(&payload.path)?.len();

    println!("agent-vs-curl");
    println!("machine: {}", machine::describe());
    println!(
        "payload: {} MiB data area, {:.1} MiB with metadata and verity, served by keel-update-server at {base}",
        args.mib,
        total as f64 / MIB
    );

    let mut agent_times = Vec::new();
    let mut curl_times = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for is_agent in order {
            let disk = args.work.join("disk.img");
            let usr_b = fresh_disk(&disk, &payload)?;
            let t = if is_agent {
                agent(&disk, &payload, &base)?
            } else {
                curl_dd(&disk, &package_url, usr_b)?
            };
            check_slot(&disk, &payload, usr_b).context("after the run")?;
            std::fs::remove_file(&disk)?;
            let name = if is_agent {
                "keel-update check"
            } else {
                "curl | dd oflag=direct"
            };
            println!(
                "round {} {:<24} {:>8}  {:6.0} MiB/s [{}]",
                round + 1,
                name,
                secs(t),
                total as f64 / MIB / t.as_secs_f64(),
                machine::load()
            );
            if is_agent {
                agent_times.push(t.as_secs_f64());
            } else {
                curl_times.push(t.as_secs_f64());
            }
        }
    }
    let (a, c) = (median(&agent_times), median(&curl_times));
    println!();
    println!("medians over {} rounds:", args.rounds);
    println!(
        "  keel-update check        {a:6.2} s  {:6.0} MiB/s",
        total as f64 / MIB / a
    );
    println!(
        "  curl | dd oflag=direct   {c:6.2} s  {:6.0} MiB/s",
        total as f64 / MIB / c
    );
    println!(
        "ratio of throughput keel-update check : curl | dd = {:.3} (target 0.8 or more; every check included)",
        c / a
    );
    server.stop();
    let _ = std::fs::remove_file(&payload.path);
    Ok(())
}

/// A server whose stable channel offers the payload (2.0.0), signed by the payload's key.
fn start_server(work: &Path, payload: &Payload) -> Result<(RunningServer, PathBuf)> {
    let dir = work.join("server");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("keys"))?;
    std::fs::write(dir.join("keys/bench.pem"), payload.key.public_pem())?;
    let file = dir.join("server.yaml");
    std::fs::write(
        &file,
        "listen: 127.0.0.1:0\ndatabase: db.sqlite\npayloads: payloads\ntrusted_keys: keys\n",
    )?;
    let config = Config::load(&file)?;
    let store: Arc<dyn Store> = server::open_store(&config)?;
    let keys = keel_format::keys::require_keys(&config.trusted_keys)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    keel_update_server::publish::publish(
        &*store,
        &keys,
        &config.payloads,
        &payload.path,
        "stable",
        None,
        0,
    )?;
    Ok((server::start_with(&config, store)?, dir))
}

/// The published file's URL (`/v1/packages/SHA256/usr.img`), as the Omaha answer gives it.
fn package_url(dir: &Path, base: &str) -> Result<String> {
    for e in std::fs::read_dir(dir.join("payloads"))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(sha) = name.strip_suffix(".img") {
            return Ok(format!("{base}/v1/packages/{sha}/usr.img"));
        }
    }
    bail!("no published payload in {}", dir.display())
}

fn agent(disk: &Path, p: &Payload, base: &str) -> Result<Duration> {
    let target = Target::offline(disk);
    let ctx = CheckContext {
        target: &target,
        keys: vec![p.key.public()],
        config: AgentConfig {
            server: format!("{base}/v1/update/"),
            server_origin: "bench".into(),
            group: "stable".into(),
            reboot_strategy: "off".into(),
            // A new machine each round: the server grants it afresh.
            machine_id: format!("{:032x}", fresh_id()),
        },
        state_file: None,
        flag_root: None,
        resume: ResumePolicy::default(),
        progress: &Silent,
    };
    let t0 = Instant::now();
    let report = check(&ctx).map_err(|e| anyhow::anyhow!("check: {e}"))?;
    let t = t0.elapsed();
    ensure!(
        report.result == CheckResult::Staged,
        "check did not stage: {}",
        report.message
    );
    Ok(t)
}

fn fresh_id() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `curl URL | dd of=DISK oflag=direct seek=USR-B`: the whole payload file is downloaded; dd
/// drops its 4 KiB metadata block (`skip=4096`) and writes the body where apply writes it.
fn curl_dd(disk: &Path, url: &str, usr_b: u64) -> Result<Duration> {
    let t0 = Instant::now();
    let mut curl = Command::new("curl")
        .args(["-sS", "--fail", "--noproxy", "*", url])
        .stdout(Stdio::piped())
        .spawn()
        .context("curl")?;
    let status = Command::new("dd")
        .arg(format!("of={}", disk.display()))
        .args([
            "bs=4M",
            "iflag=fullblock,skip_bytes",
            "skip=4096",
            "oflag=direct,seek_bytes",
            "conv=notrunc,fsync",
            "status=none",
        ])
        .arg(format!("seek={usr_b}"))
        .stdin(curl.stdout.take().expect("piped"))
        .status()
        .context("dd")?;
    let curl_status = curl.wait()?;
    let t = t0.elapsed();
    ensure!(
        status.success() && curl_status.success(),
        "curl | dd failed: {curl_status}, {status}"
    );
    Ok(t)
}
