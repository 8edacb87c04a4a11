//! A guest that runs a script and answers on its serial console. Test images carry an e2e
//! driver (keel-testkit's `driver_files`) that runs the script on the first extra disk at every
//! boot; serial input does not reach a shell, so a test writes the script, then waits for its
//! markers and reads `@@NAME value` lines. A firmware reboot the guest asks for is followed by
//! a power cycle of the VM ([`ScriptedGuest::power_cycle_on_reset`]).

use std::path::Path;
use std::time::Duration;

use crate::error::{BootError, SessionError, StartError};
use crate::options::BootOptions;
use crate::session::Session;

/// What a scripted guest can fail with. `Debug` prints the same text as `Display` (the
/// console log's path and tail included), so a test's `unwrap()` shows it readably.
#[derive(thiserror::Error)]
pub enum ScriptedError {
    #[error("QEMU did not start: {0}")]
    Start(#[from] Box<StartError>),
    #[error("waiting for {text:?}: {source}")]
    Wait {
        text: String,
        #[source]
        source: Box<BootError>,
    },
    #[error("{0}")]
    Session(#[from] SessionError),
}

impl std::fmt::Debug for ScriptedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Writes `script` as a script disk: the text padded with zeros to whole 4 KiB blocks (the
/// driver strips them).
pub fn write_script_disk(path: &Path, script: &str) -> std::io::Result<()> {
    let mut bytes = script.as_bytes().to_vec();
    bytes.resize(bytes.len().div_ceil(4096) * 4096, 0);
    std::fs::write(path, bytes)
}

pub struct ScriptedGuest {
    pub session: Session,
    /// How long each wait may take (a boot, a command of the script).
    pub timeout: Duration,
}

impl ScriptedGuest {
    /// Boots `options` (whose first extra disk is the script disk); every wait may take up
    /// to `timeout`.
    pub fn start(options: BootOptions, timeout: Duration) -> Result<ScriptedGuest, ScriptedError> {
        Ok(ScriptedGuest {
            session: Session::start(&options).map_err(Box::new)?,
            timeout,
        })
    }

    pub fn expect(&mut self, text: &str) -> Result<(), ScriptedError> {
        self.session
            .wait_for(text, self.timeout)
            .map_err(|source| ScriptedError::Wait {
                text: text.to_string(),
                source: Box::new(source),
            })
    }

    /// The text up to the next `marker` (which is consumed).
    pub fn until(&mut self, marker: &str) -> Result<String, ScriptedError> {
        let from = self.session.cursor();
        self.expect(marker)?;
        let len = self.session.cursor() - from - marker.len();
        let text = self.session.output_since(from);
        Ok(text.get(..len).unwrap_or(&text).to_string())
    }

    /// The value printed after `@@NAME ` up to the end of its line. A kernel message can land
    /// in the middle of the line (`2.0.0[   10.670692] kvm: ...` was seen in CI): the value
    /// ends where one starts (no value holds a `[`).
    pub fn value(&mut self, name: &str) -> Result<String, ScriptedError> {
        self.expect(&format!("@@{name} "))?;
        self.rest_of_line()
    }

    /// The rest of the current line, trimmed, up to a kernel message that landed in it.
    pub fn rest_of_line(&mut self) -> Result<String, ScriptedError> {
        let line = self.until("\n")?;
        Ok(line.split('[').next().unwrap_or("").trim().to_string())
    }

    /// The `keel-init: [   7.256] booting USR-X version V (...)` line of this boot: (slot,
    /// version).
    pub fn booted(&mut self) -> Result<(String, String), ScriptedError> {
        self.expect("] booting USR-")?;
        let slot = format!("USR-{}", self.until(" ")?.trim());
        self.expect("version ")?;
        let version = self.until(" ")?.trim().to_string();
        Ok((slot, version))
    }

    /// The guest reboots through the firmware: once Linux has reset the machine (its last
    /// line, after systemd stopped everything and synced), the VM is power-cycled
    /// ([`Session::power_cycle`]: a new QEMU on the same disk state and firmware variables).
    /// QEMU 7.2's warm reset under TCG wedged twice in CI runs right after a guest's reboot (no
    /// firmware output for five minutes; QMP `system_reset` did not bring it back), while cold
    /// starts never did.
    pub fn power_cycle_on_reset(&mut self) -> Result<(), ScriptedError> {
        self.expect("reboot: machine restart")?;
        Ok(self.session.power_cycle("the guest reset the machine")?)
    }
}
