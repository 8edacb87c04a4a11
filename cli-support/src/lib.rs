//! What every Keel command line shares, and nothing else: [`exit`], the one exit-code vocabulary
//! of `keel`, `keel-update`, `keel-install`, `keel-validate-config` and `keel-upload-ami`, and
//! [`progress`], the one progress display. Small on purpose: the static binaries in every
//! image link it.

#![forbid(unsafe_code)]

pub mod exit;
pub mod progress;
