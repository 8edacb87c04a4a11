//! A streamOptimized VMDK of a raw disk (VMware Virtual Disk Format 1.1, "Stream-Optimized
//! Compressed Sparse Extents"): sparse extent header with the compressed/markers flags and the
//! grain directory "at end", the embedded descriptor, then zlib-compressed 64 KiB grains each
//! behind a grain marker, a grain table after the grains it covers, the grain directory, the
//! footer (the header again, now with the directory's offset) and the end-of-stream marker.
//! All-zero grains are not stored: they read back as zeros.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use crate::error::{io_at, Error, Result};

const SECTOR: u64 = 512;
const GRAIN_SECTORS: u64 = 128;
const GRAIN_BYTES: usize = (GRAIN_SECTORS * SECTOR) as usize;
const GTES_PER_GT: u64 = 512;
const GT_SECTORS: u64 = GTES_PER_GT * 4 / SECTOR;
const MAGIC: u32 = 0x564d_444b; // "KDMV"
/// Valid new-line detection test | compressed grains | markers.
const FLAGS: u32 = 1 | (1 << 16) | (1 << 17);
const GD_AT_END: u64 = u64::MAX;
const DESCRIPTOR_OFFSET: u64 = 1;
const DESCRIPTOR_SECTORS: u64 = 20;
/// Grains start at the first grain boundary after the header and descriptor.
const OVERHEAD_SECTORS: u64 = GRAIN_SECTORS;
const COMPRESS_DEFLATE: u16 = 1;

const MARKER_EOS: u32 = 0;
const MARKER_GT: u32 = 1;
const MARKER_GD: u32 = 2;
const MARKER_FOOTER: u32 = 3;

/// What was written, for the OVF descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    pub capacity_bytes: u64,
    /// Bytes of the virtual disk held in stored (non-zero) grains.
    pub populated_bytes: u64,
    pub file_bytes: u64,
}

fn header(capacity_sectors: u64, gd_offset: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&MAGIC.to_le_bytes());
    put(&3u32.to_le_bytes()); // version 3: streamOptimized
    put(&FLAGS.to_le_bytes());
    put(&capacity_sectors.to_le_bytes());
    put(&GRAIN_SECTORS.to_le_bytes());
    put(&DESCRIPTOR_OFFSET.to_le_bytes());
    put(&DESCRIPTOR_SECTORS.to_le_bytes());
    put(&(GTES_PER_GT as u32).to_le_bytes());
    put(&0u64.to_le_bytes()); // no redundant grain directory
    put(&gd_offset.to_le_bytes());
    put(&OVERHEAD_SECTORS.to_le_bytes());
    put(&[0]); // clean shutdown
    put(b"\n \r\n"); // the new-line detection characters
    put(&COMPRESS_DEFLATE.to_le_bytes());
    h
}

fn marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut m = [0u8; 512];
    m[..8].copy_from_slice(&num_sectors.to_le_bytes());
    m[12..16].copy_from_slice(&kind.to_le_bytes());
    m
}

fn descriptor(capacity_sectors: u64, cid: u32, file_name: &str) -> String {
    let cylinders = (capacity_sectors / (255 * 63)).clamp(1, 65535);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"streamOptimized\"\n\
         \n\
         # Extent description\n\
         RW {capacity_sectors} SPARSE \"{file_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.adapterType = \"lsilogic\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"255\"\n\
         ddb.geometry.sectors = \"63\"\n"
    )
}

/// Writes sectors and remembers where the stream is.
struct Stream<W: Write> {
    out: W,
    sector: u64,
}

impl<W: Write> Stream<W> {
    /// `data` padded with zeros to whole sectors; returns the sector it starts at.
    fn put(&mut self, data: &[u8]) -> std::io::Result<u64> {
        let start = self.sector;
        self.out.write_all(data)?;
        let pad = (SECTOR - data.len() as u64 % SECTOR) % SECTOR;
        self.out.write_all(&vec![0u8; pad as usize])?;
        self.sector += (data.len() as u64 + pad) / SECTOR;
        Ok(start)
    }
}

fn compress(grain: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(grain).expect("writing to a Vec");
    z.finish().expect("writing to a Vec")
}

/// Compress the non-zero grains of one grain table's span, on every core.
fn compress_span(span: &[u8]) -> Vec<Option<Vec<u8>>> {
    let grains: Vec<&[u8]> = span.chunks(GRAIN_BYTES).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = grains.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let jobs: Vec<_> = grains
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|g| (!g.iter().all(|&b| b == 0)).then(|| compress(g)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        jobs.into_iter()
            .flat_map(|j| j.join().expect("compression thread"))
            .collect()
    })
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            r => n += r,
        }
    }
    Ok(n)
}

/// Write `raw` as a streamOptimized VMDK at `out`; `file_name` goes into the descriptor's
/// extent line, `cid` is the content ID.
pub fn write(raw: &Path, out: &Path, file_name: &str, cid: u32) -> Result<Written> {
    let mut src = File::open(raw).map_err(io_at(raw))?;
    let size = src.metadata().map_err(io_at(raw))?.len();
    if size % SECTOR != 0 {
        return Err(Error::Format(format!(
            "{}: {size} bytes is not a whole number of sectors",
            raw.display()
        )));
    }
    let capacity = size / SECTOR;
    let grains = capacity.div_ceil(GRAIN_SECTORS);
    let tables = grains.div_ceil(GTES_PER_GT);
    let file = File::create(out).map_err(io_at(out))?;
    let mut s = Stream {
        out: BufWriter::with_capacity(1 << 20, file),
        sector: 0,
    };
    let io = io_at(out);
    let desc = descriptor(capacity, cid, file_name);
    assert!(desc.len() as u64 <= DESCRIPTOR_SECTORS * SECTOR);
    let result = (|| -> std::io::Result<Written> {
        s.put(&header(capacity, GD_AT_END))?;
        s.put(desc.as_bytes())?;
        s.put(&vec![
            0u8;
            ((OVERHEAD_SECTORS - DESCRIPTOR_OFFSET - DESCRIPTOR_SECTORS) * SECTOR)
                as usize
        ])?;
        let mut directory = vec![0u32; tables as usize];
        let mut populated = 0u64;
        let span_bytes = GTES_PER_GT as usize * GRAIN_BYTES;
        let mut span = vec![0u8; span_bytes];
        for (t, entry) in directory.iter_mut().enumerate() {
            let n = read_full(&mut src, &mut span)?;
            // The last grain is padded with zeros: a grain always inflates to 64 KiB.
            let used = n.div_ceil(GRAIN_BYTES) * GRAIN_BYTES;
            span[n..used].fill(0);
            let mut table = vec![0u32; GTES_PER_GT as usize];
            let first_grain = t as u64 * GTES_PER_GT;
            for (g, packed) in compress_span(&span[..used]).into_iter().enumerate() {
                let Some(packed) = packed else { continue };
                let lba = (first_grain + g as u64) * GRAIN_SECTORS;
                let mut rec = Vec::with_capacity(12 + packed.len());
                rec.extend_from_slice(&lba.to_le_bytes());
                rec.extend_from_slice(&(packed.len() as u32).to_le_bytes());
                rec.extend_from_slice(&packed);
                table[g] = s.put(&rec)? as u32;
                populated += GRAIN_BYTES as u64;
            }
            if table.iter().any(|&e| e != 0) {
                s.put(&marker(GT_SECTORS, MARKER_GT))?;
                let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
                *entry = s.put(&bytes)? as u32;
            }
        }
        let gd_bytes: Vec<u8> = directory.iter().flat_map(|e| e.to_le_bytes()).collect();
        s.put(&marker((gd_bytes.len() as u64).div_ceil(SECTOR), MARKER_GD))?;
        let gd_offset = s.put(&gd_bytes)?;
        s.put(&marker(1, MARKER_FOOTER))?;
        s.put(&header(capacity, gd_offset))?;
        s.put(&marker(0, MARKER_EOS))?;
        s.out.flush()?;
        if s.sector > u32::MAX as u64 {
            return Err(std::io::Error::other(
                "the VMDK is larger than 2 TiB of sectors",
            ));
        }
        Ok(Written {
            capacity_bytes: size,
            populated_bytes: populated.min(size),
            file_bytes: s.sector * SECTOR,
        })
    })();
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_sit_where_the_spec_puts_them() {
        let h = header(4096, 77);
        assert_eq!(&h[0..4], b"KDMV");
        assert_eq!(u32::from_le_bytes(h[4..8].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(h[8..12].try_into().unwrap()), 0x30001);
        assert_eq!(u64::from_le_bytes(h[12..20].try_into().unwrap()), 4096);
        assert_eq!(u64::from_le_bytes(h[20..28].try_into().unwrap()), 128);
        assert_eq!(u32::from_le_bytes(h[44..48].try_into().unwrap()), 512);
        assert_eq!(u64::from_le_bytes(h[56..64].try_into().unwrap()), 77);
        assert_eq!(&h[73..77], b"\n \r\n");
        assert_eq!(u16::from_le_bytes(h[77..79].try_into().unwrap()), 1);
    }

    /// qemu-img reads our VMDK back to the same bytes and finds nothing wrong with it.
    #[test]
    fn qemu_img_reads_back_the_same_disk() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("in.raw");
        // 40 MiB: two grain tables, a few data grains, one partial-looking pattern.
        let mut data = vec![0u8; 40 << 20];
        data[..4096].fill(0xab);
        for (i, b) in data[(33 << 20)..(33 << 20) + 200_000]
            .iter_mut()
            .enumerate()
        {
            *b = (i * 7 % 251) as u8;
        }
        *data.last_mut().unwrap() = 1;
        std::fs::write(&raw, &data).unwrap();
        let vmdk = d.path().join("out.vmdk");
        let w = write(&raw, &vmdk, "out.vmdk", 0x1234_5678).unwrap();
        assert_eq!(w.capacity_bytes, 40 << 20);
        assert_eq!(w.populated_bytes, 6 * GRAIN_BYTES as u64);
        assert_eq!(w.file_bytes, std::fs::metadata(&vmdk).unwrap().len());
        let check = std::process::Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(&vmdk)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let back = d.path().join("back.raw");
        let conv = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "vmdk", "-O", "raw"])
            .arg(&vmdk)
            .arg(&back)
            .output()
            .unwrap();
        assert!(
            conv.status.success(),
            "{}",
            String::from_utf8_lossy(&conv.stderr)
        );
        assert!(std::fs::read(&back).unwrap() == data);
    }
}
