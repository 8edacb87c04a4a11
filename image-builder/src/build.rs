//! `keel build`: every step in order, in a temporary directory inside the output directory,
//! renamed into place only when all of it worked.

use std::path::{Path, PathBuf};
use std::time::Instant;

use keel_format::layout;
use keel_format::metadata::KernelInfo;

use crate::definition::board::{Firmware, Format, KernelSource};
use crate::definition::{Board, Rootfs};
use crate::digest;
use crate::disk;
use crate::error::{io_at, Error, Result};
use crate::esp;
use crate::grub_bios;
use crate::initramfs;
use crate::iso;
use crate::kernel::Kernel;
use crate::keys;
use crate::manifest::{self, Manifest};
use crate::mkfs;
use crate::ova;
use crate::partition_images;
use crate::pxe;
use crate::qcow2;
use crate::reuse::{self, Built, Kind};
use crate::rootfs_cache;
use crate::scratch;
use crate::static_bin;
use crate::tool;
use crate::uki;
use crate::usr_slot;
use crate::usr_tree::{self, Release};
use crate::vmdk;
use keel_cli_support::progress::Reporter;

pub struct BuildOptions {
    pub board: PathBuf,
    /// Private key file or directory; `None`: the development key.
    pub key: Option<PathBuf>,
    pub version: String,
    /// `None`: the board's default channel.
    pub channel: Option<String>,
    pub out: PathBuf,
    pub cache: PathBuf,
    pub init: Option<PathBuf>,
    pub extra_bins: Vec<(String, PathBuf)>,
    /// keel-update; `None`: found like keel-init (see [`crate::static_bin::StaticBin::find`]).
    pub update_bin: Option<PathBuf>,
    /// keel-install; `None`: found like keel-update (see [`crate::static_bin::StaticBin::find`]).
    pub install_bin: Option<PathBuf>,
    /// Files laid into the tree: (source, absolute destination under /usr or /etc).
    pub extra_files: Vec<(PathBuf, String)>,
    /// Debug images only: root autologin on the serial console.
    pub debug_autologin_serial: bool,
    /// Appended to the board's kernel command line (e.g. a VM-only switch for a test build).
    pub kernel_args: Vec<String>,
    /// `None`: $SOURCE_DATE_EPOCH, else the rootfs definition's.
    pub source_date_epoch: Option<u64>,
    /// Forms to deliver (`--format`); `None`: the board's `formats`. disk.raw, usr.img and
    /// manifest.json are always written.
    pub formats: Option<Vec<Format>>,
    /// Reuse the USR filesystem, UKI and qcow2 an earlier build made from the same inputs
    /// (kept under `cache/built/`); false: make everything (`--no-reuse`; still kept).
    pub reuse: bool,
}

pub struct BuildReport {
    pub manifest: Manifest,
    pub out: PathBuf,
    pub rootfs_cache_hit: bool,
    /// The pieces taken from earlier builds with the same inputs.
    pub reused: Vec<reuse::Kind>,
    pub dev_key_created: Option<PathBuf>,
    pub seconds: f64,
}

/// Scratch directories in the output directory: `.keel-build-<pid>-…`.
const SCRATCH_PREFIX: &str = ".keel-build-";
pub const OUTPUTS: [&str; 4] = ["disk.raw", "disk.raw.sig", "usr.img", "manifest.json"];
const HAND_OFF: &str = "/usr/lib/systemd/systemd";

fn word_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
}

/// Check everything that can be checked before any work: definitions, arguments, tools.
struct Checked {
    board: Board,
    rootfs: Rootfs,
    channel: String,
    init: PathBuf,
    update_bin: PathBuf,
    install_bin: PathBuf,
    cloudinit_bin: PathBuf,
    reboot_manager_bin: PathBuf,
    fleet_bin: PathBuf,
    epoch: u64,
    formats: Vec<Format>,
}

/// The formats to write (`--format`, else the board's `formats`), checked against what the
/// board provides; the error names the board file and the field that lacks it.
fn check_formats(board: &Board, asked: Option<&[Format]>) -> Result<Vec<Format>> {
    let formats = asked.map_or_else(|| board.formats.clone(), <[Format]>::to_vec);
    let mut out: Vec<Format> = Vec::new();
    // `ami` adds no file: the AMI is made from disk.raw (always written) by `keel upload-ami`.
    for f in formats {
        match f {
            Format::Pxe | Format::Iso if !board.boot_modules.iter().any(|m| m == "loop") => {
                return Err(Error::input(format!(
                    "{}: boot_modules: the {} format boots diskless from a loop device; add `loop` to boot_modules",
                    board.path.display(),
                    f.as_str()
                )))
            }
            Format::Iso
                if !(board.firmware.contains(&Firmware::Bios)
                    && board.firmware.contains(&Firmware::Uefi)) =>
            {
                return Err(Error::input(format!(
                    "{}: firmware: the iso format boots under both BIOS and UEFI; list both `uefi` and `bios`",
                    board.path.display()
                )))
            }
            _ => {}
        }
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(out)
}

fn check(opts: &BuildOptions) -> Result<Checked> {
    let board = Board::load(&opts.board)?;
    let rootfs = Rootfs::load(&board.rootfs)?;
    if !word_ok(&opts.version) || !opts.version.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(Error::input(format!(
            "--version {:?}: give a version like 1.2.3",
            opts.version
        )));
    }
    let channel = opts
        .channel
        .clone()
        .unwrap_or_else(|| board.default_channel.clone());
    if !word_ok(&channel) {
        return Err(Error::input(format!(
            "--channel {channel:?}: not a channel name"
        )));
    }
    for (name, path) in &opts.extra_bins {
        if !word_ok(name) {
            return Err(Error::input(format!("--extra-bin {name}: not a file name")));
        }
        if !path.is_file() {
            return Err(Error::input(format!(
                "--extra-bin {name}={}: no such file",
                path.display()
            )));
        }
    }
    if !board.firmware.contains(&Firmware::Uefi) {
        return Err(Error::input(format!(
            "{}: firmware lists no uefi; every image boots UEFI (a unified kernel image), bios only adds GRUB next to it",
            board.path.display()
        )));
    }
    for (src, dest) in &opts.extra_files {
        let inside = ["/usr/", "/etc/"].iter().any(|p| dest.starts_with(p));
        if !inside || dest.split('/').any(|c| c == "..") {
            return Err(Error::input(format!(
                "--extra-file {}={dest}: the destination must be an absolute path under /usr or /etc",
                src.display()
            )));
        }
        let is_link = src
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink());
        if !src.is_file() && !is_link {
            return Err(Error::input(format!(
                "--extra-file {}={dest}: no such file",
                src.display()
            )));
        }
    }
    let formats = check_formats(&board, opts.formats.as_deref())?;
    let init = static_bin::INIT.find(opts.init.as_deref())?;
    let update_bin = static_bin::UPDATE.find(opts.update_bin.as_deref())?;
    let install_bin = static_bin::INSTALL.find(opts.install_bin.as_deref())?;
    let cloudinit_bin = static_bin::CLOUDINIT.find(None)?;
    let reboot_manager_bin = static_bin::REBOOT_MANAGER.find(None)?;
    let fleet_bin = static_bin::FLEET.find(None)?;
    let mut tools = vec![
        "cp",
        "mkfs.erofs",
        "mkfs.vfat",
        "mmd",
        "mcopy",
        "mkfs.ext4",
        "objcopy",
    ];
    if rootfs_cache::cache_key(&rootfs, &board.kernel)
        .map(|k| !opts.cache.join(k).join("usr").is_dir())
        .unwrap_or(true)
    {
        tools.push("mmdebstrap");
    }
    if matches!(board.kernel, KernelSource::Deb(_)) {
        tools.push("dpkg-deb");
    }
    if formats.contains(&Format::Qcow2) {
        tools.push("qemu-img");
    }
    for t in tools {
        tool::find(t)?;
    }
    if board.firmware.contains(&Firmware::Bios) {
        grub_bios::check_host()?;
    }
    if formats.contains(&Format::Iso) {
        iso::check_host()?;
    }
    if !Path::new(uki::STUB).is_file() {
        return Err(Error::Environment(format!(
            "{} is missing (Debian package systemd-boot-efi)",
            uki::STUB
        )));
    }
    let epoch = match opts.source_date_epoch {
        Some(e) => e,
        None => match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(s) => s.trim().parse().map_err(|_| {
                Error::input(format!(
                    "SOURCE_DATE_EPOCH={s:?} is not a number of seconds"
                ))
            })?,
            Err(_) => rootfs.source_date_epoch,
        },
    };
    Ok(Checked {
        board,
        rootfs,
        channel,
        init,
        update_bin,
        install_bin,
        cloudinit_bin,
        reboot_manager_bin,
        fleet_bin,
        epoch,
        formats,
    })
}

pub fn build(opts: &BuildOptions, reporter: &Reporter) -> Result<BuildReport> {
    let started = Instant::now();
    let Checked {
        board,
        rootfs,
        channel,
        init,
        update_bin,
        install_bin,
        cloudinit_bin,
        reboot_manager_bin,
        fleet_bin,
        epoch,
        formats,
    } = check(opts)?;
    if opts.debug_autologin_serial {
        reporter.warn("DEBUG IMAGE: root is logged in on the serial console without a password (--debug-autologin-serial)");
    }
    let signing = keys::signing_key(opts.key.as_deref())?;
    let key = &signing.key;
    if signing.created {
        reporter.warn(&format!(
            "{}\n   new development key: {}",
            keys::DEV_KEY_WARNING,
            signing.path.display()
        ));
    }

    std::fs::create_dir_all(&opts.out).map_err(io_at(&opts.out))?;
    scratch::remove_stale(&opts.out, SCRATCH_PREFIX)?;
    let tmp = tempfile::Builder::new()
        .prefix(&scratch::own_prefix(SCRATCH_PREFIX))
        .tempdir_in(&opts.out)
        .map_err(io_at(&opts.out))?;
    let work = tmp.path();

    let built = Built::new(&opts.cache, opts.reuse);

    // 1. The Debian tree.
    let cached = rootfs_cache::ensure(&rootfs, &board.kernel, &opts.cache, epoch, reporter)?;
    if cached.hit {
        reporter.note(&format!("✓ rootfs from cache {}", cached.dir.display()));
    }
    let kernel = Kernel::locate(&cached.dir, &board.kernel)?;
    let release = kernel.version.release.clone();

    // 2. The initramfs (before the USR filesystem, which carries a copy for kexec).
    let step = reporter.step("initramfs");
    let trusted = [key.public()];
    let ramfs = initramfs::build(&initramfs::Inputs {
        init: &init,
        keys: &trusted,
        modules_dir: &kernel.modules_dir,
        kernel_release: &release,
        module_names: &board.boot_modules,
        disk_guid: layout::DISK_GUID.to_string(),
        hand_off: HAND_OFF.into(),
        keel_version: opts.version.clone(),
        mtime: epoch,
    })?;
    let initrd_path = work.join("initramfs.img");
    std::fs::write(&initrd_path, &ramfs.bytes).map_err(io_at(&initrd_path))?;
    step.done(&format!(
        "{} KiB, {} modules",
        ramfs.bytes.len() / 1024,
        ramfs.config.modules.len()
    ));

    // 3-6. Two branches at once: the USR slot (tree, mkfs.erofs beside ROOT, verity and
    // signature), whose mkfs.erofs is the longest step and uses one core, and the partition
    // images that do not depend on it (UKI and ESP, OEM). Each writes its own files in `work`.
    let rel_info = Release {
        version: opts.version.clone(),
        channel: channel.clone(),
        board: board.name.clone(),
        arch: board.arch.as_str().into(),
    };
    let cmdline = std::iter::once(board.cmdline_string())
        .chain(opts.kernel_args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let os_release = usr_tree::os_release(&rel_info);
    let esp_inputs = esp::Inputs {
        board: &board,
        kernel: &kernel.image,
        initramfs: &initrd_path,
        os_release: &os_release,
        cmdline: &cmdline,
        work,
        epoch,
        built: &built,
    };
    let usr_inputs = usr_tree::Inputs {
        tree: &cached.dir,
        rootfs: &rootfs,
        kernel: &kernel,
        initramfs: &ramfs.bytes,
        release: &rel_info,
        extra_bins: &opts.extra_bins,
        update_bin: &update_bin,
        trusted: &trusted,
        install_bin: &install_bin,
        cloudinit_bin: &cloudinit_bin,
        reboot_manager_bin: &reboot_manager_bin,
        fleet_bin: &fleet_bin,
        extra_files: &opts.extra_files,
        debug_autologin_serial: opts.debug_autologin_serial,
    };
    let describe = usr_slot::Describe {
        version: opts.version.clone(),
        channel: channel.clone(),
        arch: board.arch.as_str().into(),
        board: board.name.clone(),
        build_time: epoch,
        kernel: KernelInfo {
            release: release.clone(),
            build: kernel.version.build.clone(),
            image: usr_tree::kernel_image_path(&release),
            initramfs: usr_tree::initramfs_path(&release),
        },
    };
    let fs_seed = format!("{}:{}:{}:{epoch}", board.name, opts.version, channel);
    let (slot, parts) = std::thread::scope(|s| {
        let parts = s.spawn(|| partition_images::build(&esp_inputs, reporter));
        let slot = usr_slot_branch(
            work,
            &usr_inputs,
            &UsrFs {
                epoch,
                uuid: mkfs::derived_uuid("usr-fs", &fs_seed),
                settings: board.usr.clone(),
            },
            &board,
            describe,
            key,
            &built,
            reporter,
        );
        let parts = parts
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok::<_, Error>((slot?, parts?))
    })?;
    let (slot, root_image, usr_reused) = slot;
    let mut reused: Vec<Kind> = Vec::new();
    if usr_reused {
        reused.push(Kind::UsrFilesystem);
    }
    if parts.esp.uki_reused {
        reused.push(Kind::Uki);
    }

    // 7. The disk and the payload.
    let plan = disk::plan(&board.partitions);
    let disk_path = work.join("disk.raw");
    disk::write(
        &disk_path,
        &plan,
        &disk::Contents {
            esp: &parts.esp.image,
            usr_a_body: &slot.body,
            usr_a_metadata: &slot.block,
            oem: &parts.oem,
            root: &root_image,
        },
        reporter,
    )?;
    if board.firmware.contains(&Firmware::Bios) {
        let step = reporter.step("GRUB (BIOS)");
        let core = grub_bios::install_built(&disk_path, work, plan.get(layout::BIOS_BOOT))?;
        step.done(&format!("core.img {} KiB", core / 1024));
    }
    let step = reporter.step("writing usr.img");
    let payload_path = work.join("usr.img");
    usr_slot::write_payload(&slot, &payload_path)?;
    step.done("");

    // 8. The other forms users boot, with disk.raw and usr.img hashed beside them (qemu-img
    // convert -c, the longest of them, uses one core), and the USR stage removed (unlinking
    // ~10,000 hard links into the cache takes a while too).
    let mut names: Vec<String> = vec!["disk.raw".into(), "usr.img".into()];
    // A qcow2 made from the same disk.raw by the same qemu-img is reused: disk.raw is hashed
    // first, then, rather than beside qemu-img.
    let raw_hashed = if formats.contains(&Format::Qcow2) {
        Some(manifest::hash_output(work, "disk.raw", reporter)?)
    } else {
        None
    };
    let qcow2_key = match &raw_hashed {
        Some(raw) => Some(qcow2_key(&raw.sha256)?),
        None => None,
    };
    let ((files, placed, qcow2_reused), hashed) = std::thread::scope(|s| {
        let hashes = s.spawn(|| {
            let mut done: Vec<manifest::Output> = raw_hashed.iter().cloned().collect();
            for n in names.iter().skip(done.len()) {
                done.push(manifest::hash_output(work, n, reporter)?);
            }
            Ok::<_, Error>(done)
        });
        let stage = work.join("stage");
        let cleanup = s.spawn(move || {
            let step = reporter.step("removing the USR stage");
            std::fs::remove_dir_all(&stage).map_err(io_at(&stage))?;
            step.done("");
            Ok::<_, Error>(())
        });
        let written = write_formats(&FormatInputs {
            formats: &formats,
            work,
            board: &board,
            version: &opts.version,
            kernel: &kernel.image,
            initramfs: &ramfs.bytes,
            cmdline: &cmdline,
            epoch,
            reporter,
            built: &built,
            qcow2_key: qcow2_key.as_deref(),
        });
        let hashed = hashes
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        cleanup
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        Ok::<_, Error>((written?, hashed?))
    })?;
    names.extend(files);
    if qcow2_reused {
        reused.push(Kind::Qcow2);
    }

    // 9. The manifest (and disk.raw's signature), then everything into place.
    let manifest = manifest::record(&manifest::Record {
        work,
        outputs: &names,
        hashed: &hashed,
        key,
        reporter,
        version: &opts.version,
        channel: &channel,
        board: &board,
        rootfs: &rootfs,
        tree: &cached,
        init: &init,
        update_bin: &update_bin,
        install_bin: &install_bin,
        cloudinit_bin: &cloudinit_bin,
        reboot_manager_bin: &reboot_manager_bin,
        fleet_bin: &fleet_bin,
        extra_bins: &opts.extra_bins,
        extra_files: &opts.extra_files,
        debug_autologin_serial: opts.debug_autologin_serial,
        epoch,
        disk_bytes: plan.disk_bytes,
        kernel: &kernel,
        cmdline: &cmdline,
        initramfs: &ramfs,
        usr: &slot.metadata,
    })?;
    for name in OUTPUTS
        .iter()
        .copied()
        .chain(placed.iter().map(String::as_str))
    {
        let dest = opts.out.join(name);
        if dest.is_dir() {
            std::fs::remove_dir_all(&dest).map_err(io_at(&dest))?;
        }
        std::fs::rename(work.join(name), &dest).map_err(io_at(&dest))?;
    }
    drop(tmp);
    Ok(BuildReport {
        manifest,
        out: opts.out.clone(),
        rootfs_cache_hit: cached.hit,
        reused,
        dev_key_created: signing.created.then(|| signing.path.clone()),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// How the USR filesystem is made.
struct UsrFs {
    epoch: u64,
    uuid: uuid::Uuid,
    settings: crate::definition::board::UsrFilesystem,
}

/// The USR slot: the tree staged in `work/stage` (left there: it is removed beside the formats),
/// its erofs filesystem (made, or reused from an earlier build of the same tree), sealed
/// (dm-verity, signed metadata); and ROOT, holding a copy of the tree's factory /var, made
/// while mkfs.erofs runs. The flag: the filesystem was reused.
#[allow(clippy::too_many_arguments)]
fn usr_slot_branch(
    work: &Path,
    tree: &usr_tree::Inputs,
    fs: &UsrFs,
    board: &Board,
    describe: usr_slot::Describe,
    key: &keel_signing::Key,
    built: &Built,
    reporter: &Reporter,
) -> Result<(usr_slot::Slot, PathBuf, bool)> {
    let step = reporter.step("USR tree");
    let stage = work.join("stage");
    let usr = usr_tree::assemble(&stage, tree)?;
    let fs_key = usr_fs_key(&usr, fs)?;
    step.done("");
    let body = work.join("usr.body");
    let reused = if built.reuses() {
        let step = reporter.step("USR filesystem from an earlier build");
        let found = built.fetch(Kind::UsrFilesystem, &fs_key, &body)?;
        step.done(if found {
            "reused"
        } else {
            "none with this tree"
        });
        found
    } else {
        false
    };
    let step = reporter.step(if reused {
        "ROOT (ext4 with the factory /var); the USR filesystem reused"
    } else {
        "mkfs.erofs, and ROOT (ext4 with the factory /var)"
    });
    let factory_var = usr.join(keel_format::initramfs::usr::FACTORY_VAR);
    let root = std::thread::scope(|s| {
        let root = s.spawn(|| partition_images::root(work, board, fs.epoch, &factory_var));
        let erofs = if reused {
            Ok(())
        } else {
            mkfs::erofs(&usr, &body, fs.epoch, fs.uuid, &fs.settings)
                .and_then(|()| built.keep(Kind::UsrFilesystem, &fs_key, &body))
        };
        let root = root
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        erofs.and(root)
    })?;
    let fs_size = std::fs::metadata(&body).map_err(io_at(&body))?.len();
    step.done(&format!("{} MiB", fs_size >> 20));
    Ok((
        usr_slot::seal(&body, describe, key, reporter)?,
        root,
        reused,
    ))
}

/// Everything the USR filesystem is made of: the staged tree, mkfs.erofs and its settings.
fn usr_fs_key(usr: &Path, fs: &UsrFs) -> Result<String> {
    let mut key = reuse::Key::new(Kind::UsrFilesystem);
    key.add("tree", reuse::tree_digest(usr)?.as_bytes())
        .add("epoch", &fs.epoch.to_le_bytes())
        .add("uuid", fs.uuid.as_bytes())
        .add(
            "compression",
            format!("{:?}", fs.settings.compression).as_bytes(),
        )
        .add(
            "physical_cluster_kib",
            &fs.settings.physical_cluster_kib.to_le_bytes(),
        );
    key.add_tool("mkfs.erofs")?;
    Ok(key.finish())
}

/// A qcow2 is made from disk.raw by qemu-img.
fn qcow2_key(raw_sha256: &str) -> Result<String> {
    let mut key = reuse::Key::new(Kind::Qcow2);
    key.add("disk.raw", raw_sha256.as_bytes());
    key.add_tool("qemu-img")?;
    Ok(key.finish())
}

struct FormatInputs<'a> {
    formats: &'a [Format],
    work: &'a Path,
    board: &'a Board,
    version: &'a str,
    kernel: &'a Path,
    initramfs: &'a [u8],
    cmdline: &'a str,
    epoch: u64,
    reporter: &'a Reporter,
    built: &'a Built,
    /// Set when a qcow2 is wanted and may be reused: its key.
    qcow2_key: Option<&'a str>,
}

/// Base name of the VMDK and OVA files and the OVF virtual system.
fn artifact_name(board: &Board, version: &str) -> String {
    format!("keel-{}-{version}", board.name)
}

/// Writes each requested form from disk.raw / usr.img in `work`; returns the output files
/// (relative to the output directory) for the manifest, the entries of `work` to move into
/// the output directory, and whether the qcow2 was reused.
fn write_formats(inp: &FormatInputs) -> Result<(Vec<String>, Vec<String>, bool)> {
    let work = inp.work;
    let raw = work.join("disk.raw");
    let mut files = Vec::new();
    let mut placed = Vec::new();
    let mut qcow2_reused = false;
    if inp.formats.contains(&Format::Qcow2) {
        let step = inp.reporter.step("qcow2");
        let out = work.join("disk.qcow2");
        if let Some(k) = inp.qcow2_key {
            qcow2_reused = inp.built.fetch(Kind::Qcow2, k, &out)?;
        }
        if !qcow2_reused {
            qcow2::convert(&raw, &out)?;
            if let Some(k) = inp.qcow2_key {
                inp.built.keep(Kind::Qcow2, k, &out)?;
            }
        }
        files.push("disk.qcow2".to_string());
        placed.push("disk.qcow2".to_string());
        step.done(if qcow2_reused { "reused" } else { "" });
    }
    if inp.formats.contains(&Format::Vmdk) || inp.formats.contains(&Format::Ova) {
        let step = inp.reporter.step("VMDK (streamOptimized)");
        let name = artifact_name(inp.board, inp.version);
        let vmdk_name = format!("{name}.vmdk");
        let vmdk_path = work.join(&vmdk_name);
        let cid = u32::from_be_bytes(
            digest::sha256(format!("{name}:{}", inp.epoch).as_bytes())[..4]
                .try_into()
                .expect("4 bytes"),
        );
        let written = vmdk::write(&raw, &vmdk_path, &vmdk_name, cid)?;
        step.done(&format!("{} MiB", written.file_bytes >> 20));
        if inp.formats.contains(&Format::Ova) {
            let step = inp.reporter.step("OVA");
            let ova_name = format!("{name}.ova");
            ova::write(
                &ova::Machine {
                    name: &name,
                    cpus: ova::DEFAULT_CPUS,
                    memory_mib: ova::DEFAULT_MEMORY_MIB,
                },
                &vmdk_path,
                &written,
                &work.join(&ova_name),
                inp.epoch,
            )?;
            files.push(ova_name.clone());
            placed.push(ova_name);
            step.done("");
        }
        if inp.formats.contains(&Format::Vmdk) {
            files.push(vmdk_name.clone());
            placed.push(vmdk_name);
        }
    }
    if inp.formats.contains(&Format::Pxe) || inp.formats.contains(&Format::Iso) {
        let payload = work.join("usr.img");
        let body = std::fs::read(&payload).map_err(io_at(&payload))?;
        let live = pxe::initramfs(inp.initramfs, body, inp.epoch);
        if inp.formats.contains(&Format::Pxe) {
            let step = inp.reporter.step("PXE");
            pxe::write(&work.join(pxe::DIR), inp.kernel, &live, inp.cmdline)?;
            for f in [pxe::KERNEL, pxe::INITRAMFS, pxe::SCRIPT] {
                files.push(format!("{}/{f}", pxe::DIR));
            }
            placed.push(pxe::DIR.to_string());
            step.done("");
        }
        if inp.formats.contains(&Format::Iso) {
            let step = inp.reporter.step("ISO (xorriso)");
            let name = iso::file_name(&artifact_name(inp.board, inp.version));
            iso::write(
                &work.join(&name),
                &work.join("iso"),
                inp.kernel,
                &live,
                inp.cmdline,
                inp.epoch,
            )?;
            files.push(name.clone());
            placed.push(name);
            step.done("");
        }
    }
    Ok((files, placed, qcow2_reused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(name: &str) -> Board {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../boards")
            .join(name);
        Board::load(&path).expect("board loads")
    }

    /// The EC2 board asks for `ami`, which adds no file: `keel upload-ami` makes the AMI from
    /// disk.raw. An ISO is refused: the board has no `loop` module to boot it diskless.
    #[test]
    fn ami_is_accepted_and_iso_refused() {
        let ec2 = board("ec2-x86_64.yaml");
        let formats = check_formats(&ec2, None).unwrap();
        assert!(formats.contains(&Format::Ami), "{formats:?}");
        let err = check_formats(&ec2, Some(&[Format::Iso])).unwrap_err();
        assert!(
            err.to_string().contains("boot_modules") && err.to_string().contains("`loop`"),
            "{err}"
        );
    }
}
