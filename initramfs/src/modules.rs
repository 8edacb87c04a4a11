//! Step 2b: load the kernel modules the builder put into the initramfs, in its order.

use std::fs::File;
use std::path::Path;

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

pub const MODULES_DIR: &str = "/lib/modules";

/// Load each module; already loaded (EEXIST) is fine. Failures are logged and the boot goes
/// on: a missing driver shows up later as a missing disk or an unknown filesystem, with a
/// clearer message than the module loader's.
pub fn load_all(release: &str, modules: &[String]) {
    let base = Path::new(MODULES_DIR).join(release);
    let mut loaded = 0;
    for m in modules {
        let path = base.join(m);
        let outcome = match File::open(&path) {
            Err(e) => Err(e.to_string()),
            Ok(f) => match finit_module(&f, c"", ModuleInitFlags::empty()) {
                Ok(()) => Ok(true),
                Err(Errno::EEXIST) => Ok(false),
                Err(e @ Errno::ENOENT) => Err(format!(
                    "{e} (unknown symbols: a module it depends on is missing or listed after \
                     it; the kernel log names the symbols)"
                )),
                Err(e @ Errno::ENOEXEC) => Err(format!("{e} (not a module for this kernel)")),
                Err(e @ Errno::EKEYREJECTED) => Err(format!("{e} (signature rejected)")),
                Err(e) => Err(e.to_string()),
            },
        };
        match outcome {
            Ok(true) => loaded += 1,
            Ok(false) => {}
            Err(e) => crate::warning!("module {}: {e}", path.display()),
        }
    }
    crate::info!("loaded {loaded} of {} kernel modules", modules.len());
}
