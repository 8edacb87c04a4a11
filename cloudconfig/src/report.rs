//! What validation says: entries of kind error / warning / info with a line, in
//! coreos-cloudinit's order (rule by rule), rendered for people or as JSON.

use std::fmt;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Error => "error",
            Kind::Warning => "warning",
            Kind::Info => "info",
        })
    }
}

/// One finding. `line` is 1-based; 0 means the document as a whole (coreos-cloudinit adds such
/// a warning after a YAML syntax error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub kind: Kind,
    pub line: usize,
    pub message: String,
}

/// What the user-data is, before any rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Document {
    /// Zero bytes: nothing to do.
    Empty,
    /// `#cloud-config`: validated.
    CloudConfig,
    /// `#!…`: a script, run once; not validated.
    Script,
    /// An Ignition config (JSON with `ignitionVersion` or `ignition.version`): not ours.
    Ignition,
    /// `Content-Type: multipart/mixed`: recognised, not supported by Keel.
    MultipartMime,
    /// None of the above.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The file name used in the human rendering (empty when validating bytes).
    pub file: String,
    pub document: Document,
    pub entries: Vec<Entry>,
}

impl Report {
    pub fn new(document: Document) -> Report {
        Report {
            file: String::new(),
            document,
            entries: Vec::new(),
        }
    }

    pub fn push(&mut self, kind: Kind, line: usize, message: impl Into<String>) {
        self.entries.push(Entry {
            kind,
            line,
            message: message.into(),
        });
    }

    pub fn error(&mut self, line: usize, message: impl Into<String>) {
        self.push(Kind::Error, line, message);
    }

    pub fn warning(&mut self, line: usize, message: impl Into<String>) {
        self.push(Kind::Warning, line, message);
    }

    pub fn info(&mut self, line: usize, message: impl Into<String>) {
        self.push(Kind::Info, line, message);
    }

    pub fn has_errors(&self) -> bool {
        self.entries.iter().any(|e| e.kind == Kind::Error)
    }

    /// `{"file":…,"document":"cloud-config","valid":true,"entries":[{"kind":"warning","line":3,"message":…}]}`
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            file: &'a str,
            document: Document,
            valid: bool,
            entries: &'a [Entry],
        }
        serde_json::to_string_pretty(&Out {
            file: &self.file,
            document: self.document,
            valid: !self.has_errors(),
            entries: &self.entries,
        })
        .expect("a report serialises")
    }

    /// One line per entry, `FILE:LINE: kind: message` (`FILE: kind: message` for line 0).
    pub fn to_human(&self) -> String {
        let file = if self.file.is_empty() {
            "-"
        } else {
            &self.file
        };
        let mut out = String::new();
        for e in &self.entries {
            if e.line == 0 {
                out.push_str(&format!("{file}: {}: {}\n", e.kind, e.message));
            } else {
                out.push_str(&format!("{file}:{}: {}: {}\n", e.line, e.kind, e.message));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let mut r = Report::new(Document::CloudConfig);
        r.file = "user-data.yml".into();
        r.error(5, "invalid value lol");
        r.warning(0, "incorrect type for \"\" (want struct)");
        assert_eq!(
            r.to_human(),
            "user-data.yml:5: error: invalid value lol\nuser-data.yml: warning: incorrect type for \"\" (want struct)\n"
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["valid"], false);
        assert_eq!(v["document"], "cloud-config");
        assert_eq!(v["entries"][0]["kind"], "error");
        assert_eq!(v["entries"][0]["line"], 5);
    }
}
