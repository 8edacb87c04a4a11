//! Partition numbers, labels and GUIDs. They follow Flatcar's `disk_layout.json` so that
//! Flatcar's tools (cgpt, GRUB's gptprio) and habits (`/dev/disk/by-partlabel/USR-A`) carry over.

use uuid::{uuid, Uuid};

/// Logical sector size of every Keel image.
pub const SECTOR: u64 = 512;
/// Partitions start on 2 MiB boundaries (Flatcar's `part_alignment` of 4096 sectors).
pub const ALIGN: u64 = 2 * 1024 * 1024;
/// Filesystem and dm-verity block size.
pub const BLOCK: u64 = 4096;

/// Disk GUID written at build time (Flatcar's `00000000-0000-0000-0000-000000000001`).
pub const DISK_GUID: Uuid = uuid!("00000000-0000-0000-0000-000000000001");

/// CoreOS/Flatcar USR partition type (`coreos-usr`); the only type slot selection looks at.
pub const USR_TYPE: Uuid = uuid!("5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6");
/// CoreOS/Flatcar "resize" type: the ROOT partition, grown to fill the disk on first boot.
pub const ROOT_RESIZE_TYPE: Uuid = uuid!("3884dd41-8582-4404-b9a8-e9b84f2df50e");
/// CoreOS/Flatcar reserved type (OEM-CONFIG).
pub const RESERVED_TYPE: Uuid = uuid!("c95dc21a-df0e-4340-8d7b-26cbfa9a03e0");
pub const EFI_SYSTEM_TYPE: Uuid = uuid!("c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
pub const BIOS_BOOT_TYPE: Uuid = uuid!("21686148-6449-6e6f-744e-656564454649");
pub const LINUX_DATA_TYPE: Uuid = uuid!("0fc63daf-8483-4772-8e79-3d69d8477de4");

/// Fixed unique GUIDs of the two USR partitions (Flatcar's values).
pub const USR_A_GUID: Uuid = uuid!("7130c94a-213a-4e5a-8e26-6cce9662f132");
pub const USR_B_GUID: Uuid = uuid!("e03dd35c-7c2d-4a47-b3fe-27f15780a57c");

/// One partition of the layout: its fixed number, label, type, and (where Flatcar fixes one)
/// unique GUID. Partitions without a fixed GUID get one derived from the disk GUID and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Role {
    pub number: u32,
    pub label: &'static str,
    pub type_guid: Uuid,
    pub unique_guid: Option<Uuid>,
}

pub const EFI_SYSTEM: Role = Role {
    number: 1,
    label: "EFI-SYSTEM",
    type_guid: EFI_SYSTEM_TYPE,
    unique_guid: None,
};
pub const BIOS_BOOT: Role = Role {
    number: 2,
    label: "BIOS-BOOT",
    type_guid: BIOS_BOOT_TYPE,
    unique_guid: None,
};
pub const USR_A: Role = Role {
    number: 3,
    label: "USR-A",
    type_guid: USR_TYPE,
    unique_guid: Some(USR_A_GUID),
};
pub const USR_B: Role = Role {
    number: 4,
    label: "USR-B",
    type_guid: USR_TYPE,
    unique_guid: Some(USR_B_GUID),
};
pub const OEM: Role = Role {
    number: 6,
    label: "OEM",
    type_guid: LINUX_DATA_TYPE,
    unique_guid: None,
};
pub const ROOT: Role = Role {
    number: 9,
    label: "ROOT",
    type_guid: ROOT_RESIZE_TYPE,
    unique_guid: None,
};

/// Every partition of a Keel disk, in on-disk order.
pub const ROLES: [Role; 6] = [EFI_SYSTEM, BIOS_BOOT, USR_A, USR_B, OEM, ROOT];

impl Role {
    /// The unique GUID this partition gets on a freshly built disk.
    pub fn build_guid(&self, disk_guid: Uuid) -> Uuid {
        if let Some(g) = self.unique_guid {
            return g;
        }
        // Deterministic (reproducible builds) but distinct per partition.
        let mut b = *disk_guid.as_bytes();
        b[0] ^= 0x4b; // 'K'
        b[15] ^= self.number as u8;
        uuid::Builder::from_bytes(b)
            .with_variant(uuid::Variant::RFC4122)
            .with_version(uuid::Version::Random)
            .into_uuid()
    }

    pub fn by_label(label: &str) -> Option<Role> {
        ROLES.iter().copied().find(|r| r.label == label)
    }
}

/// The other USR slot of an A/B pair.
pub fn other_usr(number: u32) -> Option<u32> {
    match number {
        3 => Some(4),
        4 => Some(3),
        _ => None,
    }
}
