//! Refresh rotations of different families at the same moment share their statements. Alone, a
//! rotation is a read and a conditional write, each a round trip, a statement start and (for the
//! write) a commit of its own; on a busy instance those per-statement costs were most of the
//! database's work. Here a few workers per kind of statement each take every request waiting,
//! run one statement for all of them and answer each. The rule does not change: every family is
//! still written only if its row is the version the rotation read (`xmin`), row by row, so a
//! shared statement decides nothing a statement of its own would not have. Nor does one request
//! make the others wait or fail: a family whose row another transaction holds is passed over
//! (that rotation reads again), and a statement the server refuses is run again for each
//! rotation alone.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::{GenericClient, Pool};
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::Severity;

use super::{hash, unavailable};
use crate::storage::StorageError;
use crate::tokens::TokenHash;
use crate::tokens::refresh::IssuedAccessToken;

/// Requests in one statement at most: enough that a busy instance's waiting rotations go
/// together, few enough that one statement stays short.
const MAX_BATCH: usize = 64;
/// Statements of one kind in flight at once. More than one, so that one slow statement (a new
/// connection being made, a busy database) does not hold up every rotation; one was a few per
/// cent faster in the load benchmark, four slower.
const WORKERS: usize = 2;

/// A family as a rotation reads it: its JSON document (decoded by the rotation's own task, not
/// by the worker) and the version a write must find.
#[derive(Clone)]
pub(super) struct FamilyRead {
    pub(super) family_id: String,
    pub(super) data: String,
    pub(super) version: String,
}

/// A rotated family, to be written only if its row is still `version`.
pub(super) struct FamilyWrite {
    pub(super) family_id: String,
    pub(super) data: String,
    pub(super) expires_at: i64,
    pub(super) version: String,
    pub(super) new_token: TokenHash,
    /// Access tokens the family no longer tracks, revoked with the write.
    pub(super) evicted: Vec<IssuedAccessToken>,
}

/// Whether a write found the version it was read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    Yes,
    /// Another writer came first, another transaction holds the family's row, or the write
    /// could not share its statement: read again.
    Changed,
}

type Answer<A> = Result<A, StorageError>;
type Statement<Q, A> = fn(Pool, Vec<Job<Q, A>>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

pub(super) struct Job<Q, A> {
    request: Q,
    answer: oneshot::Sender<Answer<A>>,
    /// Until when it may still be run: as long as its request would have waited for a pooled
    /// connection.
    deadline: Instant,
}

impl<Q, A> Job<Q, A> {
    fn answer(self, answer: Answer<A>) {
        // The requester gone (its client hung up) has nothing left to be told.
        let _ = self.answer.send(answer);
    }
}

/// The jobs still worth running. A requester gone (its client hung up or timed out) is not
/// rotated for: its client never sees the new token, and each such rotation spends one of the
/// retries the rule allows a lost response. One past its deadline is told the storage is busy,
/// as the pool would have told it, and nothing is written.
fn still_wanted<Q, A>(jobs: Vec<Job<Q, A>>) -> Vec<Job<Q, A>> {
    let now = Instant::now();
    let (late, due): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .filter(|job| !job.answer.is_closed())
        .partition(|job| job.deadline < now);
    fail_each(late, &StorageError::Database("the storage is busy".into()));
    due
}

/// Requests of one kind, queued for the workers that run them together.
struct Coalescer<Q, A> {
    pool: Pool,
    /// How long a request may wait for its statement: as long as for a pooled connection.
    patience: Duration,
    statement: Statement<Q, A>,
    /// Made by the first request, inside the runtime that serves it; made again if the workers
    /// went away with their runtime.
    queue: Mutex<Option<mpsc::UnboundedSender<Job<Q, A>>>>,
    /// The most requests one statement has served, for the tests to see that they coalesce.
    largest_batch: Arc<AtomicUsize>,
}

impl<Q: Send + 'static, A: Send + 'static> Coalescer<Q, A> {
    fn new(pool: Pool, patience: Duration, statement: Statement<Q, A>) -> Self {
        Coalescer {
            pool,
            patience,
            statement,
            queue: Mutex::new(None),
            largest_batch: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `request` in the next statement of its kind; `None` when its answer was lost
    /// (a worker stopped while running it), so that whether it took effect is unknown.
    async fn submit(&self, request: Q) -> Option<Answer<A>> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            request,
            answer,
            deadline: Instant::now() + self.patience,
        };
        let unsent = match self.queue() {
            Some(queue) => queue.send(job).err().map(|refused| refused.0),
            None => Some(job),
        };
        if let Some(job) = unsent {
            // No worker to take it: a statement of its own, as before coalescing.
            (self.statement)(self.pool.clone(), vec![job]).await;
        }
        answered.await.ok()
    }

    fn queue(&self) -> Option<mpsc::UnboundedSender<Job<Q, A>>> {
        // A poisoned lock only means a panic while swapping a sender; the value is still one.
        let mut queue = self
            .queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = queue.as_ref().filter(|sender| !sender.is_closed()) {
            return Some(sender.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (sender, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        for _ in 0..WORKERS {
            runtime.spawn(work(
                self.pool.clone(),
                Arc::clone(&receiver),
                self.statement,
                Arc::clone(&self.largest_batch),
            ));
        }
        *queue = Some(sender.clone());
        Some(sender)
    }
}

/// Takes whatever waits (up to `MAX_BATCH`) and runs it as one statement, until the storage,
/// and with it the queue's sender, is dropped.
async fn work<Q, A>(
    pool: Pool,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job<Q, A>>>>,
    statement: Statement<Q, A>,
    largest_batch: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if jobs.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let due = still_wanted(std::mem::take(&mut batch));
        if due.is_empty() {
            continue;
        }
        largest_batch.fetch_max(due.len(), Ordering::Relaxed);
        // A panic (a bug) loses the answers of this statement's requests, not the worker.
        let ran = std::panic::AssertUnwindSafe(statement(pool.clone(), due))
            .catch_unwind()
            .await;
        if ran.is_err() {
            tracing::error!("a shared storage statement panicked; its requests were not answered");
        }
    }
}

/// The two statements of an optimistic rotation, each shared by the rotations waiting for it.
pub(super) struct Rotations {
    reads: Coalescer<TokenHash, Option<FamilyRead>>,
    writes: Coalescer<FamilyWrite, Written>,
}

impl Rotations {
    /// `patience`: how long a rotation may wait for its statement to start.
    pub(super) fn new(pool: Pool, patience: Duration) -> Self {
        Rotations {
            reads: Coalescer::new(pool.clone(), patience, |pool, jobs| {
                Box::pin(read(pool, jobs))
            }),
            writes: Coalescer::new(pool, patience, |pool, jobs| Box::pin(write(pool, jobs))),
        }
    }

    /// The family `presented` names, current or retired, with its version.
    pub(super) async fn read(
        &self,
        presented: TokenHash,
    ) -> Result<Option<FamilyRead>, StorageError> {
        // Nothing was changed by a read: a lost answer is only an error.
        self.reads
            .submit(presented)
            .await
            .unwrap_or_else(|| Err(lost()))
    }

    /// Writes the family, indexes its new token and revokes what it evicted, all or nothing,
    /// only if its row is still the version read.
    pub(super) async fn write(&self, family: FamilyWrite) -> Result<Written, StorageError> {
        // A lost answer may hide a committed rotation, so it is an error, as a lost reply to a
        // statement of its own would be: taken for `Changed`, the read again would find the
        // token retired and count the client's own rotation as a retry, or as a reuse.
        self.writes
            .submit(family)
            .await
            .unwrap_or_else(|| Err(lost()))
    }
}

fn lost() -> StorageError {
    StorageError::Database("the answer to a shared statement was lost".into())
}

/// The error of a statement that failed, to every request it was running.
fn fail_each<Q, A>(jobs: Vec<Job<Q, A>>, error: &StorageError) {
    for job in jobs {
        let copy = match error {
            StorageError::Database(message) => StorageError::Database(message.clone()),
            other => StorageError::Database(other.to_string()),
        };
        job.answer(Err(copy));
    }
}

async fn read(pool: Pool, jobs: Vec<Job<TokenHash, Option<FamilyRead>>>) {
    let hashes: Vec<&[u8]> = jobs.iter().map(|job| hash(&job.request)).collect();
    let found = async {
        let client = pool.get().await.map_err(unavailable)?;
        let statement = client
            .prepare_cached(
                "SELECT t.token_hash, f.id, f.data::text, f.xmin::text FROM refresh_tokens t
                 JOIN refresh_families f ON f.id = t.family_id WHERE t.token_hash = ANY($1)",
            )
            .await
            .map_err(unavailable)?;
        let rows = client
            .query(&statement, &[&hashes])
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let family = FamilyRead {
                    family_id: row.try_get(1)?,
                    data: row.try_get(2)?,
                    version: row.try_get(3)?,
                };
                Ok((row.try_get::<_, Vec<u8>>(0)?, family))
            })
            .collect::<Result<HashMap<_, _>, tokio_postgres::Error>>()
            .map_err(unavailable)
    }
    .await;
    match found {
        Ok(found) => {
            for job in jobs {
                let family = found.get(hash(&job.request)).cloned();
                job.answer(Ok(family));
            }
        }
        Err(error) => fail_each(jobs, &error),
    }
}

async fn write(pool: Pool, jobs: Vec<Job<FamilyWrite, Written>>) {
    // A target row updated from two rows of the input takes one of them, which one not said:
    // a family goes once into a statement. Two rotations of one family at once read the same
    // version, so the second would not find it written; it reads again once the first is.
    let mut families = HashSet::with_capacity(jobs.len());
    let (jobs, again): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .partition(|job| families.insert(job.request.family_id.clone()));
    let client = match pool.get().await {
        Ok(client) => client,
        Err(error) => {
            let error = unavailable(error);
            fail_each(jobs, &error);
            fail_each(again, &error);
            return;
        }
    };
    match write_all(&client, &jobs).await {
        Ok(written) => {
            for job in jobs {
                let answer = written_answer(&written, &job);
                job.answer(Ok(answer));
            }
        }
        // One family can make the server refuse the whole statement (a value PostgreSQL cannot
        // store); refused, it changed nothing, so each rotation still wanted is tried alone and
        // only that one fails.
        Err(Failure::RefusedAValue(_)) if jobs.len() > 1 => {
            for job in still_wanted(jobs) {
                let answer = match write_all(&client, std::slice::from_ref(&job)).await {
                    Ok(written) => Ok(written_answer(&written, &job)),
                    Err(Failure::RefusedAValue(error) | Failure::Failed(error)) => Err(error),
                };
                job.answer(answer);
            }
        }
        Err(Failure::RefusedAValue(error) | Failure::Failed(error)) => fail_each(jobs, &error),
    }
    for job in again {
        job.answer(Ok(Written::Changed));
    }
}

fn written_answer(written: &HashSet<String>, job: &Job<FamilyWrite, Written>) -> Written {
    if written.contains(&job.request.family_id) {
        Written::Yes
    } else {
        Written::Changed
    }
}

enum Failure {
    /// The server ended the statement, its own transaction, with an error about a value in it
    /// (a data exception, a limit): nothing was written, and the other rotations' values may
    /// be fine.
    RefusedAValue(StorageError),
    /// Anything else: a timeout, a database going away (whose FATAL can come after a commit),
    /// no answer at all. Each rotation is answered the error, never `Changed`.
    Failed(StorageError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        let about_a_value = error.as_db_error().is_some_and(|db| {
            db.parsed_severity() == Some(Severity::Error)
                && matches!(db.code().code().get(..2), Some("22" | "54"))
        });
        if about_a_value {
            Failure::RefusedAValue(unavailable(error))
        } else {
            Failure::Failed(unavailable(error))
        }
    }
}

/// The shared write; the families it found at their version and wrote.
async fn write_all(
    client: &impl GenericClient,
    jobs: &[Job<FamilyWrite, Written>],
) -> Result<HashSet<String>, Failure> {
    let count = jobs.len();
    let (mut ids, mut data, mut expiries, mut versions, mut tokens) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    let (mut evicted_jtis, mut evicted_expiries, mut evicted_families) =
        (Vec::new(), Vec::new(), Vec::new());
    for job in jobs {
        let family = &job.request;
        ids.push(family.family_id.as_str());
        data.push(family.data.as_str());
        expiries.push(family.expires_at);
        versions.push(family.version.as_str());
        tokens.push(hash(&family.new_token));
        for token in &family.evicted {
            evicted_jtis.push(token.jti.as_str());
            evicted_expiries.push(token.expires_at.seconds());
            evicted_families.push(family.family_id.as_str());
        }
    }
    // The rows are locked first, passing over those another transaction holds (a revocation, a
    // reuse under the family's locks, another shared statement): those rotations read again,
    // and the statement never waits for a family's row, so it can neither hold up the rotations
    // of other families nor close a cycle of waits with a transaction that locks several. The token index
    // and the revocations join the families the update wrote, so they follow only a family found
    // at its version.
    let statement = client
        .prepare_cached(
            "WITH input AS MATERIALIZED (
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bytea[])
                     AS i(id, data, expires_at, version, token_hash)),
             locked AS MATERIALIZED (
                 SELECT f.id FROM refresh_families f JOIN input i ON f.id = i.id
                 FOR UPDATE OF f SKIP LOCKED),
             family AS (
                 UPDATE refresh_families f SET data = i.data::jsonb, expires_at = i.expires_at
                 FROM input i JOIN locked l ON l.id = i.id
                 WHERE f.id = i.id AND f.xmin::text = i.version RETURNING f.id),
             replacement AS (
                 INSERT INTO refresh_tokens (token_hash, family_id)
                 SELECT i.token_hash, i.id FROM input i JOIN family ON family.id = i.id
                 ON CONFLICT (token_hash) DO NOTHING),
             evicted AS (
                 INSERT INTO revoked_access_tokens (jti, expires_at)
                 SELECT e.jti, e.expires_at
                 FROM unnest($6::text[], $7::bigint[], $8::text[]) AS e(jti, expires_at, id)
                 JOIN family ON family.id = e.id
                 ON CONFLICT (jti) DO NOTHING)
             SELECT id FROM family",
        )
        .await
        .map_err(Failure::from)?;
    let rows = client
        .query(
            &statement,
            &[
                &ids,
                &data,
                &expiries,
                &versions,
                &tokens,
                &evicted_jtis,
                &evicted_expiries,
                &evicted_families,
            ],
        )
        .await
        .map_err(Failure::from)?;
    rows.iter()
        .map(|row| row.try_get::<_, String>(0))
        .collect::<Result<_, _>>()
        .map_err(|error| Failure::Failed(unavailable(error)))
}

#[cfg(test)]
mod tests;
