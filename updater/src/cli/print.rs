//! `keel-update`'s human-readable output.

use crate::agent::check::CheckReport;
use crate::lifecycle::{SlotChange, SlotStatus, Status};

pub(super) fn print_change(what: &str, c: &SlotChange) {
    if !c.changed {
        println!(
            "{} unchanged ({}); {}: {}",
            c.running, c.running_after, c.other, c.other_after
        );
        return;
    }
    println!(
        "{what}: {} {} -> {}; {} {} -> {}",
        c.running, c.running_before, c.running_after, c.other, c.other_before, c.other_after
    );
}

fn slot_line(s: &SlotStatus) -> String {
    let version = s.version.as_deref().unwrap_or("(none)");
    let check = match &s.problem {
        None => "verified".to_string(),
        Some(p) => format!("NOT verified: {p}"),
    };
    format!(
        "{} (partition {}) version {version} [{check}]; {}",
        s.label, s.partition, s.attrs
    )
}

pub(super) fn print_status(s: &Status) {
    println!("Disk:      {}", s.disk);
    println!("Running:   {}", slot_line(&s.running));
    println!("Passive:   {}", slot_line(&s.passive));
    println!(
        "Next boot: {}{}",
        s.next_boot.as_deref().unwrap_or("none (no bootable slot)"),
        if s.reboot_pending {
            " (reboot pending)"
        } else {
            ""
        }
    );
    if let Some(v) = &s.verdict_message {
        println!("Update:    {v}");
    }
    println!("Status:    {}", s.update_status);
    if let Some(l) = &s.last {
        println!(
            "Last:      {} {} (at {}): {}",
            l.action, l.result, l.time, l.message
        );
    }
    if !s.failed_versions.is_empty() {
        println!(
            "Failed here (not applied again): {}",
            s.failed_versions.join(", ")
        );
    }
    if s.pending_events > 0 {
        println!("Events waiting for the server: {}", s.pending_events);
    }
    if !s.history.is_empty() {
        println!("History:");
        for a in &s.history {
            println!(
                "  {} {} -> {}: {} ({})",
                a.time, a.from_version, a.version, a.result, a.message
            );
        }
    }
}

pub(super) fn print_check(r: &CheckReport) {
    println!("{}", r.message);
    if !r.events_sent.is_empty() {
        println!("Events sent: {}", r.events_sent.join(", "));
    }
    if r.events_queued > 0 {
        println!("Events queued for the next check: {}", r.events_queued);
    }
    println!("Status: {}", r.status);
}
