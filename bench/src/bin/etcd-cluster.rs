//! etcd-cluster (issue 15): three Keel guests form an etcd cluster from a static member list
//! (cloud-config's `coreos.etcd2`, on a private segment of their own), and a fourth runs
//! `proxy: on` (etcd's gateway). Printed:
//!
//! * boot to a healthy cluster: the host's clock from the first QEMU start until
//!   `etcdctl endpoint health` answers for all three members;
//! * write throughput: `--writes` sequential puts (etcd's JSON gateway, `POST /v3/kv/put`, one
//!   kept-alive connection) through the proxy against directly to a member, both through the
//!   guests' forwarded client ports; puts per second and the ratio (proxy / direct).
//!
//! Same image, same QEMU (TCG here), four guests on two cores: the figures include the
//! emulation; the ratio compares the same path with and without the gateway's extra hop.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use clap::Parser;
use keel_bench::command;
use keel_qemu::Lan;
use keel_testkit::etcd_guests::{static_member, static_proxy, until_ok, Guest, FORM};

#[derive(Parser)]
#[command(
    about = "Boot to a healthy 3-member etcd cluster of Keel guests, and write throughput \
             through a worker's proxy against direct to a member"
)]
struct Args {
    /// Work directory (cloud-configs, console logs)
    #[arg(long, default_value = "/var/tmp/keel-bench/etcd-cluster")]
    work: PathBuf,
    /// Puts per path (direct, proxy)
    #[arg(long, default_value_t = 300)]
    writes: usize,
    /// Give up on a path after this many seconds
    #[arg(long, default_value_t = 120)]
    seconds: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    command::require(&["qemu-system-x86_64", "etcdctl"])?;
    std::fs::create_dir_all(&args.work)?;
    let image = keel_testkit::default_image();
    let lan = Lan::start().context("the guests' segment")?;
    let started = Instant::now();
    let mut guests: Vec<Guest> = (1..=3)
        .map(|n| Guest::boot(&image.disk, &args.work, n, &lan, static_member))
        .collect();
    let members: Vec<String> = guests.iter().map(Guest::endpoint).collect();
    until_ok(&guests, &members, &["endpoint", "health"], FORM);
    let formed = started.elapsed();
    println!(
        "boot to a healthy 3-member cluster: {:.1} s (first QEMU start to endpoint health of all three)",
        formed.as_secs_f64()
    );

    guests.push(Guest::boot(&image.disk, &args.work, 4, &lan, static_proxy));
    let proxy = [guests[3].endpoint()];
    until_ok(&guests, &proxy, &["put", "/keel/bench/ready", "yes"], FORM);

    let limit = Duration::from_secs(args.seconds);
    let direct = puts(guests[0].client_port, args.writes, limit, "direct")?;
    let via_proxy = puts(guests[3].client_port, args.writes, limit, "proxy")?;
    println!(
        "writes, {} sequential puts each: direct to core-01 {direct:.0}/s, through core-04's proxy {via_proxy:.0}/s, ratio proxy/direct {:.2}",
        args.writes,
        via_proxy / direct
    );
    Ok(())
}

/// `count` puts on one kept-alive connection to 127.0.0.1:`port`: puts per second.
fn puts(port: u16, count: usize, limit: Duration, label: &str) -> Result<f64> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let started = Instant::now();
    for i in 0..count {
        if started.elapsed() > limit {
            bail!("{label}: {i} of {count} puts in {limit:?}");
        }
        let body = format!(
            "{{\"key\":\"{}\",\"value\":\"{}\"}}",
            BASE64.encode(format!("/keel/bench/{label}/{i}")),
            BASE64.encode("a value of some thirty-two bytes")
        );
        write!(
            writer,
            "POST /v3/kv/put HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let status = read_response(&mut reader).with_context(|| format!("{label}: put {i}"))?;
        if status != 200 {
            bail!("{label}: put {i}: HTTP {status}");
        }
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// One HTTP/1.1 response with a Content-Length body: its status.
fn read_response(r: &mut impl BufRead) -> Result<u16> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse()?;
            }
        }
    }
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    Ok(status)
}
