//! The two boot stages. `local` (before sysinit.target) walks the sources in order; at the
//! first one that needs the network it stops and starts `keel-cloudinit-network.service`
//! (after network-online.target), which walks on from there. First found wins.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::apply::{apply_user_data, ensure_core, Verdict};
use super::host::Host;
use super::kargs::KernelArgs;
use super::source::{Media, Reader, Source, ATTRIBUTES_FILE};

pub const NETWORK_UNIT: &str = "keel-cloudinit-network.service";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Local,
    Network,
}

/// What a stage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Applied {
        source: &'static str,
        errors: usize,
    },
    /// Handed over to the network stage at this source.
    NeedsNetwork(&'static str),
    NothingFound,
    Halt,
}

pub struct Boot<'a> {
    pub root: PathBuf,
    pub kargs: KernelArgs,
    pub sources: Vec<Source>,
    pub reader: Reader<'a>,
}

impl<'a> Boot<'a> {
    pub fn new(
        root: PathBuf,
        kargs: KernelArgs,
        sources: Vec<Source>,
        media: &'a dyn Media,
    ) -> Self {
        let reader = Reader {
            root: root.clone(),
            fw_cfg_dir: super::source::FW_CFG_DIR.into(),
            media,
            http: super::http::Client::new(Duration::from_secs(10)),
            attempts: 10,
            pause: Duration::from_secs(2),
        };
        Boot {
            root,
            kargs,
            sources,
            reader,
        }
    }

    pub fn run(&self, stage: Stage, host: &mut dyn Host, out: &mut dyn Write) -> Done {
        if stage == Stage::Local {
            ensure_core(&self.root, out);
        }
        let first_network = self.sources.iter().position(Source::needs_network);
        let todo = match (stage, first_network) {
            (Stage::Local, _) => &self.sources[..],
            (Stage::Network, Some(i)) => &self.sources[i..],
            (Stage::Network, None) => &[],
        };
        let mut looked = Vec::new();
        for source in todo {
            if stage == Stage::Local && source.needs_network() {
                let _ = writeln!(
                    out,
                    "keel-cloudinit: {} needs the network: continuing in {NETWORK_UNIT}",
                    source.name()
                );
                if let Err(e) = host.systemctl(&["--no-block", "start", NETWORK_UNIT]) {
                    let _ = writeln!(out, "keel-cloudinit: starting {NETWORK_UNIT}: {e}");
                }
                return Done::NeedsNetwork(source.name());
            }
            looked.push(source.name());
            match self.reader.read(source) {
                Ok(None) => {}
                Ok(Some(found)) => {
                    let _ = writeln!(
                        out,
                        "keel-cloudinit: user-data from {}: {} ({} bytes)",
                        source.name(),
                        found.file,
                        found.bytes.len()
                    );
                    // Before the user-data: a unit it starts (etcd-member) may read them.
                    if !found.attributes.is_empty() {
                        write_attributes(&self.root, source.name(), &found.attributes, out);
                    }
                    return match apply_user_data(
                        &self.root,
                        &found.file,
                        &found.bytes,
                        self.kargs.strict,
                        host,
                        out,
                    ) {
                        Verdict::Halt => Done::Halt,
                        Verdict::Applied { errors } => Done::Applied {
                            source: source.name(),
                            errors,
                        },
                    };
                }
                Err(e) => {
                    let _ = writeln!(out, "keel-cloudinit: {}: error: {e}", source.name());
                    if self.kargs.strict {
                        let _ = writeln!(out, "keel-cloudinit: keel.config.strict=1: halting");
                        return Done::Halt;
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "keel-cloudinit: no user-data found (looked at: {})",
            looked.join(", ")
        );
        Done::NothingFound
    }
}

/// `KEY=value` lines in [`ATTRIBUTES_FILE`] (0644, atomically), said on the console.
fn write_attributes(
    root: &std::path::Path,
    source: &str,
    attributes: &[(String, String)],
    out: &mut dyn Write,
) {
    let text: String = attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    let written = crate::apply::rootfs::resolve(root, ATTRIBUTES_FILE)
        .map_err(|e| e.to_string())
        .and_then(|at| {
            crate::apply::rootfs::write_file(&at, text.as_bytes(), 0o644, None)
                .map_err(|e| e.to_string())
        });
    let names: Vec<&str> = attributes.iter().map(|(k, _)| k.as_str()).collect();
    let _ = match written {
        Ok(_) => writeln!(
            out,
            "keel-cloudinit: {source}: instance attributes in {ATTRIBUTES_FILE}: {}",
            names.join(", ")
        ),
        Err(e) => writeln!(out, "keel-cloudinit: {ATTRIBUTES_FILE}: error: {e}"),
    };
}
