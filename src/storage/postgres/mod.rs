//! PostgreSQL storage for several instances behind a load balancer. Every single-use rule is one
//! atomic statement (a conditional `UPDATE`/`DELETE … RETURNING`) or one transaction holding the
//! row lock, so it holds whichever instance a request reaches. Records are JSON documents next to
//! the columns the statements select on; secrets are stored as hashes only.

mod coalesced;
pub(crate) mod migrations;
mod prepared;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::Json;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use self::coalesced::{FamilyWrite, Rotations, Written};
use self::prepared::Prepared;
use super::{
    AuthorizationCodeRecord, AuthorizationRequest, CodeRedemption, ConsentGrant, ConsentRequest,
    EndedGrant, GrantOwner, IssueGrant, LAST_USE_PRECISION, PendingAuthorization, PendingTake,
    RegisteredClient, Storage, StorageError,
};
use crate::clock::UnixTime;
use crate::sealing::{SealedSecret, Sealer};
use crate::secret::{SecretBytes, SecretString};
use crate::storage::settings::PostgresConfig;
use crate::tokens::TokenHash;
use crate::tokens::refresh::{
    IssuedAccessToken, Persist, Presentation, REVOKED_FAMILY_TOMBSTONE_TTL, RefreshFamily,
    RefreshRequest, Replacement,
};

/// Rows deleted per statement by the sweep, so it never holds long locks.
const SWEEP_BATCH: i64 = 1000;
/// See `rest_after`.
const SWEEP_REST: u32 = 2;
/// Batches per table per sweep at most; what is left goes at the next sweep.
const SWEEP_MAX_BATCHES: usize = 50;
/// Serialises registrations so the client cap holds across instances.
const REGISTRATION_LOCK: i64 = 0x6d63_7072_6567_6973;
/// No statement of ours takes long; one that does means the database is in trouble.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Optimistic rotations of one token before it waits for the family's locks instead: only
/// presentations of one family at the same moment collide, and each collision has a winner.
const OPTIMISTIC_ROTATION_ATTEMPTS: usize = 4;
/// Held by the instance sweeping; the others skip their turn.
const SWEEP_LOCK: i64 = 0x6d63_7073_7765_6570;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Not the parser's message: it may quote the URL, password included.
    #[error("storage.postgres.url is not a PostgreSQL connection string")]
    InvalidUrl,
    #[error("cannot build the PostgreSQL pool: {0}")]
    Build(deadpool_postgres::BuildError),
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Connect(#[from] StorageError),
    #[error(transparent)]
    Migration(#[from] migrations::MigrationError),
}

/// The connection pool as gauges: connections in use and idle, and how many wait for one.
struct PoolGauges(Pool);

impl crate::metrics::Gauges for PoolGauges {
    fn read(&self) -> Vec<crate::metrics::GaugeReading> {
        let status = self.0.status();
        let idle = i64::try_from(status.available).unwrap_or(i64::MAX);
        let open = i64::try_from(status.size).unwrap_or(i64::MAX);
        vec![
            crate::metrics::GaugeReading::new(
                "storage_pool_in_use",
                "PostgreSQL connections in use",
                open.saturating_sub(idle),
            ),
            crate::metrics::GaugeReading::new(
                "storage_pool_idle",
                "PostgreSQL connections open and idle",
                idle,
            ),
            crate::metrics::GaugeReading::new(
                "storage_pool_max",
                "PostgreSQL connections the pool may open",
                i64::try_from(status.max_size).unwrap_or(i64::MAX),
            ),
            crate::metrics::GaugeReading::new(
                "storage_pool_waiting",
                "requests waiting for a PostgreSQL connection",
                i64::try_from(status.waiting).unwrap_or(i64::MAX),
            ),
        ]
    }
}

pub struct PostgresStorage {
    pool: Pool,
    /// The optimistic rotation's statements, shared by the rotations at the same moment.
    rotations: Rotations,
    sealer: Option<Sealer>,
}

/// A server error keeps its code and message only: its DETAIL can quote the values of a row.
fn unavailable<E: std::error::Error + 'static>(error: E) -> StorageError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(db) = cause.downcast_ref::<tokio_postgres::error::DbError>() {
            return StorageError::Database(format!(
                "{} {}: {}",
                db.severity(),
                db.code().code(),
                db.message()
            ));
        }
        source = cause.source();
    }
    StorageError::Database(error.to_string())
}

fn hash(value: &TokenHash) -> &[u8] {
    &value.0
}

/// When the sweep may delete a family: its absolute end, or its sliding end while not revoked (a
/// revoked family is kept to its absolute end so that its tokens keep failing as revoked).
fn family_expiry(family: &RefreshFamily) -> i64 {
    if family.revoked {
        family.absolute_expires_at.seconds()
    } else {
        family
            .absolute_expires_at
            .seconds()
            .min(family.current_expires_at.seconds())
    }
}

impl PostgresStorage {
    /// Revokes every grant of `owner` not revoked yet, `REVOCATION_BATCH` to a transaction, each
    /// family under its lock taken in one order (by the lock's key), so that two bulk
    /// revocations never wait on each other; the grants this ended.
    async fn end_grants(
        &self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<EndedGrant>, StorageError> {
        let Some((condition, values)) = owner_condition(owner) else {
            return Ok(Vec::new());
        };
        let mut client = self.client().await?;
        let granted = client
            .rows(&granted_sql(condition), &sql_params(&values))
            .await?;
        let mut ended = Vec::new();
        for batch in granted.chunks(REVOCATION_BATCH) {
            let transaction = client.transaction().await.map_err(unavailable)?;
            for row in batch {
                let grant = |column: usize| -> Result<String, StorageError> {
                    row.try_get(column).map_err(unavailable)
                };
                let family_id = grant(0)?;
                lock_family(&transaction, &family_id).await?;
                if let Some(was_live) = revoke_family_in(&transaction, &family_id, now).await? {
                    ended.push(EndedGrant {
                        family_id,
                        client_id: grant(1)?,
                        subject: grant(2)?,
                        was_live,
                    });
                }
            }
            transaction.commit().await.map_err(unavailable)?;
        }
        Ok(ended)
    }

    /// A pool for `settings.url`; connections are made on demand, so this does not fail when the
    /// database is down (requests then answer 503 until it is back).
    /// `encryption_key` seals the shared secrets at rest when set.
    pub fn new(
        settings: &PostgresConfig,
        encryption_key: Option<&SecretString>,
    ) -> Result<Self, PoolError> {
        let config: tokio_postgres::Config = settings
            .url
            .expose()
            .parse()
            .map_err(|_| PoolError::InvalidUrl)?;
        let mut storage = Self::with_config(config, settings.pool_size, settings.connect_timeout)?;
        storage.sealer = encryption_key.map(Sealer::new);
        Ok(storage)
    }

    /// Seals the secrets this storage shares from now on.
    #[cfg(test)]
    pub(crate) fn with_sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    pub(crate) fn with_config(
        mut config: tokio_postgres::Config,
        pool_size: usize,
        connect_timeout: Duration,
    ) -> Result<Self, PoolError> {
        config.connect_timeout(connect_timeout);
        // A database that stops answering (a host gone off the network, not a closed socket)
        // must turn into errors, not requests hanging for the kernel's TCP timeout.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.tcp_user_timeout(STATEMENT_TIMEOUT);
        config.options(format!(
            "-c statement_timeout={} -c lock_timeout={}",
            STATEMENT_TIMEOUT.as_millis(),
            LOCK_TIMEOUT.as_millis()
        ));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(connect_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(PoolError::Build)?;
        Ok(PostgresStorage {
            rotations: Rotations::new(pool.clone(), connect_timeout),
            pool,
            sealer: None,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StorageError> {
        self.pool.get().await.map_err(unavailable)
    }

    /// One statement on a pooled connection; how many rows it touched.
    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StorageError> {
        self.client().await?.run(sql, params).await
    }

    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StorageError> {
        self.client().await?.row_opt(sql, params).await
    }

    async fn query_one(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, StorageError> {
        self.client().await?.row(sql, params).await
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StorageError> {
        self.client().await?.rows(sql, params).await
    }

    #[cfg(test)]
    async fn database_name(&self) -> String {
        self.client()
            .await
            .unwrap()
            .query_one("SELECT current_database()", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// The rotation rule under the family's locks, in one transaction: for a reuse, which revokes
    /// the family, and when a family changed under every optimistic attempt.
    async fn rotate_refresh_locked(
        &self,
        presented: &TokenHash,
        request: &RefreshRequest<'_>,
        replacement: Replacement,
        now: UnixTime,
    ) -> Result<Option<(Presentation, RefreshFamily)>, StorageError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(unavailable)?;
        // One statement finds the family, takes its advisory lock, then its row lock: the order
        // of `revoke_family`, both held until commit, so concurrent presentations of the
        // family's tokens, on any instance, apply the rotation rule one after another. A CTE with
        // a volatile function is never inlined, so the advisory lock is held before the row is
        // locked; FOR UPDATE then reads the row as last committed, not as the statement began.
        let row = transaction
            .row_opt(
                "WITH token AS (
                     SELECT family_id, pg_advisory_xact_lock(hashtext(family_id)) AS locked
                     FROM refresh_tokens WHERE token_hash = $1)
                 SELECT f.id, f.data FROM token JOIN refresh_families f ON f.id = token.family_id
                 FOR UPDATE OF f",
                &[&hash(presented)],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let family_id: String = row.try_get(0).map_err(unavailable)?;
        let Json(mut family): Json<RefreshFamily> = row.try_get(1).map_err(unavailable)?;
        let new_hash = replacement.hash;
        let outcome = family.present(presented, request, replacement, now);
        let evicted = family.evict_excess_access_tokens();
        let (evicted_jtis, evicted_expiries) = revocation_columns(&evicted);
        let replacement_index =
            (outcome.persist() == Persist::IndexReplacement).then(|| hash(&new_hash));
        // The family, its new token's index and the access tokens it no longer tracks, in one
        // statement.
        transaction
            .run(
                "WITH family AS (
                     UPDATE refresh_families SET data = $2, expires_at = $3 WHERE id = $1),
                 replacement AS (
                     INSERT INTO refresh_tokens (token_hash, family_id)
                     SELECT $4::bytea, $1::text WHERE $4::bytea IS NOT NULL
                     ON CONFLICT (token_hash) DO NOTHING)
                 INSERT INTO revoked_access_tokens (jti, expires_at)
                 SELECT * FROM unnest($5::text[], $6::bigint[])
                 ON CONFLICT (jti) DO NOTHING",
                &[
                    &family_id,
                    &Json(&family),
                    &family_expiry(&family),
                    &replacement_index,
                    &evicted_jtis,
                    &evicted_expiries,
                ],
            )
            .await?;
        if outcome.persist() == Persist::RevokeFamily {
            revoke_family_in(&transaction, &family_id, now).await?;
        }
        transaction.commit().await.map_err(unavailable)?;
        Ok(Some((outcome, family)))
    }

    /// Applies the embedded migrations (under an advisory lock); returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<i32>, MigrateError> {
        let client = self.client().await?;
        // Off the pool for good: its session settings and advisory lock never reach a request.
        let mut client = deadpool_postgres::Object::take(client);
        Ok(migrations::migrate(&mut client).await?)
    }
}

/// Marks a family revoked inside the caller's transaction: its access tokens join the revoked
/// list, and a tombstone stops a family not created yet from ever being created. `None` when it
/// was revoked (or tombstoned) already, else whether it gave access until now.
async fn revoke_family_in(
    client: &impl GenericClient,
    family_id: &str,
    now: UnixTime,
) -> Result<Option<bool>, StorageError> {
    // `xmax = 0` only on a row this statement inserted, not on one it updated.
    let tombstoned = !client
        .row(
            "INSERT INTO family_tombstones (id, expires_at) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
             RETURNING xmax = 0",
            &[
                &family_id,
                &now.plus(REVOKED_FAMILY_TOMBSTONE_TTL).seconds(),
            ],
        )
        .await?
        .try_get::<_, bool>(0)
        .map_err(unavailable)?;
    let row = client
        .row_opt(
            "SELECT data FROM refresh_families WHERE id = $1 FOR UPDATE",
            &[&family_id],
        )
        .await?;
    let Some(row) = row else {
        return Ok((!tombstoned).then_some(false));
    };
    let Json(mut family): Json<RefreshFamily> = row.try_get(0).map_err(unavailable)?;
    // A reuse has marked the family revoked already, its access tokens not yet: they are, here.
    let revoked_now = !family.revoked;
    let was_live = family.is_live(now);
    family.revoke();
    for token in family.access_tokens.drain(..) {
        revoke_access_token(client, &token.jti, token.expires_at).await?;
    }
    client
        .run(
            "UPDATE refresh_families SET data = $2, expires_at = $3 WHERE id = $1",
            &[&family_id, &Json(&family), &family_expiry(&family)],
        )
        .await?;
    Ok(revoked_now.then_some(was_live))
}

/// Families revoked per transaction by a bulk revocation: each holds an advisory lock until its
/// transaction commits, and PostgreSQL's lock table has room for a few thousand at most
/// (`max_locks_per_transaction` × connections), shared by every session.
const REVOCATION_BATCH: usize = 200;

/// The condition on a family's or a code's `data` that `owner` holds it, with its parameters
/// (`$1`, `$2`); `None` when it can hold nothing (a value PostgreSQL cannot store, a session
/// named by neither `sub` nor `sid`).
fn owner_condition(owner: GrantOwner<'_>) -> Option<(&'static str, Vec<&str>)> {
    // Sessions recorded before providers had names are the single provider's (`upstream`).
    let (condition, values) = match owner {
        GrantOwner::Subject(subject) => ("data->'identity'->>'subject' = $1", vec![subject]),
        GrantOwner::Client(client_id) => ("data->>'client_id' = $1", vec![client_id]),
        GrantOwner::ProviderSession {
            provider,
            subject: Some(subject),
            session_id: Some(session_id),
        } => (
            "data->'upstream_session'->>'subject' = $1 AND coalesce(data->'upstream_session'->>'session_id' = $2, true) AND coalesce(data->'upstream_session'->>'provider', 'upstream') = $3",
            vec![subject, session_id, provider],
        ),
        GrantOwner::ProviderSession {
            provider,
            subject: Some(subject),
            session_id: None,
        } => (
            "data->'upstream_session'->>'subject' = $1 AND coalesce(data->'upstream_session'->>'provider', 'upstream') = $2",
            vec![subject, provider],
        ),
        GrantOwner::ProviderSession {
            provider,
            subject: None,
            session_id: Some(session_id),
        } => (
            "data->'upstream_session'->>'session_id' = $1 AND coalesce(data->'upstream_session'->>'provider', 'upstream') = $2",
            vec![session_id, provider],
        ),
        GrantOwner::ProviderSession {
            subject: None,
            session_id: None,
            ..
        } => return None,
    };
    values
        .iter()
        .all(|value| storable(value))
        .then_some((condition, values))
}

/// The grants held under `condition` that are not revoked yet (the families, and the grants
/// codes not yet redeemed would start) as `(family, client, subject)`, in the order of their
/// locks' keys.
fn granted_sql(condition: &str) -> String {
    format!(
        "SELECT id, client_id, subject FROM (
             SELECT id, data->>'client_id' AS client_id, data->'identity'->>'subject' AS subject
             FROM refresh_families WHERE ({condition}) AND data->>'revoked' = 'false'
             UNION
             SELECT data->>'family_id', data->>'client_id', data->'identity'->>'subject'
             FROM authorization_codes WHERE NOT redeemed AND ({condition})
         ) AS granted ORDER BY hashtext(id), id"
    )
}

fn sql_params<'a>(values: &'a [&'a str]) -> Vec<&'a (dyn ToSql + Sync)> {
    values
        .iter()
        .map(|value| value as &(dyn ToSql + Sync))
        .collect()
}

async fn revoke_access_token(
    client: &impl GenericClient,
    jti: &str,
    expires_at: UnixTime,
) -> Result<(), StorageError> {
    client
        .run(
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2)
             ON CONFLICT (jti) DO NOTHING",
            &[&jti, &expires_at.seconds()],
        )
        .await?;
    Ok(())
}

/// Access tokens as the two arrays `unnest($n::text[], $m::bigint[])` turns into
/// `revoked_access_tokens` rows.
fn revocation_columns(tokens: &[IssuedAccessToken]) -> (Vec<&str>, Vec<i64>) {
    tokens
        .iter()
        .map(|token| (token.jti.as_str(), token.expires_at.seconds()))
        .unzip()
}

/// What one optimistic attempt at a rotation came to.
#[allow(clippy::large_enum_variant)] // moved once per attempt; a box would only add an allocation
enum Optimistic {
    Done(Option<(Presentation, RefreshFamily)>),
    /// Another writer changed the family between the read and the write: read it again.
    Changed,
    /// The outcome revokes the family, which takes the family's locks.
    NeedsLock,
}

/// A rotation in two statements and no transaction: read the family, apply the rule, write it
/// back only if no one else wrote it in between. The row's `xmin` (the transaction that wrote
/// this version) changes with every write to it, whoever makes it, so no writer can be
/// overwritten unseen. Refusals change nothing and are answered from the read. Both statements
/// are shared with the rotations of other families at the same moment (`coalesced`).
async fn rotate_if_unchanged(
    rotations: &Rotations,
    presented: &TokenHash,
    request: &RefreshRequest<'_>,
    replacement: Replacement,
    now: UnixTime,
) -> Result<Optimistic, StorageError> {
    let Some(read) = rotations.read(*presented).await? else {
        return Ok(Optimistic::Done(None));
    };
    let mut family: RefreshFamily = serde_json::from_str(&read.data).map_err(|error| {
        // The position only: serde's message can quote the document.
        StorageError::Database(format!(
            "a refresh family does not read back (line {}, column {})",
            error.line(),
            error.column()
        ))
    })?;
    let new_hash = replacement.hash;
    let outcome = family.present(presented, request, replacement, now);
    match outcome.persist() {
        Persist::Nothing => return Ok(Optimistic::Done(Some((outcome, family)))),
        Persist::RevokeFamily => return Ok(Optimistic::NeedsLock),
        Persist::IndexReplacement => {}
    }
    let evicted = family.evict_excess_access_tokens();
    let data = serde_json::to_string(&family)
        .map_err(|error| StorageError::Database(format!("a refresh family: {error}")))?;
    let written = rotations
        .write(FamilyWrite {
            family_id: read.family_id,
            data,
            expires_at: family_expiry(&family),
            version: read.version,
            new_token: new_hash,
            evicted,
        })
        .await?;
    Ok(match written {
        Written::Yes => Optimistic::Done(Some((outcome, family))),
        Written::Changed => Optimistic::Changed,
    })
}

/// Inserts a family and indexes its current token; whether a tombstone says it was revoked before
/// it existed. Call it under the family's lock, in a statement of its own, so that the check sees
/// a tombstone committed while the lock was awaited.
async fn insert_family_in(
    client: &impl GenericClient,
    family: &RefreshFamily,
) -> Result<bool, StorageError> {
    let row = client
        .row(
            "WITH family AS (
                 INSERT INTO refresh_families (id, data, expires_at) VALUES ($1, $2, $3)),
             current AS (
                 INSERT INTO refresh_tokens (token_hash, family_id)
                 SELECT $4::bytea, $1::text WHERE $4::bytea IS NOT NULL)
             SELECT EXISTS (SELECT 1 FROM family_tombstones WHERE id = $1)",
            &[
                &family.id,
                &Json(family),
                &family_expiry(family),
                &family.current.as_ref().map(hash),
            ],
        )
        .await?;
    row.try_get(0).map_err(unavailable)
}

/// Whether PostgreSQL can hold `text` in a text column: it refuses NUL, so a key with one (a
/// client id from a URL or a form) names nothing stored, rather than failing the query.
fn storable(text: &str) -> bool {
    !text.contains('\0')
}

/// Serialises everything that creates or revokes one family, across instances.
async fn lock_family(client: &impl GenericClient, family_id: &str) -> Result<(), StorageError> {
    client
        .run("SELECT pg_advisory_xact_lock(hashtext($1))", &[&family_id])
        .await?;
    Ok(())
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn put_pending(
        &self,
        state: TokenHash,
        pending: PendingAuthorization,
    ) -> Result<(), StorageError> {
        self.execute(
            "INSERT INTO pending_authorizations (state_hash, binding, data, expires_at)
                 VALUES ($1, $2, $3, $4)",
            &[
                &hash(&state),
                &hash(&pending.browser_binding),
                &Json(&pending),
                &pending.expires_at.seconds(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn take_pending(
        &self,
        state: &TokenHash,
        binding: Option<&TokenHash>,
        now: UnixTime,
    ) -> Result<PendingTake, StorageError> {
        let client = self.client().await?;
        if let Some(binding) = binding {
            let taken = client
                .row_opt(
                    "DELETE FROM pending_authorizations
                     WHERE state_hash = $1 AND binding = $2 AND expires_at > $3 RETURNING data",
                    &[&hash(state), &hash(binding), &now.seconds()],
                )
                .await?;
            if let Some(row) = taken {
                let Json(pending): Json<PendingAuthorization> =
                    row.try_get(0).map_err(unavailable)?;
                return Ok(PendingTake::Taken(Box::new(pending)));
            }
        }
        let alive = client
            .row_opt(
                "SELECT 1 FROM pending_authorizations WHERE state_hash = $1 AND expires_at > $2",
                &[&hash(state), &now.seconds()],
            )
            .await?;
        Ok(if alive.is_some() {
            PendingTake::OtherBrowser
        } else {
            PendingTake::Missing
        })
    }

    async fn peek_pending(
        &self,
        state: &TokenHash,
        binding: Option<&TokenHash>,
        now: UnixTime,
    ) -> Result<PendingTake, StorageError> {
        let row = self
            .query_opt(
                "SELECT binding, data FROM pending_authorizations
                 WHERE state_hash = $1 AND expires_at > $2",
                &[&hash(state), &now.seconds()],
            )
            .await?;
        let Some(row) = row else {
            return Ok(PendingTake::Missing);
        };
        let stored: Vec<u8> = row.try_get(0).map_err(unavailable)?;
        if binding.map(hash) != Some(stored.as_slice()) {
            return Ok(PendingTake::OtherBrowser);
        }
        let Json(pending): Json<PendingAuthorization> = row.try_get(1).map_err(unavailable)?;
        Ok(PendingTake::Taken(Box::new(pending)))
    }

    async fn count_pending(&self, now: UnixTime) -> Result<usize, StorageError> {
        let row = self
            .query_one(
                "SELECT (SELECT count(*) FROM pending_authorizations WHERE expires_at > $1)
                      + (SELECT count(*) FROM consent_requests WHERE expires_at > $1)",
                &[&now.seconds()],
            )
            .await?;
        let live: i64 = row.try_get(0).map_err(unavailable)?;
        Ok(usize::try_from(live).unwrap_or(usize::MAX))
    }

    async fn put_code(
        &self,
        code: TokenHash,
        record: AuthorizationCodeRecord,
    ) -> Result<(), StorageError> {
        self.execute(
            "INSERT INTO authorization_codes (code_hash, data, expires_at) VALUES ($1, $2, $3)",
            &[&hash(&code), &Json(&record), &record.expires_at.seconds()],
        )
        .await?;
        Ok(())
    }

    async fn redeem_code(
        &self,
        code: &TokenHash,
        client_id: &str,
        now: UnixTime,
        issue: &mut IssueGrant<'_>,
    ) -> Result<CodeRedemption, StorageError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(unavailable)?;
        // The row stays locked until the grant is stored: a concurrent redemption waits here,
        // then sees the code redeemed and the family it must revoke.
        let redeemed = transaction
            .row_opt(
                "UPDATE authorization_codes SET redeemed = true
                 WHERE code_hash = $1 AND NOT redeemed AND expires_at > $2
                   AND data->>'client_id' = $3
                 RETURNING data",
                &[&hash(code), &now.seconds(), &client_id],
            )
            .await?;
        if let Some(row) = redeemed {
            let Json(record): Json<AuthorizationCodeRecord> =
                row.try_get(0).map_err(unavailable)?;
            if let Some(family) = issue(&record) {
                lock_family(&transaction, &family.id).await?;
                if insert_family_in(&transaction, &family).await? {
                    revoke_family_in(&transaction, &family.id, now).await?;
                }
            }
            transaction.commit().await.map_err(unavailable)?;
            return Ok(CodeRedemption::Redeemed(Box::new(record)));
        }
        let row = transaction
            .row_opt(
                "SELECT data, redeemed FROM authorization_codes WHERE code_hash = $1",
                &[&hash(code)],
            )
            .await?;
        let Some(row) = row else {
            return Ok(CodeRedemption::Unknown);
        };
        let Json(record): Json<AuthorizationCodeRecord> = row.try_get(0).map_err(unavailable)?;
        let was_redeemed: bool = row.try_get(1).map_err(unavailable)?;
        Ok(if record.client_id != client_id {
            CodeRedemption::OtherClient
        } else if was_redeemed {
            CodeRedemption::Replayed {
                family_id: record.family_id,
                client_id: record.client_id,
            }
        } else {
            CodeRedemption::Expired
        })
    }

    async fn create_family(&self, family: RefreshFamily) -> Result<bool, StorageError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(unavailable)?;
        lock_family(&transaction, &family.id).await?;
        if insert_family_in(&transaction, &family).await? {
            // Dropped without commit: the insert is rolled back.
            return Ok(false);
        }
        transaction.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        request: &RefreshRequest<'_>,
        replacement: Replacement,
        now: UnixTime,
    ) -> Result<Option<(Presentation, RefreshFamily)>, StorageError> {
        for _ in 0..OPTIMISTIC_ROTATION_ATTEMPTS {
            match rotate_if_unchanged(
                &self.rotations,
                presented,
                request,
                replacement.clone(),
                now,
            )
            .await?
            {
                Optimistic::Done(done) => return Ok(done),
                Optimistic::Changed => continue,
                Optimistic::NeedsLock => break,
            }
        }
        self.rotate_refresh_locked(presented, request, replacement, now)
            .await
    }

    async fn revoke_family(&self, family_id: &str, now: UnixTime) -> Result<bool, StorageError> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await.map_err(unavailable)?;
        lock_family(&transaction, family_id).await?;
        let revoked = revoke_family_in(&transaction, family_id, now).await?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(revoked.is_some())
    }

    async fn grant_is_live(&self, family_id: &str) -> Result<bool, StorageError> {
        let row = self
            .query_opt(
                "SELECT 1 FROM refresh_families WHERE id = $1 AND NOT (data->>'revoked')::boolean",
                &[&family_id],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn is_access_token_revoked(
        &self,
        jti: &str,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        let row = self
            .query_opt(
                "SELECT 1 FROM revoked_access_tokens WHERE jti = $1 AND expires_at > $2",
                &[&jti, &now.seconds()],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: UnixTime,
    ) -> Result<(), StorageError> {
        revoke_access_token(&self.client().await?, jti, expires_at).await
    }

    async fn replace_upstream_tokens(
        &self,
        family_id: &str,
        previous: &SealedSecret,
        refresh: SealedSecret,
        access: Option<SealedSecret>,
    ) -> Result<bool, StorageError> {
        // One statement, so that a rotation of the family (which rewrites `data` under a row
        // lock) sees both tokens replaced or neither; a null access token keeps the one there.
        let updated = self.execute(
                "UPDATE refresh_families
                 SET data = data || jsonb_strip_nulls(jsonb_build_object('upstream_refresh', $3::text, 'upstream_access', $4::text))
                 WHERE id = $1 AND data->>'upstream_refresh' = $2",
                &[&family_id, &previous.as_str(), &refresh.as_str(), &access.as_ref().map(SealedSecret::as_str)],
            ).await?;
        Ok(updated == 1)
    }

    async fn refresh_family(&self, family_id: &str) -> Result<Option<RefreshFamily>, StorageError> {
        let row = self
            .query_opt(
                "SELECT data FROM refresh_families WHERE id = $1",
                &[&family_id],
            )
            .await?;
        row.as_ref().map(family_of_row).transpose()
    }

    async fn refresh_family_of(
        &self,
        token: &TokenHash,
    ) -> Result<Option<RefreshFamily>, StorageError> {
        let row = self
            .query_opt(
                "SELECT f.data FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
                 WHERE t.token_hash = $1",
                &[&hash(token)],
            )
            .await?;
        row.as_ref().map(family_of_row).transpose()
    }

    async fn put_consent_request(
        &self,
        token: TokenHash,
        request: ConsentRequest,
    ) -> Result<(), StorageError> {
        self.execute(
            "INSERT INTO consent_requests (token_hash, data, expires_at) VALUES ($1, $2, $3)",
            &[
                &hash(&token),
                &Json(&request),
                &request.expires_at.seconds(),
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_consent_request(
        &self,
        token: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<ConsentRequest>, StorageError> {
        let row = self
            .query_opt(
                "SELECT data FROM consent_requests WHERE token_hash = $1 AND expires_at > $2",
                &[&hash(token), &now.seconds()],
            )
            .await?;
        row.map(|row| row.try_get::<_, Json<ConsentRequest>>(0).map(|Json(r)| r))
            .transpose()
            .map_err(unavailable)
    }

    async fn take_consent_request(
        &self,
        token: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<ConsentRequest>, StorageError> {
        let row = self
            .query_opt(
                "DELETE FROM consent_requests WHERE token_hash = $1 RETURNING data, expires_at",
                &[&hash(token)],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let expires_at: i64 = row.try_get(1).map_err(unavailable)?;
        if expires_at <= now.seconds() {
            return Ok(None);
        }
        let Json(request): Json<ConsentRequest> = row.try_get(0).map_err(unavailable)?;
        Ok(Some(request))
    }

    async fn put_consent_grant(
        &self,
        grant: ConsentGrant,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        // A later approval adds to what was approved before and renews it; an expired one counts
        // no more.
        self.execute(
                "INSERT INTO consent_grants (subject, client_id, redirect_uri, audience, scope, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (subject, client_id, redirect_uri, audience) DO UPDATE SET
                   scope = CASE WHEN consent_grants.expires_at > $7
                     THEN ARRAY(SELECT DISTINCT unnest(consent_grants.scope || EXCLUDED.scope))
                     ELSE EXCLUDED.scope END,
                   expires_at = EXCLUDED.expires_at",
                &[
                    &grant.subject,
                    &grant.client_id,
                    &grant.redirect_uri,
                    &grant.audience,
                    &grant.scope,
                    &grant.expires_at.seconds(),
                    &now.seconds(),
                ],
            ).await?;
        Ok(())
    }

    fn gauges(&self) -> Option<std::sync::Arc<dyn crate::metrics::Gauges>> {
        Some(std::sync::Arc::new(PoolGauges(self.pool.clone())))
    }

    async fn consented_scopes(
        &self,
        subject: &str,
        request: &AuthorizationRequest,
        now: UnixTime,
    ) -> Result<Option<Vec<String>>, StorageError> {
        let row = self
            .query_opt(
                "SELECT scope FROM consent_grants
                 WHERE subject = $1 AND client_id = $2 AND redirect_uri = $3 AND audience = $4
                   AND expires_at > $5",
                &[
                    &subject,
                    &request.client_id,
                    &request.redirect_uri,
                    &request.audience,
                    &now.seconds(),
                ],
            )
            .await?;
        row.map(|row| row.try_get::<_, Vec<String>>(0).map_err(unavailable))
            .transpose()
    }

    async fn register_client(
        &self,
        client: RegisteredClient,
        max_clients: usize,
    ) -> Result<bool, StorageError> {
        let mut connection = self.client().await?;
        let transaction = connection.transaction().await.map_err(unavailable)?;
        transaction
            .run("SELECT pg_advisory_xact_lock($1)", &[&REGISTRATION_LOCK])
            .await?;
        let count: i64 = transaction
            .row("SELECT count(*) FROM registered_clients", &[])
            .await?
            .try_get(0)
            .map_err(unavailable)?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= max_clients {
            return Ok(false);
        }
        transaction
            .run(
                "INSERT INTO registered_clients (client_id, data, issued_at, last_used_at)
                 VALUES ($1, $2, $3, $4)",
                &[
                    &client.client_id,
                    &Json(&client),
                    &client.issued_at.seconds(),
                    &client.last_used_at.map(UnixTime::seconds),
                ],
            )
            .await?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<RegisteredClient>, StorageError> {
        if !storable(client_id) {
            return Ok(None);
        }
        let row = self
            .query_opt(
                "SELECT data, last_used_at FROM registered_clients WHERE client_id = $1",
                &[&client_id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let Json(mut client): Json<RegisteredClient> = row.try_get(0).map_err(unavailable)?;
        // The column is the truth: `touch_client` updates it alone.
        let last_used_at: Option<i64> = row.try_get(1).map_err(unavailable)?;
        client.last_used_at = last_used_at.map(UnixTime);
        Ok(Some(client))
    }

    async fn touch_client(&self, client_id: &str, now: UnixTime) -> Result<(), StorageError> {
        let precision = i64::try_from(LAST_USE_PRECISION.as_secs()).unwrap_or(i64::MAX);
        // A statement that matches no row writes nothing, and its commit flushes nothing.
        self.execute(
            "UPDATE registered_clients SET last_used_at = $2
                 WHERE client_id = $1
                   AND (last_used_at IS NULL OR last_used_at <= $2::bigint - $3::bigint)",
            &[&client_id, &now.seconds(), &precision],
        )
        .await?;
        Ok(())
    }

    async fn delete_client(
        &self,
        client_id: &str,
        now: UnixTime,
    ) -> Result<Option<Vec<EndedGrant>>, StorageError> {
        if !storable(client_id) {
            return Ok(None);
        }
        // First, on its own: from then on the client authenticates nowhere, so it starts no
        // grant while those it has are revoked batch by batch below.
        let deleted = self
            .execute(
                "DELETE FROM registered_clients WHERE client_id = $1",
                &[&client_id],
            )
            .await?;
        if deleted == 0 {
            return Ok(None);
        }
        Ok(Some(
            self.end_grants(GrantOwner::Client(client_id), now).await?,
        ))
    }

    async fn list_clients(&self) -> Result<Vec<RegisteredClient>, StorageError> {
        let rows = self
            .query(
                "SELECT data, last_used_at FROM registered_clients ORDER BY issued_at, client_id",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let Json(mut client): Json<RegisteredClient> =
                    row.try_get(0).map_err(unavailable)?;
                let last_used_at: Option<i64> = row.try_get(1).map_err(unavailable)?;
                client.last_used_at = last_used_at.map(UnixTime);
                Ok(client)
            })
            .collect()
    }

    async fn live_grants(
        &self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<RefreshFamily>, StorageError> {
        let Some((condition, values)) = owner_condition(owner) else {
            return Ok(Vec::new());
        };
        let sql = format!("SELECT data FROM refresh_families WHERE {condition}");
        let mut grants = Vec::new();
        for row in self.query(&sql, &sql_params(&values)).await? {
            let Json(family): Json<RefreshFamily> = row.try_get(0).map_err(unavailable)?;
            if family.is_live(now) {
                grants.push(family);
            }
        }
        grants.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(grants)
    }

    async fn revoke_grants(
        &self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<EndedGrant>, StorageError> {
        let ended = self.end_grants(owner, now).await?;
        let consents = match owner {
            GrantOwner::Subject(subject) => {
                Some(("DELETE FROM consent_grants WHERE subject = $1", subject))
            }
            GrantOwner::Client(client_id) => {
                Some(("DELETE FROM consent_grants WHERE client_id = $1", client_id))
            }
            GrantOwner::ProviderSession { .. } => None,
        };
        if let Some((sql, value)) = consents.filter(|(_, value)| storable(value)) {
            self.execute(sql, &[&value]).await?;
        }
        Ok(ended)
    }

    async fn delete_unused_clients(
        &self,
        used_before: UnixTime,
        never_used_before: UnixTime,
    ) -> Result<usize, StorageError> {
        let deleted = self
            .execute(
                "DELETE FROM registered_clients
                 WHERE (last_used_at IS NOT NULL AND last_used_at < $1)
                    OR (last_used_at IS NULL AND issued_at < $2)",
                &[&used_before.seconds(), &never_used_before.seconds()],
            )
            .await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    async fn count_clients(&self) -> Result<usize, StorageError> {
        let count: i64 = self
            .query_one("SELECT count(*) FROM registered_clients", &[])
            .await?
            .try_get(0)
            .map_err(unavailable)?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    async fn sweep_expired(&self, now: UnixTime) -> Result<usize, StorageError> {
        let client = self.client().await?;
        // One instance at a time: a session lock, released below (or when the connection ends).
        let locked: bool = client
            .row("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK])
            .await?
            .try_get(0)
            .map_err(unavailable)?;
        if !locked {
            return Ok(0);
        }
        let swept = sweep(&client, now).await;
        let unlocked = client
            .row("SELECT pg_advisory_unlock($1)", &[&SWEEP_LOCK])
            .await
            .and_then(|row| row.try_get::<_, bool>(0).map_err(unavailable));
        if !matches!(unlocked, Ok(true)) {
            // The session may still hold the lock: keep that connection out of the pool, or
            // every other instance would skip its sweeps for as long as it lives.
            drop(deadpool_postgres::Object::take(client));
        }
        let removed = swept?;
        unlocked?;
        Ok(removed)
    }

    async fn shared_secret(
        &self,
        name: &str,
        fresh: SecretBytes,
    ) -> Result<SecretBytes, StorageError> {
        let (value, sealed) = match &self.sealer {
            Some(sealer) => (sealer.seal(name, fresh.expose())?, true),
            None => (fresh.expose().to_vec(), false),
        };
        // Whoever inserts first wins; everybody then reads the winner.
        self.client()
            .await?
            .run(
                "INSERT INTO shared_secrets (name, value, sealed) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &value, &sealed],
            )
            .await?;
        self.existing_shared_secret(name).await?.ok_or_else(|| {
            StorageError::Database(format!(
                "the shared secret {name} vanished as it was stored"
            ))
        })
    }

    async fn use_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        if !storable(key) {
            return Err(StorageError::Database(
                "a single-use key holds a NUL character".to_owned(),
            ));
        }
        // A key that expired but was not swept yet counts as forgotten, as in memory.
        let touched = self
            .client()
            .await?
            .run(
                "INSERT INTO used_once (key, expires_at) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
                 WHERE used_once.expires_at <= $3",
                &[&key, &expires_at.seconds(), &now.seconds()],
            )
            .await?;
        Ok(touched == 1)
    }

    async fn existing_shared_secret(
        &self,
        name: &str,
    ) -> Result<Option<SecretBytes>, StorageError> {
        let client = self.client().await?;
        let Some(row) = client
            .row_opt(
                "SELECT value, sealed FROM shared_secrets WHERE name = $1",
                &[&name],
            )
            .await?
        else {
            return Ok(None);
        };
        let stored: Vec<u8> = row.try_get(0).map_err(unavailable)?;
        let stored_sealed: bool = row.try_get(1).map_err(unavailable)?;
        match (stored_sealed, &self.sealer) {
            (true, Some(sealer)) => Ok(Some(SecretBytes::from(sealer.open(name, &stored)?))),
            (true, None) => Err(StorageError::EncryptionKeyMissing {
                name: name.to_owned(),
            }),
            (false, None) => Ok(Some(SecretBytes::from(stored))),
            (false, Some(sealer)) => {
                // Stored before storage.encryption_key was set: seal it now.
                let value = sealer.seal(name, &stored)?;
                client
                    .run(
                        "UPDATE shared_secrets SET value = $2, sealed = true
                         WHERE name = $1 AND NOT sealed",
                        &[&name, &value],
                    )
                    .await?;
                tracing::info!(name, "a shared secret stored unencrypted is now encrypted");
                Ok(Some(SecretBytes::from(stored)))
            }
        }
    }

    async fn shared_secret_names(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let rows = self
            .query(
                "SELECT name FROM shared_secrets WHERE starts_with(name, $1) ORDER BY name",
                &[&prefix],
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(unavailable))
            .collect()
    }

    async fn delete_shared_secret(&self, name: &str) -> Result<(), StorageError> {
        self.execute("DELETE FROM shared_secrets WHERE name = $1", &[&name])
            .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}

/// Between two full batches the sweep rests `SWEEP_REST` times as long as the batch took: a
/// backlog of expired rows is deleted at a share of the database's time, not at the expense of
/// the requests sharing it.
async fn rest_after(batch_started: Instant) {
    tokio::time::sleep(batch_started.elapsed() * SWEEP_REST).await;
}

/// Deletes expired rows in bounded batches. Its statements are not kept prepared: a plan made
/// once for any time (a generic plan) walks the tables in key order, past every expired row
/// already deleted and every live one; planned with the time of each sweep, they use the expiry
/// indexes. With a million families the generic plan took seconds per batch.
async fn sweep(client: &impl GenericClient, now: UnixTime) -> Result<usize, StorageError> {
    // The refresh tokens of expired families first, in batches, so that deleting a family does
    // not cascade over an unbounded number of rows.
    for _ in 0..SWEEP_MAX_BATCHES {
        let started = Instant::now();
        let deleted = client
            .execute(
                &format!(
                    "DELETE FROM refresh_tokens WHERE ctid IN
                     (SELECT t.ctid FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id
                      WHERE f.expires_at <= $1 LIMIT {SWEEP_BATCH})"
                ),
                &[&now.seconds()],
            )
            .await
            .map_err(unavailable)?;
        if deleted < u64::try_from(SWEEP_BATCH).unwrap_or(u64::MAX) {
            break;
        }
        rest_after(started).await;
    }
    let mut removed = 0;
    // Counted like the memory backend: consent records go too, but are not counted.
    for (table, counted) in [
        ("pending_authorizations", true),
        ("authorization_codes", true),
        ("refresh_families", true),
        ("family_tombstones", true),
        ("revoked_access_tokens", true),
        ("used_once", false),
        ("consent_requests", false),
        ("consent_grants", false),
    ] {
        // Table names come from the list above, never from input.
        let statement = format!(
            "DELETE FROM {table} WHERE expires_at <= $1 AND ctid IN
             (SELECT ctid FROM {table} WHERE expires_at <= $1 LIMIT {SWEEP_BATCH} FOR UPDATE SKIP LOCKED)"
        );
        for _ in 0..SWEEP_MAX_BATCHES {
            let started = Instant::now();
            let deleted = client
                .execute(statement.as_str(), &[&now.seconds()])
                .await
                .map_err(unavailable)?;
            if counted {
                removed += usize::try_from(deleted).unwrap_or(0);
            }
            if deleted < u64::try_from(SWEEP_BATCH).unwrap_or(u64::MAX) {
                break;
            }
            rest_after(started).await;
        }
    }
    Ok(removed)
}

/// The family a row's first column holds.
fn family_of_row(row: &Row) -> Result<RefreshFamily, StorageError> {
    row.try_get::<_, Json<RefreshFamily>>(0)
        .map(|Json(family)| family)
        .map_err(unavailable)
}
