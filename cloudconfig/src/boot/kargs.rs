//! The kernel arguments keel-cloudinit reads from `/proc/cmdline`.

/// `keel.config.url=URL`: fetch the user-data from URL (over the network; first source).
pub const URL: &str = "keel.config.url";
/// `keel.config.imds=URL`: EC2 instance metadata endpoint (default
/// `http://169.254.169.254`); also makes the IMDS source apply outside EC2 (tests, clouds with
/// an EC2-compatible metadata service).
pub const IMDS: &str = "keel.config.imds";
/// `keel.config.strict=1`: a config with errors halts the machine instead of booting with
/// what was valid.
pub const STRICT: &str = "keel.config.strict";

/// What the command line asks of keel-cloudinit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelArgs {
    pub url: Option<String>,
    pub imds: Option<String>,
    pub strict: bool,
}

impl KernelArgs {
    /// Parse a kernel command line (the last of repeated arguments wins, as in the kernel's
    /// own handling of most parameters). `keel.config.strict` alone, `=1`, `=yes` or `=true`
    /// turn strict mode on; `=0`, `=no`, `=false` off.
    pub fn parse(cmdline: &str) -> KernelArgs {
        let mut k = KernelArgs::default();
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((key, value)) => (key, Some(value)),
                None => (word, None),
            };
            match (key, value) {
                (URL, Some(v)) if !v.is_empty() => k.url = Some(v.to_string()),
                (IMDS, Some(v)) if !v.is_empty() => {
                    k.imds = Some(v.trim_end_matches('/').to_string())
                }
                (STRICT, None) => k.strict = true,
                (STRICT, Some(v)) => k.strict = matches!(v, "1" | "yes" | "true" | "on"),
                _ => {}
            }
        }
        k
    }

    /// `/proc/cmdline`, parsed (empty when unreadable).
    pub fn from_proc() -> KernelArgs {
        KernelArgs::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_arguments() {
        let k = KernelArgs::parse(
            "console=ttyS0 keel.config.url=http://10.0.2.2:8080/cc.yml keel.config.imds=http://10.0.2.2:9/ keel.config.strict=1\n",
        );
        assert_eq!(k.url.as_deref(), Some("http://10.0.2.2:8080/cc.yml"));
        assert_eq!(k.imds.as_deref(), Some("http://10.0.2.2:9"));
        assert!(k.strict);
    }

    #[test]
    fn absent_empty_and_switched_off() {
        assert_eq!(KernelArgs::parse("quiet"), KernelArgs::default());
        let k = KernelArgs::parse("keel.config.url= keel.config.strict=1 keel.config.strict=0");
        assert_eq!(k, KernelArgs::default());
        assert!(KernelArgs::parse("keel.config.strict").strict);
        assert!(!KernelArgs::parse("keel.config.strictly=1").strict);
    }
}
