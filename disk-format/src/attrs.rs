//! The ChromeOS / CoreOS "gptprio" attribute bits of a USR partition and the transitions that
//! the builder, keel-init and the updater apply to them.
//!
//! | bits  | field      |
//! |-------|------------|
//! | 48–51 | priority (0 = never boot) |
//! | 52–55 | tries left |
//! | 56    | successful |

use serde::Serialize;

const PRIORITY_SHIFT: u32 = 48;
const TRIES_SHIFT: u32 = 52;
const SUCCESSFUL_BIT: u32 = 56;
const FIELD_MASK: u64 = 0x1ff << PRIORITY_SHIFT;

pub const MAX_PRIORITY: u8 = 15;
pub const MAX_TRIES: u8 = 15;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SlotAttrs {
    pub priority: u8,
    pub tries: u8,
    pub successful: bool,
}

impl SlotAttrs {
    pub const fn new(priority: u8, tries: u8, successful: bool) -> Self {
        SlotAttrs {
            priority,
            tries,
            successful,
        }
    }

    pub fn from_bits(bits: u64) -> Self {
        SlotAttrs {
            priority: ((bits >> PRIORITY_SHIFT) & 0xf) as u8,
            tries: ((bits >> TRIES_SHIFT) & 0xf) as u8,
            successful: (bits >> SUCCESSFUL_BIT) & 1 == 1,
        }
    }

    /// `bits` with this slot's fields replaced and every other attribute bit kept.
    pub fn apply_to(self, bits: u64) -> u64 {
        (bits & !FIELD_MASK)
            | (u64::from(self.priority.min(MAX_PRIORITY)) << PRIORITY_SHIFT)
            | (u64::from(self.tries.min(MAX_TRIES)) << TRIES_SHIFT)
            | (u64::from(self.successful) << SUCCESSFUL_BIT)
    }

    /// May this slot be chosen at all? Priority 0 never boots; otherwise it needs tries left or
    /// a successful boot behind it.
    pub fn bootable(self) -> bool {
        self.priority > 0 && (self.tries > 0 || self.successful)
    }
}

impl std::fmt::Display for SlotAttrs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "priority {}, tries {}, {}",
            self.priority,
            self.tries,
            if self.successful {
                "successful"
            } else {
                "not successful"
            }
        )
    }
}

/// A USR slot as seen by the selection rule: its partition number and attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub number: u32,
    pub attrs: SlotAttrs,
}

/// GRUB's `gptprio.next` rule: among bootable slots the highest priority wins; a tie goes to
/// the lower partition number.
pub fn choose(candidates: &[Candidate]) -> Option<Candidate> {
    let mut best: Option<Candidate> = None;
    for c in candidates.iter().filter(|c| c.attrs.bootable()) {
        let better = match best {
            None => true,
            Some(b) => {
                c.attrs.priority > b.attrs.priority
                    || (c.attrs.priority == b.attrs.priority && c.number < b.number)
            }
        };
        if better {
            best = Some(*c);
        }
    }
    best
}

/// Starting a boot of `slot`: a slot on trial spends one try, and that must be persisted before
/// the boot goes on, so a slot that keeps failing runs out.
pub fn start_boot(slot: SlotAttrs) -> SlotAttrs {
    if slot.successful || slot.tries == 0 {
        slot
    } else {
        SlotAttrs {
            tries: slot.tries - 1,
            ..slot
        }
    }
}

/// A slot that failed verification or its health gate: no tries left, not successful. Its
/// priority is kept so that `status` can still show where it stood.
pub fn mark_failed(slot: SlotAttrs) -> SlotAttrs {
    SlotAttrs {
        tries: 0,
        successful: false,
        ..slot
    }
}

/// Before the passive slot is overwritten it must not be bootable.
pub fn invalidate() -> SlotAttrs {
    SlotAttrs::new(0, 0, false)
}

/// A freshly written slot becomes the next boot: above the running one, on trial.
/// Returns the new (running, staged) pair.
pub fn stage(running: SlotAttrs, tries: u8) -> (SlotAttrs, SlotAttrs) {
    let (running, top) = make_room_above(running);
    (
        running,
        SlotAttrs::new(top, tries.clamp(1, MAX_TRIES), false),
    )
}

/// The running slot passed its health gate: it is successful and ranks above the other.
/// Returns the new (running, other) pair.
pub fn mark_good(running: SlotAttrs, other: SlotAttrs) -> (SlotAttrs, SlotAttrs) {
    let mut running = SlotAttrs {
        tries: 0,
        successful: true,
        ..running
    };
    let mut other = other;
    if other.priority >= running.priority {
        if running.priority < MAX_PRIORITY {
            running.priority = other.priority + 1;
        } else {
            other.priority = running.priority - 1;
        }
    }
    if running.priority == 0 {
        running.priority = 1;
    }
    (running, other)
}

/// Make `other` (which must hold a successful system) the next boot instead of the running one.
/// Returns the new (running, other) pair, or `None` when `other` is not a system to go back to.
pub fn rollback(running: SlotAttrs, other: SlotAttrs) -> Option<(SlotAttrs, SlotAttrs)> {
    if !other.successful {
        return None;
    }
    let (running, top) = make_room_above(running);
    Some((
        running,
        SlotAttrs {
            priority: top,
            ..other
        },
    ))
}

/// The priority just above `running`, lowering `running` by one if it already sits at the top.
fn make_room_above(running: SlotAttrs) -> (SlotAttrs, u8) {
    if running.priority >= MAX_PRIORITY {
        (
            SlotAttrs {
                priority: MAX_PRIORITY - 1,
                ..running
            },
            MAX_PRIORITY,
        )
    } else {
        (running, running.priority + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(number: u32, p: u8, t: u8, s: bool) -> Candidate {
        Candidate {
            number,
            attrs: SlotAttrs::new(p, t, s),
        }
    }

    #[test]
    fn bits_round_trip_and_keep_other_bits() {
        let a = SlotAttrs::new(1, 0, true);
        assert_eq!(a.apply_to(0), 0x0101_0000_0000_0000);
        let b = SlotAttrs::new(2, 1, false);
        assert_eq!(b.apply_to(0), 0x0012_0000_0000_0000);
        let other = (1u64 << 60) | 1;
        let bits = b.apply_to(other | a.apply_to(0));
        assert_eq!(bits & other, other);
        assert_eq!(SlotAttrs::from_bits(bits), b);
        for p in 0..16 {
            for t in 0..16 {
                for s in [false, true] {
                    let x = SlotAttrs::new(p, t, s);
                    assert_eq!(SlotAttrs::from_bits(x.apply_to(u64::MAX)), x);
                }
            }
        }
    }

    /// Every combination of two slots' attributes against the rule written out longhand.
    #[test]
    fn choose_matches_rule_for_all_combinations() {
        let values: Vec<SlotAttrs> = (0..4u8)
            .flat_map(|p| {
                (0..3u8).flat_map(move |t| [false, true].map(|s| SlotAttrs::new(p, t, s)))
            })
            .collect();
        for a in &values {
            for b in &values {
                let got = choose(&[
                    Candidate {
                        number: 3,
                        attrs: *a,
                    },
                    Candidate {
                        number: 4,
                        attrs: *b,
                    },
                ])
                .map(|c| c.number);
                let ok = |x: &SlotAttrs| x.priority > 0 && (x.tries > 0 || x.successful);
                let want = match (ok(a), ok(b)) {
                    (false, false) => None,
                    (true, false) => Some(3),
                    (false, true) => Some(4),
                    (true, true) if b.priority > a.priority => Some(4),
                    (true, true) => Some(3),
                };
                assert_eq!(got, want, "A={a:?} B={b:?}");
            }
        }
    }

    #[test]
    fn choose_cases() {
        // Fresh image: A successful, B empty.
        assert_eq!(
            choose(&[cand(3, 1, 0, true), cand(4, 0, 0, false)])
                .unwrap()
                .number,
            3
        );
        // Staged update on B wins while it has tries.
        assert_eq!(
            choose(&[cand(3, 1, 0, true), cand(4, 2, 1, false)])
                .unwrap()
                .number,
            4
        );
        // B out of tries and never successful: back to A.
        assert_eq!(
            choose(&[cand(3, 1, 0, true), cand(4, 2, 0, false)])
                .unwrap()
                .number,
            3
        );
        // Priority 0 never boots, even when successful.
        assert_eq!(choose(&[cand(3, 0, 0, true), cand(4, 0, 5, true)]), None);
        // Ties go to the lower partition number.
        assert_eq!(
            choose(&[cand(4, 2, 0, true), cand(3, 2, 0, true)])
                .unwrap()
                .number,
            3
        );
    }

    /// The whole lifecycle as a table: each row is (step, A before, B before, A after, B after).
    #[test]
    fn lifecycle_table() {
        let s = SlotAttrs::new;
        type Step = fn(SlotAttrs, SlotAttrs) -> (SlotAttrs, SlotAttrs);
        let rows: Vec<(&str, Step, SlotAttrs, SlotAttrs, SlotAttrs, SlotAttrs)> = vec![
            (
                "invalidate B before writing",
                |a, _| (a, invalidate()),
                s(1, 0, true),
                s(1, 0, true),
                s(1, 0, true),
                s(0, 0, false),
            ),
            (
                "stage update on B",
                |a, _| stage(a, 1),
                s(1, 0, true),
                s(0, 0, false),
                s(1, 0, true),
                s(2, 1, false),
            ),
            (
                "first boot of B spends a try",
                |a, b| (a, start_boot(b)),
                s(1, 0, true),
                s(2, 1, false),
                s(1, 0, true),
                s(2, 0, false),
            ),
            (
                "B passes its health gate",
                |a, b| {
                    let (b, a) = mark_good(b, a);
                    (a, b)
                },
                s(1, 0, true),
                s(2, 0, false),
                s(1, 0, true),
                s(2, 0, true),
            ),
            (
                "B fails its health gate",
                |a, b| (a, mark_failed(b)),
                s(1, 0, true),
                s(2, 0, false),
                s(1, 0, true),
                s(2, 0, false),
            ),
            (
                "A boots again after B failed",
                |a, b| (start_boot(a), b),
                s(1, 0, true),
                s(2, 0, false),
                s(1, 0, true),
                s(2, 0, false),
            ),
            (
                "A re-marked good after a rollback",
                |a, b| mark_good(a, b),
                s(1, 0, true),
                s(2, 0, false),
                s(3, 0, true),
                s(2, 0, false),
            ),
            (
                "manual rollback from B to A",
                |a, b| {
                    let (b, a) = rollback(b, a).unwrap();
                    (a, b)
                },
                s(1, 0, true),
                s(2, 0, true),
                s(3, 0, true),
                s(2, 0, true),
            ),
            (
                "stage at the priority ceiling",
                |a, _| stage(a, 1),
                s(15, 0, true),
                s(0, 0, false),
                s(14, 0, true),
                s(15, 1, false),
            ),
        ];
        for (name, step, a, b, want_a, want_b) in rows {
            let (got_a, got_b) = step(a, b);
            assert_eq!((got_a, got_b), (want_a, want_b), "{name}");
        }
        // After each row the slot the next boot picks is the one the step intends.
        assert!(rollback(s(2, 0, true), s(1, 0, false)).is_none());
    }

    #[test]
    fn start_boot_keeps_successful_slots() {
        assert_eq!(
            start_boot(SlotAttrs::new(1, 0, true)),
            SlotAttrs::new(1, 0, true)
        );
        assert_eq!(
            start_boot(SlotAttrs::new(2, 3, false)),
            SlotAttrs::new(2, 2, false)
        );
        assert_eq!(
            start_boot(SlotAttrs::new(2, 0, false)),
            SlotAttrs::new(2, 0, false)
        );
    }
}
