//! The verity geometry checks on signed metadata (`slot::check_geometry`), the parameters
//! derived from them, and for small trees a build/verify round trip over zeroed data.
//!
//! Input: 8 bytes of partition size (LE), then the metadata JSON.

use crate::disk::SparseDisk;
use keel_format::metadata::SlotMetadata;
use keel_format::{slot, verity};

pub fn run(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap());
    let Ok(meta) = serde_json::from_slice::<SlotMetadata>(&data[8..]) else {
        return;
    };
    let _ = slot::check_geometry(&meta, None);
    if slot::check_geometry(&meta, Some(size)).is_err() {
        return;
    }
    let v = &meta.verity;
    assert!(meta.body_size() + 4096 <= size);
    let blocks = v.data_size / 4096;
    let levels: u64 = verity::level_blocks(blocks).iter().sum();
    assert_eq!(v.hash_size, (levels + 1) * 4096);
    let _ = verity::kernel_table(
        "/dev/x",
        v.data_size,
        v.hash_offset,
        &v.root_hash,
        &v.salt,
        &[],
    );
    let Ok(mut params) = verity::Params::from_info(v) else {
        return;
    };
    if v.data_size > 64 * 4096 || v.hash_offset > (1 << 20) {
        return;
    }
    let zeros = vec![0u8; v.data_size as usize];
    let Ok(tree) = verity::build(
        &mut &zeros[..],
        v.data_size,
        &params.salt,
        params.uuid,
        |_| {},
    ) else {
        return;
    };
    assert_eq!(tree.hash_area.len() as u64, v.hash_size);
    params.root_hash = tree.root_hash;
    let mut disk = SparseDisk::new(v.hash_offset + v.hash_size);
    disk.put(v.hash_offset, &tree.hash_area);
    verity::verify(&mut disk, 0, &params, |_| {}).expect("a tree just built verifies");
}
