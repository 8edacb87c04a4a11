//! The suite's fuzz driver, no AFL needed: every seed in `fuzz/corpus/TARGET/` runs through its
//! target, then mutants of the seeds run for a bounded time (`KEEL_FUZZ_SECONDS` in all: 20 in
//! the CI tier, 600 in the full one; `KEEL_FUZZ_SEED` repeats a run). Not coverage-guided:
//! that is cargo-afl's job (`ci/fuzz.sh`, which `ci/test.sh` runs after the suite). This is
//! what a plain `cargo test` has: a change that makes a target panic on its corpus or near it
//! fails here.
//!
//! A finding is written to `CARGO_TARGET_TMPDIR/fuzz-findings/` and named in the failure; put it
//! in the target's corpus and fix the cause.

use std::collections::BTreeSet;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_fuzz_targets::{corpus_dir, Target, TARGETS};
use keel_testkit::rng::{mutate, Rng};

/// An input that takes longer than this is a finding, as AFL's `-t 2000` is in `ci/fuzz.sh`.
const SLOW: Duration = Duration::from_secs(2);

fn seeds(target: &Target) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir().join(target.name);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    files
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs one input; `Err` names what went wrong (the panic's message, or the time it took).
fn run_one(target: &Target, input: &[u8]) -> Result<(), String> {
    let started = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input)));
    if let Err(payload) = outcome {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into());
        return Err(format!("panicked: {message}"));
    }
    let took = started.elapsed();
    if took > SLOW {
        return Err(format!("took {took:?} (limit {SLOW:?})"));
    }
    Ok(())
}

fn keep_finding(target: &Target, seed: u64, n: u64, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-findings");
    fs::create_dir_all(&dir).expect("findings directory");
    let path = dir.join(format!("{}-seed{seed}-{n}", target.name));
    fs::write(&path, input).expect("write the finding");
    path
}

#[test]
fn every_corpus_directory_has_a_target_and_every_target_seeds() {
    let names: BTreeSet<&str> = TARGETS.iter().map(|t| t.name).collect();
    let dirs: BTreeSet<String> = fs::read_dir(corpus_dir())
        .expect("fuzz/corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let dirs: BTreeSet<&str> = dirs.iter().map(String::as_str).collect();
    assert_eq!(dirs, names, "fuzz/corpus/ and TARGETS disagree");
    let bins: BTreeSet<String> = fs::read_dir(corpus_dir().join("../src/bin"))
        .expect("fuzz/src/bin")
        .map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.trim_end_matches(".rs").to_string()
        })
        .collect();
    let bins: BTreeSet<&str> = bins.iter().map(String::as_str).collect();
    assert_eq!(
        bins, names,
        "fuzz/src/bin/ (cargo-afl's targets) and TARGETS disagree"
    );
}

#[test]
fn every_seed_runs_clean_through_its_target() {
    let mut failures = Vec::new();
    for target in TARGETS {
        for (path, bytes) in seeds(target) {
            if let Err(why) = run_one(target, &bytes) {
                failures.push(format!("{}: {why}", path.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "seeds that fail:\n{}",
        failures.join("\n")
    );
}

#[test]
fn mutants_of_the_seeds_run_clean_for_a_bounded_time() {
    let total = std::env::var("KEEL_FUZZ_SECONDS")
        .ok()
        .map(|s| s.parse::<u64>().expect("KEEL_FUZZ_SECONDS: whole seconds"))
        .unwrap_or_else(|| keel_testkit::tier::pick(20, 600));
    let seed = std::env::var("KEEL_FUZZ_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("KEEL_FUZZ_SEED: a u64"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64
        });
    let slice = Duration::from_secs(total) / TARGETS.len() as u32;
    eprintln!(
        "fuzz driver: seed {seed} (KEEL_FUZZ_SEED repeats it), {total} s in all, {slice:?} per target"
    );
    let mut rng = Rng::new(seed);
    let mut findings = Vec::new();
    for target in TARGETS {
        let seeds = seeds(target);
        let longest = seeds.iter().map(|(_, b)| b.len()).max().unwrap_or(0);
        let max_len = (2 * longest).clamp(4096, 1 << 20);
        let started = Instant::now();
        let mut previous: Option<Vec<u8>> = None;
        let mut executions = 0u64;
        while started.elapsed() < slice {
            let base = match previous.take() {
                Some(p) if rng.below(4) == 0 => p,
                _ => seeds[rng.index(seeds.len())].1.clone(),
            };
            let other = &seeds[rng.index(seeds.len())].1;
            let input = mutate(&mut rng, &base, other, max_len);
            executions += 1;
            if let Err(why) = run_one(target, &input) {
                let kept = keep_finding(target, seed, executions, &input);
                findings.push(format!(
                    "{}: {why} (input kept in {})",
                    target.name,
                    kept.display()
                ));
                break;
            }
            previous = Some(input);
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "fuzz driver: {:<18} {:>9} executions {:>8.0}/s from {} seeds",
            target.name,
            executions,
            executions as f64 / secs,
            seeds.len()
        );
        assert!(executions > 0, "{}: no input ran in {slice:?}", target.name);
    }
    assert!(
        findings.is_empty(),
        "findings (seed {seed}):\n{}",
        findings.join("\n")
    );
}
