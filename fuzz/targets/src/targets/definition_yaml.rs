//! The board and rootfs YAML loaders of `keel build`. Input: a flag byte (board or rootfs), then
//! the file's text.

use keel_builder::definition::{Board, Rootfs};

thread_local! {
    /// One scratch directory per thread: the loaders read a path, and the suite runs targets on
    /// several threads at once.
    static SCRATCH: tempfile::TempDir = tempfile::tempdir().expect("temp dir");
}

pub fn run(data: &[u8]) {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let path = SCRATCH.with(|d| d.path().join("definition.yaml"));
    std::fs::write(&path, text).expect("write");
    if which & 1 == 0 {
        let _ = Board::load(&path).map(|b| b.cmdline_string());
    } else {
        let _ = Rootfs::load(&path);
    }
}
