//! Loading a YAML definition file into a typed struct, with errors that name the file, the line
//! and the field (`boards/x.yaml:4:12: partitions.usr_mib: invalid u64`).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_saphyr::Location;

use crate::error::{io_at, Error, Result};

/// Where in a definition file a value came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl From<Location> for Position {
    fn from(l: Location) -> Self {
        Position {
            line: l.line(),
            column: l.column(),
        }
    }
}

/// Parse `text` (the contents of `path`) as `T`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    let mut field = String::new();
    let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            // `Spanned<T>` shows up as a `.value` segment: not part of the file's schema.
            field = e
                .path()
                .to_string()
                .split('.')
                .filter(|s| *s != "value")
                .collect::<Vec<_>>()
                .join(".");
            e.into_inner()
        })
    });
    parsed.map_err(|e| {
        let position = e.location().map(Position::from).unwrap_or_default();
        let plain = e.without_snippet().to_string();
        // The plain message ends with " at line L, column C"; the prefix carries that already.
        let message = match plain.rsplit_once(" at line ") {
            Some((m, _)) => m.to_string(),
            None => plain,
        };
        let field = if field.is_empty() || field == "." {
            None
        } else {
            Some(field.as_str())
        };
        located(path, position, field, &message)
    })
}

/// Read and parse the definition file at `path`.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::input(format!("{}: file not found", path.display())),
        _ => io_at(path)(e),
    })?;
    parse(path, &text)
}

/// A definition error at a known position: `FILE:LINE:COLUMN: FIELD: MESSAGE`.
pub fn located(path: &Path, at: Position, field: Option<&str>, message: &str) -> Error {
    let mut s = path.display().to_string();
    if at.line > 0 {
        s.push_str(&format!(":{}:{}", at.line, at.column));
    }
    if let Some(f) = field {
        s.push_str(&format!(": {f}"));
    }
    s.push_str(&format!(": {message}"));
    Error::Input(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        size_mib: u64,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        parts: Inner,
    }

    fn err(text: &str) -> String {
        parse::<Outer>(Path::new("b.yaml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn wrong_type_names_file_line_and_field() {
        let e = err("name: x\nparts:\n  size_mib: lots\n");
        assert!(e.starts_with("b.yaml:3:13: parts.size_mib: "), "{e}");
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err("name: x\nparts:\n  size_mb: 3\n");
        assert!(e.starts_with("b.yaml:3:3: "), "{e}");
        assert!(e.contains("unknown field `size_mb`"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = err("name: x\nparts: [\n  size_mib: 3\n");
        assert!(e.starts_with("b.yaml:"), "{e}");
        assert!(
            e.split(':').nth(1).unwrap().parse::<u32>().unwrap() >= 2,
            "{e}"
        );
    }

    #[test]
    fn missing_field_is_named() {
        let e = err("name: x\nparts: {}\n");
        assert!(e.contains("size_mib"), "{e}");
    }

    #[test]
    fn good_input_parses() {
        let o: Outer = parse(Path::new("b.yaml"), "name: x\nparts:\n  size_mib: 3\n").unwrap();
        assert_eq!((o.name.as_str(), o.parts.size_mib), ("x", 3));
    }
}
