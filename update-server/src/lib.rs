//! Keel's update service: Omaha 3.0 at `/v1/update/` (HTTP or HTTPS), signed payloads on
//! channels, groups following channels, and the machines that ask.
//!
//! | module | job |
//! |---|---|
//! | [`config`] | the YAML configuration file |
//! | [`store`] | the `Store` trait, its migrations, SQLite |
//! | [`payload`] | checking a payload's signature, length and digests |
//! | [`publish`] | `publish`: verify, keep, record |
//! | [`policy`] | rollout policy: limits, office hours, pause, safe mode |
//! | [`protocol`] | an Omaha request in, the response or the refusal out, instances recorded |
//! | [`http`] | hyper accept loop, TLS, routes, Range, the JSON API, the dashboard |
//! | [`metrics`] | per-group counters and the Prometheus text |
//! | [`server`] | start/stop a configured server |
//! | [`cli`] | the command line (`run(Args)`) |

pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod metrics;
pub mod payload;
pub mod policy;
pub mod protocol;
pub mod publish;
pub mod server;
pub mod store;

pub use cli::{run, serve, Args, ServeArgs};

/// The allocator `keel-update-server` runs with (its binary and the bench that measures it
/// declare it as `#[global_allocator]`): each update check makes a few hundred small
/// allocations on the async workers, and glibc's malloc was a fifth of their time.
pub use mimalloc::MiMalloc as Allocator;
