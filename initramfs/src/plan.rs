//! The decisions of a boot, free of I/O so that they can be tested on the host: which slot to
//! try next, whether that costs a try, whether to read the whole slot, whether to kexec.

use keel_format::attrs::{self, Candidate, SlotAttrs};

use crate::cmdline::VerifyPolicy;

/// One attempt at booting a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub number: u32,
    /// The attributes as they were when the slot was chosen (what the "booting" line shows).
    pub chosen: SlotAttrs,
    /// Attributes to persist before going on (a try spent), if they change.
    pub spend: Option<SlotAttrs>,
    /// Named by `keel.slot=`: no selection, no try spent.
    pub forced: bool,
}

/// The next slot to try. `forced` is `keel.slot=`, honoured once; `tried` holds the slots that
/// already failed in this boot. Otherwise the gptprio rule picks among the untried slots, and a
/// slot on trial spends a try.
pub fn next_attempt(slots: &[Candidate], forced: Option<u32>, tried: &[u32]) -> Option<Attempt> {
    if let Some(n) = forced.filter(|n| !tried.contains(n)) {
        if let Some(c) = slots.iter().find(|c| c.number == n) {
            return Some(Attempt {
                number: n,
                chosen: c.attrs,
                spend: None,
                forced: true,
            });
        }
    }
    let untried: Vec<Candidate> = slots
        .iter()
        .copied()
        .filter(|c| !tried.contains(&c.number))
        .collect();
    let c = attrs::choose(&untried)?;
    let after = attrs::start_boot(c.attrs);
    Some(Attempt {
        number: c.number,
        chosen: c.attrs,
        spend: (after != c.attrs).then_some(after),
        forced: false,
    })
}

/// Read the whole data area through dm-verity before handing off?
pub fn full_read(policy: VerifyPolicy, chosen: SlotAttrs) -> bool {
    match policy {
        VerifyPolicy::Full => true,
        VerifyPolicy::First => !chosen.successful,
        VerifyPolicy::None => false,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KexecPlan {
    /// The slot's kernel is the running one.
    NotNeeded,
    /// Load the slot's kernel and kexec into it.
    Load,
    /// `keel.kexec=0`: boot on with the running kernel.
    Disabled,
    /// This kernel was kexec'd for this very slot (`keel.slot=` names it) and still does not
    /// match the metadata: kexecing again would loop.
    SecondStage,
}

/// The kernel a slot carries and the one that is running, as (`uname -r`, `uname -v`).
pub fn kexec_plan(
    slot_kernel: (&str, &str),
    running: (&str, &str),
    kexec_enabled: bool,
    attempt: &Attempt,
) -> KexecPlan {
    if slot_kernel == running {
        KexecPlan::NotNeeded
    } else if !kexec_enabled {
        KexecPlan::Disabled
    } else if attempt.forced {
        KexecPlan::SecondStage
    } else {
        KexecPlan::Load
    }
}

/// The whole-slot read belongs to the stage that hands off: skip it in a stage that kexecs.
pub fn full_read_now(policy: VerifyPolicy, attempt: &Attempt, kexec: &KexecPlan) -> bool {
    full_read(policy, attempt.chosen) && *kexec != KexecPlan::Load
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(a: SlotAttrs, b: SlotAttrs) -> Vec<Candidate> {
        vec![
            Candidate {
                number: 3,
                attrs: a,
            },
            Candidate {
                number: 4,
                attrs: b,
            },
        ]
    }
    const S: fn(u8, u8, bool) -> SlotAttrs = SlotAttrs::new;

    #[test]
    fn fresh_image_boots_a_without_spending() {
        let got = next_attempt(&slots(S(1, 0, true), S(0, 0, false)), None, &[]).unwrap();
        assert_eq!(
            got,
            Attempt {
                number: 3,
                chosen: S(1, 0, true),
                spend: None,
                forced: false
            }
        );
        // A is the only candidate; once it failed there is nothing left.
        assert_eq!(
            next_attempt(&slots(S(1, 0, true), S(0, 0, false)), None, &[3]),
            None
        );
    }

    #[test]
    fn staged_update_spends_a_try_then_falls_back() {
        let s = slots(S(1, 0, true), S(2, 1, false));
        let first = next_attempt(&s, None, &[]).unwrap();
        assert_eq!(first.number, 4);
        assert_eq!(first.chosen, S(2, 1, false));
        assert_eq!(first.spend, Some(S(2, 0, false)));
        // B failed verification: it gets marked failed and A is next, with no try to spend.
        let marked = slots(S(1, 0, true), attrs::mark_failed(S(2, 0, false)));
        let second = next_attempt(&marked, None, &[4]).unwrap();
        assert_eq!(second.number, 3);
        assert_eq!(second.spend, None);
        // Even if marking B failed could not be written, B is not tried twice.
        let second = next_attempt(&s, None, &[4]).unwrap();
        assert_eq!(second.number, 3);
    }

    #[test]
    fn out_of_tries_is_skipped() {
        let got = next_attempt(&slots(S(1, 0, true), S(2, 0, false)), None, &[]).unwrap();
        assert_eq!(got.number, 3);
    }

    #[test]
    fn nothing_bootable() {
        assert_eq!(
            next_attempt(&slots(S(0, 0, true), S(1, 0, false)), None, &[]),
            None
        );
        assert_eq!(next_attempt(&[], None, &[]), None);
    }

    #[test]
    fn forced_slot_is_used_once_as_is() {
        let s = slots(S(1, 0, true), S(2, 0, false));
        let got = next_attempt(&s, Some(4), &[]).unwrap();
        assert_eq!(
            got,
            Attempt {
                number: 4,
                chosen: S(2, 0, false),
                spend: None,
                forced: true
            }
        );
        // Forcing even overrides priority 0 (an explicit request).
        let got = next_attempt(&slots(S(1, 0, true), S(0, 0, false)), Some(4), &[]).unwrap();
        assert_eq!(got.number, 4);
        // After it failed, normal selection takes over.
        let got = next_attempt(&s, Some(4), &[4]).unwrap();
        assert_eq!((got.number, got.forced), (3, false));
        // A forced slot missing from the table: normal selection.
        let got = next_attempt(&s[..1], Some(4), &[]).unwrap();
        assert_eq!((got.number, got.forced), (3, false));
    }

    #[test]
    fn full_read_policy() {
        assert!(full_read(VerifyPolicy::Full, S(1, 0, true)));
        assert!(!full_read(VerifyPolicy::First, S(1, 0, true)));
        assert!(full_read(VerifyPolicy::First, S(2, 1, false)));
        assert!(!full_read(VerifyPolicy::None, S(2, 1, false)));
    }

    #[test]
    fn kexec_decisions() {
        let fresh = Attempt {
            number: 4,
            chosen: S(2, 1, false),
            spend: Some(S(2, 0, false)),
            forced: false,
        };
        let second = Attempt {
            forced: true,
            spend: None,
            chosen: S(2, 0, false),
            ..fresh
        };
        let old = ("6.1.0-1", "#1 SMP 2024");
        let new = ("6.1.0-2", "#1 SMP 2025");
        let rebuilt = ("6.1.0-1", "#2 SMP 2025");
        assert_eq!(kexec_plan(old, old, true, &fresh), KexecPlan::NotNeeded);
        assert_eq!(kexec_plan(new, old, true, &fresh), KexecPlan::Load);
        assert_eq!(kexec_plan(rebuilt, old, true, &fresh), KexecPlan::Load);
        assert_eq!(kexec_plan(new, old, false, &fresh), KexecPlan::Disabled);
        assert_eq!(kexec_plan(new, old, true, &second), KexecPlan::SecondStage);
        assert_eq!(kexec_plan(new, new, true, &second), KexecPlan::NotNeeded);

        // The trial read happens after the kexec, once.
        assert!(!full_read_now(
            VerifyPolicy::First,
            &fresh,
            &KexecPlan::Load
        ));
        assert!(full_read_now(
            VerifyPolicy::First,
            &second,
            &KexecPlan::NotNeeded
        ));
        assert!(full_read_now(
            VerifyPolicy::First,
            &fresh,
            &KexecPlan::Disabled
        ));
    }
}
