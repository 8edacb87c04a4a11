//! The one progress display of every Keel command: a spinner for a step of unknown length, a
//! bar where the amount of work is known, both on stderr and only when it is a terminal.
//! Nothing is drawn with `--quiet`, `--json` (callers pass `quiet || json`), or when stderr is
//! piped, so scripts and CI logs stay clean. One exception, for logs that are read: a
//! [`Reporter::with_step_lines`] reporter (keel-update's, whose steps the journal and the
//! power-cut tests follow) writes one `PROGRAM: step` line per step when stderr is not a
//! terminal.
//!
//! Libraries take `&dyn Progress` (or a [`Reporter`]) and never decide how it is shown.
//!
//! A [`Reporter::timed`] reporter also keeps each finished step's start and duration, shown
//! or not, from whichever thread ran it ([`Reporter::timings`]: `keel build --timings`).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives the steps of a long operation. `set` may be called from another thread.
pub trait Progress: Sync {
    /// A new step (the previous one ends); `total` bytes will be processed, 0 for a step
    /// without a byte count.
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

/// Draws steps on stderr (see the module's documentation for when).
#[derive(Clone)]
pub struct Reporter {
    multi: Option<MultiProgress>,
    quiet: bool,
    /// `PROGRAM: step` lines instead of bars when stderr is not a terminal.
    step_lines: Option<&'static str>,
    /// The step [`Progress::phase`] started, ended by the next one or by `finish`.
    current: Arc<Mutex<Option<Step>>>,
    /// [`Reporter::timed`]: finished steps, in the order they finished.
    timings: Option<Timings>,
}

/// One finished step of a [`Reporter::timed`] reporter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepTime {
    pub name: String,
    /// When it started, counted from the moment the reporter was made timed.
    pub start: Duration,
    pub took: Duration,
}

#[derive(Clone)]
struct Timings {
    origin: Instant,
    done: Arc<Mutex<Vec<StepTime>>>,
}

impl Timings {
    fn done(&self) -> std::sync::MutexGuard<'_, Vec<StepTime>> {
        self.done.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reporter {
    /// Draws on stderr when it is a terminal and `quiet` is off.
    pub fn new(quiet: bool) -> Reporter {
        let visible = !quiet && std::io::stderr().is_terminal();
        Reporter {
            multi: visible.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            quiet,
            step_lines: None,
            current: Arc::default(),
            timings: None,
        }
    }

    /// As [`Reporter::new`], and when stderr is not a terminal (and not `quiet`) one line
    /// `PROGRAM: step` as each step starts.
    pub fn with_step_lines(program: &'static str, quiet: bool) -> Reporter {
        Reporter {
            step_lines: (!quiet).then_some(program),
            ..Reporter::new(quiet)
        }
    }

    /// Draws nothing (library use, tests).
    pub fn hidden() -> Reporter {
        Reporter {
            multi: None,
            quiet: true,
            step_lines: None,
            current: Arc::default(),
            timings: None,
        }
    }

    /// The same reporter, also keeping every finished step's start and duration from now on
    /// ([`Reporter::timings`]), shown or not. Clones share them.
    pub fn timed(self) -> Reporter {
        Reporter {
            timings: Some(Timings {
                origin: Instant::now(),
                done: Arc::default(),
            }),
            ..self
        }
    }

    /// The steps finished so far (by [`Step::done`]), ordered by start; empty unless
    /// [`Reporter::timed`].
    pub fn timings(&self) -> Vec<StepTime> {
        let mut v = self
            .timings
            .as_ref()
            .map(|t| t.done().clone())
            .unwrap_or_default();
        v.sort_by_key(|t| t.start);
        v
    }

    /// Time since [`Reporter::timed`] (`None` for a reporter that is not timed).
    pub fn elapsed(&self) -> Option<Duration> {
        self.timings.as_ref().map(|t| t.origin.elapsed())
    }

    pub fn is_visible(&self) -> bool {
        self.multi.is_some()
    }

    /// A step of unknown length: a spinner with the elapsed time.
    pub fn step(&self, what: &str) -> Step {
        self.start(what, || {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} [{elapsed}]")
                    .expect("valid template"),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        })
    }

    /// A step that processes `total` bytes.
    pub fn bytes(&self, what: &str, total: u64) -> Step {
        self.start(what, || {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "  {msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} [{elapsed}]",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        })
    }

    fn start(&self, what: &str, make: impl FnOnce() -> ProgressBar) -> Step {
        let bar = match &self.multi {
            Some(m) => m.add(make()),
            None => {
                if let Some(program) = self.step_lines {
                    eprintln!("{program}: {what}");
                }
                ProgressBar::hidden()
            }
        };
        bar.set_message(what.to_string());
        Step {
            bar,
            what: what.to_string(),
            started: Instant::now(),
            timings: self.timings.clone(),
        }
    }

    /// A warning on stderr, shown unless quiet (also when stderr is not a terminal).
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

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Step>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Progress for Reporter {
    fn phase(&self, name: &str, total: u64) {
        let step = if total == 0 {
            self.step(name)
        } else {
            self.bytes(name, total)
        };
        // The previous step's bar is cleared as it drops.
        *self.current() = Some(step);
    }

    fn set(&self, done: u64) {
        if let Some(step) = self.current().as_ref() {
            step.set(done);
        }
    }

    fn finish(&self) {
        self.current().take();
    }
}

/// One step on the display; cleared when dropped unless [`Step::done`] summarised it.
pub struct Step {
    bar: ProgressBar,
    what: String,
    started: Instant,
    timings: Option<Timings>,
}

impl Step {
    pub fn set(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn message(&self, msg: &str) {
        self.bar.set_message(format!("{}: {msg}", self.what));
    }

    /// Replace the bar with a one-line summary; returns how long the step took (and keeps it,
    /// for a [`Reporter::timed`] reporter).
    pub fn done(self, detail: &str) -> Duration {
        let took = self.started.elapsed();
        if let Some(t) = &self.timings {
            t.done().push(StepTime {
                name: self.what.clone(),
                start: self.started.saturating_duration_since(t.origin),
                took,
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_reporter_times_steps_and_tracks_phases() {
        let r = Reporter::hidden();
        assert!(!r.is_visible());
        r.phase("writing", 10);
        r.set(5);
        assert_eq!(
            r.current().as_ref().map(|s| s.bar.position()),
            Some(5),
            "set reaches the current phase"
        );
        r.phase("verifying", 0);
        assert_eq!(
            r.current().as_ref().map(|s| s.what.as_str()),
            Some("verifying")
        );
        r.finish();
        assert!(r.current().is_none());
        let step = r.step("a step");
        std::thread::sleep(Duration::from_millis(5));
        assert!(step.done("") >= Duration::from_millis(5));
        assert!(r.timings().is_empty(), "an untimed reporter keeps nothing");
    }

    /// A timed reporter keeps the steps that finished, from any thread, ordered by start;
    /// a step dropped without `done` (it failed) is not one of them.
    #[test]
    fn a_timed_reporter_keeps_finished_steps() {
        let r = Reporter::hidden().timed();
        let first = r.step("first");
        std::thread::scope(|s| {
            s.spawn(|| {
                let other = r.step("beside");
                std::thread::sleep(Duration::from_millis(5));
                other.done("");
            });
        });
        drop(r.step("failed"));
        first.done("");
        let t = r.timings();
        let names: Vec<&str> = t.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["first", "beside"]);
        assert!(t[1].took >= Duration::from_millis(5));
        assert!(t[0].start <= t[1].start && t[0].took >= t[1].took);
        assert!(r.elapsed().unwrap() >= t[0].start + t[0].took);
    }
}
