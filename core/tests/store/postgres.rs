//! The store conformance kit on a real PostgreSQL, and what only a shared database
//! brings: several stores (control planes) on one database racing, migrations run by
//! several at once, a schema from the future, an unreachable server.
//!
//! The database comes from `WHARF_POSTGRES_URL`, by default the one
//! `scripts/setup-postgres` starts: `postgres://wharf:wharf@127.0.0.1:55432/wharf_test`.
//! Each test works in a schema of its own, dropped at the end.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::conformance::store as kit;
use wharf_core::store::{PostgresConfig, PostgresStore};
use wharf_core::*;
use wharf_testkit::require;

use super::shared::{log_event, race_round, sample};

const DEFAULT_URL: &str = "postgres://wharf:wharf@127.0.0.1:55432/wharf_test";

fn config(schema: &str) -> PostgresConfig {
    PostgresConfig::new(wharf_testkit::postgres_url())
        .schema(schema)
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
}

/// A test's own schema: `t_<test>_<random>`.
fn schema_name(test: &str) -> String {
    let id = DeploymentId::random().0;
    let tail: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(10)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("t_{test}_{tail}")
}

/// A store in a fresh schema, or `None` (test skipped) when no PostgreSQL answers.
async fn fresh(test: &str) -> Option<(PostgresStore, String)> {
    let schema = schema_name(test);
    let probe =
        PostgresStore::connect_with(config(&schema).acquire_timeout(Duration::from_secs(3))).await;
    let reason = probe
        .as_ref()
        .err()
        .map(|e| format!("{e} (start one with scripts/setup-postgres or set WHARF_POSTGRES_URL)"));
    if !require("postgres", reason.map_or(Ok(()), Err)) {
        return None;
    }
    drop(probe);
    Some((connect(&schema).await, schema))
}

/// A store on `schema` (another control plane on the schema of a [`fresh`] one).
async fn connect(schema: &str) -> PostgresStore {
    PostgresStore::connect_with(config(schema)).await.unwrap()
}

async fn drop_schema(store: &PostgresStore, schema: &str) {
    store
        .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_alone_and_through_two_stores_on_one_database() {
    let Some((a, schema)) = fresh("conforms").await else {
        return;
    };
    kit::run_all(&a).await;
    // Every check on one store while the same checks run on another store of the same
    // database (two control planes).
    let b = connect(&schema).await;
    futures::join!(kit::run_all(&a), kit::run_all(&b));
    drop_schema(&a, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_race_to_move_one_deployment_and_exactly_one_wins() {
    let Some((a, schema)) = fresh("race").await else {
        return;
    };
    let b = connect(&schema).await;
    let (p, _, d) = sample(&a).await;
    assert_eq!(b.project(&p.id).await.unwrap(), p, "b must see a's writes");

    // Raw updates at one version, from both stores at once.
    let (shared_a, shared_b): (Arc<dyn Store>, Arc<dyn Store>) =
        (Arc::new(a.clone()), Arc::new(b.clone()));
    for round in 0..5u64 {
        race_round(&shared_a, &shared_b, &d.id, round).await;
    }

    // Two "engines" both try to take the queued deployment into its first step
    // through the state machine: one moves it, the other is told it lost.
    let (_, _, d) = sample(&a).await;
    let (ra, rb) = tokio::join!(
        a.apply(&d, &DeployEvent::Begin),
        b.apply(&d, &DeployEvent::Begin)
    );
    let (won, lost) = match (ra, rb) {
        (Ok(w), Err(e)) | (Err(e), Ok(w)) => (w, e),
        (ra, rb) => panic!("exactly one engine must move the deployment: {ra:?} / {rb:?}"),
    };
    assert_eq!(lost.kind(), ErrorKind::Conflict, "{lost}");
    assert_eq!(won.version, 1);
    assert_eq!(a.deployment(&d.id).await.unwrap(), won);
    drop_schema(&a, &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_connects_migrate_once() {
    let Some((first, schema)) = fresh("migrate").await else {
        return;
    };
    let (p, ..) = sample(&first).await;
    // Several control planes starting together on a fresh schema.
    let other = schema_name("migrate2");
    let stores =
        futures::future::join_all((0..4).map(|_| PostgresStore::connect_with(config(&other))))
            .await;
    let stores: Vec<PostgresStore> = stores.into_iter().map(|s| s.unwrap()).collect();
    let versions = stores[0].schema_versions().await.unwrap();
    assert_eq!(versions, vec![1, 2], "each migration recorded once");
    drop_schema(&stores[0], &other).await;

    // Reconnecting to a migrated schema keeps the data and re-applies nothing.
    for _ in 0..3 {
        let again = connect(&schema).await;
        assert_eq!(again.project(&p.id).await.unwrap(), p);
    }
    let versions = first.schema_versions().await.unwrap();
    assert_eq!(versions, vec![1, 2]);
    drop_schema(&first, &schema).await;
}

#[tokio::test]
async fn future_schema_is_refused() {
    let Some((store, schema)) = fresh("future").await else {
        return;
    };
    store
        .execute_unprepared("INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)")
        .await
        .unwrap();
    let err = PostgresStore::connect_with(config(&schema))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("9999") && msg.contains("newer"), "{msg}");
    drop_schema(&store, &schema).await;
}

#[tokio::test]
async fn data_and_versions_survive_reconnecting() {
    let Some((store, schema)) = fresh("survive").await else {
        return;
    };
    let (p, s, d) = sample(&store).await;
    let moved = store.apply(&d, &DeployEvent::Begin).await.unwrap();
    let events = store.append_events(vec![log_event(&d, &s)]).await.unwrap();
    store.close().await;

    let store = connect(&schema).await;
    assert_eq!(store.project(&p.id).await.unwrap(), p);
    assert_eq!(store.deployment(&d.id).await.unwrap(), moved);
    assert_eq!(store.events(&d.id, 0).await.unwrap(), events);
    let err = store.update_deployment(&d).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Conflict,
        "the stale version is refused"
    );
    drop_schema(&store, &schema).await;
}

#[tokio::test]
async fn a_closed_pool_is_unavailable() {
    let Some((store, schema)) = fresh("closed").await else {
        return;
    };
    let (p, ..) = sample(&store).await;
    let other = store.clone();
    store.close().await;
    let err = other.project(&p.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let cleanup = connect(&schema).await;
    drop_schema(&cleanup, &schema).await;
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_retryable() {
    // Port 1 on loopback: nothing listens there. Needs no PostgreSQL.
    let err = PostgresStore::connect_with(
        PostgresConfig::new("postgres://wharf:hunter2@127.0.0.1:1/wharf")
            .acquire_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    let msg = format!("{err} {err:?}");
    assert!(
        !msg.contains("hunter2"),
        "the password must never be shown: {msg}"
    );
    assert!(
        msg.contains("127.0.0.1:1"),
        "the error must name the server: {msg}"
    );
}

#[tokio::test]
async fn bad_urls_and_schema_names_are_invalid_input() {
    let err = PostgresStore::connect("not a url").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    for bad in ["Public", "x;drop", "", "pg_x", "1abc"] {
        let err = PostgresStore::connect_with(PostgresConfig::new(DEFAULT_URL).schema(bad))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}: {err}");
    }
    let cfg = PostgresConfig::new("postgres://u:hunter2@db.example:5432/x?sslmode=disable");
    let shown = format!("{cfg:?}");
    assert!(
        !shown.contains("hunter2") && shown.contains("db.example"),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_service_while_another_store_records_a_deployment_leaves_no_orphan() {
    let Some((a, schema)) = fresh("orphan").await else {
        return;
    };
    let b = connect(&schema).await;
    for _ in 0..20 {
        let (_, s, first) = sample(&a).await;
        let mut d = first.clone();
        d.id = DeploymentId::random();
        let (deleted, inserted) = tokio::join!(a.delete_service(&s.id), b.insert_deployment(&d));
        deleted.unwrap();
        if let Err(e) = inserted {
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        }
        for id in [&first.id, &d.id] {
            let err = a.deployment(id).await.unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::NotFound,
                "deployment {id} outlived its service"
            );
        }
        let left = a
            .deployments(&DeploymentFilter {
                service: Some(s.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
    drop_schema(&a, &schema).await;
}
