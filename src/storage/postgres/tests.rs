//! The storage contract on PostgreSQL, each test in a database of its own.
//!
//! The server: see `crate::testing` (`TEST_DATABASE_URL`, else a throwaway cluster).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_postgres::NoTls;

use super::PostgresStorage;
use crate::storage::Storage;
use crate::storage::contract_tests::Backend;
use crate::tokens::opaque::random_string;

/// The admin connection string, or `None` (with a visible message) when PostgreSQL tests cannot run.
fn admin_url() -> Option<String> {
    crate::testing::postgres_url().unwrap()
}

/// Creates databases on the server of `admin_url`; `drop_all` drops them (a failing test leaves
/// its databases behind, named `mob_test_…`).
pub(crate) struct Databases {
    admin_url: String,
    created: Mutex<Vec<String>>,
}

impl Databases {
    pub(crate) fn new(admin_url: String) -> Self {
        Databases {
            admin_url,
            created: Mutex::new(Vec::new()),
        }
    }

    async fn admin(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.admin_url, NoTls)
            .await
            .expect("TEST_DATABASE_URL accepts connections");
        tokio::spawn(connection);
        client
    }

    /// A new, migrated database and a storage on it.
    pub(crate) async fn fresh(&self) -> PostgresStorage {
        let name = format!(
            "mob_test_{}",
            random_string(9).to_lowercase().replace(['-', '_'], "x")
        );
        self.admin()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("the test user may create databases");
        self.created.lock().unwrap().push(name.clone());
        let mut config: tokio_postgres::Config = self.admin_url.parse().unwrap();
        config.dbname(&name);
        let storage = PostgresStorage::with_config(config, 8, Duration::from_secs(5)).unwrap();
        storage.migrate().await.expect("migrations apply");
        storage
    }

    /// A plain connection to the database `storage` uses, outside its pool.
    pub(crate) async fn fresh_connection_to(
        &self,
        storage: &PostgresStorage,
    ) -> tokio_postgres::Client {
        let name = storage.database_name().await;
        let mut config: tokio_postgres::Config = self.admin_url.parse().unwrap();
        config.dbname(&name);
        let (client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    pub(crate) async fn drop_all(&self) {
        let names = std::mem::take(&mut *self.created.lock().unwrap());
        let admin = self.admin().await;
        for name in names {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .expect("test databases can be dropped");
        }
    }
}

/// Each rule of the storage contract in a database of its own, dropped when the rule passed.
struct Postgres {
    databases: Databases,
    storage: Arc<PostgresStorage>,
}

impl Backend for Postgres {
    type Storage = PostgresStorage;

    async fn start() -> Option<Self> {
        let databases = Databases::new(admin_url()?);
        let storage = Arc::new(databases.fresh().await);
        Some(Postgres { databases, storage })
    }

    fn storage(&self) -> Arc<PostgresStorage> {
        Arc::clone(&self.storage)
    }

    async fn finish(self) {
        drop(self.storage);
        self.databases.drop_all().await;
    }
}

/// The storage contract, one test per rule.
mod contract {
    use super::Postgres;

    crate::storage::contract_tests::storage_contract!(Postgres);
}

#[tokio::test]
async fn migrations_are_idempotent_and_a_newer_schema_is_refused() {
    let Some(url) = admin_url() else { return };
    let databases = Databases::new(url);
    let storage = databases.fresh().await;
    assert!(
        storage.migrate().await.unwrap().is_empty(),
        "nothing left to apply"
    );
    let client = storage.client().await.unwrap();
    client
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let error = storage.migrate().await.unwrap_err().to_string();
    let known = super::migrations::MIGRATIONS.last().unwrap().0;
    assert!(
        error.contains(&format!(
            "version 999, newer than this mcp-oauth-bridge knows ({known})"
        )),
        "{error}"
    );
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_apply_each_migration_once() {
    let Some(url) = admin_url() else { return };
    let databases = Databases::new(url.clone());
    let first = databases.fresh().await;
    // A second database, migrated by eight instances at once.
    let name = format!(
        "mob_test_race{}",
        random_string(6).to_lowercase().replace(['-', '_'], "x")
    );
    databases
        .admin()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    databases.created.lock().unwrap().push(name.clone());
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.dbname(&name);
    let mut runs = Vec::new();
    for _ in 0..8 {
        let storage =
            PostgresStorage::with_config(config.clone(), 2, Duration::from_secs(5)).unwrap();
        runs.push(tokio::spawn(async move { storage.migrate().await }));
    }
    let mut applied = Vec::new();
    for run in runs {
        applied.extend(run.await.unwrap().expect("every instance starts"));
    }
    let all: Vec<i32> = super::migrations::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(applied, all, "each migration ran exactly once");
    drop(first);
    databases.drop_all().await;
}

#[tokio::test]
async fn shared_secrets_are_sealed_at_rest_and_need_the_key_to_open() {
    use crate::sealing::Sealer;
    use crate::secret::SecretString;
    let Some(url) = admin_url() else { return };
    let databases = Databases::new(url);
    let key = SecretString::new("an encryption key of at least thirty-two chars");
    let sealed = databases.fresh().await.with_sealer(Sealer::new(&key));
    let secret = sealed
        .shared_secret("cookie-key", b"0123456789abcdef".to_vec().into())
        .await
        .unwrap();
    assert_eq!(secret, b"0123456789abcdef");
    let client = sealed.client().await.unwrap();
    let stored: Vec<u8> = client
        .query_one(
            "SELECT value FROM shared_secrets WHERE name = 'cookie-key'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !stored.windows(16).any(|w| w == b"0123456789abcdef"),
        "not in clear"
    );
    drop(client);
    // Another instance on the same database, without the key or with another one, cannot read it.
    let database = sealed.database_name().await;
    let mut config: tokio_postgres::Config = databases.admin_url.parse().unwrap();
    config.dbname(&database);
    let keyless = PostgresStorage::with_config(config.clone(), 2, Duration::from_secs(5)).unwrap();
    let error = keyless
        .shared_secret("cookie-key", b"x".to_vec().into())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("set storage.encryption_key"), "{error}");
    let wrong = PostgresStorage::with_config(config, 2, Duration::from_secs(5))
        .unwrap()
        .with_sealer(Sealer::new(&SecretString::new(
            "some other key, also thirty-two chars",
        )));
    let error = wrong
        .shared_secret("cookie-key", b"x".to_vec().into())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("encryption_key differs"), "{error}");
    databases.drop_all().await;
}

#[tokio::test]
async fn only_one_instance_sweeps_at_a_time() {
    use crate::clock::UnixTime;
    let Some(url) = admin_url() else { return };
    let databases = Databases::new(url);
    let storage = databases.fresh().await;
    let client = storage.client().await.unwrap();
    client
        .execute(
            "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ('old', 1)",
            &[],
        )
        .await
        .unwrap();
    // Another instance is sweeping: this one skips its turn and leaves the row.
    let other = databases.fresh_connection_to(&storage).await;
    other
        .execute("SELECT pg_advisory_lock($1)", &[&super::SWEEP_LOCK])
        .await
        .unwrap();
    assert_eq!(storage.sweep_expired(UnixTime(100)).await.unwrap(), 0);
    other
        .execute("SELECT pg_advisory_unlock($1)", &[&super::SWEEP_LOCK])
        .await
        .unwrap();
    assert_eq!(storage.sweep_expired(UnixTime(100)).await.unwrap(), 1);
    drop(client);
    databases.drop_all().await;
}

#[tokio::test]
async fn a_secret_stored_before_the_encryption_key_was_set_gets_sealed() {
    use crate::sealing::Sealer;
    use crate::secret::SecretString;
    let Some(url) = admin_url() else { return };
    let databases = Databases::new(url);
    let plain = databases.fresh().await;
    plain
        .shared_secret("cookie-key", b"0123456789abcdef".to_vec().into())
        .await
        .unwrap();
    let other = databases.fresh_connection_to(&plain).await;
    let database = other
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    let mut config: tokio_postgres::Config = databases.admin_url.parse().unwrap();
    config.dbname(&database);
    let sealed = PostgresStorage::with_config(config, 2, Duration::from_secs(5))
        .unwrap()
        .with_sealer(Sealer::new(&SecretString::new(
            "an encryption key of thirty-two chars or so",
        )));
    let secret = sealed
        .shared_secret("cookie-key", b"x".to_vec().into())
        .await
        .unwrap();
    assert_eq!(secret, b"0123456789abcdef");
    let row = other
        .query_one(
            "SELECT sealed, value FROM shared_secrets WHERE name = 'cookie-key'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_ne!(row.get::<_, Vec<u8>>(1), b"0123456789abcdef");
    databases.drop_all().await;
}

#[tokio::test]
async fn revoking_more_grants_than_the_lock_table_holds_revokes_them_all() {
    use crate::storage::GrantOwner;
    use crate::storage::contract_tests::family;
    use crate::tokens::TokenHash;
    let Some(url) = admin_url() else { return };
    let databases = Databases::new(url);
    let storage = databases.fresh().await;
    let now = crate::clock::UnixTime(1_700_000_000);
    let mut seed = family("seed", TokenHash::of("seed"));
    seed.identity.subject = "many".into();
    assert!(storage.create_family(seed).await.unwrap());
    // One transaction taking an advisory lock per family fails here with "out of shared memory"
    // on a server with default settings (`max_locks_per_transaction` 64, `max_connections` 100:
    // measured, 7,000 locks still fitted, 20,000 did not).
    let client = storage.client().await.unwrap();
    client
        .execute(
            "INSERT INTO refresh_families (id, data, expires_at)
             SELECT 'bulk-' || n, jsonb_set(jsonb_set(data, '{id}', to_jsonb('bulk-' || n)),
                    '{access_tokens,0,jti}', to_jsonb('bulk-at-' || n)), expires_at
             FROM refresh_families, generate_series(1, 20000) AS n WHERE id = 'seed'",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let ended = storage
        .revoke_grants(GrantOwner::Subject("many"), now)
        .await
        .unwrap();
    assert_eq!(ended.len(), 20001);
    assert!(ended.iter().all(|grant| grant.was_live));
    for jti in ["seed-at-0", "bulk-at-1", "bulk-at-3500", "bulk-at-7000"] {
        assert!(
            storage.is_access_token_revoked(jti, now).await.unwrap(),
            "{jti}"
        );
    }
    assert!(
        storage
            .live_grants(GrantOwner::Subject("many"), now)
            .await
            .unwrap()
            .is_empty()
    );
    databases.drop_all().await;
}

#[tokio::test]
async fn a_session_stored_before_providers_had_names_is_the_single_providers() {
    use crate::identity::UpstreamSession;
    use crate::storage::GrantOwner;
    use crate::storage::contract_tests::family;
    use crate::tokens::TokenHash;
    let Some(url) = admin_url() else { return };
    let databases = Databases::new(url);
    let storage = databases.fresh().await;
    let now = crate::clock::UnixTime(1_700_000_000);
    for (id, provider) in [("old", "upstream"), ("partner", "partner")] {
        let mut grant = family(id, TokenHash::of(id));
        grant.upstream_session = Some(UpstreamSession {
            provider: provider.into(),
            subject: "u1".into(),
            session_id: Some("s1".into()),
        });
        assert!(storage.create_family(grant).await.unwrap());
    }
    // As an older release wrote it: no provider in the session.
    let client = storage.client().await.unwrap();
    client
        .execute(
            "UPDATE refresh_families SET data = data #- '{upstream_session,provider}' WHERE id = 'old'",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let logout = |provider| GrantOwner::ProviderSession {
        provider,
        subject: Some("u1"),
        session_id: Some("s1"),
    };
    let ended = storage.revoke_grants(logout("corp"), now).await.unwrap();
    assert!(ended.is_empty(), "another provider's logout: {ended:?}");
    let ended = storage
        .revoke_grants(logout("upstream"), now)
        .await
        .unwrap();
    let ids: Vec<&str> = ended.iter().map(|grant| grant.family_id.as_str()).collect();
    assert_eq!(ids, ["old"]);
    databases.drop_all().await;
}

/// A touch within the precision of the recorded use leaves the row as it was: no new row
/// version, nothing for the commit to flush.
#[tokio::test]
async fn a_touch_within_the_precision_writes_no_row() {
    use crate::clock::UnixTime;
    let Some(url) = admin_url() else { return };
    let databases = Databases::new(url);
    let storage = databases.fresh().await;
    let client = crate::storage::contract_tests::registered("busy");
    assert!(storage.register_client(client, 10).await.unwrap());
    let now = UnixTime(1_700_000_000);
    let version = || async {
        let connection = storage.client().await.unwrap();
        let row = connection
            .query_one(
                "SELECT xmin::text FROM registered_clients WHERE client_id = 'busy'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    storage.touch_client("busy", now).await.unwrap();
    let written = version().await;
    storage
        .touch_client("busy", now.plus(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(version().await, written);
    storage
        .touch_client("busy", now.plus(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_ne!(version().await, written);
    databases.drop_all().await;
}
