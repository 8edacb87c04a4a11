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
    usr: UsrFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsrFile {
    #[serde(default = "default_compression")]
    compression: Compression,
    physical_cluster_kib: Option<Spanned<u64>>,
}

impl Default for UsrFile {
    fn default() -> Self {
        UsrFile {
            compression: default_compression(),
            physical_cluster_kib: None,
        }
    }
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

/// How USR's erofs is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UsrFilesystem {
    pub compression: Compression,
    /// The most compressed data one extent takes (`mkfs.erofs -C`): larger compresses better,
    /// and a read decompresses the whole extent.
    pub physical_cluster_kib: u64,
}

impl Default for UsrFilesystem {
    fn default() -> Self {
        UsrFilesystem {
            compression: default_compression(),
            physical_cluster_kib: DEFAULT_PHYSICAL_CLUSTER_KIB,
        }
    }
}

/// Chosen by measurement (bench/README.md, init-vs-initramfs-tools): 14 % smaller than one
/// block per extent, the trial boot's whole-slot read 0.5 s shorter, about 25 ms more on other
/// boots.
pub const DEFAULT_PHYSICAL_CLUSTER_KIB: u64 = 64;
/// One filesystem block, and the largest extent Linux's erofs reads (`Z_EROFS_PCLUSTER_MAX_SIZE`).
const MIN_PHYSICAL_CLUSTER_KIB: u64 = 4;
const MAX_PHYSICAL_CLUSTER_KIB: u64 = 1024;

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

/// What a field must hold; each row of [`RULES`] binds a key to one of these.
#[derive(Clone, Copy)]
enum Check {
    /// A non-empty word of ASCII letters, digits and these characters.
    Word(&'static str),
    /// A list with at least one entry.
    NonEmpty,
    /// One kernel command-line parameter: not empty, no whitespace.
    Param,
    /// A file, relative to the board file's folder (the row's message names it at `{}`).
    File,
    /// A kernel modules directory (holding modules.dep), relative to the board file's folder.
    ModulesDir,
    /// A partition size in MiB, from this minimum up to [`MAX_DISK_MIB`].
    MiB(u64),
    /// The partitions together: at most [`MAX_DISK_MIB`].
    Disk,
    /// An erofs physical cluster in KiB: a power of two within the kernel's bounds.
    ClusterKiB,
    /// A key that contradicts another: any value fails.
    Absent,
}

/// A value as its check sees it.
enum Value<'a> {
    Text(&'a str),
    /// A list, by its length.
    List(usize),
    Path(&'a Path),
    MiB(u64),
    KiB(u64),
}

/// The values a row checks, each with its position (none: the key is absent from this board,
/// e.g. `kernel.deb` on a board that names a package).
type Values = for<'a> fn(&'a BoardFile) -> Vec<(Position, Value<'a>)>;

/// One row of the board table: the key errors name (`[]`: each entry of a list, named
/// `key[i]`), where its values are, the check, and what the error says (`{}`: the resolved
/// path; the size checks say their own).
struct Rule {
    key: &'static str,
    values: Values,
    check: Check,
    says: &'static str,
}

const fn rule(key: &'static str, values: Values, check: Check, says: &'static str) -> Rule {
    Rule {
        key,
        values,
        check,
        says,
    }
}

fn texts<'a>(items: impl IntoIterator<Item = &'a Spanned<String>>) -> Vec<(Position, Value<'a>)> {
    items
        .into_iter()
        .map(|s| (at(s), Value::Text(&s.value)))
        .collect()
}

fn paths<'a>(items: impl IntoIterator<Item = &'a Spanned<PathBuf>>) -> Vec<(Position, Value<'a>)> {
    items
        .into_iter()
        .map(|s| (at(s), Value::Path(&s.value)))
        .collect()
}

fn list<T>(s: &Spanned<Vec<T>>) -> Vec<(Position, Value<'_>)> {
    vec![(at(s), Value::List(s.value.len()))]
}

fn mib(s: &Spanned<u64>) -> Vec<(Position, Value<'_>)> {
    vec![(at(s), Value::MiB(s.value))]
}

const WORD: &str = "must be a non-empty word of letters, digits, '-', '_' or '.'";
const NO_FILE: &str = "{} does not exist";

/// Every key of a board file bound to its check, in the order they are checked.
#[rustfmt::skip]
const RULES: &[Rule] = &[
    rule("name",                     |f| texts([&f.name]),              Check::Word("-_."), WORD),
    rule("oem_id",                   |f| texts([&f.oem_id]),            Check::Word("-_"),  "must be a non-empty word of letters, digits, '-' or '_'"),
    rule("firmware",                 |f| list(&f.firmware),             Check::NonEmpty,    "list at least one firmware"),
    rule("formats",                  |f| list(&f.formats),              Check::NonEmpty,    "list at least one output format"),
    rule("default_channel",          |f| texts([&f.default_channel]),   Check::Word("-_."), WORD),
    rule("rootfs",                   |f| paths([&f.rootfs]),            Check::File,        "rootfs definition {} does not exist"),
    rule("kernel.package",           |f| texts(f.kernel.package()),     Check::Word("-+."), "not a Debian package name"),
    rule("kernel.deb",               |f| paths(f.kernel.deb()),         Check::File,        NO_FILE),
    rule("kernel.image.vmlinuz",     |f| paths(f.kernel.vmlinuz()),     Check::File,        NO_FILE),
    rule("kernel.image.modules",     |f| paths(f.kernel.modules()),     Check::ModulesDir,  "{} is not a modules directory (no modules.dep)"),
    rule("boot_modules[]",           |f| texts(&f.boot_modules),        Check::Word("-_"),  "not a module name (letters, digits, '-', '_')"),
    rule("cmdline[]",                |f| texts(&f.cmdline),             Check::Param,       "one parameter per list entry, without spaces"),
    rule("partitions.esp_mib",       |f| mib(&f.partitions.esp_mib),       Check::MiB(MIN_ESP_MIB),       ""),
    rule("partitions.bios_boot_mib", |f| mib(&f.partitions.bios_boot_mib), Check::MiB(MIN_BIOS_BOOT_MIB), ""),
    rule("partitions.usr_mib",       |f| mib(&f.partitions.usr_mib),       Check::MiB(MIN_USR_MIB),       ""),
    rule("partitions.oem_mib",       |f| mib(&f.partitions.oem_mib),       Check::MiB(MIN_EXT4_MIB),      ""),
    rule("partitions.root_mib",      |f| mib(&f.partitions.root_mib),      Check::MiB(MIN_EXT4_MIB),      ""),
    // The whole disk, reported at the first size.
    rule("partitions",               |f| f.partitions.disk(),              Check::Disk,                   ""),
    rule("usr.physical_cluster_kib", |f| f.usr.cluster(),                  Check::ClusterKiB,             ""),
    rule("usr.physical_cluster_kib", |f| f.usr.cluster_uncompressed(),     Check::Absent,                 "clusters hold compressed data, and usr.compression is none: remove one of the two"),
];

impl KernelFile {
    fn package(&self) -> Option<&Spanned<String>> {
        match self {
            KernelFile::Package(p) => Some(p),
            _ => None,
        }
    }

    fn deb(&self) -> Option<&Spanned<PathBuf>> {
        match self {
            KernelFile::Deb(d) => Some(d),
            _ => None,
        }
    }

    fn vmlinuz(&self) -> Option<&Spanned<PathBuf>> {
        match self {
            KernelFile::Image { vmlinuz, .. } => Some(vmlinuz),
            _ => None,
        }
    }

    fn modules(&self) -> Option<&Spanned<PathBuf>> {
        match self {
            KernelFile::Image { modules, .. } => Some(modules),
            _ => None,
        }
    }
}

impl UsrFile {
    fn cluster(&self) -> Vec<(Position, Value<'_>)> {
        self.physical_cluster_kib
            .iter()
            .map(|c| (at(c), Value::KiB(c.value)))
            .collect()
    }

    /// The cluster size when it was given for an uncompressed USR, where mkfs.erofs has no use
    /// for it.
    fn cluster_uncompressed(&self) -> Vec<(Position, Value<'_>)> {
        match self.compression {
            Compression::None => self.cluster(),
            _ => Vec::new(),
        }
    }
}

impl PartitionsFile {
    /// The partitions together in MiB (USR twice: A and B), at the first size's position.
    fn disk(&self) -> Vec<(Position, Value<'_>)> {
        let total = self.esp_mib.value
            + self.bios_boot_mib.value
            + 2 * self.usr_mib.value
            + self.oem_mib.value
            + self.root_mib.value;
        vec![(at(&self.esp_mib), Value::MiB(total))]
    }
}

impl Check {
    /// `Err(message)` when `v` fails the check; `says` is the row's message, paths resolve
    /// against `base`.
    fn test(self, v: &Value, says: &str, base: &Path) -> std::result::Result<(), String> {
        let fail = || Err(says.to_string());
        match (self, v) {
            (Check::Word(extra), Value::Text(s)) if !word_ok(s, extra) => fail(),
            (Check::NonEmpty, Value::List(0)) => fail(),
            (Check::Param, Value::Text(s))
                if s.is_empty() || s.chars().any(char::is_whitespace) =>
            {
                fail()
            }
            (Check::File, Value::Path(p)) if !resolve(base, p).is_file() => {
                Err(says.replace("{}", &resolve(base, p).display().to_string()))
            }
            (Check::ModulesDir, Value::Path(p))
                if !resolve(base, p).join("modules.dep").is_file() =>
            {
                Err(says.replace("{}", &resolve(base, p).display().to_string()))
            }
            (Check::MiB(min), &Value::MiB(v)) if v < min => {
                Err(format!("{v} MiB is too small: at least {min} MiB"))
            }
            (Check::MiB(_), &Value::MiB(v)) if v > MAX_DISK_MIB => Err(format!(
                "{v} MiB is larger than a disk may be ({MAX_DISK_MIB} MiB)"
            )),
            (Check::Disk, &Value::MiB(total)) if total > MAX_DISK_MIB => Err(format!(
                "the partitions add up to {total} MiB, more than a disk may be ({MAX_DISK_MIB} MiB)"
            )),
            (Check::ClusterKiB, &Value::KiB(v))
                if !v.is_power_of_two()
                    || !(MIN_PHYSICAL_CLUSTER_KIB..=MAX_PHYSICAL_CLUSTER_KIB).contains(&v) =>
            {
                Err(format!(
                    "{v} KiB: must be a power of two from {MIN_PHYSICAL_CLUSTER_KIB} to \
                     {MAX_PHYSICAL_CLUSTER_KIB}"
                ))
            }
            (Check::Absent, _) => fail(),
            _ => Ok(()),
        }
    }
}

fn validate(path: &Path, f: BoardFile) -> Result<Board> {
    let base = path.parent().unwrap_or(Path::new("."));
    for rule in RULES {
        for (i, (pos, value)) in (rule.values)(&f).iter().enumerate() {
            if let Err(message) = rule.check.test(value, rule.says, base) {
                let key = match rule.key.strip_suffix("[]") {
                    Some(list) => format!("{list}[{i}]"),
                    None => rule.key.to_string(),
                };
                return Err(located(path, *pos, Some(&key), &message));
            }
        }
    }

    let kernel = match f.kernel {
        KernelFile::Package(p) => KernelSource::Package(p.value),
        KernelFile::Deb(d) => KernelSource::Deb(resolve(base, &d.value)),
        KernelFile::Image { vmlinuz, modules } => KernelSource::Image {
            vmlinuz: resolve(base, &vmlinuz.value),
            modules: resolve(base, &modules.value),
        },
    };
    let p = &f.partitions;
    Ok(Board {
        path: path.to_path_buf(),
        name: f.name.value,
        arch: f.arch,
        oem_id: f.oem_id.value,
        firmware: f.firmware.value,
        formats: f.formats.value,
        rootfs: resolve(base, &f.rootfs.value),
        default_channel: f.default_channel.value,
        kernel,
        boot_modules: f.boot_modules.into_iter().map(|m| m.value).collect(),
        cmdline: f.cmdline.into_iter().map(|c| c.value).collect(),
        partitions: PartitionSizes {
            esp_mib: p.esp_mib.value,
            bios_boot_mib: p.bios_boot_mib.value,
            usr_mib: p.usr_mib.value,
            oem_mib: p.oem_mib.value,
            root_mib: p.root_mib.value,
        },
        usr: UsrFilesystem {
            compression: f.usr.compression,
            physical_cluster_kib: f
                .usr
                .physical_cluster_kib
                .map_or(DEFAULT_PHYSICAL_CLUSTER_KIB, |c| c.value),
        },
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
        assert_eq!(b.usr.physical_cluster_kib, DEFAULT_PHYSICAL_CLUSTER_KIB);
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

    /// A list entry is named by its index; the whole disk is checked after each size.
    #[test]
    fn list_entries_and_disk_total_are_named() {
        let (_d, b) =
            write(&GOOD.replace("[virtio_blk, dm-verity]", "[virtio_blk, \"dm verity\"]"));
        let e = b.unwrap_err().to_string();
        assert!(
            e.contains(":10:28: boot_modules[1]: not a module name"),
            "{e}"
        );
        let (_d, b) = write(&GOOD.replace("root_mib: 1024", "root_mib: 16777000"));
        let e = b.unwrap_err().to_string();
        assert!(
            e.contains(":14:12: partitions: the partitions add up to"),
            "{e}"
        );
    }

    #[test]
    fn cmdline_entries_without_spaces() {
        let (_d, b) = write(&GOOD.replace("console=ttyS0,115200n8", "\"quiet splash\""));
        let e = b.unwrap_err().to_string();
        assert!(e.contains("cmdline[0]"), "{e}");
    }

    #[test]
    fn physical_cluster_is_a_power_of_two_within_bounds() {
        let with = |kib: &str| GOOD.to_string() + &format!("usr:\n  physical_cluster_kib: {kib}\n");
        let (_d, b) = write(&with("16"));
        assert_eq!(b.unwrap().usr.physical_cluster_kib, 16);
        for bad in ["48", "2", "2048"] {
            let (_d, b) = write(&with(bad));
            let e = b.unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    ":20:25: usr.physical_cluster_kib: {bad} KiB: must be a power of two"
                )),
                "{e}"
            );
        }
        let (_d, b) = write(&(GOOD.to_string() + "usr:\n  compression: none\n"));
        assert_eq!(b.unwrap().usr.compression, Compression::None);
        let (_d, b) =
            write(&(GOOD.to_string() + "usr:\n  compression: none\n  physical_cluster_kib: 64\n"));
        let e = b.unwrap_err().to_string();
        assert!(
            e.contains(":21:25: usr.physical_cluster_kib: clusters hold compressed data, and usr.compression is none"),
            "{e}"
        );
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
