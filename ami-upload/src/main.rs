//! `keel-upload-ami` (also run as `keel upload-ami`): upload a raw Keel image as an EBS snapshot
//! and register it as an AMI. Thin over the `keel_ami` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use keel_ami::{Clients, Failure, Image, Request, RetryPolicy, Target};
use keel_cli_support::exit;
use keel_cli_support::progress::{Progress, Reporter};
use tokio::signal::unix::{signal, SignalKind};

/// Upload a raw disk image (disk.raw) as an EBS snapshot through the EBS direct APIs and register
/// it as an x86_64 UEFI AMI (ENA, SR-IOV, root /dev/xvda). Credentials come from the standard
/// AWS chain (environment, profile, SSO, instance role). On any failure, or on Ctrl-C, the
/// snapshot is deleted and no AMI is registered.
///
/// Exit codes: 0 registered, 2 bad input (image, name), 3 no credentials or endpoint
/// unreachable, 4 an AWS call failed, 130 interrupted.
#[derive(Parser)]
#[command(name = "keel-upload-ami", version, after_help = exit::HELP)]
struct Cli {
    /// The raw disk image (disk.raw from `keel build`).
    #[arg(long)]
    image: PathBuf,
    /// Name of the AMI (3-128 characters; unique in the account and region).
    #[arg(long)]
    name: String,
    /// AWS region, e.g. us-east-1 [default: the SDK's region chain: AWS_REGION, the profile]
    #[arg(long)]
    region: Option<String>,
    /// Send EBS and EC2 calls here instead of AWS's endpoints (e.g. a moto server).
    #[arg(long, value_name = "URL")]
    endpoint_url: Option<String>,
    /// AMI and snapshot description (default: "Keel image NAME").
    #[arg(long)]
    description: Option<String>,
    /// Block uploads in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    concurrency: u16,
    /// Upload all-zero blocks too (always done when the snapshot is encrypted, where AWS would
    /// not read absent blocks back as zeros).
    #[arg(long)]
    include_zero_blocks: bool,
    /// Attempts per block before the upload fails (waits 0.5 s, 1 s, 2 s ... up to 16 s between).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    block_attempts: u32,
    /// Seconds to wait for the snapshot to become `completed`.
    #[arg(long, default_value_t = 3600)]
    snapshot_timeout: u64,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// No progress bar (also the case when stderr is not a terminal).
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(&cli)) {
        Ok(()) => exit::status(exit::OK),
        Err(f) => {
            eprintln!("keel upload-ami: error: {f}");
            exit::status(f.exit_code())
        }
    }
}

async fn run(cli: &Cli) -> Result<(), Failure> {
    keel_ami::check_name(&cli.name)?;
    let image = Image::open(&cli.image)?;
    let clients = Clients::connect(&Target {
        region: cli.region.clone(),
        endpoint_url: cli.endpoint_url.clone(),
    })
    .await?;
    let request = Request {
        name: cli.name.clone(),
        description: cli.description.clone(),
        concurrency: cli.concurrency.into(),
        include_zero_blocks: cli.include_zero_blocks,
        retry: RetryPolicy {
            attempts: cli.block_attempts,
            ..RetryPolicy::default()
        },
        snapshot_timeout: Duration::from_secs(cli.snapshot_timeout),
    };
    // Handlers first: a signal during the upload must reach the cleanup, not kill the process.
    let mut sigint = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut sigterm = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let interrupted = async move {
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
        }
    };
    let progress = Reporter::new(cli.quiet || cli.json);
    let result = keel_ami::upload_ami(&clients, &request, image, &progress, interrupted).await;
    progress.finish();
    let outcome = result?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome).expect("outcome is JSON")
        );
    } else {
        println!(
            "registered {} ({}) from snapshot {}: {} of {} blocks uploaded in {:.1} s",
            outcome.image_id,
            outcome.name,
            outcome.snapshot_id,
            outcome.blocks_uploaded,
            outcome.blocks_total,
            outcome.upload_seconds
        );
    }
    Ok(())
}
