//! The update agent: asks the update server (Omaha) whether there is an update, streams it
//! through [`crate::apply`] into the passive slot, reports events, remembers what failed here
//! and, as `keel-update agent`, does so on update_engine's schedule.
//!
//! * [`config`]: `update.conf` (SERVER, GROUP, REBOOT_STRATEGY), the machine id, the system;
//! * [`omaha`]: the requests (keel-omaha's types and writer) and the verdict on the answer;
//! * [`check`]: one check, start to end (`keel-update check`);
//! * [`errorcode`]: keel-update's exit codes as update_engine's `errorcode`s;
//! * [`schedule`]: when to check next, a pure function of the agent's state.

pub mod check;
pub mod config;
pub mod errorcode;
pub mod omaha;
pub mod schedule;
