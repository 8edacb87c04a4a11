//! An in-memory sparse disk, so a GPT taken from a multi-gigabyte image fits in a seed of a few
//! KiB, the fixed key the seeds are signed with, and small byte helpers.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use ed25519_dalek::SigningKey;

const SECTOR: u64 = 512;

/// The key the metadata seeds are signed with (`examples/resign_seed.rs`), so the fuzzer can
/// reach the code behind a valid signature. Never a real key.
pub fn fuzz_key() -> SigningKey {
    SigningKey::from_bytes(&[0x4b; 32])
}

/// A disk of `len` bytes that stores only the sectors written to it; the rest read as zeros.
#[derive(Clone, Debug)]
pub struct SparseDisk {
    len: u64,
    pos: u64,
    sectors: BTreeMap<u64, Vec<u8>>,
}

impl SparseDisk {
    pub fn new(len: u64) -> Self {
        SparseDisk {
            len: len - len % SECTOR,
            pos: 0,
            sectors: BTreeMap::new(),
        }
    }
    pub fn sectors(&self) -> u64 {
        self.len / SECTOR
    }
    /// Put `bytes` down at byte `offset` (clipped to the disk).
    pub fn put(&mut self, offset: u64, bytes: &[u8]) {
        self.pos = offset;
        let end = (offset + bytes.len() as u64).min(self.len);
        if offset < end {
            self.write_all(&bytes[..(end - offset) as usize])
                .expect("in memory");
        }
    }
}

impl Read for SparseDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        let mut done = 0;
        while done < n {
            let at = self.pos + done as u64;
            let (lba, within) = (at / SECTOR, (at % SECTOR) as usize);
            let take = (SECTOR as usize - within).min(n - done);
            match self.sectors.get(&lba) {
                Some(s) => buf[done..done + take].copy_from_slice(&s[within..within + take]),
                None => buf[done..done + take].fill(0),
            }
            done += take;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SparseDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Err(io::Error::other("write past the end of the disk"));
        }
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        let mut done = 0;
        while done < n {
            let at = self.pos + done as u64;
            let (lba, within) = (at / SECTOR, (at % SECTOR) as usize);
            let take = (SECTOR as usize - within).min(n - done);
            let s = self
                .sectors
                .entry(lba)
                .or_insert_with(|| vec![0; SECTOR as usize]);
            s[within..within + take].copy_from_slice(&buf[done..done + take]);
            done += take;
        }
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SparseDisk {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(s) => Some(s),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::other("seek before the start"))?;
        Ok(self.pos)
    }
}

impl keel_format::gpt::SyncAll for SparseDisk {
    fn sync_all(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Recompute the CRC32s of the GPT header in `sector` (entry array CRC from `entries`), so the
/// fuzzer's changes reach the code behind the checksums.
pub fn fix_header_crcs(sector: &mut [u8], entries: Option<&[u8]>) {
    if sector.len() < 92 {
        return;
    }
    if let Some(e) = entries {
        sector[88..92].copy_from_slice(&crc32(e).to_le_bytes());
    }
    sector[16..20].fill(0);
    let crc = crc32(&sector[..92]);
    sector[16..20].copy_from_slice(&crc.to_le_bytes());
}

pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Split `data` at its first `\0` (or not at all).
pub fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
