//! The whole slot lifecycle on a real disk image, through the library: build, apply, first
//! boot, mark-good, a failed update and its fallback, rollback. keel-init's part (pick a slot,
//! spend a try) is done here the way keel-init does it, with keel_format::attrs.

mod common;

use common::*;
use keel_cli_support::exit;
use keel_format::attrs::{self, Candidate, SlotAttrs};
use keel_format::layout::{USR_A_GUID, USR_B_GUID};
use keel_update::lifecycle::{self, Verdict};
use keel_update::progress::Silent;
use keel_update::slots::RunningSlot;
use keel_update::state::{StagedUpdate, UpdateState};
use keel_update::{apply, ApplyOptions, PayloadSource, Target};
use uuid::Uuid;

/// What keel-init does at boot: choose a slot by the gptprio rule and spend a try on a slot that
/// is on trial. Returns the booted slot's GUID.
fn boot(w: &World) -> Uuid {
    let t = table(&w.disk);
    let slots = t.usr_slots();
    let cands: Vec<Candidate> = slots
        .iter()
        .map(|p| Candidate {
            number: p.number,
            attrs: p.slot_attrs(),
        })
        .collect();
    let chosen = attrs::choose(&cands).expect("a bootable slot");
    set_attrs(&w.disk, chosen.number, attrs::start_boot(chosen.attrs));
    slots
        .iter()
        .find(|p| p.number == chosen.number)
        .unwrap()
        .unique_guid
}

fn running(w: &World, guid: Uuid) -> Target {
    Target {
        running: RunningSlot::Mounted(guid),
        ..Target::offline(&w.disk)
    }
}

fn apply_version(w: &World, target: &Target, version: &str) -> StagedUpdate {
    let usr = build_usr(version, "qemu-x86_64", &key(), 1 << 20);
    let payload = w.write_payload(&format!("{version}.img"), &usr.payload());
    let a = apply(
        PayloadSource::File(payload),
        target,
        &ApplyOptions::new(vec![key().public()]),
        &Silent,
    )
    .unwrap();
    StagedUpdate {
        version: a.version,
        previous_version: a.previous_version,
        slot: a.slot,
        slot_guid: a.slot_guid,
        time: 0,
    }
}

fn expect(w: &World, step: &str, a: SlotAttrs, b: SlotAttrs) {
    assert_eq!(
        (attrs(&w.disk, 3), attrs(&w.disk, 4)),
        (a, b),
        "after: {step}"
    );
}

#[test]
fn lifecycle_table() {
    let s = SlotAttrs::new;
    let keys = vec![key().public()];
    let w = world();
    let mut state = UpdateState::default();

    // Built: A 1/0/successful, B empty.
    expect(&w, "build", s(1, 0, true), s(0, 0, false));
    assert_eq!(boot(&w), USR_A_GUID);
    let st = lifecycle::status(&running(&w, USR_A_GUID), &keys, &state).unwrap();
    assert_eq!(st.running.version.as_deref(), Some("1.0.0"));
    assert!(st.running.verified);
    assert!(!st.passive.verified && st.passive.version.is_none());
    assert!(!st.reboot_pending);

    // Apply 2.0.0 while A runs: B staged above A with one try.
    state.staged = Some(apply_version(&w, &running(&w, USR_A_GUID), "2.0.0"));
    expect(&w, "apply 2.0.0", s(1, 0, true), s(2, 1, false));
    let st = lifecycle::status(&running(&w, USR_A_GUID), &keys, &state).unwrap();
    assert!(st.reboot_pending);
    assert_eq!(st.next_boot.as_deref(), Some("USR-B"));
    assert_eq!(st.passive.version.as_deref(), Some("2.0.0"));
    assert!(matches!(st.verdict, Some(Verdict::RebootPending { .. })));

    // First boot of B spends its try.
    assert_eq!(boot(&w), USR_B_GUID);
    expect(&w, "first boot of B", s(1, 0, true), s(2, 0, false));
    let on_b = running(&w, USR_B_GUID);
    let st = lifecycle::status(&on_b, &keys, &state).unwrap();
    assert!(matches!(st.verdict, Some(Verdict::OnTrial { .. })));

    // B passes its health gate.
    let change = lifecycle::mark_good(&on_b).unwrap();
    assert!(change.changed);
    expect(&w, "mark-good on B", s(1, 0, true), s(2, 0, true));
    let v = lifecycle::record_mark_good(&on_b, &mut state, &change).unwrap();
    assert!(matches!(v, Some(Verdict::Good { .. })), "{v:?}");
    assert!(state.staged.is_none());
    assert_eq!(state.last.as_ref().unwrap().result, "good");
    // Marking again changes nothing.
    assert!(!lifecycle::mark_good(&on_b).unwrap().changed);
    assert_eq!(boot(&w), USR_B_GUID);

    // Apply 3.0.0 while B runs: it goes to A.
    state.staged = Some(apply_version(&w, &on_b, "3.0.0"));
    assert_eq!(state.staged.as_ref().unwrap().slot, "USR-A");
    expect(&w, "apply 3.0.0", s(3, 1, false), s(2, 0, true));

    // A boots, never reaches its health gate; the next boot falls back to B.
    assert_eq!(boot(&w), USR_A_GUID);
    expect(&w, "trial boot of A", s(3, 0, false), s(2, 0, true));
    assert_eq!(boot(&w), USR_B_GUID, "no tries left: back to B");
    let st = lifecycle::status(&on_b, &keys, &state).unwrap();
    assert_eq!(
        st.verdict,
        Some(Verdict::Failed {
            version: "3.0.0".into(),
            slot: "USR-A".into()
        })
    );
    assert!(st
        .verdict_message
        .unwrap()
        .starts_with("version 3.0.0 failed"));
    assert!(!st.reboot_pending);

    // B is marked good again (it ranks above the failed A now) and the failure is recorded.
    let change = lifecycle::mark_good(&on_b).unwrap();
    expect(
        &w,
        "mark-good on B after the fallback",
        s(3, 0, false),
        s(4, 0, true),
    );
    lifecycle::record_mark_good(&on_b, &mut state, &change).unwrap();
    assert_eq!(state.last.as_ref().unwrap().result, "update-failed");
    assert!(state
        .last
        .as_ref()
        .unwrap()
        .message
        .contains("version 3.0.0 failed"));

    // Rolling back to the failed A is refused: it was never marked good.
    let before = std::fs::read(&w.disk).unwrap();
    let err = lifecycle::rollback(&on_b, &keys).unwrap_err();
    assert_eq!(err.exit_code(), exit::REFUSED);
    assert!(err.to_string().contains("never been marked good"), "{err}");
    assert!(std::fs::read(&w.disk).unwrap() == before);

    // 4.0.0 on A, booted and marked good: now both slots are good.
    state.staged = Some(apply_version(&w, &on_b, "4.0.0"));
    expect(&w, "apply 4.0.0", s(5, 1, false), s(4, 0, true));
    assert_eq!(boot(&w), USR_A_GUID);
    let on_a = running(&w, USR_A_GUID);
    lifecycle::mark_good(&on_a).unwrap();
    expect(&w, "mark-good on A", s(5, 0, true), s(4, 0, true));

    // Manual rollback from A to B.
    let change = lifecycle::rollback(&on_a, &keys).unwrap();
    assert_eq!(change.other, "USR-B");
    expect(&w, "rollback to B", s(5, 0, true), s(6, 0, true));
    assert_eq!(boot(&w), USR_B_GUID);

    // A rollback target whose metadata does not verify is refused.
    let a = table(&w.disk).partition(3).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&w.disk)
        .unwrap();
    write_at(&mut f, a.offset() + a.size() - 4096 + 100, b"tampered");
    let before = std::fs::read(&w.disk).unwrap();
    let err = lifecycle::rollback(&on_b, &keys).unwrap_err();
    assert!(err.to_string().contains("does not verify"), "{err}");
    assert!(std::fs::read(&w.disk).unwrap() == before);
    let st = lifecycle::status(&on_b, &keys, &state).unwrap();
    assert!(!st.passive.verified);
}

/// Staging at the priority ceiling keeps the staged slot above the running one.
#[test]
fn stage_at_the_priority_ceiling() {
    let w = world();
    set_attrs(&w.disk, 3, SlotAttrs::new(15, 0, true));
    apply_version(&w, &Target::offline(&w.disk), "2.0.0");
    assert_eq!(attrs(&w.disk, 3), SlotAttrs::new(14, 0, true));
    assert_eq!(attrs(&w.disk, 4), SlotAttrs::new(15, 1, false));
}
