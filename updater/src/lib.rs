//! Keel updater library.
