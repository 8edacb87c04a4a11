//! `manifest.json`: what went into a build (with hashes) and what came out.

use std::path::PathBuf;

use serde::Serialize;

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
    pub kernel_source: crate::definition::board::KernelSource,
    pub kernel_package: Option<String>,
    pub kernel_package_version: Option<String>,
    pub keel_init: FileInput,
    pub key_id: String,
    pub extra_bins: Vec<ExtraBin>,
    pub keel_update: FileInput,
    pub keel_install: FileInput,
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

#[derive(Debug, Serialize)]
pub struct Output {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}
