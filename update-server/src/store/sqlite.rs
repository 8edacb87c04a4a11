//! [`Store`] on SQLite: one file, WAL journal, foreign keys on, one connection behind a mutex
//! (SQLite has one writer anyway).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::migrations::MIGRATIONS;
use super::*;

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Conflict(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

const PACKAGE_COLUMNS: &str = "p.id, p.app_id, p.version, p.file_name, p.size, p.sha1_base64, \
     p.sha256_base64, p.sha256_hex, p.key_id, p.external_url, p.created_at";

fn package_row(r: &Row) -> rusqlite::Result<Package> {
    Ok(Package {
        id: r.get(0)?,
        app_id: r.get(1)?,
        version: r.get(2)?,
        file_name: r.get(3)?,
        size: r.get::<_, i64>(4)? as u64,
        sha1_base64: r.get(5)?,
        sha256_base64: r.get(6)?,
        sha256_hex: r.get(7)?,
        key_id: r.get(8)?,
        external_url: r.get(9)?,
        created_at: r.get(10)?,
    })
}

const INSTANCE_COLUMNS: &str = "machine_id, app_id, alias, group_name, version, status, \
     error_code, first_seen, last_seen, hidden, granted_at, target_version";

fn instance_row(r: &Row) -> rusqlite::Result<Instance> {
    Ok(Instance {
        machine_id: r.get(0)?,
        app_id: r.get(1)?,
        alias: r.get(2)?,
        group: r.get(3)?,
        version: r.get(4)?,
        status: r.get(5)?,
        error_code: r.get(6)?,
        first_seen: r.get(7)?,
        last_seen: r.get(8)?,
        hidden: r.get::<_, i64>(9)? != 0,
        granted_at: r.get(10)?,
        target_version: r.get(11)?,
    })
}

const GROUP_COLUMNS: &str = "name, channel, allow_downgrade, paused, max_updates_per_period, \
     period_seconds, update_timeout_seconds, office_hours, timezone, safe_mode, safe_mode_failures";

fn group_row(r: &Row) -> rusqlite::Result<Group> {
    Ok(Group {
        name: r.get(0)?,
        channel: r.get(1)?,
        allow_downgrade: r.get::<_, i64>(2)? != 0,
        policy: Policy {
            paused: r.get::<_, i64>(3)? != 0,
            max_updates_per_period: r.get(4)?,
            period_seconds: r.get(5)?,
            update_timeout_seconds: r.get(6)?,
            office_hours: r.get::<_, i64>(7)? != 0,
            timezone: r.get(8)?,
            safe_mode: r.get::<_, i64>(9)? != 0,
            safe_mode_failures: r.get(10)?,
        },
    })
}

/// Instance statuses between a grant and the end of the update.
const IN_PROGRESS: &str = "('granted', 'downloading', 'downloaded', 'installed')";

impl SqliteStore {
    /// Open (creating it and its directory if needed) and migrate the database at `path`.
    /// `busy` is how long a statement waits for another writer before the store reports
    /// itself unavailable.
    pub fn open(path: &Path, busy: Duration) -> Result<SqliteStore> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(busy).map_err(err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err)?;
        if mode != "wal" {
            return Err(StoreError::Unavailable(format!(
                "{} cannot use WAL (journal mode {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL;")
            .map_err(err)?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable (every change is a
        // transaction that rolled back), so poisoning is ignored.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)",
        )
        .map_err(err)?;
        let done: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.execute_batch(&sql.replace("{serial}", "INTEGER PRIMARY KEY"))
                .map_err(err)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES (?1)",
                [i as i64 + 1],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        self.lock()
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .map_err(err)
    }
}

fn log(tx: &Transaction, at: i64, kind: &str, subject: &str, message: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO activity (at, kind, subject, message) VALUES (?1, ?2, ?3, ?4)",
        params![at, kind, subject, message],
    )
    .map_err(err)?;
    Ok(())
}

fn channel_exists(tx: &Transaction, name: &str) -> Result<bool> {
    tx.query_row("SELECT 1 FROM channels WHERE name = ?1", [name], |_| Ok(()))
        .optional()
        .map(|o| o.is_some())
        .map_err(err)
}

impl Store for SqliteStore {
    fn channels(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached("SELECT name FROM channels ORDER BY name")
            .map_err(err)?;
        let rows = st.query_map([], |r| r.get(0)).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn create_channel(&self, name: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        tx.execute("INSERT INTO channels (name) VALUES (?1)", [name])
            .map_err(|e| match err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("channel {name} exists")),
                other => other,
            })?;
        log(&tx, crate::clock::now(), "channel", name, "created")?;
        tx.commit().map_err(err)
    }

    fn groups(&self) -> Result<Vec<Group>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!("SELECT {GROUP_COLUMNS} FROM groups ORDER BY name"))
            .map_err(err)?;
        let rows = st.query_map([], group_row).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn group(&self, name: &str) -> Result<Option<Group>> {
        self.lock()
            .prepare_cached(&format!(
                "SELECT {GROUP_COLUMNS} FROM groups WHERE name = ?1"
            ))
            .map_err(err)?
            .query_row([name], group_row)
            .optional()
            .map_err(err)
    }

    fn create_group(&self, name: &str, channel: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        if !channel_exists(&tx, channel)? {
            return Err(StoreError::NotFound(format!("channel {channel}")));
        }
        tx.execute(
            "INSERT INTO groups (name, channel) VALUES (?1, ?2)",
            [name, channel],
        )
        .map_err(|e| match err(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("group {name} exists")),
            other => other,
        })?;
        log(
            &tx,
            crate::clock::now(),
            "group",
            name,
            &format!("created, following channel {channel}"),
        )?;
        tx.commit().map_err(err)
    }

    fn set_allow_downgrade(&self, group: &str, allow: bool) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        let n = tx
            .execute(
                "UPDATE groups SET allow_downgrade = ?2 WHERE name = ?1",
                params![group, allow as i64],
            )
            .map_err(err)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        log(
            &tx,
            crate::clock::now(),
            "group",
            group,
            &format!("allow_downgrade = {allow}"),
        )?;
        tx.commit().map_err(err)
    }

    fn set_policy(&self, group: &str, p: &Policy, why: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        let n = tx
            .execute(
                "UPDATE groups SET paused = ?2, max_updates_per_period = ?3, period_seconds = ?4,
                    update_timeout_seconds = ?5, office_hours = ?6, timezone = ?7,
                    safe_mode = ?8, safe_mode_failures = ?9
                 WHERE name = ?1",
                params![
                    group,
                    p.paused as i64,
                    p.max_updates_per_period,
                    p.period_seconds,
                    p.update_timeout_seconds,
                    p.office_hours as i64,
                    p.timezone,
                    p.safe_mode as i64,
                    p.safe_mode_failures
                ],
            )
            .map_err(err)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        log(&tx, crate::clock::now(), "policy", group, why)?;
        tx.commit().map_err(err)
    }

    fn rollout(&self, g: &Group, version: &str, now: i64) -> Result<RolloutCounts> {
        let conn = self.lock();
        let sql = format!(
            "SELECT
                COALESCE(SUM(CASE WHEN granted_at >= ?2 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN status IN {IN_PROGRESS} AND granted_at >= ?3 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN status IN {IN_PROGRESS} AND granted_at < ?3 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN status = 'error' AND target_version = ?4 THEN 1 ELSE 0 END), 0),
                COALESCE(SUM(CASE WHEN status = 'complete' AND version = ?4 THEN 1 ELSE 0 END), 0)
             FROM instances WHERE group_name = ?1 AND hidden = 0"
        );
        let counts = conn
            .prepare_cached(&sql)
            .map_err(err)?
            .query_row(
                params![
                    g.name,
                    now - g.policy.period_seconds,
                    now - g.policy.update_timeout_seconds,
                    version
                ],
                |r| {
                    Ok(RolloutCounts {
                        granted_in_period: r.get(0)?,
                        in_progress: r.get(1)?,
                        timed_out: r.get(2)?,
                        failed: r.get(3)?,
                        completed: r.get(4)?,
                    })
                },
            )
            .map_err(err);
        counts
    }

    fn publish(&self, p: &Package, channel: &str) -> Result<Package> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        if !channel_exists(&tx, channel)? {
            return Err(StoreError::NotFound(format!("channel {channel}")));
        }
        tx.execute(
            "INSERT INTO packages (app_id, version, file_name, size, sha1_base64, sha256_base64,
                sha256_hex, key_id, external_url, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (app_id, sha256_hex) DO UPDATE SET external_url = excluded.external_url",
            params![
                p.app_id,
                p.version,
                p.file_name,
                p.size as i64,
                p.sha1_base64,
                p.sha256_base64,
                p.sha256_hex,
                p.key_id,
                p.external_url,
                p.created_at
            ],
        )
        .map_err(err)?;
        let stored = tx
            .query_row(
                &format!(
                    "SELECT {PACKAGE_COLUMNS} FROM packages p WHERE app_id = ?1 AND sha256_hex = ?2"
                ),
                [&p.app_id, &p.sha256_hex],
                package_row,
            )
            .map_err(err)?;
        tx.execute(
            "INSERT INTO channel_packages (channel, app_id, package_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (channel, app_id) DO UPDATE SET package_id = excluded.package_id",
            params![channel, p.app_id, stored.id],
        )
        .map_err(err)?;
        log(
            &tx,
            p.created_at,
            "publish",
            channel,
            &format!(
                "{} ({} bytes, key {})",
                stored.version, stored.size, stored.key_id
            ),
        )?;
        tx.commit().map_err(err)?;
        Ok(stored)
    }

    fn channel_package(&self, app_id: &str, channel: &str) -> Result<Option<Package>> {
        self.lock()
            .prepare_cached(&format!(
                "SELECT {PACKAGE_COLUMNS} FROM channel_packages c JOIN packages p ON p.id = c.package_id
                 WHERE c.channel = ?1 AND c.app_id = ?2"
            ))
            .map_err(err)?
            .query_row([channel, app_id], package_row)
            .optional()
            .map_err(err)
    }

    fn promote(&self, from: &str, to: &str) -> Result<Vec<Package>> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        for c in [from, to] {
            if !channel_exists(&tx, c)? {
                return Err(StoreError::NotFound(format!("channel {c}")));
            }
        }
        let moved: Vec<Package> = {
            let mut st = tx
                .prepare(&format!(
                    "SELECT {PACKAGE_COLUMNS} FROM channel_packages c JOIN packages p ON p.id = c.package_id
                     WHERE c.channel = ?1 ORDER BY p.app_id"
                ))
                .map_err(err)?;
            let rows = st.query_map([from], package_row).map_err(err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(err)?
        };
        if moved.is_empty() {
            return Err(StoreError::NotFound(format!("a package on channel {from}")));
        }
        for p in &moved {
            tx.execute(
                "INSERT INTO channel_packages (channel, app_id, package_id) VALUES (?1, ?2, ?3)
                 ON CONFLICT (channel, app_id) DO UPDATE SET package_id = excluded.package_id",
                params![to, p.app_id, p.id],
            )
            .map_err(err)?;
            log(
                &tx,
                crate::clock::now(),
                "promote",
                to,
                &format!("{} from {from}", p.version),
            )?;
        }
        tx.commit().map_err(err)?;
        Ok(moved)
    }

    fn packages(&self) -> Result<Vec<Package>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {PACKAGE_COLUMNS} FROM packages p ORDER BY p.id"
            ))
            .map_err(err)?;
        let rows = st.query_map([], package_row).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn package_by_sha256(&self, sha256_hex: &str) -> Result<Option<Package>> {
        self.lock()
            .prepare_cached(&format!(
                "SELECT {PACKAGE_COLUMNS} FROM packages p WHERE p.sha256_hex = ?1 LIMIT 1"
            ))
            .map_err(err)?
            .query_row([sha256_hex], package_row)
            .optional()
            .map_err(err)
    }

    fn outside_changes(&self, wait: bool) -> Result<Option<u64>> {
        let conn = if wait {
            self.lock()
        } else {
            match self.conn.try_lock() {
                Ok(c) => c,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Err(StoreError::WouldBlock),
            }
        };
        // SQLite's own counter of commits by other connections.
        conn.prepare_cached("PRAGMA data_version")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
            .map(|v| Some(v as u64))
            .map_err(err)
    }

    fn record_contacts(&self, contacts: &[Contact]) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        for c in contacts {
            upsert_instance(&tx, c)?;
        }
        tx.commit().map_err(err)
    }

    fn record(&self, c: &Contact, change: &Change) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        upsert_instance(&tx, c)?;
        if let Some(version) = &change.granted {
            tx.prepare_cached(
                "UPDATE instances SET granted_at = ?3, target_version = ?4
                 WHERE machine_id = ?1 AND app_id = ?2",
            )
            .map_err(err)?
            .execute(params![c.machine_id, c.app_id, c.at, version])
            .map_err(err)?;
        }
        if let Some((status, code)) = &change.status {
            tx.prepare_cached(
                "UPDATE instances SET status = ?3, error_code = ?4
                 WHERE machine_id = ?1 AND app_id = ?2",
            )
            .map_err(err)?
            .execute(params![c.machine_id, c.app_id, status, code])
            .map_err(err)?;
        }
        for e in &change.events {
            tx.prepare_cached(
                "INSERT INTO events (machine_id, app_id, at, event_type, event_result,
                    error_code, previous_version, version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .map_err(err)?
            .execute(params![
                c.machine_id,
                c.app_id,
                e.at,
                e.event_type,
                e.event_result,
                e.error_code,
                e.previous_version,
                e.version
            ])
            .map_err(err)?;
            if e.event_result == 0 {
                let code = e.error_code.map_or("none".to_owned(), |c| c.to_string());
                let message = format!(
                    "event {}/0 on {}, error code {code}",
                    e.event_type, e.version
                );
                log(&tx, e.at, "instance", &c.machine_id, &message)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn instance(&self, machine_id: &str, app_id: &str) -> Result<Option<Instance>> {
        self.lock()
            .prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances WHERE machine_id = ?1 AND app_id = ?2"
            ))
            .map_err(err)?
            .query_row([machine_id, app_id], instance_row)
            .optional()
            .map_err(err)
    }

    fn instances(&self) -> Result<Vec<Instance>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY last_seen DESC, machine_id"
            ))
            .map_err(err)?;
        let rows = st.query_map([], instance_row).map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn events(&self, machine_id: &str, app_id: &str) -> Result<Vec<EventRecord>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT at, event_type, event_result, error_code, previous_version, version
                 FROM events WHERE machine_id = ?1 AND app_id = ?2 ORDER BY id",
            )
            .map_err(err)?;
        let rows = st
            .query_map([machine_id, app_id], |r| {
                Ok(EventRecord {
                    at: r.get(0)?,
                    event_type: r.get(1)?,
                    event_result: r.get(2)?,
                    error_code: r.get(3)?,
                    previous_version: r.get(4)?,
                    version: r.get(5)?,
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn search(&self, f: &InstanceFilter) -> Result<Vec<Instance>> {
        let mut sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        use rusqlite::types::Value::{Integer, Text};
        if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
            let like = format!("%{}%", q.to_lowercase().replace(['%', '_'], ""));
            arg(
                &mut sql,
                " AND (lower(machine_id) LIKE ?",
                Text(like.clone()),
            );
            arg(
                &mut sql,
                " OR lower(COALESCE(alias, '')) LIKE ?)",
                Text(like),
            );
        }
        if let Some(v) = &f.group {
            arg(&mut sql, " AND group_name = ?", Text(v.clone()));
        }
        if let Some(v) = &f.version {
            arg(&mut sql, " AND version = ?", Text(v.clone()));
        }
        if let Some(v) = &f.status {
            arg(&mut sql, " AND status = ?", Text(v.clone()));
        }
        if let Some(v) = &f.app_id {
            arg(&mut sql, " AND app_id = ?", Text(v.clone()));
        }
        if let Some(v) = f.seen_before {
            arg(&mut sql, " AND last_seen < ?", Integer(v));
        }
        if let Some(v) = f.seen_after {
            arg(&mut sql, " AND last_seen >= ?", Integer(v));
        }
        if !f.include_hidden {
            sql.push_str(" AND hidden = 0");
        }
        let limit = f.limit.unwrap_or(1000);
        sql.push_str(&format!(
            " ORDER BY last_seen DESC, machine_id LIMIT {limit}"
        ));
        let conn = self.lock();
        let mut st = conn.prepare(&sql).map_err(err)?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), instance_row)
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }

    fn set_hidden(&self, machine_id: &str, hidden: bool) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        let n = tx
            .execute(
                "UPDATE instances SET hidden = ?2 WHERE machine_id = ?1",
                params![machine_id, hidden as i64],
            )
            .map_err(err)?;
        if n > 0 {
            let what = if hidden { "hidden" } else { "shown" };
            log(&tx, crate::clock::now(), "instance", machine_id, what)?;
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    fn retire(&self, machine_id: &str) -> Result<usize> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM events WHERE machine_id = ?1", [machine_id])
            .map_err(err)?;
        let n = tx
            .execute("DELETE FROM instances WHERE machine_id = ?1", [machine_id])
            .map_err(err)?;
        if n > 0 {
            log(&tx, crate::clock::now(), "instance", machine_id, "retired")?;
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    fn prune(&self, before: i64) -> Result<(usize, usize)> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        let events = tx
            .execute("DELETE FROM events WHERE at < ?1", [before])
            .map_err(err)?;
        let instances = tx
            .execute("DELETE FROM instances WHERE last_seen < ?1", [before])
            .map_err(err)?;
        tx.execute("DELETE FROM activity WHERE at < ?1", [before])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok((instances, events))
    }

    fn log_activity(&self, a: &Activity) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(err)?;
        log(&tx, a.at, &a.kind, &a.subject, &a.message)?;
        tx.commit().map_err(err)
    }

    fn activity(&self, limit: u32) -> Result<Vec<Activity>> {
        let conn = self.lock();
        let mut st = conn
            .prepare_cached(
                "SELECT at, kind, subject, message FROM activity ORDER BY id DESC LIMIT ?1",
            )
            .map_err(err)?;
        let rows = st
            .query_map([limit], |r| {
                Ok(Activity {
                    at: r.get(0)?,
                    kind: r.get(1)?,
                    subject: r.get(2)?,
                    message: r.get(3)?,
                })
            })
            .map_err(err)?;
        rows.collect::<rusqlite::Result<_>>().map_err(err)
    }
}

/// Create the instance of `c` or refresh what it says of itself (alias, group, version, when).
fn upsert_instance(tx: &rusqlite::Transaction<'_>, c: &Contact) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO instances (machine_id, app_id, alias, group_name, version, status,
            error_code, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, 'new', NULL, ?6, ?6)
         ON CONFLICT (machine_id, app_id) DO UPDATE SET
            alias = COALESCE(excluded.alias, instances.alias),
            group_name = excluded.group_name, version = excluded.version,
            last_seen = excluded.last_seen",
    )
    .map_err(err)?
    .execute(params![
        c.machine_id,
        c.app_id,
        c.alias,
        c.group,
        c.version,
        c.at
    ])
    .map_err(err)?;
    Ok(())
}
