//! Cluster-wide reboot coordination, the pure part: locksmith's reboot semaphore (key layout,
//! JSON value, transitions), a compare-and-swap retry loop over any store, locksmith's reboot
//! window, `REBOOT_STRATEGY`, and the FleetLock protocol with Keel's server decisions.
//! No I/O but the etcd v3 store ([`etcd`], feature `etcd`, on by default), which plugs into
//! [`SemaphoreStore`] as any store does.

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod fleetlock;
pub mod godur;
pub mod key;
pub mod semaphore;
pub mod store;
pub mod strategy;
pub mod window;

#[cfg(feature = "etcd")]
pub use etcd::{connect_client, EtcdConfig, EtcdError, EtcdStore};
pub use godur::GoDuration;
pub use key::{query_escape, semaphore_key, SEMAPHORE_KEY};
pub use semaphore::{apply, LockError, Op, ParseError, Semaphore};
pub use store::{MemStore, Revision, SemaphoreStore, StoreError};
pub use strategy::Strategy;
pub use window::{LocalTime, Window};
