//! The store the server runs on: a backend behind two shortcuts for the update-check path.
//!
//! - **Check-ins are written in batches.** A check that changes nothing but the instance's
//!   last contact (no event, no new status, no grant) is queued and answered at once; a writer
//!   thread writes the queue in one transaction every [`WINDOW`], or the caller does when
//!   [`MAX_QUEUED`] wait. Everything else, and every read of instances, events or rollout
//!   counts, first writes the queue, so nothing reads older data than it would without it.
//!   A failed write keeps the queue, and until a write succeeds again check-ins are written
//!   by their callers, so a database that is down still gives 503s. Stopping writes the queue.
//! - **Groups and channel packages are cached** for [`CACHE_TTL`]: every change made through
//!   this store clears the cache at once, and so does one committed by another process when
//!   the backend can tell ([`Store::outside_changes`]: SQLite's `data_version`; on the async workers
//!   asked at most every [`OUTSIDE_CHECK`]). Otherwise (PostgreSQL) another replica's change is seen within the TTL.
//!
//! - **Plain checks are answered on the async workers** ([`InMemory`]): a view that answers
//!   from the cache and queues check-ins, and says [`StoreError::WouldBlock`] for anything that
//!   needs the database, so that request is answered again off the workers. Its check-ins
//!   are queued only once the whole answer is known ([`InMemory::commit`]).
//!
//! What a crash can lose: the check-ins of the last [`WINDOW`] (when each instance was last
//! seen); events, statuses and grants are written before their request is answered.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

/// How long the writer gathers check-ins before writing them.
pub const WINDOW: Duration = Duration::from_millis(10);
/// A queue this long is written by the caller that filled it.
pub const MAX_QUEUED: usize = 4096;
/// How long a cached group or channel package is used.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// How often the in-memory view checks the cache against commits by other processes, where
/// the backend can tell (checking on every request cost a third of the throughput); the
/// blocking path checks every time.
pub const OUTSIDE_CHECK: Duration = Duration::from_millis(1);

/// A [`Store`] that batches check-ins and caches groups and channel packages; see the module.
pub struct Batched {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    inner: Arc<dyn Store>,
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Held while a batch is written, so that one written by a caller waits for the writer's.
    writing: Mutex<()>,
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Queue {
    contacts: Vec<Contact>,
    /// The last write failed: write check-ins in the caller until one succeeds.
    failing: bool,
    stopping: bool,
}

#[derive(Default)]
struct Cache {
    /// Bumped by every change, so a value read before it is not cached after it.
    generation: u64,
    /// The backend's [`Store::outside_changes`] when the cache was last checked against it,
    /// and when that was.
    outside: Option<u64>,
    outside_checked: Option<Instant>,
    groups: HashMap<String, (Instant, Option<Group>)>,
    packages: HashMap<(String, String), (Instant, Option<Package>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Batched {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        let shared = Arc::new(Shared {
            inner,
            queue: Mutex::default(),
            wake: Condvar::new(),
            writing: Mutex::default(),
            cache: Mutex::default(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || shared.write_loop())
                .expect("spawning the store's writer thread")
        };
        Batched {
            shared,
            writer: Mutex::new(Some(writer)),
        }
    }

    fn inner(&self) -> &dyn Store {
        self.shared.inner.as_ref()
    }

    /// Write the queue, then run `read` on the backend.
    fn after_flush<T>(&self, read: impl FnOnce(&dyn Store) -> Result<T>) -> Result<T> {
        self.shared.write_queue()?;
        read(self.inner())
    }

    /// Run a change to groups, channels or packages, and forget what the cache holds.
    fn changing<T>(&self, change: impl FnOnce(&dyn Store) -> Result<T>) -> Result<T> {
        let result = change(self.inner());
        lock(&self.shared.cache).clear();
        result
    }
}

impl Shared {
    fn write_loop(&self) {
        loop {
            {
                let mut q = lock(&self.queue);
                while q.contacts.is_empty() && !q.stopping {
                    q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                }
                if q.stopping {
                    drop(q);
                    if let Err(e) = self.write_queue() {
                        eprintln!("keel-update-server: writing the last check-ins: {e}");
                    }
                    return;
                }
            }
            std::thread::sleep(WINDOW);
            if self.write_queue().is_err() {
                // The callers see the error themselves (`failing`); retry a little later.
                std::thread::sleep(WINDOW * 10);
            }
        }
    }

    /// Write every queued check-in in one transaction; on failure they stay queued.
    fn write_queue(&self) -> Result<()> {
        let _writing = lock(&self.writing);
        let batch = std::mem::take(&mut lock(&self.queue).contacts);
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.inner.record_contacts(&batch);
        let mut q = lock(&self.queue);
        q.failing = result.is_err();
        if result.is_err() {
            let newer = std::mem::replace(&mut q.contacts, batch);
            q.contacts.extend(newer);
        }
        result
    }
}

impl Cache {
    /// Forget every value, and make values read before now uncacheable.
    fn clear(&mut self) {
        self.generation += 1;
        self.groups.clear();
        self.packages.clear();
    }
}

impl Batched {
    /// The cache, cleared first if another process committed since it was last checked
    /// (on the async workers, without `wait`: at most every [`OUTSIDE_CHECK`]).
    fn checked_cache(&self, wait: bool) -> Result<MutexGuard<'_, Cache>> {
        let due = wait
            || lock(&self.shared.cache)
                .outside_checked
                .is_none_or(|at| at.elapsed() >= OUTSIDE_CHECK);
        if !due {
            return Ok(lock(&self.shared.cache));
        }
        let outside = self.inner().outside_changes(wait)?;
        let mut cache = lock(&self.shared.cache);
        if outside.is_some() && cache.outside != outside {
            cache.clear();
            cache.outside = outside;
        }
        cache.outside_checked = Some(Instant::now());
        Ok(cache)
    }

    fn cached_group(&self, name: &str, wait: bool) -> Result<Option<Option<Group>>> {
        let cache = self.checked_cache(wait)?;
        Ok(cache
            .groups
            .get(name)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, g)| g.clone()))
    }

    fn cached_package(
        &self,
        app_id: &str,
        channel: &str,
        wait: bool,
    ) -> Result<Option<Option<Package>>> {
        let cache = self.checked_cache(wait)?;
        Ok(cache
            .packages
            .get(&(app_id.to_owned(), channel.to_owned()))
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, p)| p.clone()))
    }

    /// Queue plain check-ins, unless the queue must be written first (full, or failing).
    fn queue_without_waiting(&self, contacts: &[Contact]) -> bool {
        let mut q = lock(&self.shared.queue);
        if q.failing || q.contacts.len() + contacts.len() >= MAX_QUEUED {
            return false;
        }
        let was_empty = q.contacts.is_empty();
        q.contacts.extend_from_slice(contacts);
        drop(q);
        if was_empty {
            self.shared.wake.notify_one();
        }
        true
    }
}

/// A view of a [`Batched`] store that never waits for the database: the cached groups and
/// channel packages, and plain check-ins held until [`InMemory::commit`]. Anything else is
/// [`StoreError::WouldBlock`].
pub struct InMemory<'a> {
    store: &'a Batched,
    contacts: Mutex<Vec<Contact>>,
}

impl InMemory<'_> {
    /// Queue the check-ins this view took. False when they could not be queued without
    /// waiting (answer the request again with the store itself).
    pub fn commit(self) -> bool {
        let contacts = self
            .contacts
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        contacts.is_empty() || self.store.queue_without_waiting(&contacts)
    }
}

impl Store for InMemory<'_> {
    fn group(&self, name: &str) -> Result<Option<Group>> {
        self.store
            .cached_group(name, false)?
            .ok_or(StoreError::WouldBlock)
    }
    fn channel_package(&self, app_id: &str, channel: &str) -> Result<Option<Package>> {
        self.store
            .cached_package(app_id, channel, false)?
            .ok_or(StoreError::WouldBlock)
    }
    fn record(&self, contact: &Contact, change: &Change) -> Result<()> {
        if !change.is_empty() {
            return Err(StoreError::WouldBlock);
        }
        lock(&self.contacts).push(contact.clone());
        Ok(())
    }
    fn record_contacts(&self, _: &[Contact]) -> Result<()> {
        Err(StoreError::WouldBlock)
    }
    fn channels(&self) -> Result<Vec<String>> {
        Err(StoreError::WouldBlock)
    }
    fn create_channel(&self, _: &str) -> Result<()> {
        Err(StoreError::WouldBlock)
    }
    fn groups(&self) -> Result<Vec<Group>> {
        Err(StoreError::WouldBlock)
    }
    fn create_group(&self, _: &str, _: &str) -> Result<()> {
        Err(StoreError::WouldBlock)
    }
    fn set_allow_downgrade(&self, _: &str, _: bool) -> Result<()> {
        Err(StoreError::WouldBlock)
    }
    fn set_policy(&self, _: &str, _: &Policy, _: &str) -> Result<()> {
        Err(StoreError::WouldBlock)
    }
    fn rollout(&self, _: &Group, _: &str, _: i64) -> Result<RolloutCounts> {
        Err(StoreError::WouldBlock)
    }
    fn publish(&self, _: &Package, _: &str) -> Result<Package> {
        Err(StoreError::WouldBlock)
    }
    fn promote(&self, _: &str, _: &str) -> Result<Vec<Package>> {
        Err(StoreError::WouldBlock)
    }
    fn packages(&self) -> Result<Vec<Package>> {
        Err(StoreError::WouldBlock)
    }
    fn package_by_sha256(&self, _: &str) -> Result<Option<Package>> {
        Err(StoreError::WouldBlock)
    }
    fn instance(&self, _: &str, _: &str) -> Result<Option<Instance>> {
        Err(StoreError::WouldBlock)
    }
    fn instances(&self) -> Result<Vec<Instance>> {
        Err(StoreError::WouldBlock)
    }
    fn events(&self, _: &str, _: &str) -> Result<Vec<EventRecord>> {
        Err(StoreError::WouldBlock)
    }
    fn search(&self, _: &InstanceFilter) -> Result<Vec<Instance>> {
        Err(StoreError::WouldBlock)
    }
    fn set_hidden(&self, _: &str, _: bool) -> Result<usize> {
        Err(StoreError::WouldBlock)
    }
    fn retire(&self, _: &str) -> Result<usize> {
        Err(StoreError::WouldBlock)
    }
    fn prune(&self, _: i64) -> Result<(usize, usize)> {
        Err(StoreError::WouldBlock)
    }
    fn log_activity(&self, _: &Activity) -> Result<()> {
        Err(StoreError::WouldBlock)
    }
    fn activity(&self, _: u32) -> Result<Vec<Activity>> {
        Err(StoreError::WouldBlock)
    }
}

impl Drop for Batched {
    fn drop(&mut self) {
        lock(&self.shared.queue).stopping = true;
        self.shared.wake.notify_all();
        if let Some(w) = lock(&self.writer).take() {
            let _ = w.join();
        }
    }
}

impl Store for Batched {
    fn record(&self, contact: &Contact, change: &Change) -> Result<()> {
        if change.is_empty() {
            let (queued, failing) = {
                let mut q = lock(&self.shared.queue);
                q.contacts.push(contact.clone());
                (q.contacts.len(), q.failing)
            };
            if failing || queued >= MAX_QUEUED {
                return self.shared.write_queue();
            }
            if queued == 1 {
                self.shared.wake.notify_one();
            }
            return Ok(());
        }
        self.after_flush(|s| s.record(contact, change))
    }

    fn record_contacts(&self, contacts: &[Contact]) -> Result<()> {
        self.after_flush(|s| s.record_contacts(contacts))
    }

    fn flush(&self) -> Result<()> {
        self.shared.write_queue()?;
        self.inner().flush()
    }

    fn in_memory(&self) -> Option<InMemory<'_>> {
        Some(InMemory {
            store: self,
            contacts: Mutex::default(),
        })
    }

    fn group(&self, name: &str) -> Result<Option<Group>> {
        if let Some(g) = self.cached_group(name, true)? {
            return Ok(g);
        }
        let generation = lock(&self.shared.cache).generation;
        let g = self.inner().group(name)?;
        let mut cache = lock(&self.shared.cache);
        if cache.generation == generation {
            cache
                .groups
                .insert(name.to_owned(), (Instant::now(), g.clone()));
        }
        Ok(g)
    }

    fn channel_package(&self, app_id: &str, channel: &str) -> Result<Option<Package>> {
        if let Some(p) = self.cached_package(app_id, channel, true)? {
            return Ok(p);
        }
        let key = (app_id.to_owned(), channel.to_owned());
        let generation = lock(&self.shared.cache).generation;
        let p = self.inner().channel_package(app_id, channel)?;
        let mut cache = lock(&self.shared.cache);
        if cache.generation == generation {
            cache.packages.insert(key, (Instant::now(), p.clone()));
        }
        Ok(p)
    }

    fn channels(&self) -> Result<Vec<String>> {
        self.inner().channels()
    }
    fn create_channel(&self, name: &str) -> Result<()> {
        self.changing(|s| s.create_channel(name))
    }
    fn groups(&self) -> Result<Vec<Group>> {
        self.inner().groups()
    }
    fn create_group(&self, name: &str, channel: &str) -> Result<()> {
        self.changing(|s| s.create_group(name, channel))
    }
    fn set_allow_downgrade(&self, group: &str, allow: bool) -> Result<()> {
        self.changing(|s| s.set_allow_downgrade(group, allow))
    }
    fn set_policy(&self, group: &str, policy: &Policy, why: &str) -> Result<()> {
        self.changing(|s| s.set_policy(group, policy, why))
    }
    fn rollout(&self, group: &Group, version: &str, now: i64) -> Result<RolloutCounts> {
        self.after_flush(|s| s.rollout(group, version, now))
    }
    fn publish(&self, package: &Package, channel: &str) -> Result<Package> {
        self.changing(|s| s.publish(package, channel))
    }
    fn promote(&self, from: &str, to: &str) -> Result<Vec<Package>> {
        self.changing(|s| s.promote(from, to))
    }
    fn packages(&self) -> Result<Vec<Package>> {
        self.inner().packages()
    }
    fn package_by_sha256(&self, sha256_hex: &str) -> Result<Option<Package>> {
        self.inner().package_by_sha256(sha256_hex)
    }
    fn instance(&self, machine_id: &str, app_id: &str) -> Result<Option<Instance>> {
        self.after_flush(|s| s.instance(machine_id, app_id))
    }
    fn instances(&self) -> Result<Vec<Instance>> {
        self.after_flush(|s| s.instances())
    }
    fn events(&self, machine_id: &str, app_id: &str) -> Result<Vec<EventRecord>> {
        self.after_flush(|s| s.events(machine_id, app_id))
    }
    fn search(&self, filter: &InstanceFilter) -> Result<Vec<Instance>> {
        self.after_flush(|s| s.search(filter))
    }
    fn set_hidden(&self, machine_id: &str, hidden: bool) -> Result<usize> {
        self.after_flush(|s| s.set_hidden(machine_id, hidden))
    }
    fn retire(&self, machine_id: &str) -> Result<usize> {
        self.after_flush(|s| s.retire(machine_id))
    }
    fn prune(&self, before: i64) -> Result<(usize, usize)> {
        self.after_flush(|s| s.prune(before))
    }
    fn log_activity(&self, entry: &Activity) -> Result<()> {
        self.inner().log_activity(entry)
    }
    fn activity(&self, limit: u32) -> Result<Vec<Activity>> {
        self.after_flush(|s| s.activity(limit))
    }
}
