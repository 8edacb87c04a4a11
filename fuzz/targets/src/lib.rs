//! The bodies of Keel's fuzz targets, one module each, over every parser that reads bytes
//! someone else controls. Two drivers run them: cargo-afl, coverage-guided (`fuzz/src/bin/`,
//! `ci/fuzz.sh`), and this crate's own test, which replays every seed and then mutates the
//! seeds for a bounded time without instrumentation (`tests/corpus.rs`), so the suite catches a
//! regression on the corpus without AFL's build.
//!
//! A target returns normally for any input; a panic (including a failed round-trip assertion)
//! is a finding.

pub mod disk;
mod targets;

// keel-init is a binary; the modules the `init_config` target drives are compiled in here, at
// the crate root where their `crate::` paths expect each other.
#[path = "../../../initramfs/src/cmdline.rs"]
#[allow(dead_code)]
mod cmdline;
#[path = "../../../initramfs/src/settings.rs"]
#[allow(dead_code)]
mod settings;

pub use disk::{crc32, fix_header_crcs, fuzz_key, split_nul, SparseDisk};
pub use targets::*;

/// One target: its name (also its corpus directory, `fuzz/corpus/NAME/`) and its body.
#[derive(Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order `ci/fuzz.sh` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "cloudconfig",
        run: cloudconfig::run,
    },
    Target {
        name: "coordination_json",
        run: coordination_json::run,
    },
    Target {
        name: "definition_yaml",
        run: definition_yaml::run,
    },
    Target {
        name: "gpt",
        run: gpt::run,
    },
    Target {
        name: "init_config",
        run: init_config::run,
    },
    Target {
        name: "metadata",
        run: metadata::run,
    },
    Target {
        name: "omaha",
        run: omaha::run,
    },
    Target {
        name: "update_conf",
        run: update_conf::run,
    },
    Target {
        name: "verity_geometry",
        run: verity_geometry::run,
    },
];

/// `fuzz/corpus/`, the seeds of every target.
pub fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus")
}
