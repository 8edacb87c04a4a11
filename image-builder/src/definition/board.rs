//! Board definitions (`boards/*.yaml`): what a machine type needs from an image: kernel, boot
//! modules, command line, partition sizes, firmware and output formats.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::yaml::{self, located, Position};
use crate::error::Result;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardFile {
    name: Spanned<String>,
    arch: Arch,
    oem_id: Spanned<String>,
    firmware: Spanned<Vec<Firmware>>,
    formats: Spanned<Vec<Format>>,
    rootfs: Spanned<PathBuf>,
    default_channel: Spanned<String>,
    kernel: KernelFile,
    boot_modules: Vec<Spanned<String>>,
    cmdline: Vec<Spanned<String>>,
    partitions: PartitionsFile,
    #[serde(default)]
    usr: UsrFilesystem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Firmware {
    Uefi,
    Bios,
}

/// Forms an image can be delivered in. `raw` is what `keel build` writes today; the others are
/// conversions of it (`keel build --format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Raw,
    Qcow2,
    Vmdk,
    Ova,
    Ami,
    Pxe,
    Iso,
}

impl Format {
    pub const ALL: [Format; 7] = [
        Format::Raw,
        Format::Qcow2,
        Format::Vmdk,
        Format::Ova,
        Format::Ami,
        Format::Pxe,
        Format::Iso,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Vmdk => "vmdk",
            Format::Ova => "ova",
            Format::Ami => "ami",
            Format::Pxe => "pxe",
            Format::Iso => "iso",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum KernelFile {
    /// A Debian package name, resolved by apt at build time.
    Package(Spanned<String>),
    /// A local `.deb` file.
    Deb(Spanned<PathBuf>),
    /// A kernel image and its modules directory (`.../lib/modules/<release>`).
    Image {
        vmlinuz: Spanned<PathBuf>,
        modules: Spanned<PathBuf>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionsFile {
    esp_mib: Spanned<u64>,
    bios_boot_mib: Spanned<u64>,
    usr_mib: Spanned<u64>,
    oem_mib: Spanned<u64>,
    root_mib: Spanned<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsrFilesystem {
    #[serde(default = "default_compression")]
    pub compression: Compression,
}

impl Default for UsrFilesystem {
    fn default() -> Self {
        UsrFilesystem {
            compression: default_compression(),
        }
    }
}

fn default_compression() -> Compression {
    Compression::Lz4hc
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Lz4hc,
    Lz4,
    None,
}

/// Where the kernel comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelSource {
    Package(String),
    Deb(PathBuf),
    Image { vmlinuz: PathBuf, modules: PathBuf },
}

/// Partition sizes in MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionSizes {
    pub esp_mib: u64,
    pub bios_boot_mib: u64,
    pub usr_mib: u64,
    pub oem_mib: u64,
    pub root_mib: u64,
}

/// A validated board, paths resolved against the board file's folder.
#[derive(Clone, Debug, Serialize)]
pub struct Board {
    pub path: PathBuf,
    pub name: String,
    pub arch: Arch,
    pub oem_id: String,
    pub firmware: Vec<Firmware>,
    pub formats: Vec<Format>,
    pub rootfs: PathBuf,
    pub default_channel: String,
    pub kernel: KernelSource,
    pub boot_modules: Vec<String>,
    pub cmdline: Vec<String>,
    pub partitions: PartitionSizes,
    pub usr: UsrFilesystem,
}

/// Smallest sizes that can hold what goes there (FAT32 needs 65525 clusters of 512 bytes).
const MIN_ESP_MIB: u64 = 36;
const MIN_BIOS_BOOT_MIB: u64 = 1;
const MIN_USR_MIB: u64 = 16;
const MIN_EXT4_MIB: u64 = 8;
/// The whole disk may not exceed this (a sanity bound against typos such as an extra zero run).
const MAX_DISK_MIB: u64 = 16 * 1024 * 1024;

impl Board {
    pub fn load(path: &Path) -> Result<Board> {
        let file: BoardFile = yaml::load(path)?;
        validate(path, file)
    }

    /// The kernel command line as one string.
    pub fn cmdline_string(&self) -> String {
        self.cmdline.join(" ")
    }
}

fn at<T>(s: &Spanned<T>) -> Position {
    s.referenced.into()
}

fn word_ok(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

/// `p` relative to `base`, with `.` and `..` folded away so messages show plain paths.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir
                if out
                    .components()
                    .next_back()
                    .is_some_and(|l| matches!(l, std::path::Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn validate(path: &Path, f: BoardFile) -> Result<Board> {
    let base = path.parent().unwrap_or(Path::new("."));
    let err = |pos: Position, field: &str, msg: &str| located(path, pos, Some(field), msg);

    if !word_ok(&f.name.value, "-_.") {
        return Err(err(
            at(&f.name),
            "name",
            "must be a non-empty word of letters, digits, '-', '_' or '.'",
        ));
    }
    if !word_ok(&f.oem_id.value, "-_") {
        return Err(err(
            at(&f.oem_id),
            "oem_id",
            "must be a non-empty word of letters, digits, '-' or '_'",
        ));
    }
    if f.firmware.value.is_empty() {
        return Err(err(
            at(&f.firmware),
            "firmware",
            "list at least one firmware",
        ));
    }
    if f.formats.value.is_empty() {
        return Err(err(
            at(&f.formats),
            "formats",
            "list at least one output format",
        ));
    }
    if !word_ok(&f.default_channel.value, "-_.") {
        return Err(err(
            at(&f.default_channel),
            "default_channel",
            "must be a non-empty word of letters, digits, '-', '_' or '.'",
        ));
    }
    let rootfs = resolve(base, &f.rootfs.value);
    if !rootfs.is_file() {
        return Err(err(
            at(&f.rootfs),
            "rootfs",
            &format!("rootfs definition {} does not exist", rootfs.display()),
        ));
    }

    let kernel = match f.kernel {
        KernelFile::Package(p) => {
            if !word_ok(&p.value, "-+.") {
                return Err(err(at(&p), "kernel.package", "not a Debian package name"));
            }
            KernelSource::Package(p.value)
        }
        KernelFile::Deb(d) => {
            let file = resolve(base, &d.value);
            if !file.is_file() {
                return Err(err(
                    at(&d),
                    "kernel.deb",
                    &format!("{} does not exist", file.display()),
                ));
            }
            KernelSource::Deb(file)
        }
        KernelFile::Image { vmlinuz, modules } => {
            let image = resolve(base, &vmlinuz.value);
            if !image.is_file() {
                return Err(err(
                    at(&vmlinuz),
                    "kernel.image.vmlinuz",
                    &format!("{} does not exist", image.display()),
                ));
            }
            let dir = resolve(base, &modules.value);
            if !dir.join("modules.dep").is_file() {
                return Err(err(
                    at(&modules),
                    "kernel.image.modules",
                    &format!(
                        "{} is not a modules directory (no modules.dep)",
                        dir.display()
                    ),
                ));
            }
            KernelSource::Image {
                vmlinuz: image,
                modules: dir,
            }
        }
    };

    let mut boot_modules = Vec::new();
    for (i, m) in f.boot_modules.iter().enumerate() {
        if !word_ok(&m.value, "-_") {
            return Err(err(
                at(m),
                &format!("boot_modules[{i}]"),
                "not a module name (letters, digits, '-', '_')",
            ));
        }
        boot_modules.push(m.value.clone());
    }
    let mut cmdline = Vec::new();
    for (i, c) in f.cmdline.iter().enumerate() {
        if c.value.is_empty() || c.value.chars().any(char::is_whitespace) {
            return Err(err(
                at(c),
                &format!("cmdline[{i}]"),
                "one parameter per list entry, without spaces",
            ));
        }
        cmdline.push(c.value.clone());
    }

    let p = &f.partitions;
    for (field, v, min) in [
        ("partitions.esp_mib", &p.esp_mib, MIN_ESP_MIB),
        (
            "partitions.bios_boot_mib",
            &p.bios_boot_mib,
            MIN_BIOS_BOOT_MIB,
        ),
        ("partitions.usr_mib", &p.usr_mib, MIN_USR_MIB),
        ("partitions.oem_mib", &p.oem_mib, MIN_EXT4_MIB),
        ("partitions.root_mib", &p.root_mib, MIN_EXT4_MIB),
    ] {
        if v.value < min {
            return Err(err(
                at(v),
                field,
                &format!("{} MiB is too small: at least {min} MiB", v.value),
            ));
        }
        if v.value > MAX_DISK_MIB {
            return Err(err(
                at(v),
                field,
                &format!(
                    "{} MiB is larger than a disk may be ({MAX_DISK_MIB} MiB)",
                    v.value
                ),
            ));
        }
    }
    let total = p.esp_mib.value
        + p.bios_boot_mib.value
        + 2 * p.usr_mib.value
        + p.oem_mib.value
        + p.root_mib.value;
    if total > MAX_DISK_MIB {
        return Err(err(
            at(&p.esp_mib),
            "partitions",
            &format!("the partitions add up to {total} MiB, more than a disk may be ({MAX_DISK_MIB} MiB)"),
        ));
    }

    Ok(Board {
        path: path.to_path_buf(),
        name: f.name.value,
        arch: f.arch,
        oem_id: f.oem_id.value,
        firmware: f.firmware.value,
        formats: f.formats.value,
        rootfs,
        default_channel: f.default_channel.value,
        kernel,
        boot_modules,
        cmdline,
        partitions: PartitionSizes {
            esp_mib: p.esp_mib.value,
            bios_boot_mib: p.bios_boot_mib.value,
            usr_mib: p.usr_mib.value,
            oem_mib: p.oem_mib.value,
            root_mib: p.root_mib.value,
        },
        usr: f.usr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: test-board
arch: x86_64
oem_id: qemu
firmware: [uefi]
formats: [raw, qcow2]
rootfs: rootfs.yaml
default_channel: stable
kernel:
  package: linux-image-cloud-amd64
boot_modules: [virtio_blk, dm-verity]
cmdline:
  - console=ttyS0,115200n8
partitions:
  esp_mib: 128
  bios_boot_mib: 2
  usr_mib: 1024
  oem_mib: 128
  root_mib: 1024
";

    fn write(text: &str) -> (tempfile::TempDir, Result<Board>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rootfs.yaml"), "x").unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(&p, text).unwrap();
        let b = Board::load(&p);
        (dir, b)
    }

    #[test]
    fn good_board_loads() {
        let (_d, b) = write(GOOD);
        let b = b.unwrap();
        assert_eq!(b.name, "test-board");
        assert_eq!(
            b.kernel,
            KernelSource::Package("linux-image-cloud-amd64".into())
        );
        assert_eq!(b.partitions.usr_mib, 1024);
        assert_eq!(b.usr.compression, Compression::Lz4hc);
        assert_eq!(b.cmdline_string(), "console=ttyS0,115200n8");
    }

    #[test]
    fn too_small_partition_names_field_and_line() {
        let (_d, b) = write(&GOOD.replace("esp_mib: 128", "esp_mib: 4"));
        let e = b.unwrap_err().to_string();
        assert!(
            e.contains("b.yaml:14:12: partitions.esp_mib: 4 MiB is too small"),
            "{e}"
        );
    }

    #[test]
    fn missing_rootfs_and_deb_are_reported() {
        let (_d, b) = write(&GOOD.replace("rootfs: rootfs.yaml", "rootfs: nope.yaml"));
        let e = b.unwrap_err().to_string();
        assert!(e.contains(":6:9: rootfs: "), "{e}");
        let (_d, b) = write(&GOOD.replace("package: linux-image-cloud-amd64", "deb: k.deb"));
        let e = b.unwrap_err().to_string();
        assert!(
            e.contains(":9:8: kernel.deb: ") && e.contains("does not exist"),
            "{e}"
        );
    }

    #[test]
    fn unknown_format_and_firmware_are_rejected() {
        let (_d, b) = write(&GOOD.replace("[raw, qcow2]", "[raw, floppy]"));
        let e = b.unwrap_err().to_string();
        assert!(e.contains(":5:") && e.contains("floppy"), "{e}");
    }

    #[test]
    fn cmdline_entries_without_spaces() {
        let (_d, b) = write(&GOOD.replace("console=ttyS0,115200n8", "\"quiet splash\""));
        let e = b.unwrap_err().to_string();
        assert!(e.contains("cmdline[0]"), "{e}");
    }

    /// Every board in the repository parses (and so the schema fits all of them).
    #[test]
    fn repository_boards_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                Board::load(&p).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 1);
    }
}
