//! The boot, step by step: each step is a module; this file strings them together and decides
//! which failures are a slot's fault (mark it failed, try the next) and which are not (stop).

use std::convert::Infallible;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use ed25519_dalek::VerifyingKey;
use keel_format::attrs::{self, Candidate};
use keel_format::gpt::DiskTable;
use keel_format::initramfs::{InitConfig, CONFIG_PATH, EMBEDDED_PAYLOAD, KEYS_DIR};
use keel_format::metadata::SlotMetadata;

use crate::cmdline::{self, slot_label};
use crate::disk::BootDisk;
use crate::plan::{self, Attempt, KexecPlan};
use crate::rootfs::SYSROOT;
use crate::settings::{self, Settings};
use crate::{early, grow, handoff, kexec, live, modules, mounts, pid1, rootfs, trust, usr};
use crate::{error, info, warning};
use keel_blockdev::dm::Device;

/// Why an attempt ended.
pub enum Failure {
    /// The slot is bad (signature, verity, its filesystem, its contents): mark it failed and
    /// go on to the next one.
    Slot(anyhow::Error),
    /// Something that is not the slot's fault (the initramfs, the disk, ROOT): marking slots
    /// failed would only destroy good ones, so the boot stops.
    Fatal(anyhow::Error),
}

trait Blame<T> {
    fn slot(self) -> Result<T, Failure>;
    fn fatal(self) -> Result<T, Failure>;
}
impl<T, E: Into<anyhow::Error>> Blame<T> for Result<T, E> {
    fn slot(self) -> Result<T, Failure> {
        self.map_err(|e| Failure::Slot(e.into()))
    }
    fn fatal(self) -> Result<T, Failure> {
        self.map_err(|e| Failure::Fatal(e.into()))
    }
}

struct Boot {
    settings: Settings,
    disk: BootDisk,
    keys: Vec<VerifyingKey>,
    cmdline: String,
}

/// Runs the boot; returns only when it cannot go on.
pub fn run() -> anyhow::Error {
    let (settings, keys, cmdline) = match prepare() {
        Ok(p) => p,
        Err(e) => return e,
    };
    if live::present() {
        info!("{EMBEDDED_PAYLOAD} is in the initramfs: diskless boot");
        return match live::boot(&settings, &keys) {
            Ok(never) => match never {},
            Err(e) => e,
        };
    }
    match crate::disk::wait_for(settings.disk_guid, settings.disk_timeout, false) {
        Ok(disk) => {
            disk.repair_table();
            Boot {
                settings,
                disk,
                keys,
                cmdline,
            }
            .choose_and_boot()
        }
        Err(e) => e,
    }
}

fn read_config() -> Option<InitConfig> {
    let text = match std::fs::read_to_string(CONFIG_PATH) {
        Ok(t) => t,
        Err(e) => {
            warning!("{CONFIG_PATH}: {e}; going on with defaults and the command line");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(c) => Some(c),
        Err(e) => {
            warning!(
                "{CONFIG_PATH} is malformed: {e}; going on with defaults and the command line"
            );
            None
        }
    }
}

/// Steps 1 and 2, and what every boot needs: settings, trusted keys, the command line.
fn prepare() -> Result<(Settings, Vec<VerifyingKey>, String)> {
    early::mount_kernel_filesystems()?;
    early::attach_console();
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let parsed = cmdline::parse(&cmdline);
    crate::log::configure(parsed.debug);
    let (release, build) = kexec::running_kernel();
    info!(
        "keel-init {} starting on kernel {release} ({build})",
        env!("CARGO_PKG_VERSION")
    );
    info!("mounted /proc, /sys, /dev (devtmpfs) and /run (tmpfs)");
    let config = read_config();
    let (settings, problems) = settings::resolve(config.as_ref(), &parsed);
    pid1::set_rescue(settings.rescue);
    for p in problems {
        warning!("{p}");
    }
    if let Some(c) = &config {
        info!(
            "initramfs built by Keel {} for kernel {}",
            c.keel_version, c.kernel_release
        );
    }
    crate::debug!("settings: {settings:?}");

    if let Some(modules_for) = &settings.kernel_release {
        if *modules_for != release {
            warning!(
                "the initramfs modules are for kernel {modules_for}, but {release} is running; \
                 they will not load"
            );
        }
        modules::load_all(
            modules_for,
            &settings.modules,
            settings.module_needs.as_ref(),
            settings.board_modules.as_ref(),
            &cmdline::module_options(&cmdline),
        );
    }
    usr::preflight()?;

    // Keys are the initramfs's, not a slot's: a bad or missing key is fatal and marks no slot.
    let keys = keel_format::keys::require_keys(Path::new(KEYS_DIR))
        .context("the initramfs's trusted keys")?;
    info!(
        "{} trusted signing key(s): {}",
        keys.len(),
        trust::describe_keys(&keys)
    );
    Ok((settings, keys, cmdline))
}

fn candidates(table: &DiskTable) -> Vec<Candidate> {
    table
        .usr_slots()
        .iter()
        .map(|p| Candidate {
            number: p.number,
            attrs: p.slot_attrs(),
        })
        .collect()
}

impl Boot {
    fn choose_and_boot(self) -> anyhow::Error {
        let mut tried: Vec<u32> = Vec::new();
        loop {
            let mut table = match self.disk.read_table() {
                Ok(t) => t,
                Err(e) => return e,
            };
            let slots = candidates(&table);
            info!(
                "slots: {}",
                slots
                    .iter()
                    .map(|c| format!("{} ({})", slot_label(c.number), c.attrs))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let Some(attempt) = plan::next_attempt(&slots, self.settings.forced_slot, &tried)
            else {
                return anyhow!(
                    "no bootable USR slot left{}",
                    if tried.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (failed in this boot: {})",
                            tried
                                .iter()
                                .map(|&n| slot_label(n))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                );
            };
            tried.push(attempt.number);
            let label = slot_label(attempt.number);
            let failure = match self.attempt(&mut table, &attempt, &label) {
                Ok(never) => match never {},
                Err(f) => f,
            };
            match failure {
                // Mounts stay for a rescue shell to inspect; the fatal path tears them down
                // before it reboots.
                Failure::Fatal(e) => return e,
                Failure::Slot(e) => {
                    error!("{label} failed: {e:#}");
                    pid1::tear_down_everything();
                    self.mark_failed(attempt.number, &label);
                    info!("rolling back to the next eligible slot");
                }
            }
        }
    }

    fn mark_failed(&self, number: u32, label: &str) {
        let result = (|| -> Result<()> {
            let mut table = self.disk.read_table()?;
            let before = table.partition(number)?.slot_attrs();
            let after = attrs::mark_failed(before);
            table.set_slot_attrs(number, after)?;
            self.disk.write_table(&mut table)?;
            info!("marked {label} failed: {after}");
            Ok(())
        })();
        if let Err(e) = result {
            error!("could not mark {label} failed: {e:#}");
        }
    }

    fn attempt(
        &self,
        table: &mut DiskTable,
        attempt: &Attempt,
        label: &str,
    ) -> Result<Infallible, Failure> {
        if attempt.forced {
            info!(
                "{label} named by keel.slot: booting it as is ({})",
                attempt.chosen
            );
        } else {
            info!("chose {label} ({})", attempt.chosen);
        }
        if let Some(spent) = attempt.spend {
            // The try must be on disk before anything of the slot runs.
            table.set_slot_attrs(attempt.number, spent).slot()?;
            self.disk
                .write_table(table)
                .context("recording the spent try")
                .slot()?;
            info!("{label} is on trial: spent a try ({spent})");
        }

        let meta = self.verify_slot(table, attempt.number, label)?;
        let running = kexec::running_kernel();
        let kexec_plan = plan::kexec_plan(
            (&meta.kernel.release, &meta.kernel.build),
            (&running.0, &running.1),
            self.settings.kexec,
            attempt,
        );
        let mut dev = self.activate(attempt.number, &meta, label)?;
        let mut read_done = false;
        if plan::full_read_now(self.settings.verify, attempt, &kexec_plan) {
            usr::read_everything(&dev, meta.verity.data_size).slot()?;
            read_done = true;
        }
        usr::mount(&dev, &meta.filesystem).slot()?;
        info!("mounted {label} read-only at {}", usr::STAGING);

        match kexec_plan {
            KexecPlan::NotNeeded => {}
            KexecPlan::Load => {
                let e = self.kexec(&meta, label);
                warning!(
                    "!!! kexec into {label}'s kernel {} failed: {e:#}",
                    meta.kernel.release
                );
                warning!(
                    "!!! booting {label} on the running kernel {}: the slot's modules are for {} \
                     and may not load",
                    running.0,
                    meta.kernel.release
                );
                if !Path::new(usr::STAGING).join("share").exists() {
                    // kexec tore /usr down before failing: bring it back.
                    dev = self.activate(attempt.number, &meta, label)?;
                    usr::mount(&dev, &meta.filesystem).slot()?;
                }
                if !read_done && plan::full_read(self.settings.verify, attempt.chosen) {
                    usr::read_everything(&dev, meta.verity.data_size).slot()?;
                }
            }
            KexecPlan::Disabled => warning!(
                "!!! {label} carries kernel {} ({}) but {} ({}) is running and keel.kexec=0: \
                 booting on; the slot's modules may not load",
                meta.kernel.release,
                meta.kernel.build,
                running.0,
                running.1
            ),
            KexecPlan::SecondStage => warning!(
                "!!! {label} carries kernel {} ({}) but this kexec'd kernel is {} ({}): not \
                 kexecing again; the slot's modules may not load",
                meta.kernel.release,
                meta.kernel.build,
                running.0,
                running.1
            ),
        }

        self.set_up_root(table)?;
        self.finish_with_slot(label)?;
        let program = &self.settings.hand_off;
        match handoff::check_program(Path::new(SYSROOT), program) {
            Ok(()) => {}
            Err(e) if self.settings.hand_off_from_cmdline => {
                return Err(Failure::Fatal(
                    e.context("keel.init= names a missing program"),
                ))
            }
            Err(e) => return Err(Failure::Slot(e)),
        }
        info!(
            "booting {label} version {} ({})",
            meta.version, attempt.chosen
        );
        let e = handoff::switch_root(program).unwrap_err();
        Err(Failure::Fatal(
            e.context("the switch to the new root failed half-way"),
        ))
    }

    /// Read and verify the slot's signed metadata.
    fn verify_slot(
        &self,
        table: &DiskTable,
        number: u32,
        label: &str,
    ) -> Result<SlotMetadata, Failure> {
        let part = table.partition(number).slot()?;
        let mut disk = self.disk.open_read().fatal()?;
        let meta = trust::verified_metadata(&mut disk, &part, &self.keys).slot()?;
        info!(
            "{label}: Keel {} ({} channel, board {}), signed by key {}, kernel {}",
            meta.version, meta.channel, meta.board, meta.key_id, meta.kernel.release
        );
        Ok(meta)
    }

    fn activate(&self, number: u32, meta: &SlotMetadata, label: &str) -> Result<Device, Failure> {
        let node = self.disk.partition(number).fatal()?;
        usr::open_verity(&node, meta, label).slot()
    }

    /// Load the slot's kernel and jump into it; returns only on failure (with /usr possibly
    /// torn down).
    fn kexec(&self, meta: &SlotMetadata, label: &str) -> anyhow::Error {
        let usr_dir = Path::new(usr::STAGING);
        let kernel = usr_dir.join(&meta.kernel.image);
        let initramfs = usr_dir.join(&meta.kernel.initramfs);
        let cmdline = cmdline::second_stage(&self.cmdline, label);
        if let Err(e) = kexec::load(&kernel, &initramfs, &cmdline) {
            return e.into();
        }
        info!(
            "kexec into {label}'s kernel {} with command line: {cmdline}",
            meta.kernel.release
        );
        pid1::tear_down_everything();
        kexec::execute()
    }

    /// ROOT at /sysroot, grown, with its skeleton; /usr moved onto it.
    fn set_up_root(&self, table: &mut DiskTable) -> Result<(), Failure> {
        let root = table
            .by_label(keel_format::layout::ROOT.label)
            .ok_or_else(|| anyhow!("the boot disk has no partition labelled ROOT"))
            .fatal()?;
        if let Err(e) = grow::grow_partition(&self.disk, table, root.number) {
            warning!("could not grow ROOT: {e:#}; going on at its current size");
        }
        let node = self.disk.partition(root.number).fatal()?;
        rootfs::mount_root(&node).fatal()?;
        info!("mounted ROOT ({}) at {SYSROOT}", node.name);
        let sysroot = Path::new(SYSROOT);
        if let Err(e) = grow::grow_filesystem(&node, sysroot) {
            warning!("could not grow the ROOT filesystem: {e:#}");
        }
        for w in rootfs::skeleton(sysroot).fatal()? {
            warning!("{w}");
        }
        mounts::move_mount(Path::new(usr::STAGING), &sysroot.join("usr")).fatal()?;
        info!("moved /usr into {SYSROOT}");
        Ok(())
    }

    /// The parts of the new root that come from the slot: /var's first contents, the /etc
    /// overlay; and OEM.
    fn finish_with_slot(&self, label: &str) -> Result<(), Failure> {
        let sysroot = Path::new(SYSROOT);
        let usr_dir = sysroot.join("usr");
        if let Some(n) = rootfs::populate_var(sysroot, &usr_dir).fatal()? {
            info!("populated /var from {label}'s factory copy ({n} entries)");
        }
        if !rootfs::factory_etc_present(&usr_dir) {
            return Err(Failure::Slot(anyhow!(
                "{label} has no factory /etc at /usr/{}",
                keel_format::initramfs::usr::FACTORY_ETC
            )));
        }
        rootfs::mount_etc_overlay(sysroot, &usr_dir).fatal()?;
        info!("mounted the /etc overlay (factory /etc below, ROOT's changes above)");
        let table = self.disk.read_table().fatal()?;
        if let Some(oem) = table.by_label(keel_format::layout::OEM.label) {
            match self
                .disk
                .partition(oem.number)
                .and_then(|n| rootfs::mount_oem(&n, sysroot))
            {
                Ok(()) => info!("mounted OEM at /oem"),
                Err(e) => warning!("OEM not mounted: {e:#}"),
            }
        }
        Ok(())
    }
}
