//! What can be wrong with an Omaha body, and the update_engine exit code each case maps to.

use crate::action_code::ActionCode;

/// Nebraska's cap on `/v1/update/` bodies (`UpdateMaxRequestSize = 64*1024`,
/// `backend/pkg/handler/handler.go`); a larger request is refused before parsing (HTTP 400).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Where in the body a problem sits: byte offset and the 1-based line and column it falls on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: usize,
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `body`.
    pub fn in_body(body: &[u8], offset: usize) -> Self {
        let offset = offset.min(body.len());
        let before = &body[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        Position {
            offset,
            line,
            column: offset - line_start + 1,
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {} (byte {})",
            self.line, self.column, self.offset
        )
    }
}

/// A body that is not the Omaha document it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Zero bytes (update_engine: `kActionCodeOmahaRequestEmptyResponseError`, 30).
    #[error("empty body")]
    Empty,
    /// Over the size limit; nothing was parsed.
    #[error("body is {size} bytes, over the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    /// Not well-formed XML (update_engine: `kActionCodeOmahaRequestXMLParseError`, 31).
    #[error("malformed XML at {at}: {message}")]
    Xml { at: Position, message: String },
    /// Well-formed XML that is not the Omaha document expected: wrong root element, a
    /// required attribute missing, a number that is not one.
    #[error("invalid Omaha {element} at {at}: {message}")]
    Invalid {
        /// Path of the element, e.g. `request/app[1]/event[0]`.
        element: String,
        at: Position,
        message: String,
    },
}

impl Error {
    /// The update_engine `ActionExitCode` a client reports for a response body with this fault.
    /// A well-formed document without the expected shape fails update_engine's XPath look-ups:
    /// `kActionCodeOmahaResponseInvalid` (34).
    pub fn action_code(&self) -> ActionCode {
        match self {
            Error::Empty => ActionCode::OMAHA_EMPTY_RESPONSE,
            Error::Xml { .. } | Error::TooLarge { .. } => ActionCode::OMAHA_XML_PARSE_ERROR,
            Error::Invalid { .. } => ActionCode::OMAHA_RESPONSE_INVALID,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_columns_from_one() {
        let body = b"ab\ncd\nef";
        assert_eq!(
            Position::in_body(body, 0),
            Position {
                offset: 0,
                line: 1,
                column: 1
            }
        );
        let p = Position::in_body(body, 4);
        assert_eq!((p.line, p.column), (2, 2));
        assert_eq!(Position::in_body(body, 99).offset, body.len());
        assert_eq!(p.to_string(), "line 2, column 2 (byte 4)");
    }
}
