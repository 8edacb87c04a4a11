//! The Omaha 3.0 protocol as Keel's update server and update agent both speak it: the data
//! types, the parser, the writers and update_engine's verdict on a response. One crate, so the
//! two ends cannot drift apart.
//!
//! ```
//! let body = br#"<response protocol="3.0"><app appid="a" status="ok">
//!   <updatecheck status="noupdate"/></app></response>"#;
//! assert_eq!(
//!     keel_omaha::client_outcome_from_body(body, "a"),
//!     keel_omaha::Outcome::NoUpdate { poll_interval: None }
//! );
//! ```

mod action_code;
mod error;
mod outcome;
mod parse;
mod types;
mod write;
mod xml;

pub use action_code::ActionCode;
pub use error::{Error, Position, MAX_REQUEST_BYTES};
pub use outcome::{client_outcome, client_outcome_from_body, Outcome, Update};
pub use parse::{parse_request, parse_response};
pub use types::*;
pub use write::{write_request, write_response};
