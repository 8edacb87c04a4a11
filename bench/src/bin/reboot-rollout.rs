//! reboot-rollout: what cluster-wide reboot coordination costs. 8 machines (the real
//! `keel-reboot-manager` as host processes, `keel_testkit::reboot_sim`) with an update staged
//! at once, on a real 3-member etcd (Debian's 3.4, loopback), `REBOOT_STRATEGY=etcd-lock`,
//! max=1 and max=2. Each machine's reboot plus health gate takes a fixed time; the peer figure
//! is the rollout without any coordination overhead: the sum of those times divided by max.
//! The ratio is the overhead (the manager's 1 s polling and lock backoff, etcd round trips).
//! Then the lock itself: acquire and release latency (connect + read + compare-and-swap, as
//! the manager calls them) under 8 concurrent clients, p50/p99.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::Parser;
use keel_bench::machine;
use keel_reboot_manager::lock::RebootLock;
use keel_testkit::etcd::Cluster;
use keel_testkit::reboot_sim::{drive, Machine};

#[derive(Parser)]
#[command(
    about = "an 8-machine etcd-lock rollout against the sum of its reboot times; lock latency"
)]
struct Args {
    /// keel-reboot-manager (default: the one beside this binary)
    #[arg(long)]
    bin: Option<PathBuf>,
    #[arg(long, default_value_t = 8)]
    machines: usize,
    /// Seconds a simulated reboot takes, and again its health gate (a TCG guest here: ~30 s)
    #[arg(long, default_value_t = 5.0)]
    reboot_secs: f64,
    /// Acquire/release rounds per client for the latency figures
    #[arg(long, default_value_t = 25)]
    lock_rounds: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Built beside this benchmark by the same `cargo build --release`.
    let beside = std::env::current_exe()?.with_file_name("keel-reboot-manager");
    let bin = args.bin.unwrap_or(beside);
    ensure!(
        bin.exists(),
        "{} missing: cargo build --release -p keel-reboot-manager",
        bin.display()
    );
    println!("machine: {}", machine::describe());
    let cluster = Cluster::start(3);
    let eps = cluster.client_urls();
    let reboot = Duration::from_secs_f64(args.reboot_secs);
    let per_machine = reboot * 2;

    println!(
        "\nrollout of {} machines, each reboot + health gate {:.1} s, manager polling every 1 s, lock backoff 1-2 s",
        args.machines,
        per_machine.as_secs_f64()
    );
    println!(
        "{:>4} {:>12} {:>22} {:>8}",
        "max", "rollout (s)", "no-overhead bound (s)", "ratio"
    );
    for max in [1i64, 2] {
        let group = format!("bench-{max}");
        let store = keel_coordination::EtcdStore::connect(
            &keel_coordination::EtcdConfig::with_endpoints(&eps),
            keel_coordination::semaphore_key(Some(&group)),
        )?;
        keel_coordination::store::set_max(&store, max)?;
        let conf = format!(
            "REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_ENDPOINT={eps}\nLOCKSMITHD_GROUP={group}\n"
        );
        let mut fleet: Vec<Machine> = (0..args.machines)
            .map(|i| {
                let mut m = Machine::new(&bin, &format!("bench-{max}-{i}"), &conf);
                m.reboot_time = reboot;
                m.gate_time = reboot;
                m
            })
            .collect();
        for m in &mut fleet {
            m.start(&[]);
        }
        let start = Instant::now();
        for m in &fleet {
            m.stage_update();
        }
        drive(
            &mut fleet,
            Duration::from_secs(600),
            |ms| {
                ms.iter()
                    .all(|m| m.reboots.len() == 1 && m.state().contains("\"idle\""))
            },
            |_| {},
        );
        let total = start.elapsed();
        let bound = per_machine.as_secs_f64() * args.machines as f64 / max as f64;
        println!(
            "{max:>4} {:>12.1} {:>22.1} {:>8.2}",
            total.as_secs_f64(),
            bound,
            total.as_secs_f64() / bound
        );
        println!("     load: {}", machine::load());
    }

    println!(
        "\nlock latency, 8 concurrent clients, {} rounds each, max=2",
        args.lock_rounds
    );
    let lock_group = "bench-latency";
    let store = keel_coordination::EtcdStore::connect(
        &keel_coordination::EtcdConfig::with_endpoints(&eps),
        keel_coordination::semaphore_key(Some(lock_group)),
    )?;
    keel_coordination::store::set_max(&store, 2)?;
    let (mut acquire, mut release) = (Vec::new(), Vec::new());
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let eps = eps.clone();
                s.spawn(move || {
                    let lock = RebootLock::etcd(
                        keel_coordination::EtcdConfig::with_endpoints(&eps),
                        Some(lock_group),
                        None,
                    );
                    let id = format!("latency-{t}");
                    let (mut a, mut r) = (Vec::new(), Vec::new());
                    let mut done = 0;
                    while done < args.lock_rounds {
                        let t0 = Instant::now();
                        let got = lock.acquire(&id, 0).is_ok();
                        a.push(t0.elapsed());
                        if got {
                            let t1 = Instant::now();
                            lock.release(&id).expect("release");
                            r.push(t1.elapsed());
                            done += 1;
                        } else {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                    (a, r)
                })
            })
            .collect();
        for h in handles {
            let (a, r) = h.join().expect("client thread");
            acquire.extend(a);
            release.extend(r);
        }
    });
    for (name, mut v) in [("acquire (incl. refusals)", acquire), ("release", release)] {
        v.sort();
        let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3;
        println!(
            "  {name:<26} n={:<5} p50 {:>6.1} ms  p99 {:>6.1} ms",
            v.len(),
            pct(0.5),
            pct(0.99)
        );
    }
    Ok(())
}
