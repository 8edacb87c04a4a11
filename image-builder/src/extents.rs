//! Where a sparse file holds data: `lseek(SEEK_DATA)` / `lseek(SEEK_HOLE)`, so readers skip the
//! holes of an image (a 1 GiB ext4 ROOT is ~50 MiB of data) instead of reading gigabytes of
//! zeros. A filesystem that cannot tell reports the whole file as data, which is slower but
//! still right: holes read as zeros.

use std::fs::File;
use std::ops::Range;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

/// The data ranges of `f` (whose length is `len`), in order. Holes between them read as zeros.
///
/// `lseek` moves the file offset: readers seek explicitly before reading each range.
pub fn data(f: &File, len: u64) -> DataRanges<'_> {
    DataRanges { f, pos: 0, len }
}

pub struct DataRanges<'a> {
    f: &'a File,
    pos: u64,
    len: u64,
}

impl Iterator for DataRanges<'_> {
    type Item = Range<u64>;

    fn next(&mut self) -> Option<Range<u64>> {
        if self.pos >= self.len {
            return None;
        }
        let start = match seek(self.f, self.pos, Whence::SeekData) {
            Found::At(at) => at.min(self.len),
            // Nothing but a hole from here to the end.
            Found::End => self.len,
            Found::Unsupported => self.pos,
        };
        if start >= self.len {
            self.pos = self.len;
            return None;
        }
        let end = match seek(self.f, start, Whence::SeekHole) {
            Found::At(at) => at.min(self.len),
            Found::End | Found::Unsupported => self.len,
        };
        // A hole at `start` cannot follow SEEK_DATA's answer; never loop on one.
        let end = end.max(start + 1).min(self.len);
        self.pos = end;
        Some(start..end)
    }
}

enum Found {
    At(u64),
    /// ENXIO: no data (SEEK_DATA) at or after the offset.
    End,
    /// The filesystem or kernel cannot tell (EINVAL, …): treat the file as all data.
    Unsupported,
}

fn seek(f: &File, from: u64, whence: Whence) -> Found {
    let Ok(from) = i64::try_from(from) else {
        return Found::Unsupported;
    };
    match lseek(f, from, whence) {
        Ok(at) => u64::try_from(at).map_or(Found::Unsupported, Found::At),
        Err(Errno::ENXIO) => Found::End,
        Err(_) => Found::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    /// Data in the middle and at the end of a sparse file are found; the holes are skipped
    /// (filesystems may round data out to their block size, so the ranges cover the writes).
    #[test]
    fn finds_the_data_of_a_sparse_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sparse");
        let f = File::create(&p).unwrap();
        let len = 64u64 << 20;
        f.set_len(len).unwrap();
        f.write_all_at(b"middle", 17 << 20).unwrap();
        f.write_all_at(b"end", len - 3).unwrap();
        let f = File::open(&p).unwrap();
        let ranges: Vec<_> = data(&f, len).collect();
        let covered = |at: u64| ranges.iter().any(|r| r.contains(&at));
        assert!(covered(17 << 20) && covered((17 << 20) + 5), "{ranges:?}");
        assert!(covered(len - 1), "{ranges:?}");
        let total: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        assert!(total < 8 << 20, "holes read as data: {ranges:?}");
        assert!(ranges.windows(2).all(|w| w[0].end <= w[1].start));
    }

    #[test]
    fn an_all_hole_file_has_no_data_and_an_empty_file_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("holes");
        File::create(&p).unwrap().set_len(8 << 20).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(data(&f, 8 << 20).count(), 0);
        let e = d.path().join("empty");
        File::create(&e).unwrap();
        assert_eq!(data(&File::open(&e).unwrap(), 0).count(), 0);
    }
}
