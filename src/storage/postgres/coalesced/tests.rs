//! Shared statements against a real PostgreSQL: what each request is answered, what is written,
//! and that rotations racing over many families still rotate each token exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Barrier, mpsc, oneshot};

use super::{FamilyWrite, Job, Written, read, work, write};
use crate::storage::Storage;
use crate::storage::contract_tests::{CLIENT, NOW, family, replacement};
use crate::storage::postgres::PostgresStorage;
use crate::storage::postgres::tests::Databases;
use crate::tokens::TokenHash;
use crate::tokens::refresh::{IssuedAccessToken, MAX_RETRIES, Presentation};

/// A write for each of the first `count` families, at the version its token `token-N-{current}`
/// reads, that makes `next-of-N` its current token and evicts `evicted-by-N`.
async fn next_writes(storage: &PostgresStorage, count: usize, current: usize) -> Vec<FamilyWrite> {
    let mut writes = Vec::new();
    for n in 0..count {
        let version = version_of(storage, &format!("token-{n}-{current}")).await;
        writes.push(rotated(
            &format!("family-{n}"),
            &version,
            &format!("next-of-{n}"),
            &format!("evicted-by-{n}"),
        ));
    }
    writes
}

/// Whether `token` names a family.
async fn indexed(storage: &PostgresStorage, token: &str) -> bool {
    storage
        .refresh_family_of(&TokenHash::of(token))
        .await
        .unwrap()
        .is_some()
}

/// Whether the access token `jti` is revoked.
async fn revoked(storage: &PostgresStorage, jti: &str) -> bool {
    storage.is_access_token_revoked(jti, NOW).await.unwrap()
}

/// The version of the family `token` names, as a rotation reads it.
async fn version_of(storage: &PostgresStorage, token: &str) -> String {
    storage
        .rotations
        .read(TokenHash::of(token))
        .await
        .unwrap()
        .expect("the token names a family")
        .version
}

fn databases() -> Option<Databases> {
    Some(Databases::new(crate::testing::postgres_url().unwrap()?))
}

/// `families` families, `family-0`…, each with its first token `token-N-0`.
async fn families(storage: &PostgresStorage, families: usize) {
    for n in 0..families {
        let created = storage
            .create_family(family(
                &format!("family-{n}"),
                TokenHash::of(&format!("token-{n}-0")),
            ))
            .await
            .unwrap();
        assert!(created);
    }
}

type Answered<A> = oneshot::Receiver<Result<A, crate::storage::StorageError>>;

fn job<Q, A>(request: Q) -> (Job<Q, A>, Answered<A>) {
    let (answer, answered) = oneshot::channel();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = Job {
        request,
        answer,
        deadline,
    };
    (job, answered)
}

/// A write of `family_id` at `version` that makes `token` its current one and evicts `jti`.
fn rotated(family_id: &str, version: &str, token: &str, jti: &str) -> FamilyWrite {
    let mut data = family(family_id, TokenHash::of(token));
    data.scope = vec![format!("written-as-{token}")];
    FamilyWrite {
        family_id: family_id.into(),
        data: serde_json::to_string(&data).unwrap(),
        expires_at: NOW.seconds() + 3600,
        version: version.into(),
        new_token: TokenHash::of(token),
        evicted: vec![IssuedAccessToken {
            jti: jti.into(),
            expires_at: NOW.plus(Duration::from_secs(3600)),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_of_many_families_at_once_share_statements_and_each_rotates() {
    let Some(databases) = databases() else { return };
    let storage = Arc::new(databases.fresh().await);
    let count = 48;
    families(&storage, count).await;
    let start = Arc::new(Barrier::new(count));
    let rotations: Vec<_> = (0..count)
        .map(|n| {
            let storage = Arc::clone(&storage);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let presented = TokenHash::of(&format!("token-{n}-0"));
                let next = replacement(&format!("token-{n}-1"));
                let (outcome, family) = storage
                    .rotate_refresh(&presented, &CLIENT, next, NOW)
                    .await
                    .unwrap()
                    .expect("the family exists");
                assert_eq!(outcome, Presentation::Rotated);
                assert_eq!(family.id, format!("family-{n}"));
            })
        })
        .collect();
    for rotation in rotations {
        rotation.await.unwrap();
    }
    for n in 0..count {
        // The new token was indexed with its own family, and that family was written.
        let found = storage
            .refresh_family_of(&TokenHash::of(&format!("token-{n}-1")))
            .await
            .unwrap()
            .expect("the new token names its family");
        assert_eq!(found.id, format!("family-{n}"));
        assert_eq!(found.current, Some(TokenHash::of(&format!("token-{n}-1"))));
    }
    let reads = storage
        .rotations
        .reads
        .largest_batch
        .load(Ordering::Relaxed);
    let writes = storage
        .rotations
        .writes
        .largest_batch
        .load(Ordering::Relaxed);
    assert!(
        reads > 1 && writes > 1,
        "{count} rotations at once shared no statement (largest read {reads}, write {writes})"
    );
    // The rotations above may have reached their end through the locked path as well; one
    // shared statement writes every family found at its version.
    let writes = next_writes(&storage, count, 1).await;
    let (jobs, answers): (Vec<_>, Vec<_>) = writes.into_iter().map(job).unzip();
    write(storage.pool.clone(), jobs).await;
    for answer in answers {
        assert_eq!(answer.await.unwrap().unwrap(), Written::Yes);
    }
    for n in 0..count {
        assert!(revoked(&storage, &format!("evicted-by-{n}")).await);
    }
    drop(storage);
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_read_answers_each_token_known_unknown_or_asked_twice() {
    let Some(databases) = databases() else { return };
    let storage = databases.fresh().await;
    families(&storage, 2).await;
    let asked = [
        TokenHash::of("token-0-0"),
        TokenHash::of("no-such-token"),
        TokenHash::of("token-1-0"),
        TokenHash::of("token-0-0"),
    ];
    let (jobs, answers): (Vec<_>, Vec<_>) = asked.into_iter().map(job).unzip();
    read(storage.pool.clone(), jobs).await;
    let mut named = Vec::new();
    for answer in answers {
        let found = answer.await.unwrap().unwrap();
        named.push(found.map(|read| {
            assert!(!read.version.is_empty());
            let family: crate::tokens::refresh::RefreshFamily =
                serde_json::from_str(&read.data).unwrap();
            assert_eq!(family.id, read.family_id);
            read.family_id
        }));
    }
    assert_eq!(
        named,
        [
            Some("family-0".to_string()),
            None,
            Some("family-1".to_string()),
            Some("family-0".to_string())
        ]
    );
    drop(storage);
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_write_writes_only_families_found_at_their_version_and_each_once() {
    let Some(databases) = databases() else { return };
    let storage = databases.fresh().await;
    families(&storage, 2).await;
    let version_0 = version_of(&storage, "token-0-0").await;
    // family-1 is written by someone else after its version was read.
    let stale_1 = version_of(&storage, "token-1-0").await;
    storage
        .rotate_refresh(
            &TokenHash::of("token-1-0"),
            &CLIENT,
            replacement("token-1-1"),
            NOW,
        )
        .await
        .unwrap()
        .unwrap();
    let (jobs, answers): (Vec<_>, Vec<_>) = [
        rotated(
            "family-0",
            &version_0,
            "first-of-0",
            "evicted-by-first-of-0",
        ),
        rotated("family-1", &stale_1, "stale-of-1", "evicted-by-stale-of-1"),
        // The same family again in the same statement: which of two input rows an update
        // takes is not said, so the second is not tried.
        rotated(
            "family-0",
            &version_0,
            "second-of-0",
            "evicted-by-second-of-0",
        ),
    ]
    .into_iter()
    .map(job)
    .unzip();
    write(storage.pool.clone(), jobs).await;
    let mut written = Vec::new();
    for answer in answers {
        written.push(answer.await.unwrap().unwrap());
    }
    assert_eq!(written, [Written::Yes, Written::Changed, Written::Changed]);

    let family_0 = storage
        .refresh_family_of(&TokenHash::of("first-of-0"))
        .await
        .unwrap()
        .expect("the written family's new token is indexed");
    assert_eq!(family_0.scope, ["written-as-first-of-0"]);
    for not_indexed in ["stale-of-1", "second-of-0"] {
        assert!(
            !indexed(&storage, not_indexed).await,
            "{not_indexed} must not be indexed"
        );
    }
    let family_1 = storage
        .refresh_family_of(&TokenHash::of("token-1-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(family_1.current, Some(TokenHash::of("token-1-1")));
    assert!(revoked(&storage, "evicted-by-first-of-0").await);
    for kept in ["evicted-by-stale-of-1", "evicted-by-second-of-0"] {
        assert!(
            !revoked(&storage, kept).await,
            "{kept} belongs to a write that did not happen"
        );
    }
    drop(storage);
    databases.drop_all().await;
}

/// A token presented many times at once, for many families together: the presentations of one
/// family meet in shared statements, are answered `Changed` and read again, or take the
/// family's locks; each family still rotates exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_presentations_of_many_families_rotate_each_exactly_once() {
    let Some(databases) = databases() else { return };
    let storage = Arc::new(databases.fresh().await);
    let (count, contenders) = (16, 6);
    families(&storage, count).await;
    let start = Arc::new(Barrier::new(count * contenders));
    let mut racers = Vec::new();
    for n in 0..count {
        for c in 0..contenders {
            let storage = Arc::clone(&storage);
            let start = Arc::clone(&start);
            racers.push(tokio::spawn(async move {
                start.wait().await;
                let presented = TokenHash::of(&format!("token-{n}-0"));
                let next = replacement(&format!("token-{n}-by-{c}"));
                let (outcome, _) = storage
                    .rotate_refresh(&presented, &CLIENT, next, NOW)
                    .await
                    .expect("a race is no failure")
                    .expect("the family exists");
                (n, outcome)
            }));
        }
    }
    let mut rotated = vec![0; count];
    let mut retried = vec![0; count];
    let mut reused = vec![0; count];
    for racer in racers {
        let (n, outcome) = racer.await.unwrap();
        match outcome {
            Presentation::Rotated => rotated[n] += 1,
            Presentation::RetriedLostResponse => retried[n] += 1,
            Presentation::Reused | Presentation::Revoked => reused[n] += 1,
            other => panic!("a presentation inside the window must not be {other:?}"),
        }
    }
    for n in 0..count {
        assert_eq!(rotated[n], 1, "family-{n} rotates exactly once");
        assert_eq!(retried[n], MAX_RETRIES as usize, "family-{n}");
        assert_eq!(
            reused[n],
            contenders - 1 - MAX_RETRIES as usize,
            "family-{n}"
        );
    }
    drop(storage);
    databases.drop_all().await;
}

/// The workers live on the runtime of the first rotation. A storage that outlives it (a test's
/// runtime, a runtime rebuilt by an embedding program) starts them again on the next one.
#[test]
fn rotations_go_on_after_the_runtime_that_ran_the_workers_is_gone() {
    let Some(databases) = databases() else { return };
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let first = runtime();
    let storage = first.block_on(async {
        let storage = databases.fresh().await;
        families(&storage, 1).await;
        let (outcome, _) = storage
            .rotate_refresh(
                &TokenHash::of("token-0-0"),
                &CLIENT,
                replacement("token-0-1"),
                NOW,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome, Presentation::Rotated);
        storage
    });
    drop(first);
    storage
        .rotations
        .writes
        .largest_batch
        .store(0, Ordering::Relaxed);
    let second = runtime();
    second.block_on(async {
        let (outcome, _) = storage
            .rotate_refresh(
                &TokenHash::of("token-0-1"),
                &CLIENT,
                replacement("token-0-2"),
                NOW,
            )
            .await
            .expect("the next runtime runs the statements")
            .unwrap();
        assert_eq!(outcome, Presentation::Rotated);
        assert!(
            storage
                .rotations
                .writes
                .largest_batch
                .load(Ordering::Relaxed)
                > 0,
            "workers of the next runtime ran the write, not a statement alone"
        );
        drop(storage);
        databases.drop_all().await;
    });
}

/// An administrator revokes a user's grants while the user's clients refresh them. The bulk
/// revocation holds many families' rows at once, and so does a shared write: taken in different
/// orders, the two would deadlock and PostgreSQL would fail one of them, maybe the revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_grants_revoked_while_they_refresh_are_all_revoked_and_nothing_fails() {
    let Some(databases) = databases() else { return };
    let storage = Arc::new(databases.fresh().await);
    let count = 64;
    for round in 0..4 {
        for n in 0..count {
            let created = storage
                .create_family(family(
                    &format!("round-{round}-family-{n}"),
                    TokenHash::of(&format!("round-{round}-token-{n}-0")),
                ))
                .await
                .unwrap();
            assert!(created);
        }
        let start = Arc::new(Barrier::new(count + 1));
        let mut refreshes = Vec::new();
        for n in 0..count {
            let storage = Arc::clone(&storage);
            let start = Arc::clone(&start);
            refreshes.push(tokio::spawn(async move {
                start.wait().await;
                let presented = TokenHash::of(&format!("round-{round}-token-{n}-0"));
                let next = replacement(&format!("round-{round}-token-{n}-1"));
                let (outcome, _) = storage
                    .rotate_refresh(&presented, &CLIENT, next, NOW)
                    .await
                    .expect("a refresh racing a revocation must not fail")
                    .unwrap();
                assert!(
                    matches!(outcome, Presentation::Rotated | Presentation::Revoked),
                    "{outcome:?}"
                );
                outcome
            }));
        }
        start.wait().await;
        storage
            .revoke_grants(crate::storage::GrantOwner::Subject("user-1"), NOW)
            .await
            .expect("a revocation racing refreshes must not fail");
        for (n, refresh) in refreshes.into_iter().enumerate() {
            let mut issued = vec![format!("round-{round}-family-{n}-at-0")];
            if refresh.await.unwrap() == Presentation::Rotated {
                issued.push(format!("round-{round}-token-{n}-1-at"));
            }
            for jti in issued {
                assert!(
                    revoked(&storage, &jti).await,
                    "{jti} outlived its grant's revocation"
                );
            }
        }
        for n in 0..count {
            for token in [0, 1] {
                let presented = TokenHash::of(&format!("round-{round}-token-{n}-{token}"));
                let Some(found) = storage.refresh_family_of(&presented).await.unwrap() else {
                    continue;
                };
                assert!(
                    found.revoked,
                    "round-{round}-family-{n} outlived its revocation"
                );
            }
        }
    }
    drop(storage);
    databases.drop_all().await;
}

/// A family whose row another transaction holds is passed over at once: the other rotations in
/// the statement are written without waiting for it, and it reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_locked_elsewhere_is_passed_over_without_holding_up_the_others() {
    let Some(databases) = databases() else { return };
    let storage = databases.fresh().await;
    families(&storage, 2).await;
    let version_0 = version_of(&storage, "token-0-0").await;
    let version_1 = version_of(&storage, "token-1-0").await;
    let mut holder = databases.fresh_connection_to(&storage).await;
    let holding = holder.transaction().await.unwrap();
    // A write under way elsewhere: it holds the row, and changes its version when it commits.
    holding
        .execute(
            "UPDATE refresh_families SET expires_at = expires_at WHERE id = 'family-1'",
            &[],
        )
        .await
        .unwrap();
    let (jobs, answers): (Vec<_>, Vec<_>) = [
        rotated("family-0", &version_0, "next-of-0", "evicted-by-0"),
        rotated("family-1", &version_1, "next-of-1", "evicted-by-1"),
    ]
    .into_iter()
    .map(job)
    .unzip();
    tokio::time::timeout(Duration::from_secs(3), write(storage.pool.clone(), jobs))
        .await
        .expect("a shared write does not wait for a row held elsewhere");
    let mut written = Vec::new();
    for answer in answers {
        written.push(answer.await.unwrap().unwrap());
    }
    assert_eq!(written, [Written::Yes, Written::Changed]);
    holding.commit().await.unwrap();
    assert!(!indexed(&storage, "next-of-1").await);
    assert!(!revoked(&storage, "evicted-by-1").await);
    // Once the row is free, the write passed over finds the version it read gone; read again,
    // it goes through.
    let (retry, answer) = job(rotated("family-1", &version_1, "next-of-1", "evicted-by-1"));
    write(storage.pool.clone(), vec![retry]).await;
    assert_eq!(answer.await.unwrap().unwrap(), Written::Changed);
    assert!(!indexed(&storage, "next-of-1").await);
    let version_1 = version_of(&storage, "token-1-0").await;
    let (retry, answer) = job(rotated("family-1", &version_1, "next-of-1", "evicted-by-1"));
    write(storage.pool.clone(), vec![retry]).await;
    assert_eq!(answer.await.unwrap().unwrap(), Written::Yes);
    drop(storage);
    databases.drop_all().await;
}

/// A family PostgreSQL refuses to store (here a NUL, which `jsonb` cannot hold) fails its own
/// rotation only; the statement it shared is run again for each rotation alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_the_database_refuses_fails_alone() {
    let Some(databases) = databases() else { return };
    let storage = databases.fresh().await;
    families(&storage, 3).await;
    let mut writes = next_writes(&storage, 3, 0).await;
    let mut refused = family("family-1", TokenHash::of("next-of-1"));
    refused.scope = vec!["nul\u{0}inside".into()];
    writes[1].data = serde_json::to_string(&refused).unwrap();
    let (jobs, answers): (Vec<_>, Vec<_>) = writes.into_iter().map(job).unzip();
    write(storage.pool.clone(), jobs).await;
    let mut written = Vec::new();
    for answer in answers {
        written.push(answer.await.unwrap().map_err(|error| error.to_string()));
    }
    assert_eq!(written[0], Ok(Written::Yes));
    assert!(
        written[1]
            .as_ref()
            .is_err_and(|error| error.contains("22P05")),
        "{:?}",
        written[1]
    );
    assert_eq!(written[2], Ok(Written::Yes));
    assert!(!indexed(&storage, "next-of-1").await);
    assert!(!revoked(&storage, "evicted-by-1").await);
    drop(storage);
    databases.drop_all().await;
}

/// What a worker does with what it takes from the queue: a request whose requester is gone is
/// not written, one that waited past its patience is told the storage is busy and not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_writes_nothing_for_a_requester_gone_or_a_request_too_late() {
    let Some(databases) = databases() else { return };
    let storage = databases.fresh().await;
    families(&storage, 3).await;
    let (queue, queued) = mpsc::unbounded_channel();
    let mut answers = Vec::new();
    for (n, write) in next_writes(&storage, 3, 0).await.into_iter().enumerate() {
        let (mut job, answer) = job(write);
        match n {
            // Its client hung up.
            1 => drop(answer),
            // It waited past its deadline.
            2 => {
                job.deadline = Instant::now();
                answers.push(answer);
            }
            _ => answers.push(answer),
        }
        queue.send(job).unwrap();
    }
    drop(queue);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let largest = Arc::new(AtomicUsize::new(0));
    work(
        storage.pool.clone(),
        Arc::new(tokio::sync::Mutex::new(queued)),
        |pool, jobs| Box::pin(write(pool, jobs)),
        Arc::clone(&largest),
    )
    .await;
    let mut answers = answers.into_iter();
    let first = answers.next().unwrap();
    assert_eq!(first.await.unwrap().unwrap(), Written::Yes);
    let late = answers.next().unwrap().await.unwrap().unwrap_err();
    assert!(late.to_string().contains("busy"), "{late}");
    assert_eq!(
        largest.load(Ordering::Relaxed),
        1,
        "one request was written"
    );
    for n in [1, 2] {
        assert!(
            !indexed(&storage, &format!("next-of-{n}")).await,
            "family-{n} was written"
        );
    }
    drop(storage);
    databases.drop_all().await;
}

/// A bug that panics inside a statement loses that statement's answers (its requesters get an
/// error), not the worker: the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_panics_loses_its_answers_not_the_worker() {
    let config: tokio_postgres::Config = "host=127.0.0.1 user=nobody".parse().unwrap();
    // Never connected: the statement below does not use it.
    let storage = PostgresStorage::with_config(config, 1, Duration::from_secs(1)).unwrap();
    let (queue, queued) = mpsc::unbounded_channel::<Job<u32, u32>>();
    let worker = tokio::spawn(work(
        storage.pool.clone(),
        Arc::new(tokio::sync::Mutex::new(queued)),
        |_, jobs| {
            Box::pin(async move {
                assert!(jobs.iter().all(|job| job.request != 0), "a bug");
                for job in jobs {
                    let request = job.request;
                    job.answer(Ok(request + 1));
                }
            })
        },
        Arc::new(AtomicUsize::new(0)),
    ));
    let (panicking, lost) = job(0);
    queue.send(panicking).unwrap();
    assert!(
        lost.await.is_err(),
        "the panicking statement's answer is lost"
    );
    let (next, answer) = job(1);
    queue.send(next).unwrap();
    assert_eq!(answer.await.unwrap().unwrap(), 2);
    drop(queue);
    worker
        .await
        .expect("the worker ends when its queue does, not by the panic");
}
