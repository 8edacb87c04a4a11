//! The Keel initramfs: keel-init as /init, its config, the trusted keys, the boot modules and
//! two device nodes, as a reproducible gzip'd cpio (layout: `keel_format::initramfs`).

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use keel_format::initramfs::{InitConfig, CONFIG_PATH, KEYS_DIR};
use keel_format::keys;

use crate::cpio::{self, Archive, Entry};
use crate::error::{io_at, Error, Result};
use crate::modules::{self, ModuleIndex};

pub struct Inputs<'a> {
    pub init: &'a Path,
    pub keys: &'a [VerifyingKey],
    pub modules_dir: &'a Path,
    pub kernel_release: &'a str,
    pub module_names: &'a [String],
    pub disk_guid: String,
    pub hand_off: String,
    pub keel_version: String,
    pub mtime: u64,
}

pub struct Initramfs {
    /// gzip'd cpio
    pub bytes: Vec<u8>,
    pub uncompressed_size: usize,
    pub config: InitConfig,
    /// Requested modules that are built into the kernel.
    pub builtin: Vec<String>,
}

fn read_or_empty(p: &Path) -> Result<String> {
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_at(p)(e)),
    }
}

pub fn build(inp: &Inputs) -> Result<Initramfs> {
    let init = std::fs::read(inp.init).map_err(io_at(inp.init))?;
    crate::static_bin::INIT.check(inp.init, &init)?;

    let dep = inp.modules_dir.join("modules.dep");
    let index = ModuleIndex::parse(
        &std::fs::read_to_string(&dep).map_err(io_at(&dep))?,
        &read_or_empty(&inp.modules_dir.join("modules.builtin"))?,
        &read_or_empty(&inp.modules_dir.join("modules.softdep"))?,
        &read_or_empty(&inp.modules_dir.join("modules.alias"))?,
    );
    let resolved = index.resolve(inp.module_names).map_err(|e| {
        Error::input(format!(
            "board boot_modules: {e} (kernel {})",
            inp.kernel_release
        ))
    })?;

    let mut a = Archive::new();
    a.file("init", 0o755, init);
    let mut loaded = Vec::new();
    for path in &resolved.load_order {
        let src = inp.modules_dir.join(path);
        let bytes = std::fs::read(&src).map_err(io_at(&src))?;
        let plain = modules::decompress(path, &bytes).map_err(|e| Error::Format(e.to_string()))?;
        let dest = modules::uncompressed_path(path);
        a.file(
            &format!("lib/modules/{}/{dest}", inp.kernel_release),
            0o644,
            plain,
        );
        loaded.push(dest);
    }
    for key in inp.keys {
        a.file(
            &format!("{KEYS_DIR}/{}.pem", keys::key_id(key)),
            0o644,
            keys::public_key_to_pem(key).into_bytes(),
        );
    }
    let config = InitConfig {
        kernel_release: inp.kernel_release.to_string(),
        modules: loaded,
        module_needs: Some(
            resolved
                .needs
                .iter()
                .map(|(path, needs)| {
                    let plain = |p: &String| modules::uncompressed_path(p);
                    (plain(path), needs.iter().map(plain).collect())
                })
                .collect(),
        ),
        board_modules: Some(
            resolved
                .named
                .iter()
                .map(|(path, aliases)| (modules::uncompressed_path(path), aliases.clone()))
                .collect(),
        ),
        disk_guid: inp.disk_guid.clone(),
        hand_off: inp.hand_off.clone(),
        keel_version: inp.keel_version.clone(),
    };
    let mut json = serde_json::to_vec_pretty(&config).expect("serializable");
    json.push(b'\n');
    a.file(CONFIG_PATH, 0o644, json);
    a.add(
        "dev/console",
        Entry::CharDev {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    );
    a.add(
        "dev/null",
        Entry::CharDev {
            mode: 0o666,
            major: 1,
            minor: 3,
        },
    );
    for d in ["proc", "sys", "run"] {
        a.add(d, Entry::Dir { mode: 0o755 });
    }

    let raw = a.to_bytes(inp.mtime);
    Ok(Initramfs {
        bytes: cpio::gzip(&raw),
        uncompressed_size: raw.len(),
        config,
        builtin: resolved.builtin,
    })
}
