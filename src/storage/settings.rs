//! `storage`: which backend keeps the bridge's state, and how to reach PostgreSQL.

use std::time::Duration;

use serde::Deserialize;

use crate::secret::SecretString;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub(crate) sweep_interval: Duration,
    /// Required with `backend: postgres`.
    pub postgres: Option<PostgresConfig>,
    /// Encrypts secrets kept in storage (AES-256-GCM); any random string of 32 characters or more.
    pub encryption_key: Option<SecretString>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::default(),
            sweep_interval: Duration::from_secs(60),
            postgres: None,
            encryption_key: None,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Memory,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:5432/database` (or key=value form); typically `${DATABASE_URL}`.
    pub url: SecretString,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "crate::duration::deserialize"
    )]
    pub connect_timeout: Duration,
}

fn default_pool_size() -> usize {
    16
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl StorageConfig {
    /// Every problem of `storage`, with its field path.
    pub(crate) fn validate(&self, problems: &mut Vec<String>) {
        if self
            .encryption_key
            .as_ref()
            .is_some_and(|key| key.expose().chars().count() < 32)
        {
            problems.push(
                "storage.encryption_key: must be at least 32 characters (openssl rand -base64 32)"
                    .to_owned(),
            );
        }
        match (self.backend, &self.postgres) {
            (StorageBackend::Postgres, None) => problems.push(
                "storage.postgres: required with backend: postgres (at least its url)".to_owned(),
            ),
            (StorageBackend::Memory, Some(_)) => problems.push(
                "storage.postgres: set, but backend is memory; set backend: postgres to use it"
                    .to_owned(),
            ),
            (StorageBackend::Postgres, Some(postgres)) => {
                // Parsed here so a typo is reported by check-config; never echoed (it may hold a password).
                if postgres
                    .url
                    .expose()
                    .parse::<tokio_postgres::Config>()
                    .is_err()
                {
                    problems.push(
                        "storage.postgres.url: not a PostgreSQL connection string (postgres://user:password@host:5432/database)".to_owned(),
                    );
                }
                if postgres.pool_size == 0 {
                    problems.push("storage.postgres.pool_size: must be at least 1".to_owned());
                }
                if postgres.connect_timeout.is_zero() {
                    problems.push(
                        "storage.postgres.connect_timeout: must be longer than zero".to_owned(),
                    );
                }
            }
            (StorageBackend::Memory, None) => {}
        }
    }
}
