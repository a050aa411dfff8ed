//! The store conformance kit on every store, and what only the SQLite store does:
//! persistence, migrations, several handles on one file, refusing bad files.

use wharf_core::conformance::store as kit;
use wharf_core::store::MemoryStore;

#[tokio::test]
async fn memory_store_conforms() {
    kit::run_all(&MemoryStore::new()).await;
}

/// A Node build plan, given explicitly instead of detected.
fn node_plan() -> wharf_core::BuildPlan {
    wharf_core::BuildPlan {
        processes: Default::default(),
        kind: wharf_core::ProjectKind::Node,
        base_image: "node:22".into(),
        install: vec![],
        build: vec![],
        start: vec!["node".into(), "index.js".into()],
        port: 3000,
        dockerfile: None,
    }
}

/// What the SQLite and PostgreSQL tests share: sample records and a race of updates.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod shared {
    use std::path::PathBuf;
    use std::sync::Arc;

    use wharf_core::*;

    /// "p" and 12 random hex digits (48 bits: tests that make many projects in one
    /// database must not draw a name twice).
    fn unique_name() -> String {
        format!("p{}", &ServiceId::random().0[4..16])
    }

    /// A temporary folder (removed when dropped) and a database path in it.
    pub(super) fn db_path() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.db");
        (dir, path)
    }

    /// A new project holding one image service with one queued deployment, stored.
    pub(super) async fn sample(store: &dyn Store) -> (Project, Service, Deployment) {
        let image = SourceSpec::Image {
            image: "nginx:1".into(),
        };
        sample_of(store, image).await
    }

    /// [`sample`] with a service built from `source`.
    pub(super) async fn sample_of(
        store: &dyn Store,
        source: SourceSpec,
    ) -> (Project, Service, Deployment) {
        let p = Project::new(unique_name()).unwrap();
        store.put_project(&p).await.unwrap();
        let s = Service::new(&p.id, "web", source).unwrap();
        store.put_service(&s).await.unwrap();
        let d = Deployment::queued(&s, Trigger::Manual);
        store.insert_deployment(&d).await.unwrap();
        (p, s, d)
    }

    /// A system log line of deployment `d` (its sequence number left to the store).
    pub(super) fn log_event(d: &Deployment, s: &Service) -> Event {
        Event {
            seq: 0,
            deployment: d.id.clone(),
            service: s.id.clone(),
            at: Timestamp::now(),
            kind: EventKind::Log(LogLine::new(LogStream::System, "hello")),
        }
    }

    /// Round `round` of a race: 16 updates of deployment `d` at its current version,
    /// half through `a` and half through `b` (two handles, or two control planes), all
    /// at once. Exactly one must win (the others are Conflicts), with the next version;
    /// both stores then read the winner back.
    pub(super) async fn race_round(
        a: &Arc<dyn Store>,
        b: &Arc<dyn Store>,
        d: &DeploymentId,
        round: u64,
    ) {
        let current = a.deployment(d).await.unwrap();
        assert_eq!(current.version, round);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let mut next = current.clone();
            next.revision = Some(format!("round-{round}-task-{i}"));
            tasks.push(tokio::spawn(async move {
                (i, store.update_deployment(&next).await)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                (i, Ok(w)) => {
                    assert_eq!(w.version, round + 1);
                    winners.push((i, w));
                }
                (_, Err(e)) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one of 16 racing updates must win"
        );
        let (i, w) = winners.pop().unwrap();
        assert_eq!(w.revision, Some(format!("round-{round}-task-{i}")));
        assert_eq!(a.deployment(d).await.unwrap(), w);
        assert_eq!(b.deployment(d).await.unwrap(), w);
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use std::path::Path;
    use std::sync::Arc;

    use wharf_core::conformance::store as kit;
    use wharf_core::store::SqliteStore;
    use wharf_core::*;

    use super::node_plan;
    use super::shared::{db_path, log_event, race_round, sample};

    fn open(path: &Path) -> SqliteStore {
        SqliteStore::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    fn schema_versions(path: &Path) -> Vec<i64> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT version FROM schema_migrations ORDER BY version")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_memory_conforms() {
        kit::run_all(&SqliteStore::open_in_memory().unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_conforms() {
        let dir = tempfile::tempdir().unwrap();
        // Parent folders are created.
        let store = open(&dir.path().join("nested/folder/wharf.db"));
        kit::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_conforms_through_two_handles() {
        // Every check on one handle, while the same checks run on another handle of
        // the same file.
        let (_dir, path) = db_path();
        let a = open(&path);
        let b = open(&path);
        futures::join!(kit::run_all(&a), kit::run_all(&b));
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let (_dir, path) = db_path();
        let store = open(&path);
        let (p, s, d) = sample(&store).await;
        let mut moved = d.clone();
        moved.state = DeploymentState::Fetching;
        let d = store.update_deployment(&moved).await.unwrap();
        let events = store.append_events(vec![log_event(&d, &s)]).await.unwrap();
        drop(store);

        let store = open(&path);
        assert_eq!(store.project(&p.id).await.unwrap(), p);
        assert_eq!(store.service(&s.id).await.unwrap(), s);
        assert_eq!(store.deployment(&d.id).await.unwrap(), d);
        assert_eq!(store.events(&d.id, 0).await.unwrap(), events);
        // The version survives too: the stale one is refused.
        let err = store.update_deployment(&moved).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        // Sequence numbers keep growing after a reopen.
        let more = store
            .append_events(vec![Event {
                seq: 0,
                ..events[0].clone()
            }])
            .await
            .unwrap();
        assert!(more[0].seq > events[0].seq);
    }

    #[tokio::test]
    async fn migrations_are_idempotent_on_reopen() {
        let (_dir, path) = db_path();
        let store = open(&path);
        let (p, ..) = sample(&store).await;
        drop(store);
        let first = schema_versions(&path);
        assert!(!first.is_empty(), "migrations must be recorded");
        for _ in 0..3 {
            let store = open(&path);
            assert_eq!(store.project(&p.id).await.unwrap(), p);
        }
        assert_eq!(
            schema_versions(&path),
            first,
            "no migration may be re-applied"
        );
    }

    #[tokio::test]
    async fn future_schema_is_refused() {
        let (_dir, path) = db_path();
        drop(open(&path));
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (9999, 0)",
                [],
            )
            .unwrap();
        }
        let err = SqliteStore::open(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("9999") && msg.contains("newer"),
            "the error must say the schema is newer: {msg}"
        );
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_handles_see_each_other_and_race_safely() {
        let (_dir, path) = db_path();
        let a: Arc<dyn Store> = Arc::new(open(&path));
        let b: Arc<dyn Store> = Arc::new(open(&path));
        let (p, _, d) = sample(a.as_ref()).await;
        assert_eq!(b.project(&p.id).await.unwrap(), p, "b must see a's writes");
        assert_eq!(b.deployment(&d.id).await.unwrap(), d);

        for round in 0..5u64 {
            race_round(&a, &b, &d.id, round).await;
        }
    }

    #[tokio::test]
    async fn file_is_in_wal_mode() {
        let (_dir, path) = db_path();
        drop(open(&path));
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_database_is_unavailable_and_retryable() {
        let (_dir, path) = db_path();
        let store = open(&path);
        let (p, ..) = sample(&store).await;
        // Another process holds the write lock for longer than the busy timeout.
        let mut other = rusqlite::Connection::open(&path).unwrap();
        let tx = other
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let q = Project::new("locked-out").unwrap();
        let err = store.put_project(&q).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_retryable());
        // Reads go on meanwhile (WAL).
        assert_eq!(store.project(&p.id).await.unwrap(), p);
        drop(tx);
        store.put_project(&q).await.unwrap();
        assert_eq!(store.project(&q.id).await.unwrap(), q);
    }

    #[tokio::test]
    async fn a_service_with_an_explicit_plan_round_trips() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (p, mut s, _) = sample(&store).await;
        s.build = BuildSpec::Plan { plan: node_plan() };
        store.put_service(&s).await.unwrap();
        assert_eq!(store.services(&p.id).await.unwrap().len(), 1);
        assert_eq!(store.service(&s.id).await.unwrap(), s);
    }

    #[tokio::test]
    async fn not_a_database_is_a_clear_error() {
        let (_dir, path) = db_path();
        std::fs::write(
            &path,
            b"this is not a SQLite database, just some text. ".repeat(200),
        )
        .unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("not a SQLite database") && msg.contains(&path.display().to_string()),
            "the error must name the file and say it is not a database: {msg}"
        );
        // The file is left alone.
        assert!(std::fs::read(&path).unwrap().starts_with(b"this is not"));
    }

    #[tokio::test]
    async fn a_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }
}

#[cfg(feature = "postgres")]
#[path = "store/postgres.rs"]
mod postgres;

/// A service with an explicit build plan survives the JSON a store keeps.
#[test]
fn build_spec_plan_round_trips_through_json() {
    use wharf_core::*;
    let spec = BuildSpec::Plan { plan: node_plan() };
    let json = serde_json::to_string(&spec).unwrap();
    let back: BuildSpec = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(back, spec);
}

#[cfg(feature = "seal")]
mod sealed {
    use std::sync::Arc;

    use wharf_core::conformance::store as kit;
    use wharf_core::store::{MemoryStore, SealedStore};
    use wharf_core::*;

    const KEY: [u8; 32] = [0x42; 32];

    #[tokio::test]
    async fn sealed_store_conforms() {
        kit::run_all(&SealedStore::new(Arc::new(MemoryStore::new()), &KEY)).await;
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn secrets_never_reach_the_database_file_in_the_clear() {
        let (_dir, path) = super::shared::db_path();
        let inner = Arc::new(wharf_core::store::SqliteStore::open(&path).unwrap());
        let store = SealedStore::new(inner, &KEY);
        let (p, mut s, _) = super::shared::sample(&store).await;
        s.env.insert(
            "DATABASE_URL".into(),
            EnvValue::Secret(Secret::new("postgres://u:correct-horse@db/x")),
        );
        s.env.insert("MODE".into(), EnvValue::Plain("prod".into()));
        store.put_service(&s).await.unwrap();
        // A release keeps the env it ran with, sealed the same way.
        let release = Release {
            id: ReleaseId::random(),
            project: p.id.clone(),
            service: s.id.clone(),
            number: 1,
            deployment: DeploymentId::random(),
            artifact: Artifact {
                image: "x:1".into(),
                digest: None,
                local_only: false,
            },
            port: 8080,
            revision: None,
            config: Some(ReleaseConfig {
                env: s.env.clone(),
                ..Default::default()
            }),
            created_at: Timestamp::now(),
        };
        store.insert_release(&release).await.unwrap();
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("correct-horse"),
            "secret stored in the clear"
        );
        let store = SealedStore::new(
            Arc::new(wharf_core::store::SqliteStore::open(&path).unwrap()),
            &KEY,
        );
        let back = store.service(&s.id).await.unwrap();
        assert_eq!(
            back.env["DATABASE_URL"].expose(),
            "postgres://u:correct-horse@db/x"
        );
        assert_eq!(back.env["MODE"].expose(), "prod");
        let kept = store
            .releases(&s.id)
            .await
            .unwrap()
            .remove(0)
            .config
            .unwrap();
        assert_eq!(kept.env, s.env);
    }

    #[tokio::test]
    async fn a_wrong_key_or_a_moved_ciphertext_does_not_open() {
        let inner = Arc::new(MemoryStore::new());
        let store = SealedStore::new(inner.clone(), &KEY);
        let mut p = Project::new("shop").unwrap();
        p.env
            .insert("A".into(), EnvValue::Secret(Secret::new("alpha")));
        store.put_project(&p).await.unwrap();

        let other = SealedStore::new(inner.clone(), &[0x24; 32]);
        let err = other.project(&p.id).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains("does not open"), "{err}");
        assert!(!err.message().contains("alpha"));

        // Copy A's ciphertext into B: bound to its name, it must not open as B.
        let mut raw = inner.project(&p.id).await.unwrap();
        let sealed = raw.env["A"].clone();
        raw.env.insert("B".into(), sealed);
        inner.put_project(&raw).await.unwrap();
        assert!(store.project(&p.id).await.is_err());
    }

    /// A developer's secret that merely looks sealed is sealed like any other: before,
    /// it was stored as given and then failed to open, breaking every listing.
    #[tokio::test]
    async fn a_secret_that_looks_sealed_is_sealed_and_reads_back() {
        let inner = Arc::new(MemoryStore::new());
        let store = SealedStore::new(inner.clone(), &KEY);
        let p = Project::new("shop").unwrap();
        store.put_project(&p).await.unwrap();
        let mut s = Service::new(
            &p.id,
            "web",
            SourceSpec::Image {
                image: "x:1".into(),
            },
        )
        .unwrap();
        let tricky = "wharf-sealed:v1:00ff";
        s.env
            .insert("T".into(), EnvValue::Secret(Secret::new(tricky)));
        store.put_service(&s).await.unwrap();
        assert_ne!(
            inner.service(&s.id).await.unwrap().env["T"].expose(),
            tricky
        );
        assert_eq!(
            store.service(&s.id).await.unwrap().env["T"].expose(),
            tricky
        );
        assert_eq!(store.services(&p.id).await.unwrap().len(), 1);
    }

    /// One record that does not open is left out of listings (and reported), so the
    /// other services and projects stay readable; fetched alone it still says why.
    #[tokio::test]
    async fn one_unreadable_record_does_not_hide_the_others() {
        let inner = Arc::new(MemoryStore::new());
        let store = SealedStore::new(inner.clone(), &KEY);
        let (a, b) = (Project::new("a").unwrap(), Project::new("b").unwrap());
        store.put_project(&a).await.unwrap();
        store.put_project(&b).await.unwrap();
        let image = || SourceSpec::Image {
            image: "x:1".into(),
        };
        let good = Service::new(&a.id, "good", image()).unwrap();
        let mut bad = Service::new(&a.id, "bad", image()).unwrap();
        store.put_service(&good).await.unwrap();
        bad.env.insert(
            "T".into(),
            EnvValue::Secret(Secret::new("wharf-sealed:v1:00ff")),
        );
        inner.put_service(&bad).await.unwrap(); // written behind the wrapper's back
        let mut broken_b = b.clone();
        broken_b.env.insert(
            "K".into(),
            EnvValue::Secret(Secret::new("wharf-sealed:v1:abcd")),
        );
        inner.put_project(&broken_b).await.unwrap();

        let listed: Vec<String> = store
            .services(&a.id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(listed, ["good"]);
        let err = store.service(&bad.id).await.unwrap_err();
        assert!(err.message().contains("does not open"), "{err}");
        let projects: Vec<String> = store
            .projects()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(projects, ["a"]);
        assert!(store.project(&b.id).await.is_err());
    }

    /// The token in a git URL is a secret too: sealed in services and deployments.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn git_url_credentials_never_reach_the_database_file_in_the_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wharf.db");
        let store = SealedStore::new(
            Arc::new(wharf_core::store::SqliteStore::open(&path).unwrap()),
            &KEY,
        );
        let url = "https://bob:ghp_t0ken@github.com/acme/shop.git";
        let source = SourceSpec::Git {
            url: url.into(),
            reference: GitRef::Default,
            subdir: None,
        };
        let (_, s, d) = super::shared::sample_of(&store, source.clone()).await;
        let moved = store.apply(&d, &DeployEvent::Begin).await.unwrap();
        assert_eq!(moved.source, source);
        assert_eq!(store.service(&s.id).await.unwrap().source, source);
        assert_eq!(store.deployment(&d.id).await.unwrap().source, source);
        let filter = DeploymentFilter::default();
        assert_eq!(store.deployments(&filter).await.unwrap()[0].source, source);
        drop(store); // closes the database: everything is in the file
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("ghp_t0ken"),
            "a git token stored in the clear"
        );
        assert!(text.contains("github.com/acme/shop.git"));
    }

    #[test]
    fn keys_parse_from_hex_only() {
        assert_eq!(
            SealedStore::parse_key(&"ab".repeat(32)).unwrap(),
            [0xab; 32]
        );
        assert!(SealedStore::parse_key("abc").is_err());
        assert!(SealedStore::parse_key(&"zz".repeat(32)).is_err());
    }
}
