//! Statements prepared once per pooled connection and reused. Sent as text, every statement is
//! parsed and planned again and costs one more round trip, which made up most of the database's
//! work on a refresh rotation.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::unavailable;
use crate::storage::StorageError;

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

#[async_trait]
pub(super) trait Prepared: GenericClient {
    /// Runs `sql`; how many rows it touched.
    async fn run(&self, sql: &str, params: Params<'_>) -> Result<u64, StorageError> {
        let statement = self.prepare_cached(sql).await.map_err(unavailable)?;
        self.execute(&statement, params).await.map_err(unavailable)
    }

    async fn row(&self, sql: &str, params: Params<'_>) -> Result<Row, StorageError> {
        let statement = self.prepare_cached(sql).await.map_err(unavailable)?;
        self.query_one(&statement, params)
            .await
            .map_err(unavailable)
    }

    async fn row_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, StorageError> {
        let statement = self.prepare_cached(sql).await.map_err(unavailable)?;
        self.query_opt(&statement, params)
            .await
            .map_err(unavailable)
    }

    async fn rows(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StorageError> {
        let statement = self.prepare_cached(sql).await.map_err(unavailable)?;
        self.query(&statement, params).await.map_err(unavailable)
    }
}

impl<C: GenericClient> Prepared for C {}
