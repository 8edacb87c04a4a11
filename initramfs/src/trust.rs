//! Step 5a: a slot's metadata checked against the keys this initramfs trusts.

use anyhow::{Context, Result};
use ed25519_dalek::VerifyingKey;
use keel_format::gpt::Partition;
use keel_format::keys::key_id;
use keel_format::metadata::SlotMetadata;
use keel_format::slot;

pub fn describe_keys(keys: &[VerifyingKey]) -> String {
    keys.iter().map(key_id).collect::<Vec<_>>().join(", ")
}

/// Read the metadata block at the end of `part` from the whole-disk device and trust it
/// (`keel_format::slot::verified_slot_metadata`). Nothing in it is used before this passes.
pub fn verified_metadata<R: std::io::Read + std::io::Seek>(
    disk: &mut R,
    part: &Partition,
    keys: &[VerifyingKey],
) -> Result<SlotMetadata> {
    slot::read_verified_slot_metadata(disk, part.offset(), part.size(), keys)
        .with_context(|| format!("{} cannot be trusted", part.label))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_format::attrs::SlotAttrs;
    use keel_format::gpt::DiskTable;
    use keel_format::layout::{self, DISK_GUID, USR_A};
    use keel_format::metadata::{encode, KernelInfo, VerityInfo};
    use std::io::{Cursor, Seek, SeekFrom, Write};

    fn meta(key: &VerifyingKey) -> SlotMetadata {
        SlotMetadata {
            version: "1.0.0".into(),
            channel: "stable".into(),
            arch: "x86_64".into(),
            board: "qemu-x86_64".into(),
            build_time: 0,
            filesystem: "erofs".into(),
            kernel: KernelInfo {
                release: "r".into(),
                build: "b".into(),
                image: "lib/modules/r/vmlinuz".into(),
                initramfs: "lib/modules/r/keel-initramfs.img".into(),
            },
            verity: VerityInfo {
                data_size: 8192,
                hash_offset: 8192,
                hash_size: keel_format::verity::hash_area_size(2),
                data_block_size: 4096,
                hash_block_size: 4096,
                algorithm: "sha256".into(),
                salt: "00".repeat(32),
                root_hash: "11".repeat(32),
                uuid: uuid::Uuid::nil().to_string(),
            },
            body_sha256: "22".repeat(32),
            key_id: key_id(key),
        }
    }

    /// A disk image with USR-A holding a metadata block signed by `signer`.
    fn disk(
        signer: &keel_signing::Key,
        claimed_key: &VerifyingKey,
    ) -> (Cursor<Vec<u8>>, Partition) {
        let size = 16u64 << 20;
        let mut t = DiskTable::new(size, DISK_GUID).unwrap();
        t.add(USR_A, 4096, 8192, SlotAttrs::new(1, 0, true).apply_to(0))
            .unwrap();
        let mut c = Cursor::new(vec![0u8; size as usize]);
        DiskTable::write_protective_mbr(&mut c).unwrap();
        t.write(&mut c).unwrap();
        let p = t.partition(layout::USR_A.number).unwrap();
        let block = encode(&meta(claimed_key), |m| signer.sign(m)).unwrap();
        c.seek(SeekFrom::Start(p.offset() + p.size() - 4096))
            .unwrap();
        c.write_all(&block).unwrap();
        (c, p)
    }

    #[test]
    fn signed_metadata_is_accepted_others_are_not() {
        let good = keel_signing::Key::from_seed([1; 32]);
        let evil = keel_signing::Key::from_seed([2; 32]);
        let (mut c, p) = disk(&good, &good.public());
        let m = verified_metadata(&mut c, &p, &[good.public()]).unwrap();
        assert_eq!(m.version, "1.0.0");

        // Not trusted.
        let e = verified_metadata(&mut c, &p, &[evil.public()]).unwrap_err();
        assert!(format!("{e:#}").contains("not trusted"), "{e:#}");
        // No keys at all.
        assert!(verified_metadata(&mut c, &p, &[]).is_err());
        // Signed by another key under the trusted key's id.
        let (mut c, p) = disk(&evil, &good.public());
        let e = verified_metadata(&mut c, &p, &[good.public()]).unwrap_err();
        assert!(format!("{e:#}").contains("does not verify"), "{e:#}");
        // An empty slot.
        let (mut c, p) = disk(&good, &good.public());
        c.get_mut()[(p.offset() + p.size() - 4096) as usize] = 0;
        let e = verified_metadata(&mut c, &p, &[good.public()]).unwrap_err();
        assert!(format!("{e:#}").contains("KEELMETA"), "{e:#}");
    }
}
