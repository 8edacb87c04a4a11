//! One running virtual machine and its serial console.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

use crate::accel::{self, AccelChoice};
use crate::console::{self, find_after, Console};
use crate::disk::{self, DiskFormat};
use crate::error::{BootError, SessionError, StartError};
use crate::firmware;
use crate::host_io;
use crate::kvm_watch::{self, Evidence, Judgement, KERNEL_BANNER};
use crate::options::{default_log_dir, BootOptions, Firmware, ResolvedAccel};
use crate::qemu_command::{qemu_args, LaunchPlan, PlannedDisk, PlannedFirmware};
use crate::qmp::Qmp;
use crate::reset_watch;
use crate::tool::{self, QEMU_SYSTEM};

/// Lines of console output carried by a [`BootError`].
pub const TAIL_LINES: usize = 60;
/// How long QEMU may take to open its devices and answer QMP.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// After "Kernel panic" shows up, the panic report (reason, trace) is collected
/// until the console is quiet this long, for at most `PANIC_REPORT_CAP`.
const PANIC_REPORT_QUIET: Duration = Duration::from_millis(300);
const PANIC_REPORT_CAP: Duration = Duration::from_secs(3);
const PANIC_MARKER: &[u8] = b"Kernel panic";
const PANIC_END_MARKER: &[u8] = b"---[ end Kernel panic";
/// How long QEMU may take to quit (flushing its disks) before a power cycle kills it.
const QUIT_GRACE: Duration = Duration::from_secs(10);
/// How often a wait looks at the guest between console changes (KVM watch, silence).
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
/// How long the console must be quiet before a wait asks QEMU whether a host write error
/// stopped the machine.
const HOST_IO_CHECK_AFTER: Duration = Duration::from_secs(2);

/// A QEMU process booting one disk. Dropping it kills QEMU and removes the
/// overlay; the console log file stays.
pub struct Session {
    child: Child,
    exit_status: Option<ExitStatus>,
    input: ConsoleInput,
    console: Arc<Console>,
    qemu_stderr: Arc<Mutex<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
    qmp: Option<Qmp>,
    cursor: usize,
    accel: ResolvedAccel,
    /// What the session was started with, to restart the same boot under TCG.
    options: BootOptions,
    started_at: Instant,
    /// `Auto` chose KVM and the guest has not yet shown that KVM runs it.
    watching_kvm: bool,
    /// Why this boot left KVM, once it did.
    fallback_reason: Option<String>,
    /// KVM went silent: blame it once the boot gets further under TCG.
    unproven_kvm_failure: Option<String>,
    /// Where the kernel's banner ends in the console, once it appeared.
    kernel_started_at: Option<usize>,
    /// How far the console was searched for the banner.
    banner_scanned: usize,
    /// Whether the guest is in its kernel before init ([`reset_watch::KernelStage`]).
    kernel_stage: reset_watch::KernelStage,
    /// Power cycles done because the emulator hung the guest ([`reset_watch`]).
    firmware_resets: u32,
    /// When the last of them was done: the silence is counted from there.
    last_firmware_reset: Option<Instant>,
    disk: PathBuf,
    overlay: bool,
    log_path: PathBuf,
    /// QEMU's command line, to power the same machine off and on ([`Session::power_cycle`]).
    qemu_args: Vec<std::ffi::OsString>,
    qmp_socket: PathBuf,
    // Declared last: removed only after QEMU is gone.
    dir: TempDir,
}

/// Writes to the guest's serial console; cloneable, usable from any thread. It stays valid
/// when a boot is restarted under TCG.
#[derive(Clone)]
pub struct ConsoleInput(Arc<InputState>);

struct InputState {
    stdin: Mutex<Option<ChildStdin>>,
    /// Something was typed: the guest may be waiting on it, silence proves nothing.
    used: AtomicBool,
}

impl ConsoleInput {
    /// Types `text` and Enter. Enter is a carriage return, as a real terminal
    /// sends it: Linux ttys map it to a newline (ICRNL) and UEFI's shell needs it.
    pub fn send_line(&self, text: &str) -> Result<(), SessionError> {
        let mut line = Vec::with_capacity(text.len() + 1);
        line.extend_from_slice(text.as_bytes());
        line.push(b'\r');
        self.send(&line)
    }

    pub fn send(&self, bytes: &[u8]) -> Result<(), SessionError> {
        let io = |source| SessionError::Io {
            context: "write to the serial console".into(),
            source,
        };
        self.0.used.store(true, Ordering::Relaxed);
        let mut stdin = self.0.stdin.lock().unwrap_or_else(|p| p.into_inner());
        let stdin = stdin.as_mut().ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "QEMU has exited",
            ))
        })?;
        stdin.write_all(bytes).map_err(io)?;
        stdin.flush().map_err(io)
    }

    fn new(stdin: Option<ChildStdin>) -> Self {
        ConsoleInput(Arc::new(InputState {
            stdin: Mutex::new(stdin),
            used: AtomicBool::new(false),
        }))
    }

    fn replace(&self, stdin: Option<ChildStdin>) {
        *self.0.stdin.lock().unwrap_or_else(|p| p.into_inner()) = stdin;
    }

    fn close(&self) {
        self.replace(None);
    }

    fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

/// A boot that KVM failed, started again: TCG, never replaced again.
const TCG_FALLBACK: AccelChoice = AccelChoice {
    accel: ResolvedAccel::Tcg,
    fallback_allowed: false,
};

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Match(usize),
    Panic,
    Closed,
}

impl Session {
    /// Prepares the disk (overlay unless `persist`) and firmware, starts QEMU and
    /// returns once QEMU has opened everything and answers on QMP.
    ///
    /// With [`crate::Accel::Auto`] on KVM, a QEMU that fails on KVM while starting is started again
    /// under TCG here, and a guest that KVM does not run is restarted under TCG by the waits.
    pub fn start(options: &BootOptions) -> Result<Session, StartError> {
        check_inputs(options)?;
        let choice = accel::resolve(options.accel)?;
        match Session::launch(options, choice, None) {
            Err(StartError::QemuExited { status, stderr }) if choice.fallback_allowed => {
                let Some(reason) = kvm_watch::kvm_error_in(&stderr) else {
                    return Err(StartError::QemuExited { status, stderr });
                };
                accel::convict_kvm(&reason);
                accel::announce_tcg(&format!("{reason}; restarting the boot under TCG"));
                let mut session = Session::launch(options, TCG_FALLBACK, None)?;
                session.fallback_reason = Some(reason);
                Ok(session)
            }
            other => other,
        }
    }

    /// Starts QEMU for `options` on `choice`'s accelerator. `restart`: the console input and
    /// log of the boot this one replaces (the log is appended to, after a note saying why).
    fn launch(
        options: &BootOptions,
        choice: AccelChoice,
        restart: Option<(ConsoleInput, PathBuf, &str)>,
    ) -> Result<Session, StartError> {
        let accel = choice.accel;
        let dir = tempfile::Builder::new()
            .prefix("keel-qemu-")
            .tempdir()
            .map_err(|source| StartError::Io {
                context: "create session directory".into(),
                source,
            })?;

        let image = std::path::absolute(&options.image).map_err(|source| StartError::Io {
            context: format!("resolve {}", options.image.display()),
            source,
        })?;
        let image_format = detect(&image)?;
        let (boot_disk, overlay) = if options.persist {
            (
                PlannedDisk {
                    path: image,
                    format: image_format,
                },
                false,
            )
        } else {
            let path = dir.path().join("overlay.qcow2");
            disk::create_overlay(&image, image_format, &path)?;
            (
                PlannedDisk {
                    path,
                    format: DiskFormat::Qcow2,
                },
                true,
            )
        };
        let disk_path = boot_disk.path.clone();
        let mut disks = vec![boot_disk];
        for extra in &options.extra_disks {
            disks.push(PlannedDisk {
                path: extra.clone(),
                format: detect(extra)?,
            });
        }

        let firmware = match &options.firmware {
            Firmware::Uefi => PlannedFirmware::Uefi(firmware::prepare_ovmf(dir.path())?),
            Firmware::Bios => PlannedFirmware::Bios {
                serial_console: firmware::prepare_seabios_serial(dir.path())?,
            },
            Firmware::Direct {
                kernel,
                initrd,
                append,
            } => PlannedFirmware::Direct {
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                append: append.clone(),
            },
        };
        let qmp_socket = dir.path().join("qmp.sock");
        let plan = LaunchPlan {
            accel,
            firmware,
            mem_mb: options.mem_mb,
            smp: options.smp,
            disks,
            cdrom: options.cdrom.clone(),
            net: options.net.clone(),
            qmp_socket: qmp_socket.clone(),
            fw_cfg: options.fw_cfg.clone(),
            lan: options.lan,
        };

        let (input, log_path, log) = match restart {
            Some((input, log_path, reason)) => {
                let log = reopen_log(&log_path, reason)?;
                (input, log_path, log)
            }
            None => {
                let log_path = match &options.log_path {
                    Some(path) => path.clone(),
                    None => new_log_path(),
                };
                let log = create_log(&log_path)?;
                (ConsoleInput::new(None), log_path, log)
            }
        };

        let args = qemu_args(&plan);
        let child = spawn_qemu(&args)?;
        let console = Arc::new(Console::default());
        let qemu_stderr = Arc::new(Mutex::new(Vec::new()));
        let mut session = Session {
            child,
            exit_status: None,
            input,
            console: console.clone(),
            qemu_stderr: qemu_stderr.clone(),
            threads: Vec::new(),
            qmp: None,
            cursor: 0,
            accel,
            options: options.clone(),
            started_at: Instant::now(),
            watching_kvm: choice.fallback_allowed && accel == ResolvedAccel::Kvm,
            fallback_reason: None,
            unproven_kvm_failure: None,
            kernel_started_at: None,
            banner_scanned: 0,
            kernel_stage: reset_watch::KernelStage::default(),
            firmware_resets: 0,
            last_firmware_reset: None,
            disk: disk_path,
            overlay,
            log_path,
            qemu_args: args,
            qmp_socket,
            dir,
        };
        session.attach(log)?;
        Ok(session)
    }

    /// Connects the console (into `log`), stderr and QMP of the QEMU just spawned.
    fn attach(&mut self, log: File) -> Result<(), StartError> {
        let thread_error = |source| StartError::Io {
            context: "start console reader thread".into(),
            source,
        };
        self.input.replace(self.child.stdin.take());
        let stdout = self.child.stdout.take().expect("stdout is piped");
        let stderr = self.child.stderr.take().expect("stderr is piped");
        let echo = self.options.echo_console;
        self.threads.push(
            console::spawn_reader(stdout, log, echo, self.console.clone()).map_err(thread_error)?,
        );
        self.threads.push(
            console::spawn_collector(stderr, self.qemu_stderr.clone()).map_err(thread_error)?,
        );
        let socket = self.qmp_socket.clone();
        self.connect_qmp(&socket)
    }

    /// Powers the machine off and on: QEMU quits (flushing its disks; killed if it does not
    /// within [`QUIT_GRACE`]) and the same command line starts again, on the same disk state and
    /// firmware variables, with the firmware starting from cleared memory. A warm reset keeps
    /// the memory, and OVMF under TCG wedged after some (`reset_watch`); cold starts never did.
    /// The console carries on where it was (waits and cursors stay valid); the log gets a line
    /// saying why.
    pub fn power_cycle(&mut self, why: &str) -> Result<(), SessionError> {
        if self.exit_status.is_none() {
            let _ = self.qmp("quit", None);
            let deadline = Instant::now() + QUIT_GRACE;
            while self.poll_exit().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill()?;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let io = |context: String, source| SessionError::Io { context, source };
        let mut log = File::options()
            .append(true)
            .open(&self.log_path)
            .map_err(|e| io(format!("reopen console log {}", self.log_path.display()), e))?;
        writeln!(log, "\n[keel-qemu: {why}; powering the machine off and on]")
            .map_err(|e| io(format!("write console log {}", self.log_path.display()), e))?;
        let _ = fs::remove_file(&self.qmp_socket);
        self.console.reopen();
        let restart = |source: StartError| SessionError::Restart {
            why: why.to_string(),
            source: Box::new(source),
        };
        self.child = spawn_qemu(&self.qemu_args).map_err(restart)?;
        self.exit_status = None;
        self.attach(log).map_err(restart)
    }

    /// Waits until QEMU listens on QMP and its main loop answers `query-status`
    /// (devices are opened by then), or until it exits.
    fn connect_qmp(&mut self, socket: &Path) -> Result<(), StartError> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut last_error = String::from("socket not created");
        loop {
            if let Some(status) = self.poll_exit() {
                return Err(StartError::QemuExited {
                    status,
                    stderr: self.collect_stderr_after_exit(),
                });
            }
            if socket.exists() {
                match Qmp::connect(socket) {
                    Ok(mut qmp) => match qmp.execute("query-status", None) {
                        Ok(_) => {
                            self.qmp = Some(qmp);
                            return Ok(());
                        }
                        Err(e) => last_error = e.to_string(),
                    },
                    Err(e) => last_error = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(StartError::QemuNotReady {
                    timeout: STARTUP_TIMEOUT,
                    reason: last_error,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `pattern` appears in the console output after the cursor, then
    /// moves the cursor past it, so consecutive waits see consecutive output.
    /// "Kernel panic" after the cursor, QEMU exiting, or the timeout end the wait
    /// with an error holding the console's tail.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> Result<(), BootError> {
        self.wait(Some(pattern), timeout).map(|_| ())
    }

    /// Waits until QEMU exits (the guest powered off, or QEMU was killed); a
    /// kernel panic after the cursor or the timeout is an error.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, BootError> {
        self.wait(None, timeout)?;
        Ok(self.reap())
    }

    fn wait(&mut self, pattern: Option<&str>, timeout: Duration) -> Result<(), BootError> {
        let deadline = Instant::now().checked_add(timeout);
        let needle = pattern.map(str::as_bytes);
        let mut scan_from = self.cursor;
        loop {
            let cursor = self.cursor;
            // Watching the guest (KVM, silence, a firmware stuck after a restart) needs a look
            // now and then, not only on output.
            let watching = self.watching_kvm
                || self.qmp.is_some()
                || self.unproven_kvm_failure.is_some()
                || self.options.silence_limit.is_some()
                || self.firmware_resets < reset_watch::MAX_RESETS;
            let look_at = Instant::now() + WATCH_INTERVAL;
            let wake = match deadline {
                Some(deadline) if watching => Some(deadline.min(look_at)),
                None if watching => Some(look_at),
                other => other,
            };
            let seen = self.console.wait_until(wake, |state| {
                let bytes = &state.bytes;
                // Only the new bytes (plus an overlap for matches split across reads)
                // need searching on each wake-up.
                let overlap = needle.map_or(0, <[u8]>::len).max(PANIC_MARKER.len());
                let from = scan_from.saturating_sub(overlap).max(cursor);
                scan_from = bytes.len();
                scan(bytes, from, needle, state.closed)
            });
            match seen {
                Some(Seen::Match(end)) => {
                    self.cursor = end;
                    // The caller may act on what it saw: no restart behind its back now.
                    self.watching_kvm = false;
                    self.blame_kvm_if_tcg_got_further(true);
                    return Ok(());
                }
                Some(Seen::Closed) if self.watching_kvm => {
                    self.reap();
                    self.collect_stderr_after_exit();
                    if self.kvm_failed_here(true)? {
                        scan_from = 0;
                        continue;
                    }
                }
                Some(Seen::Closed) if pattern.is_none() => {
                    self.cursor = self.console.len();
                    return Ok(());
                }
                Some(Seen::Closed) => {
                    let status = self.reap();
                    return Err(BootError::Exited {
                        pattern: pattern.map(String::from),
                        status: Some(status),
                        log_path: self.log_path.clone(),
                        tail: self.tail(),
                        qemu_stderr: self.qemu_stderr(),
                    });
                }
                Some(Seen::Panic) => {
                    self.collect_panic_report(cursor);
                    return Err(BootError::KernelPanic {
                        pattern: pattern.map(String::from),
                        log_path: self.log_path.clone(),
                        tail: self.tail(),
                    });
                }
                None if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Err(BootError::Timeout {
                        pattern: pattern.map(String::from),
                        timeout,
                        log_path: self.log_path.clone(),
                        tail: self.tail(),
                        cpus: self.vcpu_states(),
                    });
                }
                None => {
                    if let Some(drives) = self.stopped_on_host_io_error() {
                        return Err(BootError::HostIoError {
                            pattern: pattern.map(String::from),
                            drives,
                            log_path: self.log_path.clone(),
                            tail: self.tail(),
                        });
                    }
                    if self.watching_kvm && self.kvm_failed_here(false)? {
                        scan_from = 0;
                        continue;
                    }
                    self.blame_kvm_if_tcg_got_further(false);
                    self.reset_if_emulator_stuck();
                    if let Some(silent_for) = self.silent_after_kernel_start() {
                        return Err(BootError::Silent {
                            pattern: pattern.map(String::from),
                            silent_for,
                            log_path: self.log_path.clone(),
                            tail: self.tail(),
                        });
                    }
                }
            }
        }
    }

    /// The drives that stopped the machine, when QEMU paused it on a host write error (a
    /// full host file system, under QEMU's default `werror=enospc`). Asked only once the
    /// guest has been quiet a while: a stopped guest prints nothing.
    fn stopped_on_host_io_error(&mut self) -> Option<Vec<String>> {
        if self.qmp.is_none() || self.silent_for() < HOST_IO_CHECK_AFTER {
            return None;
        }
        let status = self.qmp("query-status", None).ok()?;
        if !host_io::stopped_on_io_error(&status) {
            return None;
        }
        let blocks = self.qmp("query-block", None).unwrap_or(Value::Null);
        let drives = host_io::failed_drives(&blocks);
        Some(if drives.is_empty() {
            vec!["(query-block named no failed drive)".to_string()]
        } else {
            drives
        })
    }

    /// Judges a boot `Auto` put on KVM; when KVM failed it, restarts the boot under TCG and
    /// returns true. Once the guest proves that KVM runs it, stops watching.
    fn kvm_failed_here(&mut self, qemu_exited: bool) -> Result<bool, BootError> {
        if self.input.used() {
            // Someone is talking to the guest: it ran, and a restart would lose their input.
            self.watching_kvm = false;
            return Ok(false);
        }
        let stderr = self.qemu_stderr();
        let evidence = Evidence {
            qemu_stderr: &stderr,
            qemu_exited,
            kernel_banner_seen: self.kernel_started(),
            silent_for: self.silent_for(),
        };
        match kvm_watch::judge(&evidence) {
            Judgement::Running => Ok(false),
            Judgement::Proven => {
                self.watching_kvm = false;
                Ok(false)
            }
            Judgement::Failed { reason, hard } => {
                self.restart_under_tcg(reason, hard)?;
                Ok(true)
            }
        }
    }

    /// Stops this boot and starts it again under TCG, with the same options, console input
    /// and log. `hard` evidence against KVM is recorded for every later boot at once.
    fn restart_under_tcg(&mut self, reason: String, hard: bool) -> Result<(), BootError> {
        if hard {
            accel::convict_kvm(&reason);
        }
        accel::announce_tcg(&format!("{reason}; restarting the boot under TCG"));
        let _ = self.kill();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let restart = (self.input.clone(), self.log_path.clone(), reason.as_str());
        let mut replacement =
            Session::launch(&self.options, TCG_FALLBACK, Some(restart)).map_err(|source| {
                BootError::FallbackFailed {
                    reason: reason.clone(),
                    source: Box::new(source),
                }
            })?;
        replacement.fallback_reason = Some(reason.clone());
        replacement.unproven_kvm_failure = (!hard).then_some(reason);
        drop(std::mem::replace(self, replacement));
        Ok(())
    }

    /// After a restart for silence under KVM: once the TCG boot gets past where KVM stayed
    /// silent (its kernel starts, or a wait is satisfied), KVM is blamed for later boots too.
    fn blame_kvm_if_tcg_got_further(&mut self, matched: bool) {
        if self.unproven_kvm_failure.is_some() && (matched || self.kernel_started()) {
            if let Some(reason) = self.unproven_kvm_failure.take() {
                accel::convict_kvm(&format!(
                    "{reason}, and the same boot under TCG got further"
                ));
            }
        }
    }

    /// The emulator hung the guest ([`reset_watch`]: firmware silent after a restart, or a
    /// kernel silent before init with every vCPU busy): power-cycles it, saying so and where
    /// the vCPUs were.
    fn reset_if_emulator_stuck(&mut self) {
        if self.firmware_resets >= reset_watch::MAX_RESETS {
            return;
        }
        let since_reset = self
            .last_firmware_reset
            .map_or(Duration::MAX, |t| t.elapsed());
        let silent_for = self.silent_for().min(since_reset);
        let limit = self.options.restart_silence_limit;
        if silent_for < limit {
            return;
        }
        let len = self.console.len();
        let tail = self
            .console
            .text_from(len.saturating_sub(reset_watch::TAIL_BYTES));
        let from = self.kernel_stage.resume_at();
        self.kernel_stage
            .read(from, &self.console.text_bytes_from(from));
        let firmware = reset_watch::firmware_stuck(&tail, silent_for, limit);
        if !firmware && !self.kernel_stage.before_init() {
            return;
        }
        let args = serde_json::json!({ "command-line": "info registers -a" });
        let registers = match self.qmp("human-monitor-command", Some(args)) {
            Ok(Value::String(text)) => text,
            other => format!("(no registers: {other:?})"),
        };
        let what = if firmware {
            "the guest restarted and its firmware printed nothing"
        } else if reset_watch::kernel_stuck(true, &tail, &registers) {
            "its kernel stopped before starting init, every vCPU busy, and printed nothing"
        } else {
            return;
        };
        self.firmware_resets += 1;
        let why = format!(
            "{what} for {} s ({})",
            silent_for.as_secs(),
            reset_watch::where_the_cpus_are(&registers)
        );
        announce(&format!(
            "keel-qemu: {}: {why}; powering the machine off and on ({} of {})",
            self.log_path.display(),
            self.firmware_resets,
            reset_watch::MAX_RESETS,
        ));
        if let Err(e) = self.power_cycle(&why) {
            announce(&format!("keel-qemu: {}: {e}", self.log_path.display()));
        }
        self.last_firmware_reset = Some(Instant::now());
    }

    /// How long the guest has been silent when that exceeds `silence_limit` after its kernel
    /// started and nobody typed anything.
    fn silent_after_kernel_start(&mut self) -> Option<Duration> {
        let limit = self.options.silence_limit?;
        if !self.kernel_started() || self.input.used() {
            return None;
        }
        let silent_for = self.silent_for();
        (silent_for >= limit).then_some(silent_for)
    }

    fn silent_for(&self) -> Duration {
        self.console
            .last_output()
            .unwrap_or(self.started_at)
            .elapsed()
    }

    /// Has the guest's kernel printed its banner? Searches only what is new since last time.
    fn kernel_started(&mut self) -> bool {
        if self.kernel_started_at.is_none() {
            let from = self.banner_scanned.saturating_sub(KERNEL_BANNER.len());
            let text = self.console.text_bytes_from(from);
            self.banner_scanned = from + text.len();
            self.kernel_started_at = find_after(&text, 0, KERNEL_BANNER).map(|end| from + end);
        }
        self.kernel_started_at.is_some()
    }

    /// Why this boot left KVM for TCG, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Lets the rest of a panic report (reason, trace) reach the console before the
    /// tail is taken: until the report's end line, QEMU exiting, a quiet spell
    /// (with `panic=-1` the kernel resets without an end line), or a cap.
    fn collect_panic_report(&self, from: usize) {
        let cap = Instant::now() + PANIC_REPORT_CAP;
        while Instant::now() < cap {
            let seen_len = self.console.len();
            let quiet_until = (Instant::now() + PANIC_REPORT_QUIET).min(cap);
            let progressed = self.console.wait_until(Some(quiet_until), |state| {
                (state.bytes.len() != seen_len || state.closed).then_some(())
            });
            let finished = self.console.wait_until(Some(Instant::now()), |state| {
                (state.closed || find_after(&state.bytes, from, PANIC_END_MARKER).is_some())
                    .then_some(())
            });
            if progressed.is_none() || finished.is_some() {
                return;
            }
        }
    }

    /// Types `text` and Enter on the serial console.
    pub fn send_line(&mut self, text: &str) -> Result<(), SessionError> {
        self.input.send_line(text)
    }

    /// Writes raw bytes to the serial console.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.input.send(bytes)
    }

    /// A handle that writes to the serial console from another thread.
    pub fn console_input(&self) -> ConsoleInput {
        self.input.clone()
    }

    /// SIGKILLs QEMU: a power cut. Writes the guest had not flushed may be lost,
    /// as on real hardware. Returns once QEMU is gone.
    pub fn kill(&mut self) -> Result<ExitStatus, SessionError> {
        if let Some(status) = self.exit_status {
            return Ok(status);
        }
        match self.child.kill() {
            Ok(()) => {}
            // Already exited: reaping below picks up its status.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
            Err(source) => {
                return Err(SessionError::Io {
                    context: "kill QEMU".into(),
                    source,
                })
            }
        }
        Ok(self.reap())
    }

    /// Presses the ACPI power button (QMP `system_powerdown`), waits up to
    /// `grace` for the guest to power off, then kills QEMU.
    pub fn shutdown(&mut self, grace: Duration) -> Result<ExitStatus, SessionError> {
        if self.exit_status.is_none() && !self.console.is_closed() {
            // A guest that already began powering off may close QMP under us.
            let _ = self.qmp("system_powerdown", None);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Some(status) = self.poll_exit() {
                    return Ok(status);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill()
    }

    /// Runs a QMP command (e.g. `query-block`, `system_reset`) and returns its result.
    pub fn qmp(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, SessionError> {
        match self.qmp.as_mut() {
            Some(qmp) => qmp.execute(command, arguments),
            None => Err(SessionError::Qmp {
                command: command.into(),
                message: "no QMP connection".into(),
            }),
        }
    }

    /// QEMU's `info cpus` (each vCPU's host thread; under KVM its program counter too) and
    /// where each vCPU is from `info registers -a`, or "" when QMP does not answer.
    fn vcpu_states(&mut self) -> String {
        let mut monitor = |line: &str| {
            let args = serde_json::json!({ "command-line": line });
            match self.qmp("human-monitor-command", Some(args)) {
                Ok(Value::String(text)) => text,
                _ => String::new(),
            }
        };
        let cpus = monitor("info cpus");
        let registers = reset_watch::where_the_cpus_are(&monitor("info registers -a"));
        if registers.is_empty() {
            cpus
        } else {
            format!("{cpus}{registers}\n")
        }
    }

    /// QEMU's exit status once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.poll_exit()
    }

    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// The whole console output so far.
    pub fn log(&self) -> String {
        self.console.text_from(0)
    }

    /// Console output from byte offset `start` (e.g. a saved [`Session::cursor`]).
    pub fn output_since(&self, start: usize) -> String {
        self.console.text_from(start)
    }

    /// How often the machine was power-cycled because the emulator hung it
    /// ([`crate::reset_watch`]: silent for [`BootOptions::restart_silence_limit`] after a
    /// restart, or before init).
    pub fn firmware_resets(&self) -> u32 {
        self.firmware_resets
    }

    /// Byte offset in the console output just past the last match.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// What QEMU printed on stderr (warnings, errors).
    pub fn qemu_stderr(&self) -> String {
        let bytes = self.qemu_stderr.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn accel(&self) -> ResolvedAccel {
        self.accel
    }

    /// The file QEMU writes the guest's disk to: the qcow2 overlay (backed by the
    /// image) or, with `persist`, the image itself. Once QEMU has stopped it can be
    /// read, converted, or used as the `image` of a following session.
    pub fn disk_path(&self) -> &Path {
        &self.disk
    }

    pub fn uses_overlay(&self) -> bool {
        self.overlay
    }

    /// Writes the guest disk's final state as a raw image to `dest` (to inspect
    /// its GPT with sfdisk, mount it...). QEMU must have stopped.
    pub fn export_disk_raw(&mut self, dest: &Path) -> Result<(), SessionError> {
        if self.is_running() {
            return Err(SessionError::StillRunning);
        }
        disk::convert_to_raw(&self.disk, dest)?;
        Ok(())
    }

    /// The session's private directory (overlay, OVMF variables, QMP socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn tail(&self) -> String {
        let state_text = self.console.text_from(0);
        console::tail(state_text.as_bytes(), TAIL_LINES)
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit_status = Some(status);
            }
        }
        self.exit_status
    }

    /// Waits for QEMU to be gone (its console has closed or it was killed).
    fn reap(&mut self) -> ExitStatus {
        if let Some(status) = self.exit_status {
            return status;
        }
        let status = self
            .child
            .wait()
            .expect("waiting for our own QEMU child cannot fail");
        self.exit_status = Some(status);
        self.input.close();
        self.qmp = None;
        status
    }

    fn collect_stderr_after_exit(&mut self) -> String {
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        self.qemu_stderr().trim().to_string()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.kill();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        keep_log_copy(&self.log_path);
    }
}

/// With `KEEL_QEMU_KEEP_LOGS=DIR`, every console log is copied into DIR when its session ends
/// (tests write theirs into temporary directories that vanish with them; this keeps the
/// timings of passing boots for study).
fn keep_log_copy(log: &Path) {
    let Some(dir) = std::env::var_os("KEEL_QEMU_KEEP_LOGS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let name = format!(
        "{}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        log.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("console.log")
    );
    let _ = fs::create_dir_all(&dir).and_then(|_| fs::copy(log, dir.join(name)));
}

/// What `bytes[from..]` holds first: the pattern (end offset), a kernel panic, or
/// neither (then whether the console has closed).
fn scan(bytes: &[u8], from: usize, needle: Option<&[u8]>, closed: bool) -> Option<Seen> {
    let matched = needle.and_then(|n| Some((find_after(bytes, from, n)?, n.len())));
    let panicked = find_after(bytes, from, PANIC_MARKER);
    match (matched, panicked) {
        (Some((end, len)), Some(panic_end)) if panic_end - PANIC_MARKER.len() < end - len => {
            Some(Seen::Panic)
        }
        (Some((end, _)), _) => Some(Seen::Match(end)),
        (None, Some(_)) => Some(Seen::Panic),
        (None, None) => closed.then_some(Seen::Closed),
    }
}

fn check_inputs(options: &BootOptions) -> Result<(), StartError> {
    let missing = |what, path: &Path, hint| StartError::Missing {
        what,
        path: path.to_path_buf(),
        hint,
    };
    if !options.image.exists() {
        return Err(missing("disk image", &options.image, ""));
    }
    for extra in &options.extra_disks {
        if !extra.exists() {
            return Err(missing("extra disk", extra, ""));
        }
    }
    if let Some(iso) = &options.cdrom {
        if !iso.exists() {
            return Err(missing("CD-ROM image", iso, ""));
        }
    }
    if let Firmware::Direct { kernel, initrd, .. } = &options.firmware {
        if !kernel.is_file() {
            return Err(missing("kernel", kernel, ""));
        }
        if let Some(initrd) = initrd {
            if !initrd.is_file() {
                return Err(missing("initrd", initrd, ""));
            }
        }
    }
    if let Some(dir) = options.net.as_ref().and_then(|n| n.tftp_dir.as_ref()) {
        if !dir.is_dir() {
            return Err(missing("TFTP directory", dir, ""));
        }
    }
    Ok(())
}

/// A line on standard error that a test harness does not capture (it captures `eprintln!`), so
/// a CI log shows every power cycle, also in tests that pass.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn spawn_qemu(args: &[std::ffi::OsString]) -> Result<Child, StartError> {
    let mut command = Command::new(QEMU_SYSTEM);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Tied: a `keel boot` or test binary killed outright takes its guest with it.
    keel_blockdev::tied::spawn(&mut command)
        .map_err(|source| tool::spawn_error(&command, source).into())
}

fn detect(path: &Path) -> Result<DiskFormat, StartError> {
    disk::detect_format(path).map_err(|source| StartError::Io {
        context: format!("read {}", path.display()),
        source,
    })
}

/// The log of a boot being restarted: appended to, after a line saying why.
fn reopen_log(path: &Path, reason: &str) -> Result<File, StartError> {
    let io = |source| StartError::Io {
        context: format!("reopen console log {}", path.display()),
        source,
    };
    let mut log = File::options().append(true).open(path).map_err(io)?;
    writeln!(log, "\n[keel-qemu: {reason}; the boot restarts under TCG]").map_err(io)?;
    Ok(log)
}

fn create_log(path: &Path) -> Result<File, StartError> {
    let io = |source| StartError::Io {
        context: format!("create console log {}", path.display()),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    File::create(path).map_err(io)
}

/// A fresh name in [`default_log_dir`]: time, process and a per-process counter,
/// so parallel sessions never share a log.
fn new_log_path() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    default_log_dir().join(format!("console-{seconds}-{}-{n}.log", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_event_on_the_console_wins() {
        let text = b"boot\nKernel panic - not syncing\nlogin: ";
        assert_eq!(scan(text, 0, Some(b"login:"), false), Some(Seen::Panic));
        assert_eq!(scan(text, 0, Some(b"boot"), false), Some(Seen::Match(4)));
        assert_eq!(
            scan(text, 0, Some(b"Kernel panic"), false),
            Some(Seen::Match(17))
        );
        assert_eq!(scan(text, 5, Some(b"boot"), false), Some(Seen::Panic));
        assert_eq!(scan(text, 6, Some(b"boot"), false), None);
        assert_eq!(scan(b"quiet", 0, Some(b"login:"), false), None);
        assert_eq!(scan(b"quiet", 0, Some(b"login:"), true), Some(Seen::Closed));
        assert_eq!(scan(b"quiet", 0, None, true), Some(Seen::Closed));
    }
}
