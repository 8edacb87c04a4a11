//! Progress display: a spinner for each step that may take over a second, a bar where the
//! amount of work is known. Nothing at all is drawn with `--quiet` or when stderr is not a
//! terminal, so scripts and CI logs stay clean.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Reporter {
    multi: Option<MultiProgress>,
    quiet: bool,
}

impl Reporter {
    /// Draws on stderr when it is a terminal and `quiet` is off.
    pub fn new(quiet: bool) -> Reporter {
        let visible = !quiet && std::io::stderr().is_terminal();
        Reporter {
            multi: visible.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            quiet,
        }
    }

    /// Draws nothing (library use, tests).
    pub fn hidden() -> Reporter {
        Reporter {
            multi: None,
            quiet: true,
        }
    }

    pub fn is_visible(&self) -> bool {
        self.multi.is_some()
    }

    /// A step of unknown length: a spinner with the elapsed time.
    pub fn step(&self, what: &str) -> Step {
        let bar = match &self.multi {
            None => ProgressBar::hidden(),
            Some(m) => {
                let b = m.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {msg} [{elapsed}]")
                        .expect("valid template"),
                );
                b.enable_steady_tick(Duration::from_millis(120));
                b
            }
        };
        bar.set_message(what.to_string());
        Step {
            bar,
            what: what.to_string(),
            started: Instant::now(),
        }
    }

    /// A step that processes `total` bytes.
    pub fn bytes(&self, what: &str, total: u64) -> Step {
        let bar = match &self.multi {
            None => ProgressBar::hidden(),
            Some(m) => {
                let b = m.add(ProgressBar::new(total));
                b.set_style(
                    ProgressStyle::with_template(
                        "  {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} [{elapsed}]",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b
            }
        };
        bar.set_message(what.to_string());
        Step {
            bar,
            what: what.to_string(),
            started: Instant::now(),
        }
    }

    /// A warning on stderr, shown unless `--quiet` (also when stderr is not a terminal).
    pub fn warn(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => eprintln!("{text}"),
        }
    }

    /// A line above the bars (only when drawing).
    pub fn note(&self, line: &str) {
        if let Some(m) = &self.multi {
            let _ = m.println(line);
        }
    }
}

pub struct Step {
    bar: ProgressBar,
    what: String,
    started: Instant,
}

impl Step {
    pub fn set(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn message(&self, msg: &str) {
        self.bar.set_message(format!("{}: {msg}", self.what));
    }

    /// Replace the bar with a one-line summary.
    pub fn done(self, detail: &str) -> Duration {
        let took = self.started.elapsed();
        if !self.bar.is_hidden() {
            let line = if detail.is_empty() {
                format!("✓ {} ({:.1}s)", self.what, took.as_secs_f64())
            } else {
                format!("✓ {}: {detail} ({:.1}s)", self.what, took.as_secs_f64())
            };
            self.bar
                .set_style(ProgressStyle::with_template("{msg}").expect("valid"));
            self.bar.finish_with_message(line);
        }
        took
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}
