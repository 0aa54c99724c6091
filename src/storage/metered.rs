//! Storage as the metrics see it: every operation of either backend timed and its failures
//! counted, by operation name (a fixed set), around the backend that does the work.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::*;
use crate::metrics::Metrics;

/// Every operation, so that each has its series before its first use.
const OPERATIONS: [&str; 36] = [
    "consented_scopes",
    "count_clients",
    "count_pending",
    "create_family",
    "delete_client",
    "delete_shared_secret",
    "delete_unused_clients",
    "existing_shared_secret",
    "get_client",
    "get_consent_request",
    "grant_is_live",
    "is_access_token_revoked",
    "list_clients",
    "live_grants",
    "peek_pending",
    "ping",
    "put_code",
    "put_consent_grant",
    "put_consent_request",
    "put_pending",
    "redeem_code",
    "refresh_family",
    "refresh_family_of",
    "register_client",
    "replace_upstream_tokens",
    "revoke_access_token",
    "revoke_family",
    "revoke_grants",
    "rotate_refresh",
    "shared_secret",
    "shared_secret_names",
    "sweep_expired",
    "take_consent_request",
    "take_pending",
    "touch_client",
    "use_once",
];

pub(crate) struct MeteredStorage {
    inner: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl MeteredStorage {
    pub(crate) fn new(inner: Arc<dyn Storage>, metrics: Arc<Metrics>) -> Self {
        metrics.prepare_storage(&OPERATIONS);
        MeteredStorage { inner, metrics }
    }

    fn observe(&self, operation: &'static str, started: Instant, failed: bool) {
        self.metrics
            .storage_call(operation, started.elapsed(), failed);
    }
}

/// The operation's result, its time and failure recorded under `operation`.
macro_rules! timed {
    ($storage:expr, $operation:literal, $call:expr) => {{
        let started = Instant::now();
        let result = $call;
        $storage.observe($operation, started, result.is_err());
        result
    }};
}

#[async_trait]
impl Storage for MeteredStorage {
    fn gauges(&self) -> Option<Arc<dyn crate::metrics::Gauges>> {
        self.inner.gauges()
    }

    async fn put_pending(
        &self,
        state: TokenHash,
        pending: PendingAuthorization,
    ) -> Result<(), StorageError> {
        timed!(
            self,
            "put_pending",
            self.inner.put_pending(state, pending).await
        )
    }

    async fn take_pending(
        &self,
        state: &TokenHash,
        binding: Option<&TokenHash>,
        now: UnixTime,
    ) -> Result<PendingTake, StorageError> {
        timed!(
            self,
            "take_pending",
            self.inner.take_pending(state, binding, now).await
        )
    }

    async fn peek_pending(
        &self,
        state: &TokenHash,
        binding: Option<&TokenHash>,
        now: UnixTime,
    ) -> Result<PendingTake, StorageError> {
        timed!(
            self,
            "peek_pending",
            self.inner.peek_pending(state, binding, now).await
        )
    }

    async fn count_pending(&self, now: UnixTime) -> Result<usize, StorageError> {
        timed!(self, "count_pending", self.inner.count_pending(now).await)
    }

    async fn put_code(
        &self,
        code: TokenHash,
        record: AuthorizationCodeRecord,
    ) -> Result<(), StorageError> {
        timed!(self, "put_code", self.inner.put_code(code, record).await)
    }

    async fn redeem_code(
        &self,
        code: &TokenHash,
        client_id: &str,
        now: UnixTime,
        issue: &mut IssueGrant<'_>,
    ) -> Result<CodeRedemption, StorageError> {
        timed!(
            self,
            "redeem_code",
            self.inner.redeem_code(code, client_id, now, issue).await
        )
    }

    async fn create_family(&self, family: RefreshFamily) -> Result<bool, StorageError> {
        timed!(
            self,
            "create_family",
            self.inner.create_family(family).await
        )
    }

    async fn rotate_refresh(
        &self,
        presented: &TokenHash,
        request: &RefreshRequest<'_>,
        replacement: Replacement,
        now: UnixTime,
    ) -> Result<Option<(Presentation, RefreshFamily)>, StorageError> {
        let started = Instant::now();
        let result = self
            .inner
            .rotate_refresh(presented, request, replacement, now)
            .await;
        self.observe("rotate_refresh", started, result.is_err());
        result
    }

    async fn revoke_family(&self, family_id: &str, now: UnixTime) -> Result<bool, StorageError> {
        timed!(
            self,
            "revoke_family",
            self.inner.revoke_family(family_id, now).await
        )
    }

    async fn grant_is_live(&self, family_id: &str) -> Result<bool, StorageError> {
        timed!(
            self,
            "grant_is_live",
            self.inner.grant_is_live(family_id).await
        )
    }

    async fn is_access_token_revoked(
        &self,
        jti: &str,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        timed!(
            self,
            "is_access_token_revoked",
            self.inner.is_access_token_revoked(jti, now).await
        )
    }

    async fn revoke_access_token(
        &self,
        jti: &str,
        expires_at: UnixTime,
    ) -> Result<(), StorageError> {
        timed!(
            self,
            "revoke_access_token",
            self.inner.revoke_access_token(jti, expires_at).await
        )
    }

    async fn replace_upstream_tokens(
        &self,
        family_id: &str,
        previous: &SealedSecret,
        refresh: SealedSecret,
        access: Option<SealedSecret>,
    ) -> Result<bool, StorageError> {
        let started = Instant::now();
        let result = self
            .inner
            .replace_upstream_tokens(family_id, previous, refresh, access)
            .await;
        self.observe("replace_upstream_tokens", started, result.is_err());
        result
    }

    async fn refresh_family(&self, family_id: &str) -> Result<Option<RefreshFamily>, StorageError> {
        timed!(
            self,
            "refresh_family",
            self.inner.refresh_family(family_id).await
        )
    }

    async fn refresh_family_of(
        &self,
        token: &TokenHash,
    ) -> Result<Option<RefreshFamily>, StorageError> {
        timed!(
            self,
            "refresh_family_of",
            self.inner.refresh_family_of(token).await
        )
    }

    async fn put_consent_request(
        &self,
        token: TokenHash,
        request: ConsentRequest,
    ) -> Result<(), StorageError> {
        timed!(
            self,
            "put_consent_request",
            self.inner.put_consent_request(token, request).await
        )
    }

    async fn get_consent_request(
        &self,
        token: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<ConsentRequest>, StorageError> {
        timed!(
            self,
            "get_consent_request",
            self.inner.get_consent_request(token, now).await
        )
    }

    async fn take_consent_request(
        &self,
        token: &TokenHash,
        now: UnixTime,
    ) -> Result<Option<ConsentRequest>, StorageError> {
        timed!(
            self,
            "take_consent_request",
            self.inner.take_consent_request(token, now).await
        )
    }

    async fn put_consent_grant(
        &self,
        grant: ConsentGrant,
        now: UnixTime,
    ) -> Result<(), StorageError> {
        timed!(
            self,
            "put_consent_grant",
            self.inner.put_consent_grant(grant, now).await
        )
    }

    async fn consented_scopes(
        &self,
        subject: &str,
        request: &AuthorizationRequest,
        now: UnixTime,
    ) -> Result<Option<Vec<String>>, StorageError> {
        timed!(
            self,
            "consented_scopes",
            self.inner.consented_scopes(subject, request, now).await
        )
    }

    async fn register_client(
        &self,
        client: RegisteredClient,
        max_clients: usize,
    ) -> Result<bool, StorageError> {
        timed!(
            self,
            "register_client",
            self.inner.register_client(client, max_clients).await
        )
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<RegisteredClient>, StorageError> {
        timed!(self, "get_client", self.inner.get_client(client_id).await)
    }

    async fn touch_client(&self, client_id: &str, now: UnixTime) -> Result<(), StorageError> {
        timed!(
            self,
            "touch_client",
            self.inner.touch_client(client_id, now).await
        )
    }

    async fn delete_client(
        &self,
        client_id: &str,
        now: UnixTime,
    ) -> Result<Option<Vec<EndedGrant>>, StorageError> {
        timed!(
            self,
            "delete_client",
            self.inner.delete_client(client_id, now).await
        )
    }

    async fn delete_unused_clients(
        &self,
        used_before: UnixTime,
        never_used_before: UnixTime,
    ) -> Result<usize, StorageError> {
        let started = Instant::now();
        let result = self
            .inner
            .delete_unused_clients(used_before, never_used_before)
            .await;
        self.observe("delete_unused_clients", started, result.is_err());
        result
    }

    async fn count_clients(&self) -> Result<usize, StorageError> {
        timed!(self, "count_clients", self.inner.count_clients().await)
    }

    async fn list_clients(&self) -> Result<Vec<RegisteredClient>, StorageError> {
        timed!(self, "list_clients", self.inner.list_clients().await)
    }

    async fn live_grants(
        &self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<RefreshFamily>, StorageError> {
        timed!(
            self,
            "live_grants",
            self.inner.live_grants(owner, now).await
        )
    }

    async fn revoke_grants(
        &self,
        owner: GrantOwner<'_>,
        now: UnixTime,
    ) -> Result<Vec<EndedGrant>, StorageError> {
        timed!(
            self,
            "revoke_grants",
            self.inner.revoke_grants(owner, now).await
        )
    }

    async fn sweep_expired(&self, now: UnixTime) -> Result<usize, StorageError> {
        timed!(self, "sweep_expired", self.inner.sweep_expired(now).await)
    }

    async fn shared_secret(
        &self,
        name: &str,
        fresh: SecretBytes,
    ) -> Result<SecretBytes, StorageError> {
        timed!(
            self,
            "shared_secret",
            self.inner.shared_secret(name, fresh).await
        )
    }

    async fn use_once(
        &self,
        key: &str,
        expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<bool, StorageError> {
        timed!(
            self,
            "use_once",
            self.inner.use_once(key, expires_at, now).await
        )
    }

    async fn existing_shared_secret(
        &self,
        name: &str,
    ) -> Result<Option<SecretBytes>, StorageError> {
        timed!(
            self,
            "existing_shared_secret",
            self.inner.existing_shared_secret(name).await
        )
    }

    async fn shared_secret_names(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        timed!(
            self,
            "shared_secret_names",
            self.inner.shared_secret_names(prefix).await
        )
    }

    async fn delete_shared_secret(&self, name: &str) -> Result<(), StorageError> {
        timed!(
            self,
            "delete_shared_secret",
            self.inner.delete_shared_secret(name).await
        )
    }

    async fn ping(&self) -> Result<(), StorageError> {
        timed!(self, "ping", self.inner.ping().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    #[tokio::test]
    async fn every_operation_is_timed_under_its_name() {
        let metrics = Arc::new(Metrics::new());
        let storage = MeteredStorage::new(Arc::new(MemoryStorage::new()), Arc::clone(&metrics));
        storage.ping().await.unwrap();
        storage.ping().await.unwrap();
        assert_eq!(storage.count_clients().await.unwrap(), 0);
        let text = metrics.render().unwrap();
        for line in [
            "mcp_oauth_bridge_storage_operation_duration_seconds_count{operation=\"ping\"} 2",
            "mcp_oauth_bridge_storage_operation_duration_seconds_count{operation=\"count_clients\"} 1",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
        assert!(
            text.contains("mcp_oauth_bridge_storage_errors_total{operation=\"ping\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "mcp_oauth_bridge_storage_operation_duration_seconds_count{operation=\"rotate_refresh\"} 0"
            ),
            "every operation has its series before it is used: {text}"
        );
    }
}
