//! Structure-aware properties (proptest) of the on-disk formats: every round trip holds, and a
//! flipped bit anywhere in signed bytes is refused. Case counts are set so that each property
//! takes about a second in release.

use std::io::Cursor;

use ed25519_dalek::{Signer, SigningKey};
use keel_format::attrs::SlotAttrs;
use keel_format::gpt::DiskTable;
use keel_format::layout::{self, SECTOR};
use keel_format::metadata::{self, KernelInfo, SlotMetadata, VerityInfo, METADATA_SIZE};
use keel_format::verity;
use proptest::prelude::*;
use uuid::Uuid;

const FIELDS: u64 = 0x1ff << 48;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

prop_compose! {
    fn slot_metadata()(
        version in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
        channel in "[a-z]{1,12}",
        board in "[a-z0-9-]{1,20}",
        build_time in any::<u64>(),
        release in "\\PC{0,40}",
        data_blocks in 2u64..100_000,
        salt in proptest::collection::vec(any::<u8>(), 0..64),
        root in any::<[u8; 32]>(),
        body in any::<[u8; 32]>(),
        uuid in any::<u128>(),
    ) -> SlotMetadata {
        let data_size = data_blocks * 4096;
        SlotMetadata {
            version,
            channel,
            arch: "x86_64".into(),
            board,
            build_time,
            filesystem: "erofs".into(),
            kernel: KernelInfo {
                release: release.clone(),
                build: format!("#1 SMP {release}"),
                image: format!("lib/modules/{release}/vmlinuz"),
                initramfs: "lib/keel/initramfs.img".into(),
            },
            verity: VerityInfo {
                data_size,
                hash_offset: data_size,
                hash_size: verity::hash_area_size(data_blocks),
                data_block_size: 4096,
                hash_block_size: 4096,
                algorithm: "sha256".into(),
                salt: hex::encode(salt),
                root_hash: hex::encode(root),
                uuid: Uuid::from_u128(uuid).to_string(),
            },
            body_sha256: hex::encode(body),
            key_id: keel_format::keys::key_id(&key().verifying_key()),
        }
    }
}

fn sign(meta: &SlotMetadata) -> Vec<u8> {
    let k = key();
    metadata::encode(meta, |m| k.sign(m).to_bytes()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Decoding what was encoded gives the fields back, and every other attribute bit is kept.
    #[test]
    fn slot_attributes_round_trip(bits in any::<u64>(), p in 0u8..=15, t in 0u8..=15, s in any::<bool>()) {
        let a = SlotAttrs::new(p, t, s);
        let out = a.apply_to(bits);
        prop_assert_eq!(SlotAttrs::from_bits(out), a);
        prop_assert_eq!(out & !FIELDS, bits & !FIELDS);
        prop_assert_eq!(SlotAttrs::from_bits(bits).apply_to(bits), bits);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A signed block decodes and verifies to the metadata that was signed.
    #[test]
    fn metadata_sign_then_verify(meta in slot_metadata()) {
        let block = sign(&meta);
        prop_assert_eq!(block.len(), METADATA_SIZE);
        let back = metadata::decode(&block).unwrap().verify(&[key().verifying_key()]).unwrap();
        prop_assert_eq!(back, meta);
    }

    /// Any single flipped bit in the signed bytes (header, signature, JSON) is refused: either
    /// the block no longer decodes or its signature no longer verifies.
    #[test]
    fn a_flipped_bit_in_signed_bytes_is_refused(meta in slot_metadata(), pick in any::<u32>(), bit in 0u8..8) {
        let mut block = sign(&meta);
        let json_len = u32::from_le_bytes(block[12..16].try_into().unwrap()) as usize;
        let signed = 80 + json_len;
        let at = pick as usize % signed;
        block[at] ^= 1 << bit;
        let result = metadata::decode(&block).and_then(|u| u.verify(&[key().verifying_key()]));
        prop_assert!(result.is_err(), "bit {} of byte {} flipped and still accepted", bit, at);
    }
}

prop_compose! {
    /// A subset of the layout's partitions, each with 1..=4 MiB, in layout order.
    fn layout_subset()(
        picks in proptest::collection::vec((any::<bool>(), 1u64..=4, any::<u64>()), 6)
    ) -> Vec<(layout::Role, u64, u64)> {
        layout::ROLES
            .iter()
            .zip(picks)
            .filter(|(_, (keep, _, _))| *keep)
            .map(|(r, (_, mib, bits))| (*r, mib, bits))
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Writing a table and reading it back keeps every partition's number, place, label,
    /// GUIDs and attribute bits, and leaves both copies intact.
    #[test]
    fn gpt_write_read_keeps_partition_numbers(parts in layout_subset()) {
        let disk = 32u64 << 20;
        let mib = (1 << 20) / SECTOR;
        let mut t = DiskTable::new(disk, layout::DISK_GUID).unwrap();
        let mut at = 2 * mib;
        for (role, size, bits) in &parts {
            t.add(*role, at, size * mib, *bits).unwrap();
            at += size * mib;
        }
        let mut c = Cursor::new(vec![0u8; disk as usize]);
        t.write(&mut c).unwrap();
        let back = DiskTable::read(&mut c).unwrap();
        prop_assert!(back.health().is_clean(), "{:?}", back.health());
        prop_assert_eq!(back.partitions(), t.partitions());
        let numbers: Vec<u32> = back.partitions().iter().map(|p| p.number).collect();
        let want: Vec<u32> = parts.iter().map(|(r, _, _)| r.number).collect();
        prop_assert_eq!(numbers, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A tree built over small random data verifies, and any flipped byte in the data or the
    /// hash area fails verification.
    #[test]
    fn verity_build_then_verify(
        blocks in 2usize..=40,
        seed in any::<u64>(),
        salt in proptest::collection::vec(any::<u8>(), 0..=64),
        flip in any::<u64>(),
    ) {
        let mut data = vec![0u8; blocks * 4096];
        let mut x = seed | 1;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let uuid = Uuid::from_u64_pair(seed, !seed);
        let tree = verity::build(&mut &data[..], data.len() as u64, &salt, uuid, |_| {}).unwrap();
        let params = verity::Params {
            data_size: data.len() as u64,
            hash_offset: data.len() as u64,
            salt: salt.clone(),
            uuid,
            root_hash: tree.root_hash,
        };
        let mut disk = data.clone();
        disk.extend_from_slice(&tree.hash_area);
        let ok = verity::verify(&mut Cursor::new(&disk), 0, &params, |_| {});
        prop_assert!(ok.is_ok(), "the tree just built does not verify: {:?}", ok);
        let at = (flip % disk.len() as u64) as usize;
        disk[at] ^= 0x80;
        let r = verity::verify(&mut Cursor::new(&disk), 0, &params, |_| {});
        prop_assert!(r.is_err(), "byte {} of {} flipped and the tree still verifies", at, disk.len());
    }
}
