//! `keel build`: the arguments and the summary printed after [`crate::build::build`].

use std::path::PathBuf;

use clap::Args;
use keel_cli_support::exit;
use keel_cli_support::progress::Reporter;

use super::timings;
use crate::build::{self, BuildOptions};
use crate::definition::board::Format;
use crate::keys;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Board definition [default: boards/qemu-x86_64.yaml in the Keel repository]
    #[arg(long)]
    pub board: Option<PathBuf>,
    /// Signing key: a private key file or a directory holding keel-signing.key
    /// [default: the development key, made on first use]
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Release version written into the slot metadata
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub version: String,
    /// Update channel [default: the board's default_channel]
    #[arg(long)]
    pub channel: Option<String>,
    /// Output directory
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Where mmdebstrap trees are cached, and (under built/) the USR filesystem, UKI and qcow2
    /// of recent builds, reused by a build with the same inputs
    #[arg(long, default_value = crate::rootfs_cache::DEFAULT_CACHE)]
    pub cache: PathBuf,
    /// Make the USR filesystem, UKI and qcow2 even if an earlier build made them from the same
    /// inputs (nothing is read from cache/built/; what is made is still kept there)
    #[arg(long)]
    pub no_reuse: bool,
    /// keel-init binary [default: $KEEL_INIT, or keel-init next to keel, or ../x86_64-unknown-linux-gnu/init/keel-init]
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Add a static binary to /usr/bin (repeatable): NAME=PATH
    #[arg(long = "extra-bin", value_name = "NAME=PATH", value_parser = parse_extra_bin)]
    pub extra_bins: Vec<(String, PathBuf)>,
    /// keel-update binary (static) shipped at /usr/bin/keel-update
    /// [default: $KEEL_UPDATE, or keel-update next to keel, or ../x86_64-unknown-linux-gnu/init/keel-update]
    #[arg(long)]
    pub update_bin: Option<PathBuf>,
    /// keel-install binary (static) shipped at /usr/bin/keel-install, with /usr/bin/keel -> it
    /// [default: $KEEL_INSTALL, or keel-install next to keel, or ../x86_64-unknown-linux-gnu/init/keel-install]
    #[arg(long)]
    pub install_bin: Option<PathBuf>,
    /// Add a file to the image (repeatable): SRC=DEST, DEST an absolute path under /usr or /etc
    #[arg(long = "extra-file", value_name = "SRC=DEST", value_parser = parse_extra_file)]
    pub extra_files: Vec<(PathBuf, String)>,
    /// DEBUG IMAGES ONLY (tests): log root in on the serial console (ttyS0) without a password
    #[arg(long)]
    pub debug_autologin_serial: bool,
    /// Append one word to the board's kernel command line (repeatable)
    #[arg(long = "kernel-arg", value_name = "ARG", value_parser = parse_kernel_arg)]
    pub kernel_args: Vec<String>,
    /// Timestamp for every file and filesystem [default: $SOURCE_DATE_EPOCH, else the rootfs definition's]
    #[arg(long)]
    pub source_date_epoch: Option<u64>,
    /// Output formats, comma-separated or repeated: raw, qcow2, vmdk, ova, pxe, iso
    /// [default: the board's formats]
    #[arg(
        long = "format",
        value_name = "FORMAT",
        value_parser = parse_format,
        value_delimiter = ','
    )]
    pub formats: Vec<Format>,
    /// Print the manifest as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Print each step's start and time as a table on stderr at the end (with --json, also as
    /// `timings` in the printed object; manifest.json never has them)
    #[arg(long)]
    pub timings: bool,
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("{s:?}: one of raw, qcow2, vmdk, ova, ami, pxe, iso"))
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

pub fn run(a: &BuildArgs, quiet: bool) -> i32 {
    super::finish(build(a, quiet))
}

/// Results go to stdout (only `--quiet` silences them); progress and warnings to stderr.
fn build(a: &BuildArgs, quiet: bool) -> anyhow::Result<i32> {
    let mut reporter = Reporter::new(quiet || a.json);
    if a.timings {
        reporter = reporter.timed();
    }
    let board = match a.board.clone() {
        Some(b) => b,
        None => keys::default_board()?,
    };
    let opts = BuildOptions {
        board,
        key: a.key.clone(),
        version: a.version.clone(),
        channel: a.channel.clone(),
        out: a.out.clone(),
        cache: a.cache.clone(),
        init: a.init.clone(),
        extra_bins: a.extra_bins.clone(),
        update_bin: a.update_bin.clone(),
        install_bin: a.install_bin.clone(),
        extra_files: a.extra_files.clone(),
        debug_autologin_serial: a.debug_autologin_serial,
        kernel_args: a.kernel_args.clone(),
        source_date_epoch: a.source_date_epoch,
        formats: (!a.formats.is_empty()).then(|| a.formats.clone()),
        reuse: !a.no_reuse,
    };
    let report = build::build(&opts, &reporter)?;
    let m = &report.manifest;
    let steps = reporter.timings();
    let wall = reporter.elapsed().unwrap_or_default();
    if a.timings {
        eprint!("{}", timings::table(&steps, wall));
    }
    if a.json && a.timings {
        let mut v = serde_json::to_value(m)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("timings".into(), timings::json(&steps, wall));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if a.json {
        println!("{}", serde_json::to_string_pretty(m)?);
    } else if !quiet {
        let mut from_earlier: Vec<&str> = Vec::new();
        if report.rootfs_cache_hit {
            from_earlier.push("rootfs");
        }
        from_earlier.extend(report.reused.iter().map(|k| k.describe()));
        println!(
            "built Keel {} ({}) for {} in {:.0}s{}",
            m.image.version,
            m.image.channel,
            m.image.board,
            report.seconds,
            if from_earlier.is_empty() {
                String::new()
            } else {
                format!(" (reused: {})", from_earlier.join(", "))
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
fn live_boot_min_ram_mib(outputs: &[crate::manifest::Output]) -> Vec<(&'static str, u32)> {
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
