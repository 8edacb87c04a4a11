//! Host-side image builder library; `main.rs` is the thin `keel` CLI over it.
