//! The board and rootfs YAML loaders of `keel build`. Input: a flag byte (board or rootfs), then
//! the file's text.

use keel_builder::definition::{Board, Rootfs};

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("definition.yaml");
    afl::fuzz!(|data: &[u8]| {
        let Some((&which, text)) = data.split_first() else {
            return;
        };
        std::fs::write(&path, text).expect("write");
        if which & 1 == 0 {
            let _ = Board::load(&path).map(|b| b.cmdline_string());
        } else {
            let _ = Rootfs::load(&path);
        }
    });
}
