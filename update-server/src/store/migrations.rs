//! The schema, as numbered migrations applied in order and recorded in `schema_migrations`.
//! Plain SQL both SQLite and PostgreSQL run; the one difference, an auto-numbered key, is the
//! `{serial}` placeholder each store replaces.

/// Migration `i + 1` is `MIGRATIONS[i]`. Never edit one that shipped; add the next.
pub const MIGRATIONS: &[&str] = &[
    // 1: channels, groups, packages, instances, events; the three public channels and groups.
    "CREATE TABLE channels (
        name TEXT PRIMARY KEY
    );
    CREATE TABLE groups (
        name TEXT PRIMARY KEY,
        channel TEXT NOT NULL REFERENCES channels(name),
        allow_downgrade INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE packages (
        id {serial},
        app_id TEXT NOT NULL,
        version TEXT NOT NULL,
        file_name TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha1_base64 TEXT NOT NULL,
        sha256_base64 TEXT NOT NULL,
        sha256_hex TEXT NOT NULL,
        key_id TEXT NOT NULL,
        external_url TEXT,
        created_at BIGINT NOT NULL,
        UNIQUE (app_id, sha256_hex)
    );
    CREATE TABLE channel_packages (
        channel TEXT NOT NULL REFERENCES channels(name),
        app_id TEXT NOT NULL,
        package_id BIGINT NOT NULL REFERENCES packages(id),
        PRIMARY KEY (channel, app_id)
    );
    CREATE TABLE instances (
        machine_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        alias TEXT,
        group_name TEXT NOT NULL,
        version TEXT NOT NULL,
        status TEXT NOT NULL,
        error_code BIGINT,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        PRIMARY KEY (machine_id, app_id)
    );
    CREATE TABLE events (
        id {serial},
        machine_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        at BIGINT NOT NULL,
        event_type INTEGER NOT NULL,
        event_result INTEGER NOT NULL,
        error_code BIGINT,
        previous_version TEXT,
        version TEXT NOT NULL
    );
    CREATE INDEX events_by_instance ON events (machine_id, app_id, id);
    INSERT INTO channels (name) VALUES ('alpha'), ('beta'), ('stable');
    INSERT INTO groups (name, channel) VALUES ('alpha', 'alpha'), ('beta', 'beta'), ('stable', 'stable');",
    // 2: hiding instances (nebraska#148) and the activity log.
    "ALTER TABLE instances ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX instances_by_last_seen ON instances (last_seen);
    CREATE INDEX events_by_time ON events (at);
    CREATE TABLE activity (
        id {serial},
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        message TEXT NOT NULL
    );",
    // 3: rollout policy per group; what each instance was granted and when.
    "ALTER TABLE groups ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE groups ADD COLUMN max_updates_per_period INTEGER;
    ALTER TABLE groups ADD COLUMN period_seconds BIGINT NOT NULL DEFAULT 3600;
    ALTER TABLE groups ADD COLUMN update_timeout_seconds BIGINT NOT NULL DEFAULT 3600;
    ALTER TABLE groups ADD COLUMN office_hours INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE groups ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';
    ALTER TABLE groups ADD COLUMN safe_mode INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE groups ADD COLUMN safe_mode_failures INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE instances ADD COLUMN granted_at BIGINT;
    ALTER TABLE instances ADD COLUMN target_version TEXT;",
];
