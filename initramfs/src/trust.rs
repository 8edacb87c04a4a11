//! Step 5a: the keys this initramfs trusts, and a slot's metadata checked against them.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::VerifyingKey;
use keel_format::gpt::Partition;
use keel_format::keys::{key_id, public_key_from_pem};
use keel_format::metadata::SlotMetadata;
use keel_format::slot;

/// Every `*.pem` in `dir`. Unreadable or malformed files are reported and skipped.
pub fn load_keys(dir: &Path) -> (Vec<VerifyingKey>, Vec<String>) {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    let mut paths: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pem"))
            .collect(),
        Err(e) => {
            problems.push(format!("{}: {e}", dir.display()));
            return (keys, problems);
        }
    };
    paths.sort();
    for p in paths {
        match std::fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| public_key_from_pem(&t).map_err(|e| e.to_string()))
        {
            Ok(k) => keys.push(k),
            Err(e) => problems.push(format!("{}: {e}", p.display())),
        }
    }
    (keys, problems)
}

pub fn describe_keys(keys: &[VerifyingKey]) -> String {
    keys.iter().map(key_id).collect::<Vec<_>>().join(", ")
}

/// Read the metadata block at the end of `part` from the whole-disk device, verify its
/// signature and its geometry against the partition. Nothing in it is used before this passes.
pub fn verified_metadata<R: std::io::Read + std::io::Seek>(
    disk: &mut R,
    part: &Partition,
    keys: &[VerifyingKey],
) -> Result<SlotMetadata> {
    if keys.is_empty() {
        bail!("no trusted keys in the initramfs (/etc/keel/keys/*.pem): nothing can be verified");
    }
    let unverified = slot::read_partition_metadata(disk, part.offset(), part.size())
        .with_context(|| format!("reading the metadata block of {}", part.label))?;
    let claimed = unverified.claimed().version.clone();
    let meta = unverified.verify(keys).with_context(|| {
        format!(
            "metadata of {} (claims version {claimed}) failed signature verification",
            part.label
        )
    })?;
    slot::check_geometry(&meta, Some(part.size()))
        .with_context(|| format!("signed verity geometry of {} is unusable", part.label))?;
    Ok(meta)
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
    fn keys_from_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let k = keel_signing::Key::from_seed([1; 32]);
        std::fs::write(
            dir.path().join("a.pem"),
            keel_format::keys::public_key_to_pem(&k.public()),
        )
        .unwrap();
        std::fs::write(dir.path().join("b.pem"), "garbage").unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let (keys, problems) = load_keys(dir.path());
        assert_eq!(keys, vec![k.public()]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("b.pem"));
        let (keys, problems) = load_keys(&dir.path().join("missing"));
        assert!(keys.is_empty() && problems.len() == 1);
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
