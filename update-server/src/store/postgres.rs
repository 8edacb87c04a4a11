//! [`Store`] on PostgreSQL, for several server replicas behind a load balancer: the same
//! migrations as SQLite (`{serial}` is `BIGSERIAL PRIMARY KEY`), one connection behind a mutex
//! per server (the blocking `postgres` client).

use std::sync::{Mutex, MutexGuard};

use ::postgres::types::ToSql;
use ::postgres::{Client, NoTls, Row, Transaction};

use super::migrations::MIGRATIONS;
use super::*;

pub struct PostgresStore {
    client: Mutex<Client>,
}

fn err(e: ::postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == ::postgres::error::SqlState::UNIQUE_VIOLATION => {
            StoreError::Conflict(e.to_string())
        }
        Some(c) if *c == ::postgres::error::SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::Conflict(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

const PACKAGE_COLUMNS: &str = "p.id, p.app_id, p.version, p.file_name, p.size, p.sha1_base64, \
     p.sha256_base64, p.sha256_hex, p.key_id, p.external_url, p.created_at";

fn package_row(r: &Row) -> Package {
    Package {
        id: r.get(0),
        app_id: r.get(1),
        version: r.get(2),
        file_name: r.get(3),
        size: r.get::<_, i64>(4) as u64,
        sha1_base64: r.get(5),
        sha256_base64: r.get(6),
        sha256_hex: r.get(7),
        key_id: r.get(8),
        external_url: r.get(9),
        created_at: r.get(10),
    }
}

const INSTANCE_COLUMNS: &str = "machine_id, app_id, alias, group_name, version, status, \
     error_code, first_seen, last_seen, hidden, granted_at, target_version";

fn instance_row(r: &Row) -> Instance {
    Instance {
        machine_id: r.get(0),
        app_id: r.get(1),
        alias: r.get(2),
        group: r.get(3),
        version: r.get(4),
        status: r.get(5),
        error_code: r.get(6),
        first_seen: r.get(7),
        last_seen: r.get(8),
        hidden: r.get::<_, i32>(9) != 0,
        granted_at: r.get(10),
        target_version: r.get(11),
    }
}

const GROUP_COLUMNS: &str = "name, channel, allow_downgrade, paused, max_updates_per_period, \
     period_seconds, update_timeout_seconds, office_hours, timezone, safe_mode, safe_mode_failures";

fn group_row(r: &Row) -> Group {
    Group {
        name: r.get(0),
        channel: r.get(1),
        allow_downgrade: r.get::<_, i32>(2) != 0,
        policy: Policy {
            paused: r.get::<_, i32>(3) != 0,
            max_updates_per_period: r.get::<_, Option<i32>>(4).map(|v| v as u32),
            period_seconds: r.get(5),
            update_timeout_seconds: r.get(6),
            office_hours: r.get::<_, i32>(7) != 0,
            timezone: r.get(8),
            safe_mode: r.get::<_, i32>(9) != 0,
            safe_mode_failures: r.get::<_, i32>(10) as u32,
        },
    }
}

const IN_PROGRESS: &str = "('granted', 'downloading', 'downloaded', 'installed')";

fn log(tx: &mut Transaction, at: i64, kind: &str, subject: &str, message: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO activity (at, kind, subject, message) VALUES ($1, $2, $3, $4)",
        &[&at, &kind, &subject, &message],
    )
    .map_err(err)?;
    Ok(())
}

fn channel_exists(tx: &mut Transaction, name: &str) -> Result<bool> {
    tx.query_opt("SELECT 1 FROM channels WHERE name = $1", &[&name])
        .map(|o| o.is_some())
        .map_err(err)
}

fn i32_of(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl PostgresStore {
    /// Connect with a libpq-style connection string (`host=/run/postgresql dbname=keel` or
    /// `postgresql://user@host/db`) and apply the migrations.
    pub fn connect(params: &str) -> Result<PostgresStore> {
        let client = Client::connect(params, NoTls).map_err(err)?;
        let store = PostgresStore {
            client: Mutex::new(client),
        };
        store.migrate()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Client> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<()> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        // Replicas starting together: one migrates, the others wait for its lock.
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(4242424242);
             CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)",
        )
        .map_err(err)?;
        let done: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(err)?
            .get(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(&sql.replace("{serial}", "BIGSERIAL PRIMARY KEY"))
                .map_err(err)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    pub fn schema_version(&self) -> Result<i64> {
        let v: i32 = self
            .lock()
            .query_one("SELECT MAX(version) FROM schema_migrations", &[])
            .map_err(err)?
            .get(0);
        Ok(i64::from(v))
    }
}

impl Store for PostgresStore {
    fn channels(&self) -> Result<Vec<String>> {
        let rows = self
            .lock()
            .query("SELECT name FROM channels ORDER BY name", &[])
            .map_err(err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn create_channel(&self, name: &str) -> Result<()> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        tx.execute("INSERT INTO channels (name) VALUES ($1)", &[&name])
            .map_err(|e| match err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("channel {name} exists")),
                other => other,
            })?;
        log(&mut tx, crate::clock::now(), "channel", name, "created")?;
        tx.commit().map_err(err)
    }

    fn groups(&self) -> Result<Vec<Group>> {
        let rows = self
            .lock()
            .query(
                &format!("SELECT {GROUP_COLUMNS} FROM groups ORDER BY name"),
                &[],
            )
            .map_err(err)?;
        Ok(rows.iter().map(group_row).collect())
    }

    fn group(&self, name: &str) -> Result<Option<Group>> {
        let row = self
            .lock()
            .query_opt(
                &format!("SELECT {GROUP_COLUMNS} FROM groups WHERE name = $1"),
                &[&name],
            )
            .map_err(err)?;
        Ok(row.as_ref().map(group_row))
    }

    fn create_group(&self, name: &str, channel: &str) -> Result<()> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        if !channel_exists(&mut tx, channel)? {
            return Err(StoreError::NotFound(format!("channel {channel}")));
        }
        tx.execute(
            "INSERT INTO groups (name, channel) VALUES ($1, $2)",
            &[&name, &channel],
        )
        .map_err(|e| match err(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("group {name} exists")),
            other => other,
        })?;
        log(
            &mut tx,
            crate::clock::now(),
            "group",
            name,
            &format!("created, following channel {channel}"),
        )?;
        tx.commit().map_err(err)
    }

    fn set_allow_downgrade(&self, group: &str, allow: bool) -> Result<()> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        let n = tx
            .execute(
                "UPDATE groups SET allow_downgrade = $2 WHERE name = $1",
                &[&group, &i32::from(allow)],
            )
            .map_err(err)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        log(
            &mut tx,
            crate::clock::now(),
            "group",
            group,
            &format!("allow_downgrade = {allow}"),
        )?;
        tx.commit().map_err(err)
    }

    fn set_policy(&self, group: &str, p: &Policy, why: &str) -> Result<()> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        let max = p.max_updates_per_period.map(i32_of);
        let n = tx
            .execute(
                "UPDATE groups SET paused = $2, max_updates_per_period = $3, period_seconds = $4,
                    update_timeout_seconds = $5, office_hours = $6, timezone = $7,
                    safe_mode = $8, safe_mode_failures = $9
                 WHERE name = $1",
                &[
                    &group,
                    &i32::from(p.paused),
                    &max,
                    &p.period_seconds,
                    &p.update_timeout_seconds,
                    &i32::from(p.office_hours),
                    &p.timezone,
                    &i32::from(p.safe_mode),
                    &i32_of(p.safe_mode_failures),
                ],
            )
            .map_err(err)?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        log(&mut tx, crate::clock::now(), "policy", group, why)?;
        tx.commit().map_err(err)
    }

    fn rollout(&self, g: &Group, version: &str, now: i64) -> Result<RolloutCounts> {
        let sql = format!(
            "SELECT
                COALESCE(SUM(CASE WHEN granted_at >= $2 THEN 1 ELSE 0 END), 0)::BIGINT,
                COALESCE(SUM(CASE WHEN status IN {IN_PROGRESS} AND granted_at >= $3 THEN 1 ELSE 0 END), 0)::BIGINT,
                COALESCE(SUM(CASE WHEN status IN {IN_PROGRESS} AND granted_at < $3 THEN 1 ELSE 0 END), 0)::BIGINT,
                COALESCE(SUM(CASE WHEN status = 'error' AND target_version = $4 THEN 1 ELSE 0 END), 0)::BIGINT,
                COALESCE(SUM(CASE WHEN status = 'complete' AND version = $4 THEN 1 ELSE 0 END), 0)::BIGINT
             FROM instances WHERE group_name = $1 AND hidden = 0"
        );
        let period = now - g.policy.period_seconds;
        let timeout = now - g.policy.update_timeout_seconds;
        let r = self
            .lock()
            .query_one(&sql, &[&g.name, &period, &timeout, &version])
            .map_err(err)?;
        let n = |i: usize| r.get::<_, i64>(i) as u32;
        Ok(RolloutCounts {
            granted_in_period: n(0),
            in_progress: n(1),
            timed_out: n(2),
            failed: n(3),
            completed: n(4),
        })
    }

    fn publish(&self, p: &Package, channel: &str) -> Result<Package> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        if !channel_exists(&mut tx, channel)? {
            return Err(StoreError::NotFound(format!("channel {channel}")));
        }
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO packages AS p (app_id, version, file_name, size, sha1_base64,
                        sha256_base64, sha256_hex, key_id, external_url, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (app_id, sha256_hex) DO UPDATE SET external_url = excluded.external_url
                     RETURNING {PACKAGE_COLUMNS}"
                ),
                &[
                    &p.app_id,
                    &p.version,
                    &p.file_name,
                    &(p.size as i64),
                    &p.sha1_base64,
                    &p.sha256_base64,
                    &p.sha256_hex,
                    &p.key_id,
                    &p.external_url,
                    &p.created_at,
                ],
            )
            .map_err(err)?;
        let stored = package_row(&row);
        tx.execute(
            "INSERT INTO channel_packages (channel, app_id, package_id) VALUES ($1, $2, $3)
             ON CONFLICT (channel, app_id) DO UPDATE SET package_id = excluded.package_id",
            &[&channel, &p.app_id, &stored.id],
        )
        .map_err(err)?;
        log(
            &mut tx,
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
        let row = self
            .lock()
            .query_opt(
                &format!(
                    "SELECT {PACKAGE_COLUMNS} FROM channel_packages c JOIN packages p ON p.id = c.package_id
                     WHERE c.channel = $1 AND c.app_id = $2"
                ),
                &[&channel, &app_id],
            )
            .map_err(err)?;
        Ok(row.as_ref().map(package_row))
    }

    fn promote(&self, from: &str, to: &str) -> Result<Vec<Package>> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        for ch in [from, to] {
            if !channel_exists(&mut tx, ch)? {
                return Err(StoreError::NotFound(format!("channel {ch}")));
            }
        }
        let moved: Vec<Package> = tx
            .query(
                &format!(
                    "SELECT {PACKAGE_COLUMNS} FROM channel_packages c JOIN packages p ON p.id = c.package_id
                     WHERE c.channel = $1 ORDER BY p.app_id"
                ),
                &[&from],
            )
            .map_err(err)?
            .iter()
            .map(package_row)
            .collect();
        if moved.is_empty() {
            return Err(StoreError::NotFound(format!("a package on channel {from}")));
        }
        for p in &moved {
            tx.execute(
                "INSERT INTO channel_packages (channel, app_id, package_id) VALUES ($1, $2, $3)
                 ON CONFLICT (channel, app_id) DO UPDATE SET package_id = excluded.package_id",
                &[&to, &p.app_id, &p.id],
            )
            .map_err(err)?;
            log(
                &mut tx,
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
        let rows = self
            .lock()
            .query(
                &format!("SELECT {PACKAGE_COLUMNS} FROM packages p ORDER BY p.id"),
                &[],
            )
            .map_err(err)?;
        Ok(rows.iter().map(package_row).collect())
    }

    fn package_by_sha256(&self, sha256_hex: &str) -> Result<Option<Package>> {
        let row = self
            .lock()
            .query_opt(
                &format!(
                    "SELECT {PACKAGE_COLUMNS} FROM packages p WHERE p.sha256_hex = $1 ORDER BY p.id LIMIT 1"
                ),
                &[&sha256_hex],
            )
            .map_err(err)?;
        Ok(row.as_ref().map(package_row))
    }

    fn record_contacts(&self, contacts: &[Contact]) -> Result<()> {
        let mut client = self.lock();
        let mut tx = client.transaction().map_err(err)?;
        for c in contacts {
            upsert_instance(&mut tx, c)?;
        }
        tx.commit().map_err(err)
    }

    fn record(&self, c: &Contact, change: &Change) -> Result<()> {
        let mut client = self.lock();
        let mut tx = client.transaction().map_err(err)?;
        upsert_instance(&mut tx, c)?;
        if let Some(version) = &change.granted {
            tx.execute(
                "UPDATE instances SET granted_at = $3, target_version = $4
                 WHERE machine_id = $1 AND app_id = $2",
                &[&c.machine_id, &c.app_id, &c.at, version],
            )
            .map_err(err)?;
        }
        if let Some((status, code)) = &change.status {
            tx.execute(
                "UPDATE instances SET status = $3, error_code = $4
                 WHERE machine_id = $1 AND app_id = $2",
                &[&c.machine_id, &c.app_id, status, code],
            )
            .map_err(err)?;
        }
        for e in &change.events {
            tx.execute(
                "INSERT INTO events (machine_id, app_id, at, event_type, event_result,
                    error_code, previous_version, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &c.machine_id,
                    &c.app_id,
                    &e.at,
                    &i32_of(e.event_type),
                    &i32_of(e.event_result),
                    &e.error_code,
                    &e.previous_version,
                    &e.version,
                ],
            )
            .map_err(err)?;
            if e.event_result == 0 {
                let code = e.error_code.map_or("none".to_owned(), |c| c.to_string());
                let message = format!(
                    "event {}/0 on {}, error code {code}",
                    e.event_type, e.version
                );
                log(&mut tx, e.at, "instance", &c.machine_id, &message)?;
            }
        }
        tx.commit().map_err(err)
    }

    fn instance(&self, machine_id: &str, app_id: &str) -> Result<Option<Instance>> {
        let row = self
            .lock()
            .query_opt(
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM instances WHERE machine_id = $1 AND app_id = $2"
                ),
                &[&machine_id, &app_id],
            )
            .map_err(err)?;
        Ok(row.as_ref().map(instance_row))
    }

    fn instances(&self) -> Result<Vec<Instance>> {
        let rows = self
            .lock()
            .query(
                &format!(
                    "SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY last_seen DESC, machine_id"
                ),
                &[],
            )
            .map_err(err)?;
        Ok(rows.iter().map(instance_row).collect())
    }

    fn events(&self, machine_id: &str, app_id: &str) -> Result<Vec<EventRecord>> {
        let rows = self
            .lock()
            .query(
                "SELECT at, event_type, event_result, error_code, previous_version, version
                 FROM events WHERE machine_id = $1 AND app_id = $2 ORDER BY id",
                &[&machine_id, &app_id],
            )
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| EventRecord {
                at: r.get(0),
                event_type: r.get::<_, i32>(1) as u32,
                event_result: r.get::<_, i32>(2) as u32,
                error_code: r.get(3),
                previous_version: r.get(4),
                version: r.get(5),
            })
            .collect())
    }

    fn search(&self, f: &InstanceFilter) -> Result<Vec<Instance>> {
        let mut sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE 1=1");
        let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync>| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
            let like = format!("%{}%", q.to_lowercase().replace(['%', '_'], ""));
            arg(
                &mut sql,
                " AND (lower(machine_id) LIKE ?",
                Box::new(like.clone()),
            );
            arg(
                &mut sql,
                " OR lower(COALESCE(alias, '')) LIKE ?)",
                Box::new(like),
            );
        }
        if let Some(v) = &f.group {
            arg(&mut sql, " AND group_name = ?", Box::new(v.clone()));
        }
        if let Some(v) = &f.version {
            arg(&mut sql, " AND version = ?", Box::new(v.clone()));
        }
        if let Some(v) = &f.status {
            arg(&mut sql, " AND status = ?", Box::new(v.clone()));
        }
        if let Some(v) = &f.app_id {
            arg(&mut sql, " AND app_id = ?", Box::new(v.clone()));
        }
        if let Some(v) = f.seen_before {
            arg(&mut sql, " AND last_seen < ?", Box::new(v));
        }
        if let Some(v) = f.seen_after {
            arg(&mut sql, " AND last_seen >= ?", Box::new(v));
        }
        if !f.include_hidden {
            sql.push_str(" AND hidden = 0");
        }
        let limit = f.limit.unwrap_or(1000);
        sql.push_str(&format!(
            " ORDER BY last_seen DESC, machine_id LIMIT {limit}"
        ));
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|b| b.as_ref()).collect();
        let rows = self.lock().query(&sql, &params).map_err(err)?;
        Ok(rows.iter().map(instance_row).collect())
    }

    fn set_hidden(&self, machine_id: &str, hidden: bool) -> Result<usize> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        let n = tx
            .execute(
                "UPDATE instances SET hidden = $2 WHERE machine_id = $1",
                &[&machine_id, &i32::from(hidden)],
            )
            .map_err(err)?;
        if n > 0 {
            let what = if hidden { "hidden" } else { "shown" };
            log(&mut tx, crate::clock::now(), "instance", machine_id, what)?;
        }
        tx.commit().map_err(err)?;
        Ok(n as usize)
    }

    fn retire(&self, machine_id: &str) -> Result<usize> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        tx.execute("DELETE FROM events WHERE machine_id = $1", &[&machine_id])
            .map_err(err)?;
        let n = tx
            .execute(
                "DELETE FROM instances WHERE machine_id = $1",
                &[&machine_id],
            )
            .map_err(err)?;
        if n > 0 {
            log(
                &mut tx,
                crate::clock::now(),
                "instance",
                machine_id,
                "retired",
            )?;
        }
        tx.commit().map_err(err)?;
        Ok(n as usize)
    }

    fn prune(&self, before: i64) -> Result<(usize, usize)> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        let events = tx
            .execute("DELETE FROM events WHERE at < $1", &[&before])
            .map_err(err)?;
        let instances = tx
            .execute("DELETE FROM instances WHERE last_seen < $1", &[&before])
            .map_err(err)?;
        tx.execute("DELETE FROM activity WHERE at < $1", &[&before])
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok((instances as usize, events as usize))
    }

    fn log_activity(&self, a: &Activity) -> Result<()> {
        let mut c = self.lock();
        let mut tx = c.transaction().map_err(err)?;
        log(&mut tx, a.at, &a.kind, &a.subject, &a.message)?;
        tx.commit().map_err(err)
    }

    fn activity(&self, limit: u32) -> Result<Vec<Activity>> {
        let rows = self
            .lock()
            .query(
                "SELECT at, kind, subject, message FROM activity ORDER BY id DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| Activity {
                at: r.get(0),
                kind: r.get(1),
                subject: r.get(2),
                message: r.get(3),
            })
            .collect())
    }
}

/// Create the instance of `c` or refresh what it says of itself (alias, group, version, when).
fn upsert_instance(tx: &mut Transaction, c: &Contact) -> Result<()> {
    tx.execute(
        "INSERT INTO instances (machine_id, app_id, alias, group_name, version, status,
            error_code, first_seen, last_seen)
         VALUES ($1, $2, $3, $4, $5, 'new', NULL, $6, $6)
         ON CONFLICT (machine_id, app_id) DO UPDATE SET
            alias = COALESCE(excluded.alias, instances.alias),
            group_name = excluded.group_name, version = excluded.version,
            last_seen = excluded.last_seen",
        &[
            &c.machine_id,
            &c.app_id,
            &c.alias,
            &c.group,
            &c.version,
            &c.at,
        ],
    )
    .map_err(err)?;
    Ok(())
}
