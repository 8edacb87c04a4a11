//! The one HTTP client setup of Keel's tools (the update agent, `keel-update apply URL`, the
//! installer, cloud-config's network sources, the FleetLock client): blocking ureq over rustls,
//! explicit timeouts, the proxy variables read as curl reads them, and one error type whose
//! message names the method, the URL, the HTTP status, the bytes received and, for a body that
//! is not what was expected, what it started with.

#![forbid(unsafe_code)]

mod client;
mod error;
mod proxy;

pub use client::{BodyReader, Client, Response, Timeouts};
pub use error::{excerpt, HttpError};
pub use proxy::{NoProxy, ProxyEnv};
