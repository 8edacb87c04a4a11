//! Choosing the accelerator. `/dev/kvm` existing (or even opening) does not mean QEMU can run
//! a guest with it: nested KVM in some sandboxes opens fine and then aborts on the first vCPU
//! set-up, or runs a tiny guest and then fails on real firmware (`KVM internal error`) or
//! stops in the kernel's early boot. So `Auto` trusts KVM only after probes
//! ([`crate::accel_probe`]), remembers the verdict for the machine's boot
//! ([`crate::accel_cache`]), and a KVM boot that fails anyway is restarted under TCG by the
//! session ([`crate::kvm_watch`]).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::accel_cache;
use crate::accel_probe;
use crate::error::StartError;
use crate::options::{Accel, ResolvedAccel, ACCEL_ENV};

/// What a session starts with: the accelerator, and whether it was `Auto`'s choice of KVM
/// (then a KVM failure restarts the boot under TCG; an explicit KVM is never replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccelChoice {
    pub accel: ResolvedAccel,
    pub fallback_allowed: bool,
}

/// Parses `KEEL_QEMU_ACCEL`'s value.
pub fn parse_accel(value: &str) -> Option<Accel> {
    match value.trim().to_ascii_lowercase().as_str() {
        "auto" | "" => Some(Accel::Auto),
        "kvm" => Some(Accel::Kvm),
        "tcg" => Some(Accel::Tcg),
        _ => None,
    }
}

/// `Auto` as `KEEL_QEMU_ACCEL` says (unset: `Auto`); an explicit choice stays.
pub fn apply_env(accel: Accel) -> Result<Accel, StartError> {
    if accel != Accel::Auto {
        return Ok(accel);
    }
    match std::env::var(ACCEL_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(Accel::Auto),
        Err(std::env::VarError::NotUnicode(value)) => Err(StartError::BadAccelEnv {
            value: value.to_string_lossy().into_owned(),
        }),
        Ok(value) => parse_accel(&value).ok_or(StartError::BadAccelEnv { value }),
    }
}

pub fn resolve(accel: Accel) -> Result<AccelChoice, StartError> {
    let fixed = |accel| AccelChoice {
        accel,
        fallback_allowed: false,
    };
    Ok(match apply_env(accel)? {
        Accel::Kvm => fixed(ResolvedAccel::Kvm),
        Accel::Tcg => fixed(ResolvedAccel::Tcg),
        Accel::Auto => {
            let verdict = accel_cache::verdict_or_probe(accel_probe::probe_kvm);
            if let Some(reason) = &verdict.tcg_reason {
                announce_tcg(reason);
            }
            AccelChoice {
                accel: verdict.accel,
                fallback_allowed: verdict.accel == ResolvedAccel::Kvm,
            }
        }
    })
}

/// Records, for every later `Auto` boot on this machine until it reboots, that KVM failed.
pub fn convict_kvm(reason: &str) {
    accel_cache::record_tcg(reason);
}

/// Tells the user once per process why a boot runs under TCG (slow) although KVM exists.
pub fn announce_tcg(reason: &str) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        eprintln!(
            "keel-qemu: KVM cannot run this machine's guests, using TCG (software emulation, \
             slower): {reason} (set {ACCEL_ENV}=kvm|tcg to choose)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_parse_case_insensitively() {
        assert_eq!(parse_accel("tcg"), Some(Accel::Tcg));
        assert_eq!(parse_accel("KVM"), Some(Accel::Kvm));
        assert_eq!(parse_accel(" auto "), Some(Accel::Auto));
        assert_eq!(parse_accel("kvm,tcg"), None);
        assert_eq!(parse_accel("hvf"), None);
    }

    #[test]
    fn an_explicit_choice_ignores_the_environment() {
        assert_eq!(apply_env(Accel::Tcg).unwrap(), Accel::Tcg);
        assert_eq!(apply_env(Accel::Kvm).unwrap(), Accel::Kvm);
    }
}
