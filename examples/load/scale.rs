//! `--families N`: the refresh grant with N live refresh families beside the ones being refreshed,
//! the process's resident memory once they are in, and the refresh grant while the sweep deletes
//! N expired families. The families are copies of one made by a real sign-in, each for a user and
//! a session of its own, stored through the storage the bridge itself uses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mcp_oauth_bridge::clock::{Clock, SystemClock, UnixTime};
use mcp_oauth_bridge::storage::{GrantOwner, Storage};
use mcp_oauth_bridge::tokens::TokenHash;
use mcp_oauth_bridge::tokens::refresh::RefreshFamily;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Row, Until, client, refresh_chains, refresh_measure, refresh_row, tokens};

/// Families stored at once while filling; enough to keep a database connection pool busy.
const FILLERS: usize = 32;

pub(crate) struct Scale<'a> {
    backend: &'static str,
    issuer: &'a str,
    storage: Arc<dyn Storage>,
    families: usize,
}

impl<'a> Scale<'a> {
    /// The rows for the bridge at `issuer`, whose storage is `storage`, with `families` families.
    pub(crate) fn new(
        backend: &'static str,
        issuer: &'a str,
        storage: Arc<dyn Storage>,
        families: usize,
    ) -> Self {
        Scale {
            backend,
            issuer,
            storage,
            families,
        }
    }

    /// The rows, each handed to `report` as it ends.
    pub(crate) async fn rows(
        &self,
        connections: usize,
        run: Duration,
        report: &mut impl FnMut(Row),
    ) -> anyhow::Result<()> {
        let template = self.template().await?;
        let small = self.families.min(1000);
        self.fill(&template, "live", 0..small, Lifetime::Live)
            .await?;
        let name = self.name(&format!("{small} families"));
        report(refresh_row(name, self.issuer, connections, run).await?);
        println!(
            "  {small} live families stored ({}); resident memory of the whole process: {}",
            self.backend,
            resident_memory()
        );
        self.fill(&template, "live", small..self.families, Lifetime::Live)
            .await?;
        println!(
            "  {} live families stored ({}); resident memory of the whole process: {}",
            self.families,
            self.backend,
            resident_memory()
        );
        self.revoke_one_user().await?;
        let name = self.name(&format!("{} families", self.families));
        report(refresh_row(name, self.issuer, connections, run).await?);

        self.fill(&template, "expired", 0..self.families, Lifetime::Expired)
            .await?;
        let chains = refresh_chains(self.issuer, connections).await?;
        let swept = Arc::new(AtomicBool::new(false));
        let storage = Arc::clone(&self.storage);
        let done = Arc::clone(&swept);
        let started = Instant::now();
        // The sweep starts with the row and the row ends with it; a sweep of PostgreSQL removes
        // a bounded number of rows per call, as the bridge's sweeper does each interval.
        let sweep = tokio::spawn(async move {
            let mut removed = 0;
            let outcome = loop {
                match storage.sweep_expired(SystemClock.now()).await {
                    Ok(0) => break Ok(removed),
                    Ok(more) => removed += more,
                    Err(error) => break Err(error),
                }
            };
            done.store(true, Ordering::Relaxed);
            outcome
        });
        let name = self.name(&format!("sweeping {} expired", self.families));
        let row = refresh_measure(name, self.issuer, chains, Until::Set(swept)).await;
        let removed = sweep.await??;
        report(row);
        println!(
            "  the sweep removed {removed} expired entries in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Ends the grants of one user among all the families, as an administrator does, and those
    /// of one provider session, as a back-channel logout does; in memory each is a walk over
    /// every family under the lock.
    async fn revoke_one_user(&self) -> anyhow::Result<()> {
        let owners = [
            (
                "one user's grant revoked",
                GrantOwner::Subject("user-live-7"),
            ),
            (
                "one provider session's grant ended",
                GrantOwner::ProviderSession {
                    provider: "upstream",
                    subject: None,
                    session_id: Some("session-live-8"),
                },
            ),
        ];
        for (what, owner) in owners {
            let started = Instant::now();
            let ended = self.storage.revoke_grants(owner, SystemClock.now()).await?;
            anyhow::ensure!(
                ended.len() == 1,
                "{what}: {} grants ended, not 1",
                ended.len()
            );
            println!(
                "  {what} among {} ({}) in {:.1} ms",
                self.families,
                self.backend,
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        Ok(())
    }

    /// `refresh, <backend>, <what>`; one per row of one run, leaked to keep `Row` simple.
    fn name(&self, what: &str) -> &'static str {
        Box::leak(format!("refresh, {}, {what}", self.backend).into_boxed_str())
    }

    /// A family as a real sign-in stores it, to copy.
    async fn template(&self) -> anyhow::Result<Value> {
        let refresh = tokens(&client(), self.issuer).await?["refresh_token"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no refresh token"))?
            .to_owned();
        let family = self
            .storage
            .refresh_family_of(&hash_of(&refresh))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the sign-in stored no family"))?;
        Ok(serde_json::to_value(family)?)
    }

    /// Stores copies `range` of the template under names of their own.
    async fn fill(
        &self,
        template: &Value,
        kind: &'static str,
        range: std::ops::Range<usize>,
        lifetime: Lifetime,
    ) -> anyhow::Result<()> {
        let now = SystemClock.now();
        let fillers: Vec<_> = (0..FILLERS)
            .map(|filler| {
                let storage = Arc::clone(&self.storage);
                let template = template.clone();
                let range = range.clone();
                tokio::spawn(async move {
                    for n in range.skip(filler).step_by(FILLERS) {
                        let family = copy(&template, kind, n, now, lifetime)?;
                        anyhow::ensure!(storage.create_family(family).await?, "family refused");
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for filler in fillers {
            filler.await??;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Lifetime {
    Live,
    /// Past both its sliding and its absolute end: the sweep's to delete.
    Expired,
}

fn copy(
    template: &Value,
    kind: &str,
    n: usize,
    now: UnixTime,
    lifetime: Lifetime,
) -> anyhow::Result<RefreshFamily> {
    let mut family = template.clone();
    family["id"] = Value::from(random_like(&format!("scale-{kind}-{n}")));
    family["access_tokens"][0]["jti"] = Value::from(random_like(&format!("scale-{kind}-{n}-at")));
    family["previous"] = Value::Null;
    // Each family a user of its own, with a session of its own: nothing that the grants of one
    // user share makes the figure smaller than a deployment's would be.
    let user = format!("user-{kind}-{n}");
    let session_is_user = family["upstream_session"]["subject"] == family["identity"]["subject"];
    let session = &mut family["upstream_session"];
    if session.is_object() {
        if session_is_user {
            session["subject"] = Value::from(user.clone());
        } else {
            session["subject"] = Value::from(format!("provider-{user}"));
        }
        if session["session_id"].is_string() {
            session["session_id"] = Value::from(format!("session-{kind}-{n}"));
        }
    }
    let identity = &mut family["identity"];
    identity["subject"] = Value::from(user.clone());
    if identity["email"].is_string() {
        identity["email"] = Value::from(format!("{user}@corp.example"));
    }
    if identity["name"].is_string() {
        identity["name"] = Value::from(format!("User {kind} {n}"));
    }
    if let Lifetime::Expired = lifetime {
        let past = Value::from(now.seconds() - 1);
        family["absolute_expires_at"] = past.clone();
        family["current_expires_at"] = past;
    }
    let mut family: RefreshFamily = serde_json::from_value(family)?;
    family.current = Some(hash_of(&format!("scale-{kind}-{n}-refresh")));
    Ok(family)
}

/// 16 bytes in base64url, as the bridge's own ids are, the same for the same `seed`.
fn random_like(seed: &str) -> String {
    use base64::Engine;
    let digest = Sha256::digest(seed.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// What the bridge's storage keys a refresh token on.
fn hash_of(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// `VmRSS` of this process, as the kernel counts it.
fn resident_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .map(|value| value.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
