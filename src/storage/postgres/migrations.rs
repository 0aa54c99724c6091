//! The schema, as embedded, versioned migrations. They run under a PostgreSQL advisory lock, so
//! instances starting together apply each migration once; a database migrated by a newer bridge
//! is refused rather than misread.

use deadpool_postgres::ClientWrapper;

/// `pg_advisory_lock` key for migrations ("mcp-oauth-bridge migrate", arbitrary but fixed).
const MIGRATION_LOCK: i64 = 0x6d63_706f_6d69_6772;

/// Each migration in order; a released one is never edited, a change is a new one.
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial schema", V1),
    (2, "shared secrets", V2),
    (3, "expiry indexes for the sweep", V3),
    (4, "refresh families stay uncompressed", V4),
    (5, "refresh families by client", V5),
    (6, "single-use keys", V6),
    (7, "grants and consents by owner", V7),
    (8, "grants by provider session", V8),
];

/// A back-channel logout names the provider's `sub` and usually its `sid`; some providers send
/// only the `sid`.
const V8: &str = r#"
CREATE INDEX refresh_families_provider_session ON refresh_families
    ((data->'upstream_session'->>'subject'), (data->'upstream_session'->>'session_id'));
CREATE INDEX refresh_families_provider_session_id ON refresh_families
    ((data->'upstream_session'->>'session_id'));
"#;

/// An administrator lists or revokes a user's grants, or a client's remembered consents, without
/// a scan of every row (grants by client have their index since V5, consents by subject their
/// primary key).
const V7: &str = r#"
CREATE INDEX refresh_families_subject ON refresh_families ((data->'identity'->>'subject'));
CREATE INDEX consent_grants_client ON consent_grants (client_id);
"#;

/// Client assertion `jti`s (RFC 7523 §3), remembered until the assertion expires, so that a
/// replay to any instance is refused; the sweep deletes them by `expires_at`.
const V6: &str = r#"
CREATE TABLE used_once (
    key TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_once_expiry ON used_once (expires_at);
"#;

/// Deleting a client revokes its grants (RFC 7592): its families are found by client without a
/// scan of every family. Built inside the migration's transaction, so rotations on instances
/// still running the old release wait while it builds, once, at the upgrade.
const V5: &str = "CREATE INDEX refresh_families_client ON refresh_families ((data->>'client_id'));";

/// A family is rewritten on every rotation; once it tracks a few dozen access tokens its document
/// passes the default 2 kB at which PostgreSQL compresses a row, and compressing it again on
/// every write cost a tenth of the database's time. A row is still moved out of line when it
/// does not fit a page.
const V4: &str = r#"
ALTER TABLE refresh_families SET (toast_tuple_target = 8160);
"#;

const V3: &str = r#"
CREATE INDEX family_tombstones_expiry ON family_tombstones (expires_at);
CREATE INDEX consent_requests_expiry ON consent_requests (expires_at);
CREATE INDEX consent_grants_expiry ON consent_grants (expires_at);
"#;

/// Keys every instance must share: the cookie key, a generated signing key. Sealed with
/// AES-256-GCM when `storage.encryption_key` is set.
const V2: &str = r#"
CREATE TABLE shared_secrets (
    name        text PRIMARY KEY,
    value       bytea NOT NULL,
    sealed      boolean NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"#;

const V1: &str = r#"
CREATE TABLE pending_authorizations (
    state_hash  bytea PRIMARY KEY,
    binding     bytea NOT NULL,
    data        jsonb NOT NULL,
    expires_at  bigint NOT NULL
);
CREATE INDEX pending_authorizations_expiry ON pending_authorizations (expires_at);

CREATE TABLE authorization_codes (
    code_hash   bytea PRIMARY KEY,
    data        jsonb NOT NULL,
    redeemed    boolean NOT NULL DEFAULT false,
    expires_at  bigint NOT NULL
);
CREATE INDEX authorization_codes_expiry ON authorization_codes (expires_at);

CREATE TABLE refresh_families (
    id          text PRIMARY KEY,
    data        jsonb NOT NULL,
    -- When the family may be deleted: its absolute end, or its sliding end while not revoked.
    expires_at  bigint NOT NULL
);
CREATE INDEX refresh_families_expiry ON refresh_families (expires_at);

-- Every refresh token a family ever had, current or retired, so a reuse is recognised.
CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    family_id   text NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- A family revoked before it was created (a code replayed while its first redemption runs).
CREATE TABLE family_tombstones (
    id          text PRIMARY KEY,
    expires_at  bigint NOT NULL
);

CREATE TABLE revoked_access_tokens (
    jti         text PRIMARY KEY,
    expires_at  bigint NOT NULL
);
CREATE INDEX revoked_access_tokens_expiry ON revoked_access_tokens (expires_at);

CREATE TABLE consent_requests (
    token_hash  bytea PRIMARY KEY,
    data        jsonb NOT NULL,
    expires_at  bigint NOT NULL
);

CREATE TABLE consent_grants (
    subject       text NOT NULL,
    client_id     text NOT NULL,
    redirect_uri  text NOT NULL,
    audience      text NOT NULL,
    scope         text[] NOT NULL,
    expires_at    bigint NOT NULL,
    PRIMARY KEY (subject, client_id, redirect_uri, audience)
);

CREATE TABLE registered_clients (
    client_id     text PRIMARY KEY,
    data          jsonb NOT NULL,
    issued_at     bigint NOT NULL,
    last_used_at  bigint
);
"#;

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the database schema is at version {found}, newer than this mcp-oauth-bridge knows ({known}); run a newer release"
    )]
    NewerSchema { found: i32, known: i32 },
    #[error("database error while migrating: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// Applies every migration the database lacks; returns the versions applied.
pub(crate) async fn migrate(client: &mut ClientWrapper) -> Result<Vec<i32>, MigrationError> {
    // Waiting behind another instance's migrations is normal; forever is not.
    client.batch_execute("SET lock_timeout = '120s'").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply(client).await;
    // Released on every path; a lost connection releases it too.
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = result?;
    unlocked?;
    Ok(applied)
}

async fn apply(client: &mut ClientWrapper) -> Result<Vec<i32>, MigrationError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?;
    let current: i32 = row.get(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _, _)| *version);
    if current > known {
        return Err(MigrationError::NewerSchema {
            found: current,
            known,
        });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        let transaction = client.transaction().await?;
        transaction.batch_execute(sql).await?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
        transaction.commit().await?;
        tracing::info!(version, name, "database migration applied");
        applied.push(*version);
    }
    Ok(applied)
}
