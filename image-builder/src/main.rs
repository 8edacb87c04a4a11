//! `keel`: build, inspect and verify Keel OS images. Thin over the `keel_builder` library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use keel_builder::build::{self, BuildOptions};
use keel_builder::error::{exit, Error};
use keel_builder::inspect::{self, Trust};
use keel_builder::progress::Reporter;
use keel_builder::{keys, rootfs_cache, verify};

#[derive(Parser)]
#[command(name = "keel", version, about = "Build, inspect, verify and boot Keel OS images", long_about = None)]
struct Cli {
    /// No progress bars and no chatter (also the case when stderr is not a terminal).
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a bootable disk image (disk.raw), its update payload (usr.img) and manifest.json.
    Build(BuildArgs),
    /// Show the partitions and USR slots of a disk image or a payload.
    Inspect(InspectArgs),
    /// Check signatures, geometry, the dm-verity tree and body hash of every USR slot.
    Verify(VerifyArgs),
    /// Make a new Ed25519 signing key pair.
    Keygen(KeygenArgs),
    /// Write a signed update payload (usr.img) into the passive slot of a disk image and make
    /// it the next boot, on trial (what `keel-update apply` does on a running system).
    Apply(ApplyArgs),
    /// Boot an image in QEMU (UEFI through OVMF by default) and watch its serial console.
    Boot(keel_qemu::BootArgs),
    /// Write a signed disk image (file or http(s) URL) to a disk, checking its signature
    /// (IMAGE.sig) while streaming; moves the backup GPT to the disk's end and grows ROOT.
    Install(keel_install::cli::InstallArgs),
    /// Check a cloud-config (coreos-cloudinit's language) before deploying it: errors and
    /// warnings with their lines; exit 0 valid, 1 errors found, 2 unreadable.
    ValidateConfig(keel_cloudconfig::cli::ValidateArgs),
    /// Upload disk.raw as an EBS snapshot and register it as an AMI (runs keel-upload-ami;
    /// `keel upload-ami --help` for its options).
    #[command(disable_help_flag = true)]
    UploadAmi(UploadAmiArgs),
}

#[derive(Args)]
struct UploadAmiArgs {
    /// Passed to keel-upload-ami as they are.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<std::ffi::OsString>,
}

#[derive(Args)]
struct BuildArgs {
    /// Board definition [default: boards/qemu-x86_64.yaml in the Keel repository]
    #[arg(long)]
    board: Option<PathBuf>,
    /// Signing key: a private key file or a directory holding keel-signing.key
    /// [default: the development key, made on first use]
    #[arg(long)]
    key: Option<PathBuf>,
    /// Release version written into the slot metadata
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    version: String,
    /// Update channel [default: the board's default_channel]
    #[arg(long)]
    channel: Option<String>,
    /// Output directory
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Where mmdebstrap trees are cached
    #[arg(long, default_value = rootfs_cache::DEFAULT_CACHE)]
    cache: PathBuf,
    /// keel-init binary [default: $KEEL_INIT, or keel-init next to keel, or ../x86_64-unknown-linux-gnu/init/keel-init]
    #[arg(long)]
    init: Option<PathBuf>,
    /// Add a static binary to /usr/bin (repeatable): NAME=PATH
    #[arg(long = "extra-bin", value_name = "NAME=PATH", value_parser = parse_extra_bin)]
    extra_bins: Vec<(String, PathBuf)>,
    /// keel-update binary (static) shipped at /usr/bin/keel-update
    /// [default: $KEEL_UPDATE, or keel-update next to keel, or ../x86_64-unknown-linux-gnu/init/keel-update]
    #[arg(long)]
    update_bin: Option<PathBuf>,
    /// keel-install binary (static) shipped at /usr/bin/keel-install, with /usr/bin/keel -> it
    /// [default: $KEEL_INSTALL, or keel-install next to keel, or ../x86_64-unknown-linux-gnu/init/keel-install]
    #[arg(long)]
    install_bin: Option<PathBuf>,
    /// Add a file to the image (repeatable): SRC=DEST, DEST an absolute path under /usr or /etc
    #[arg(long = "extra-file", value_name = "SRC=DEST", value_parser = parse_extra_file)]
    extra_files: Vec<(PathBuf, String)>,
    /// DEBUG IMAGES ONLY (tests): log root in on the serial console (ttyS0) without a password
    #[arg(long)]
    debug_autologin_serial: bool,
    /// Append one word to the board's kernel command line (repeatable)
    #[arg(long = "kernel-arg", value_name = "ARG", value_parser = parse_kernel_arg)]
    kernel_args: Vec<String>,
    /// Timestamp for every file and filesystem [default: $SOURCE_DATE_EPOCH, else the rootfs definition's]
    #[arg(long)]
    source_date_epoch: Option<u64>,
    /// Output formats, comma-separated or repeated: raw, qcow2, vmdk, ova, pxe, iso
    /// [default: the board's formats]
    #[arg(
        long = "format",
        value_name = "FORMAT",
        value_parser = parse_format,
        value_delimiter = ','
    )]
    formats: Vec<keel_builder::definition::board::Format>,
    /// Print the manifest as JSON on stdout
    #[arg(long)]
    json: bool,
}

fn parse_format(s: &str) -> Result<keel_builder::definition::board::Format, String> {
    keel_builder::definition::board::Format::parse(s)
        .ok_or_else(|| format!("{s:?}: one of raw, qcow2, vmdk, ova, ami, pxe, iso"))
}

#[derive(Args)]
struct InspectArgs {
    /// disk.raw or usr.img
    image: PathBuf,
    /// Public key to check signatures with [default: the development key if there is one]
    #[arg(long)]
    pubkey: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// disk.raw or usr.img
    image: PathBuf,
    /// Trusted public key (SPKI PEM, or a key directory) [default: the development key]
    #[arg(long)]
    pubkey: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ApplyArgs {
    /// The disk image to update (not running, not attached to a loop device)
    #[arg(long)]
    disk: PathBuf,
    /// The payload: a usr.img file, an http(s):// URL, or - for standard input
    payload: String,
    /// Trusted public key (SPKI PEM), repeatable [default: the development key]
    #[arg(long)]
    pubkey: Vec<PathBuf>,
    /// Accept a version older than or equal to the running one
    #[arg(long)]
    allow_downgrade: bool,
    /// Trial boots the new slot gets before keel-init falls back
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=15))]
    tries: u8,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct KeygenArgs {
    /// Directory for keel-signing.key (0600) and keel-signing.pub
    #[arg(long)]
    out: PathBuf,
    /// Replace an existing key
    #[arg(long)]
    force: bool,
    #[arg(long)]
    json: bool,
}

fn parse_extra_bin(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s.split_once('=').ok_or("expected NAME=PATH")?;
    if name.is_empty() || name.contains('/') {
        return Err(format!("{name:?} is not a file name"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

fn parse_kernel_arg(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("one non-empty word without spaces or control characters".into());
    }
    Ok(s.to_string())
}

fn parse_extra_file(s: &str) -> Result<(PathBuf, String), String> {
    let (src, dest) = s.split_once('=').ok_or("expected SRC=DEST")?;
    if src.is_empty() || !dest.starts_with('/') {
        return Err("expected SRC=DEST with an absolute DEST".into());
    }
    Ok((PathBuf::from(src), dest.to_string()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let reporter = Reporter::new(cli.quiet);
    let result = match cli.command {
        Command::Build(a) => run_build(a, &reporter, cli.quiet),
        Command::Inspect(a) => run_inspect(a),
        Command::Verify(a) => run_verify(a, &reporter, cli.quiet),
        Command::Keygen(a) => run_keygen(a),
        Command::Apply(a) => run_apply(a, cli.quiet),
        Command::Boot(a) => keel_qemu::boot_command(&a),
        Command::UploadAmi(a) => run_upload_ami(a, cli.quiet),
        Command::ValidateConfig(a) => Ok(keel_cloudconfig::cli::run(&a, "keel validate-config")),
        // The installer prints its own errors and picks its exit codes (installer/README.md).
        Command::Install(a) => {
            return ExitCode::from(
                keel_install::cli::run(&a, cli.quiet, keys::dev_public_key()) as u8,
            )
        }
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("keel: error: {e:#}");
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<Error>())
                .map(Error::exit_code)
                .or_else(|| {
                    e.chain()
                        .find_map(|c| c.downcast_ref::<keel_update::UpdateError>())
                        .map(keel_update::UpdateError::exit_code)
                })
                .unwrap_or(exit::BUILD_FAILED);
            ExitCode::from(code as u8)
        }
    }
}

/// The AWS SDK lives in its own binary so that building `keel` stays quick: find
/// keel-upload-ami beside this executable, else on PATH, and become it.
fn run_upload_ami(a: UploadAmiArgs, quiet: bool) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    const TOOL: &str = "keel-upload-ami";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(TOOL)))
        .filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(TOOL))
                .find(|p| p.is_file())
        })
    };
    let Some(tool) = beside.or_else(on_path) else {
        return Err(Error::Environment(format!(
            "upload-ami needs {TOOL}, which is neither next to keel nor on PATH \
             (build it with `cargo build --release -p keel-ami`, as ci/build.sh does)"
        ))
        .into());
    };
    let mut cmd = std::process::Command::new(&tool);
    if quiet {
        cmd.arg("--quiet");
    }
    let err = cmd.args(&a.args).exec();
    Err(Error::Environment(format!("cannot run {}: {err}", tool.display())).into())
}

/// Results go to stdout (only `--quiet` silences them); progress and warnings to stderr.
fn run_build(a: BuildArgs, reporter: &Reporter, quiet: bool) -> anyhow::Result<i32> {
    let board = match a.board {
        Some(b) => b,
        None => keys::default_board()?,
    };
    let opts = BuildOptions {
        board,
        key: a.key,
        version: a.version,
        channel: a.channel,
        out: a.out,
        cache: a.cache,
        init: a.init,
        extra_bins: a.extra_bins,
        update_bin: a.update_bin,
        install_bin: a.install_bin,
        extra_files: a.extra_files,
        debug_autologin_serial: a.debug_autologin_serial,
        kernel_args: a.kernel_args,
        source_date_epoch: a.source_date_epoch,
        formats: (!a.formats.is_empty()).then_some(a.formats),
    };
    let report = build::build(&opts, reporter)?;
    let m = &report.manifest;
    if a.json {
        println!("{}", serde_json::to_string_pretty(m)?);
    } else if !quiet {
        println!(
            "built Keel {} ({}) for {} in {:.0}s{}",
            m.image.version,
            m.image.channel,
            m.image.board,
            report.seconds,
            if report.rootfs_cache_hit {
                " (rootfs from cache)"
            } else {
                ""
            }
        );
        for o in &m.outputs {
            println!(
                "  {}  {} MiB  sha256 {}",
                report.out.join(&o.name).display(),
                o.size >> 20,
                o.sha256
            );
        }
        println!("  {}", report.out.join("manifest.json").display());
        for (form, mib) in live_boot_min_ram_mib(&m.outputs) {
            println!("  {form} live boot: the machine needs at least {mib} MiB of RAM");
        }
        println!(
            "  kernel {}, initramfs {} KiB, USR root hash {}, key {}",
            m.kernel.release,
            m.initramfs.size / 1024,
            m.usr.verity.root_hash,
            m.inputs.key_id
        );
    }
    Ok(exit::OK)
}

/// What a machine needs to boot each live form built (PXE, ISO), from the size of the live
/// initramfs (the PXE one, which the ISO carries too; for an ISO alone, the whole ISO, an
/// upper bound).
fn live_boot_min_ram_mib(outputs: &[keel_builder::manifest::Output]) -> Vec<(&'static str, u32)> {
    use keel_format::initramfs::{live_min_ram_mib, LiveLoader};
    let pxe = outputs
        .iter()
        .find(|o| o.name.ends_with("pxe/initramfs.img"));
    let iso = outputs.iter().find(|o| o.name.ends_with(".iso"));
    let mut forms = Vec::new();
    if let Some(pxe) = pxe {
        forms.push(("PXE", live_min_ram_mib(pxe.size, LiveLoader::Pxe)));
    }
    if let Some(iso) = iso {
        let bytes = pxe.unwrap_or(iso).size;
        forms.push(("ISO", live_min_ram_mib(bytes, LiveLoader::Iso)));
    }
    forms
}

fn trust_from(pubkey: Option<PathBuf>) -> anyhow::Result<Option<Trust>> {
    if let Some(p) = pubkey {
        let k = keys::public_key(&p)?;
        return Ok(Some(Trust {
            keys: vec![k],
            source: p.display().to_string(),
        }));
    }
    Ok(keys::dev_public_key().map(|(p, k)| Trust {
        keys: vec![k],
        source: format!("development key {}", p.display()),
    }))
}

fn run_inspect(a: InspectArgs) -> anyhow::Result<i32> {
    let trust = trust_from(a.pubkey)?;
    let i = inspect::inspect(&a.image, trust.as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&i)?);
    } else {
        print!("{}", inspect::render(&i));
    }
    Ok(exit::OK)
}

fn run_verify(a: VerifyArgs, reporter: &Reporter, quiet: bool) -> anyhow::Result<i32> {
    let trust = trust_from(a.pubkey)?.ok_or_else(|| {
        Error::input("no --pubkey given and no development key found to verify against")
    })?;
    let report = verify::verify(&a.image, &trust, reporter)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if report.ok {
        if !a.json && !quiet {
            for s in &report.slots {
                println!("{}: ok ({})", s.slot, s.version.clone().unwrap_or_default());
                for c in &s.checks {
                    println!("  {}: {}", c.name, c.detail);
                }
            }
            for e in &report.empty_slots {
                println!("{e}: empty");
            }
        }
        return Ok(exit::OK);
    }
    for f in report.failures() {
        eprintln!("keel: verification failed: {f}");
    }
    Ok(exit::VERIFICATION_FAILED)
}

/// Exit codes are keel-update's (updater/README.md): 3 untrusted payload, 4 not for this
/// image, 7 disk problem, 9 refused, ...
fn run_apply(a: ApplyArgs, quiet: bool) -> anyhow::Result<i32> {
    use keel_update::{progress, trust, ApplyOptions, PayloadSource, Target};
    let keys = if a.pubkey.is_empty() {
        let (path, key) = keys::dev_public_key().ok_or_else(|| {
            Error::input("no --pubkey given and no development key found to trust")
        })?;
        if !quiet {
            eprintln!("keel: trusting the development key {}", path.display());
        }
        vec![key]
    } else {
        a.pubkey
            .iter()
            .map(|p| trust::load_key(p))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut opts = ApplyOptions::new(keys);
    opts.allow_downgrade = a.allow_downgrade;
    opts.tries = a.tries;
    let bar: Box<dyn progress::Progress> = if quiet {
        Box::new(progress::Silent)
    } else {
        Box::new(progress::Bar::default())
    };
    let applied = keel_update::apply(
        PayloadSource::parse(&a.payload),
        &Target::offline(&a.disk),
        &opts,
        bar.as_ref(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&applied)?);
    } else if !quiet {
        println!(
            "staged Keel {} in {} of {} (priority {}, tries {}); {} {} stays as the fallback",
            applied.version,
            applied.slot,
            a.disk.display(),
            applied.slot_attrs.priority,
            applied.slot_attrs.tries,
            applied.running_slot,
            applied.previous_version,
        );
    }
    Ok(exit::OK)
}

fn run_keygen(a: KeygenArgs) -> anyhow::Result<i32> {
    let key = keel_signing::Key::generate().map_err(Error::from)?;
    let (private, public) = key
        .save(&a.out, a.force)
        .map_err(Error::from)
        .with_context(|| format!("keygen into {}", a.out.display()))?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"private_key": private, "public_key": public, "key_id": key.key_id()})
        );
    } else {
        println!(
            "key id {}\n  private {}\n  public  {}",
            key.key_id(),
            private.display(),
            public.display()
        );
    }
    Ok(exit::OK)
}
