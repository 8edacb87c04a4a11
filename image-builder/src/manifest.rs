//! `manifest.json`: what went into a build (with hashes) and what came out, and how a build
//! records it ([`record`]), with the detached signature of disk.raw beside it.

use std::path::{Path, PathBuf};

use keel_format::image_sig::ImageSignature;
use keel_format::metadata::SlotMetadata;
use keel_signing::Key;
use serde::Serialize;

use crate::definition::board::KernelSource;
use crate::definition::{Board, Rootfs};
use crate::digest;
use crate::error::{io_at, Result};
use crate::initramfs;
use crate::kernel;
use crate::rootfs_cache::{self, CachedTree};
use keel_cli_support::progress::Reporter;

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub keel_builder: String,
    pub image: Image,
    pub inputs: Inputs,
    pub kernel: Kernel,
    pub initramfs: Initramfs,
    pub usr: keel_format::metadata::SlotMetadata,
    /// A debug image: root autologin on the serial console (`--debug-autologin-serial`).
    pub debug_autologin_serial: bool,
    pub outputs: Vec<Output>,
}

#[derive(Debug, Serialize)]
pub struct Image {
    pub version: String,
    pub channel: String,
    pub board: String,
    pub arch: String,
    pub source_date_epoch: u64,
    pub disk_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct FileInput {
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct Inputs {
    pub board: FileInput,
    pub rootfs: FileInput,
    pub files_tree: Option<FileInput>,
    pub rootfs_cache_key: String,
    /// SHA-256 over the sorted "name version" lines of the installed Debian packages.
    pub packages_sha256: String,
    pub package_count: usize,
    pub kernel_source: KernelSource,
    pub kernel_package: Option<String>,
    pub kernel_package_version: Option<String>,
    pub keel_init: FileInput,
    pub key_id: String,
    pub extra_bins: Vec<ExtraBin>,
    pub keel_update: FileInput,
    pub keel_install: FileInput,
    pub keel_cloudinit: FileInput,
    pub keel_reboot_manager: FileInput,
    pub keel_fleet: FileInput,
    pub extra_files: Vec<ExtraFile>,
}

#[derive(Debug, Serialize)]
pub struct ExtraFile {
    pub dest: String,
    pub source: FileInput,
}

#[derive(Debug, Serialize)]
pub struct ExtraBin {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct Kernel {
    pub release: String,
    pub build: String,
    pub cmdline: String,
}

#[derive(Debug, Serialize)]
pub struct Initramfs {
    pub size: u64,
    pub uncompressed_size: u64,
    pub modules: Vec<String>,
    pub builtin_modules: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Output {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// What a build hands over to be recorded: the files it read and the pieces it made.
pub struct Record<'a> {
    /// The scratch directory holding the outputs; disk.raw.sig and manifest.json go there.
    pub work: &'a Path,
    /// The outputs in `work` to hash, disk.raw first.
    pub outputs: &'a [String],
    /// Outputs hashed already ([`hash_output`]), which are not read again.
    pub hashed: &'a [Output],
    pub key: &'a Key,
    pub reporter: &'a Reporter,
    pub version: &'a str,
    pub channel: &'a str,
    pub board: &'a Board,
    pub rootfs: &'a Rootfs,
    pub tree: &'a CachedTree,
    pub init: &'a Path,
    pub update_bin: &'a Path,
    pub install_bin: &'a Path,
    pub cloudinit_bin: &'a Path,
    pub reboot_manager_bin: &'a Path,
    pub fleet_bin: &'a Path,
    pub extra_bins: &'a [(String, PathBuf)],
    pub extra_files: &'a [(PathBuf, String)],
    pub debug_autologin_serial: bool,
    pub epoch: u64,
    pub disk_bytes: u64,
    pub kernel: &'a kernel::Kernel,
    pub cmdline: &'a str,
    pub initramfs: &'a initramfs::Initramfs,
    pub usr: &'a SlotMetadata,
}

/// Hashes every output, signs disk.raw (`disk.raw.sig`, which `keel install` checks while
/// streaming), hashes every input, and writes `manifest.json`.
pub fn record(r: &Record) -> Result<Manifest> {
    let outputs = hash_outputs(r)?;
    let manifest = Manifest {
        keel_builder: env!("CARGO_PKG_VERSION").into(),
        image: Image {
            version: r.version.into(),
            channel: r.channel.into(),
            board: r.board.name.clone(),
            arch: r.board.arch.as_str().into(),
            source_date_epoch: r.epoch,
            disk_bytes: r.disk_bytes,
        },
        inputs: hash_inputs(r)?,
        debug_autologin_serial: r.debug_autologin_serial,
        kernel: Kernel {
            release: r.kernel.version.release.clone(),
            build: r.kernel.version.build.clone(),
            cmdline: r.cmdline.into(),
        },
        initramfs: Initramfs {
            size: r.initramfs.bytes.len() as u64,
            uncompressed_size: r.initramfs.uncompressed_size as u64,
            modules: r.initramfs.config.modules.clone(),
            builtin_modules: r.initramfs.builtin.clone(),
        },
        usr: r.usr.clone(),
        outputs,
    };
    let mut json = serde_json::to_vec_pretty(&manifest).expect("serializable");
    json.push(b'\n');
    let path = r.work.join("manifest.json");
    std::fs::write(&path, json).map_err(io_at(&path))?;
    Ok(manifest)
}

/// The outputs' sizes and hashes, and disk.raw.sig written and listed after disk.raw.
fn hash_outputs(r: &Record) -> Result<Vec<Output>> {
    let mut outputs = Vec::new();
    for name in r.outputs {
        outputs.push(match r.hashed.iter().find(|o| &o.name == name) {
            Some(o) => o.clone(),
            None => hash_output(r.work, name, r.reporter)?,
        });
    }
    let raw = &outputs[0];
    let sig = ImageSignature::new(
        &raw.name,
        raw.size,
        &hex::decode(&raw.sha256)
            .ok()
            .and_then(|v| v.try_into().ok())
            .expect("file_sha256 gives 64 hex digits"),
        &r.key.public(),
        |m| r.key.sign(m),
    );
    let sig_path = r.work.join("disk.raw.sig");
    std::fs::write(&sig_path, sig.to_json()).map_err(io_at(&sig_path))?;
    outputs.insert(
        1,
        Output {
            name: "disk.raw.sig".into(),
            sha256: digest::file_sha256(&sig_path, |_| {})?,
            size: std::fs::metadata(&sig_path)
                .map_err(io_at(&sig_path))?
                .len(),
        },
    );
    Ok(outputs)
}

/// The size and SHA-256 of the output `name` in `work` (a `sha256 NAME` step).
pub fn hash_output(work: &Path, name: &str, reporter: &Reporter) -> Result<Output> {
    let p = work.join(name);
    let size = std::fs::metadata(&p).map_err(io_at(&p))?.len();
    let bar = reporter.bytes(&format!("sha256 {name}"), size);
    let sha256 = digest::file_sha256(&p, |n| bar.set(n))?;
    bar.done("");
    Ok(Output {
        name: name.to_string(),
        sha256,
        size,
    })
}

fn file_input(p: &Path) -> Result<FileInput> {
    Ok(FileInput {
        path: p.to_path_buf(),
        sha256: digest::file_sha256(p, |_| {})?,
    })
}

/// Every input by its hash: definitions, the Debian tree's packages, binaries, extra files.
fn hash_inputs(r: &Record) -> Result<Inputs> {
    let packages = rootfs_cache::installed_packages(&r.tree.dir)?;
    let package_lines: String = packages.iter().map(|(p, v)| format!("{p} {v}\n")).collect();
    let kernel_package = match &r.board.kernel {
        KernelSource::Image { .. } => None,
        KernelSource::Package(p) => rootfs_cache::kernel_package_version(&packages, Some(p)),
        KernelSource::Deb(_) => rootfs_cache::kernel_package_version(&packages, None),
    };
    let files_tree = match &r.rootfs.files {
        Some(f) => Some(FileInput {
            path: f.clone(),
            sha256: digest::tree_sha256(f)?,
        }),
        None => None,
    };
    let mut extra_bins = Vec::new();
    for (name, path) in r.extra_bins {
        extra_bins.push(ExtraBin {
            name: name.clone(),
            path: path.clone(),
            sha256: digest::file_sha256(path, |_| {})?,
        });
    }
    let mut extra_files = Vec::new();
    for (src, dest) in r.extra_files {
        extra_files.push(ExtraFile {
            dest: dest.clone(),
            source: match std::fs::read_link(src) {
                // A symlink is recorded by its target.
                Ok(target) => FileInput {
                    path: src.clone(),
                    sha256: digest::sha256_hex(target.as_os_str().as_encoded_bytes()),
                },
                Err(_) => file_input(src)?,
            },
        });
    }
    Ok(Inputs {
        board: file_input(&r.board.path)?,
        rootfs: file_input(&r.rootfs.path)?,
        files_tree,
        rootfs_cache_key: r.tree.key.clone(),
        packages_sha256: digest::sha256_hex(package_lines.as_bytes()),
        package_count: packages.len(),
        kernel_source: r.board.kernel.clone(),
        kernel_package: kernel_package.as_ref().map(|p| p.0.clone()),
        kernel_package_version: kernel_package.as_ref().map(|p| p.1.clone()),
        keel_init: file_input(r.init)?,
        key_id: r.key.key_id(),
        extra_bins,
        keel_update: file_input(r.update_bin)?,
        keel_install: file_input(r.install_bin)?,
        keel_cloudinit: file_input(r.cloudinit_bin)?,
        keel_reboot_manager: file_input(r.reboot_manager_bin)?,
        keel_fleet: file_input(r.fleet_bin)?,
        extra_files,
    })
}
