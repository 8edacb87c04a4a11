//! The accelerator verdict, kept for the machine's current boot so that a test run probes
//! once, not once per guest: `/run/keel-qemu/accel` (or `$KEEL_QEMU_ACCEL_CACHE`), keyed by
//! the kernel's boot id and the QEMU binary. A lock file next to it makes parallel processes
//! wait for one probe instead of each running their own.
//!
//! ```text
//! boot_id=2f1c…
//! qemu=/usr/bin/qemu-system-x86_64 size=… mtime=…
//! accel=tcg
//! reason=OVMF under KVM: KVM internal error. Suberror: 1 (emulation failure)
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::options::ResolvedAccel;
use crate::tool::QEMU_SYSTEM;

pub const CACHE_ENV: &str = "KEEL_QEMU_ACCEL_CACHE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub accel: ResolvedAccel,
    /// Why not KVM (for `Tcg`).
    pub tcg_reason: Option<String>,
}

/// The cached verdict for this boot and QEMU, or `probe`'s (then stored).
pub fn verdict_or_probe(probe: impl FnOnce() -> Result<(), String>) -> Verdict {
    let path = cache_path();
    let key = machine_key();
    // Within one process the answer never changes unless a boot convicts KVM.
    static MEMO: Mutex<Option<(PathBuf, Verdict)>> = Mutex::new(None);
    let mut memo = MEMO.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((memo_path, verdict)) = memo.as_ref() {
        if *memo_path == path && read(&path, &key).is_none_or(|v| v == *verdict) {
            return verdict.clone();
        }
    }
    let _lock = lock(&path);
    let verdict = match read(&path, &key) {
        Some(verdict) => verdict,
        None => {
            let verdict = match probe() {
                Ok(()) => Verdict {
                    accel: ResolvedAccel::Kvm,
                    tcg_reason: None,
                },
                Err(reason) => Verdict {
                    accel: ResolvedAccel::Tcg,
                    tcg_reason: Some(reason),
                },
            };
            write(&path, &key, &verdict);
            verdict
        }
    };
    *memo = Some((path, verdict.clone()));
    verdict
}

/// Stores that KVM failed a real boot: every later `Auto` boot of this machine boot uses TCG.
pub fn record_tcg(reason: &str) {
    let path = cache_path();
    let _lock = lock(&path);
    write(
        &path,
        &machine_key(),
        &Verdict {
            accel: ResolvedAccel::Tcg,
            tcg_reason: Some(reason.to_string()),
        },
    );
}

/// Stores `accel` as the verdict for this machine boot and QEMU in the cache file `cache`
/// (what `Auto` then uses without probing): for tests that need a KVM verdict KVM cannot
/// honour, and for operators who know better than the probe.
pub fn remember_verdict(cache: &Path, accel: ResolvedAccel, reason: Option<&str>) {
    let _lock = lock(cache);
    write(
        cache,
        &machine_key(),
        &Verdict {
            accel,
            tcg_reason: reason.map(str::to_string),
        },
    );
}

pub fn cache_path() -> PathBuf {
    if let Some(path) = std::env::var_os(CACHE_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let run = Path::new("/run/keel-qemu");
    if std::fs::create_dir_all(run).is_ok() && writable(run) {
        return run.join("accel");
    }
    // Not root: a per-user file (the boot id in it still keys the verdict).
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    std::env::temp_dir().join(format!("keel-qemu-accel-{uid}"))
}

fn writable(dir: &Path) -> bool {
    tempfile::tempfile_in(dir).is_ok()
}

/// This boot of the machine and this QEMU binary: a new boot or a QEMU upgrade probes again.
fn machine_key() -> String {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    let qemu = which(QEMU_SYSTEM)
        .and_then(|path| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(&path).ok()?;
            Some(format!(
                "{} size={} mtime={}",
                path.display(),
                m.size(),
                m.mtime()
            ))
        })
        .unwrap_or_else(|| QEMU_SYSTEM.to_string());
    format!("boot_id={boot_id}\nqemu={qemu}\n")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

/// Parses a cache file written for `key`; anything else (another boot, damaged) is no verdict.
fn parse(text: &str, key: &str) -> Option<Verdict> {
    let rest = text.strip_prefix(key)?;
    let mut accel = None;
    let mut reason = None;
    for line in rest.lines() {
        match line.split_once('=') {
            Some(("accel", "kvm")) => accel = Some(ResolvedAccel::Kvm),
            Some(("accel", "tcg")) => accel = Some(ResolvedAccel::Tcg),
            Some(("reason", r)) => reason = Some(r.to_string()),
            _ => {}
        }
    }
    match accel? {
        ResolvedAccel::Kvm => Some(Verdict {
            accel: ResolvedAccel::Kvm,
            tcg_reason: None,
        }),
        ResolvedAccel::Tcg => Some(Verdict {
            accel: ResolvedAccel::Tcg,
            tcg_reason: Some(reason.unwrap_or_else(|| "recorded earlier".into())),
        }),
    }
}

fn render(key: &str, verdict: &Verdict) -> String {
    let mut text = key.to_string();
    match verdict.accel {
        ResolvedAccel::Kvm => text.push_str("accel=kvm\n"),
        ResolvedAccel::Tcg => {
            text.push_str("accel=tcg\n");
            let reason = verdict.tcg_reason.as_deref().unwrap_or("");
            text.push_str(&format!("reason={}\n", reason.replace('\n', " ")));
        }
    }
    text
}

fn read(path: &Path, key: &str) -> Option<Verdict> {
    parse(&std::fs::read_to_string(path).ok()?, key)
}

/// Writes atomically (temp file + rename); a cache that cannot be written only costs probes.
fn write(path: &Path, key: &str, verdict: &Verdict) {
    let dir = path.parent().unwrap_or(Path::new("."));
    let result = tempfile::NamedTempFile::new_in(dir).and_then(|mut file| {
        file.write_all(render(key, verdict).as_bytes())?;
        file.persist(path).map(|_| ()).map_err(|e| e.error)
    });
    if let Err(e) = result {
        eprintln!(
            "keel-qemu: cannot save the accelerator verdict in {}: {e}",
            path.display()
        );
    }
}

/// An exclusive lock on `PATH.lock`, held until dropped; `None` when it cannot be had.
fn lock(path: &Path) -> Option<File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(name))
        .ok()?;
    file.lock().ok()?;
    Some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_reads_back_only_for_its_boot_and_qemu() {
        let key = "boot_id=abc\nqemu=/usr/bin/qemu size=1 mtime=2\n";
        let tcg = Verdict {
            accel: ResolvedAccel::Tcg,
            tcg_reason: Some("OVMF under KVM: KVM internal error.\nSuberror: 1".into()),
        };
        let text = render(key, &tcg);
        assert_eq!(
            parse(&text, key).unwrap().tcg_reason.as_deref(),
            Some("OVMF under KVM: KVM internal error. Suberror: 1")
        );
        assert_eq!(parse(&text, "boot_id=other\nqemu=x\n"), None);
        let kvm = Verdict {
            accel: ResolvedAccel::Kvm,
            tcg_reason: None,
        };
        assert_eq!(parse(&render(key, &kvm), key), Some(kvm));
        assert_eq!(parse("garbage", key), None);
        assert_eq!(parse(key, key), None);
    }
}
