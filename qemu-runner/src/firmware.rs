//! Firmware files: for UEFI boots OVMF's read-only code image and a private copy of
//! the variable store per session (the guest writes boot entries into it); for BIOS
//! boots the fw_cfg file that turns on SeaBIOS's serial console.

use std::path::{Path, PathBuf};

use crate::error::StartError;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS_TEMPLATE: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The pflash pair of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvmfFiles {
    pub code: PathBuf,
    pub vars: PathBuf,
}

/// Copies the variable store template into `session_dir`.
pub fn prepare_ovmf(session_dir: &Path) -> Result<OvmfFiles, StartError> {
    let code = PathBuf::from(OVMF_CODE);
    let template = Path::new(OVMF_VARS_TEMPLATE);
    for path in [code.as_path(), template] {
        if !path.is_file() {
            return Err(StartError::Missing {
                what: "UEFI firmware",
                path: path.to_path_buf(),
                hint: "install Debian's ovmf package",
            });
        }
    }
    let vars = session_dir.join("OVMF_VARS.fd");
    std::fs::copy(template, &vars).map_err(|source| StartError::Io {
        context: format!("copy {} to {}", template.display(), vars.display()),
        source,
    })?;
    Ok(OvmfFiles { code, vars })
}

/// COM1, where the guest's console is.
const SERIAL_PORT: u16 = 0x3f8;

/// Writes the `etc/sercon-port` fw_cfg file (the I/O port as a little-endian integer) into
/// `session_dir`: SeaBIOS then mirrors the text screen on that serial port.
pub fn prepare_seabios_serial(session_dir: &Path) -> Result<PathBuf, StartError> {
    let path = session_dir.join("sercon-port");
    std::fs::write(&path, SERIAL_PORT.to_le_bytes()).map_err(|source| StartError::Io {
        context: format!("write {}", path.display()),
        source,
    })?;
    Ok(path)
}
