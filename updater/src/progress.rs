//! Progress reporting: a bar on a terminal (indicatif), step lines otherwise, or nothing.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives the steps of a long operation. `set` may be called from another thread.
pub trait Progress: Sync {
    /// A new step; `total` bytes will be processed (0 for a step without a byte count).
    fn phase(&self, name: &str, total: u64);
    /// Bytes done so far in the current step.
    fn set(&self, done: u64);
    /// The current step is complete.
    fn finish(&self);
}

/// Reports nothing (library callers, tests).
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _: &str, _: u64) {}
    fn set(&self, _: u64) {}
    fn finish(&self) {}
}

/// A progress bar on stderr when it is a terminal; one line per step otherwise.
pub struct Bar {
    bar: Mutex<Option<ProgressBar>>,
    terminal: bool,
}

impl Default for Bar {
    fn default() -> Self {
        Bar {
            bar: Mutex::new(None),
            terminal: std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        let mut slot = self.bar.lock().expect("progress lock");
        if let Some(old) = slot.take() {
            old.finish_and_clear();
        }
        if !self.terminal || total == 0 {
            eprintln!("keel-update: {name}");
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:10} {binary_bytes_per_sec:>12} {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        *slot = Some(bar);
    }

    fn set(&self, done: u64) {
        if let Some(bar) = self.bar.lock().expect("progress lock").as_ref() {
            bar.set_position(done);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}
