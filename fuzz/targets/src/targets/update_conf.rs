//! update.conf (the layered KEY=VALUE files) and the reboot window read from it, with Go
//! durations; a window that parses answers every question about a few instants.

use std::path::Path;

use keel_coordination::{GoDuration, LocalTime, Window};
use keel_format::update_conf::UpdateConf;

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut conf = UpdateConf::default();
    if conf
        .merge(Path::new("/etc/flatcar/update.conf"), &text)
        .is_ok()
    {
        let _ = conf.first_of(&["GROUP", "SERVER"]);
        if let Ok(Some(w)) = Window::from_vars(|k| conf.get(k).map(str::to_string)) {
            for t in [0, 1_700_000_000, i64::from(u32::MAX)] {
                let now = LocalTime::utc(t);
                let _ = (
                    w.duration_to_start(now),
                    w.in_window(now),
                    w.next_window(now),
                );
            }
        }
    }
    let mut parts = text.splitn(2, '\n');
    let (start, length) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Ok(w) = Window::parse(start, length) {
        let now = LocalTime::utc(1_700_000_000);
        let _ = (w.in_window(now), w.next_window(now));
    }
    let _ = GoDuration::parse(start);
}
