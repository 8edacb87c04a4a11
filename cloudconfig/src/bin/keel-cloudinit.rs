//! `keel-cloudinit`: apply the machine's cloud-config at boot (every image ships it, static).
//!
//! * `keel-cloudinit --stage local` (keel-cloudinit.service, before sysinit.target): makes
//!   user `core`, then tries fw_cfg, config-2, cidata and the OEM file; a source that needs
//!   the network (`keel.config.url=`, EC2 IMDS) hands over to
//! * `keel-cloudinit --stage network` (keel-cloudinit-network.service, after
//!   network-online.target).
//! * `keel-cloudinit --from-file FILE`: apply one user-data now (same checks and messages).
//! * `keel-cloudinit --exec-etcd` (etcd-member.service): etcd as `coreos.etcd2` configured it.
//!
//! Exit 0: applied, or nothing found; 1: the config had errors (the valid rest is applied);
//! 2: strict mode (`keel.config.strict=1`) refused it and the machine is halting.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use keel_cloudconfig::boot::apply::{apply_user_data, Verdict};
use keel_cloudconfig::boot::host::{Host, System};
use keel_cloudconfig::boot::kargs::KernelArgs;
use keel_cloudconfig::boot::media::Mounter;
use keel_cloudconfig::boot::source::{candidates, on_ec2};
use keel_cloudconfig::boot::stage::{Boot, Done, Stage};

#[derive(Clone, Copy, ValueEnum)]
enum StageArg {
    Local,
    Network,
}

#[derive(Parser)]
#[command(
    name = "keel-cloudinit",
    about = "Apply the cloud-config at boot: kernel command line URL, fw_cfg, config-2, cidata, EC2 IMDSv2, /oem/cloud-config.yml (first found wins)"
)]
struct Cli {
    /// The boot stage (run by keel-cloudinit.service and keel-cloudinit-network.service).
    #[arg(long, value_enum, conflicts_with = "from_file")]
    stage: Option<StageArg>,
    /// Apply this user-data file instead of looking for one.
    #[arg(long, value_name = "FILE")]
    from_file: Option<PathBuf>,
    /// With --from-file: halt nothing, but apply nothing when the file has errors.
    #[arg(long, requires = "from_file")]
    strict: bool,
    /// Run etcd (or with `proxy: on` its gateway) as the cloud-config's coreos.etcd2 says
    /// (etcd-member.service).
    #[arg(long, conflicts_with_all = ["stage", "from_file"])]
    exec_etcd: bool,
}

const EXIT_ERRORS: u8 = 1;
const EXIT_HALT: u8 = 2;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if cli.exec_etcd {
        return Ok(ExitCode::from(keel_cloudconfig::boot::etcd_member::run(
            &mut std::io::stderr(),
        )));
    }
    let root = PathBuf::from("/");
    let mut out = std::io::stdout();
    let mut host = System;
    if let Some(file) = &cli.from_file {
        let bytes = std::fs::read(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let name = file.display().to_string();
        return Ok(
            match apply_user_data(&root, &name, &bytes, cli.strict, &mut host, &mut out) {
                Verdict::Applied { errors: 0 } => ExitCode::SUCCESS,
                Verdict::Applied { .. } => ExitCode::from(EXIT_ERRORS),
                Verdict::Halt => ExitCode::from(EXIT_HALT),
            },
        );
    }
    let stage = match cli.stage {
        Some(StageArg::Local) => Stage::Local,
        Some(StageArg::Network) => Stage::Network,
        None => anyhow::bail!("give --stage local|network or --from-file FILE"),
    };
    let kargs = KernelArgs::from_proc();
    let sources = candidates(&kargs, on_ec2("/sys/class/dmi/id".as_ref()));
    // The fw_cfg entries appear once the module is in (udev may not have loaded it yet).
    let _ = std::process::Command::new("modprobe")
        .args(["-q", "qemu_fw_cfg"])
        .status();
    let media = Mounter::new("/run/keel/cloudinit/media".into());
    let boot = Boot::new(root, kargs, sources, &media);
    Ok(match boot.run(stage, &mut host, &mut out) {
        Done::Applied { errors: 0, .. } | Done::NeedsNetwork(_) | Done::NothingFound => {
            ExitCode::SUCCESS
        }
        Done::Applied { .. } => ExitCode::from(EXIT_ERRORS),
        Done::Halt => {
            if let Err(e) = host.systemctl(&["--no-block", "halt"]) {
                eprintln!("keel-cloudinit: systemctl halt: {e}");
            }
            ExitCode::from(EXIT_HALT)
        }
    })
}
