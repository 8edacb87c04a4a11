//! A progress bar on stderr when it is a terminal (indicatif); nothing when piped or quiet.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub trait Progress {
    /// A new step that handles `total` bytes (0: unknown).
    fn start(&self, what: &str, total: u64);
    fn set(&self, done: u64);
    fn finish(&self);
}

/// Shows nothing (library callers, tests, pipes).
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn set(&self, _: u64) {}
    fn finish(&self) {}
}

pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar when stderr is a terminal and `quiet` is off, else [`Silent`].
    pub fn for_terminal(quiet: bool) -> Box<dyn Progress> {
        if quiet || !std::io::stderr().is_terminal() {
            return Box::new(Silent);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:20} [{bar:30}] {bytes:>10}/{total_bytes:10} {binary_bytes_per_sec:>12} {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        Box::new(Bar { bar })
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.set_message(what.to_string());
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }
    fn set(&self, done: u64) {
        self.bar.set_position(done);
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
