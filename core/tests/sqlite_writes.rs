//! The SQLite store's writes under load: concurrent writers commit together (group
//! commit) without one failing write failing the others, and what a caller was told is
//! committed is in the file, also after the process is killed.
#![cfg(feature = "sqlite")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use wharf_core::store::{SqliteOptions, SqliteStore, Synchronous};
use wharf_core::*;

/// A project, its image service and one queued deployment, stored.
async fn sample(store: &dyn Store) -> (Project, Service, Deployment) {
    let p = Project::new("sample").unwrap();
    store.put_project(&p).await.unwrap();
    let source = SourceSpec::Image {
        image: "nginx:1".into(),
    };
    let s = Service::new(&p.id, "web", source.clone()).unwrap();
    store.put_service(&s).await.unwrap();
    let d = Deployment::queued(&s, Trigger::Manual);
    store.insert_deployment(&d).await.unwrap();
    (p, s, d)
}

fn note(d: &Deployment, text: String) -> Event {
    Event {
        seq: 0,
        deployment: d.id.clone(),
        service: d.service.clone(),
        at: Timestamp::now(),
        kind: EventKind::Log(LogLine::new(LogStream::System, text)),
    }
}

/// 200 writers at once (new projects, event appends, two compare-and-sets on one
/// deployment of which one is stale, a duplicate deployment): the two that must fail
/// fail with Conflict, every other one is committed, and all of it is there after the
/// database is reopened.
async fn concurrent_writers_commit_and_failures_stay_alone(options: SqliteOptions) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_with(&path, options.clone()).unwrap());
    let (_, _, d) = sample(store.as_ref()).await;
    let d1 = store.update_deployment(&d).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let store = store.clone();
        let (d, d1) = (d.clone(), d1.clone());
        tasks.push(tokio::spawn(async move {
            match i {
                // Stale: version 0 was moved to 1 above.
                50 => store.update_deployment(&d).await.map(drop),
                100 => {
                    let mut next = d1;
                    next.revision = Some("winner".into());
                    store.update_deployment(&next).await.map(drop)
                }
                150 => store.insert_deployment(&d).await,
                i if i % 2 == 0 => {
                    let p = Project::new(format!("p{i:03}")).unwrap();
                    store.put_project(&p).await
                }
                i => store
                    .append_events(vec![note(&d, format!("note {i}"))])
                    .await
                    .map(drop),
            }
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let result = task.await.unwrap();
        match i {
            50 | 150 => assert_eq!(result.unwrap_err().kind(), ErrorKind::Conflict),
            _ => result.unwrap_or_else(|e| panic!("write {i} failed: {e}")),
        }
    }
    drop(store);

    let store = SqliteStore::open_with(&path, options).unwrap();
    let names: Vec<String> = store
        .projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    let mut expected: Vec<String> = (0..200)
        .filter(|i| i % 2 == 0 && ![50, 100, 150].contains(i))
        .map(|i| format!("p{i:03}"))
        .collect();
    expected.push("sample".into());
    assert_eq!(names, expected);
    let events = store.events(&d.id, 0).await.unwrap();
    assert_eq!(events.len(), 100, "one note per odd writer");
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), 100, "sequence numbers are distinct and ordered");
    let stored = store.deployment(&d.id).await.unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.revision.as_deref(), Some("winner"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_commit_and_a_failing_one_fails_alone() {
    concurrent_writers_commit_and_failures_stay_alone(SqliteOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_full_synchronous_commits() {
    let full = SqliteOptions::default().synchronous(Synchronous::Full);
    concurrent_writers_commit_and_failures_stay_alone(full).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_synchronous_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let full = SqliteOptions::default().synchronous(Synchronous::Full);
    let store = SqliteStore::open_with(dir.path().join("wharf.db"), full).unwrap();
    wharf_core::conformance::store::run_all(&store).await;
}

/// Set in the child process of [`acknowledged_writes_survive_a_killed_process`]: the
/// database it writes to.
const CHILD: &str = "WHARF_SQLITE_CRASH_CHILD";

/// The child: writes projects from 8 tasks at once, printing the name of each one
/// as soon as its write is acknowledged, until it is killed.
fn write_until_killed(path: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open(path).unwrap());
        let writers = (0..8).map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let p = Project::new(format!("w{w}-{i}")).unwrap();
                    store.put_project(&p).await.unwrap();
                    println!("acked {}", p.name);
                }
            })
        });
        futures::future::join_all(writers).await;
    });
}

/// A process killed (SIGKILL, no clean close) while it writes loses none of the
/// writes it was told were committed: the test runs itself as a child that writes and
/// reports every acknowledged write, kills it mid-flight, and reopens the file.
#[test]
fn acknowledged_writes_survive_a_killed_process() {
    if let Some(path) = std::env::var_os(CHILD) {
        write_until_killed(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wharf.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "acknowledged_writes_survive_a_killed_process",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < 300 {
        let line = lines
            .next()
            .expect("the child stopped before 300 writes")
            .unwrap();
        if let Some(name) = line.strip_prefix("acked ") {
            acked.push(name.to_owned());
        }
    }
    child.kill().unwrap();
    // Lines already in the pipe were acknowledged too.
    for line in lines {
        if let Some(name) = line.unwrap().strip_prefix("acked ") {
            acked.push(name.to_owned());
        }
    }
    child.wait().unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored: std::collections::HashSet<String> = rt
        .block_on(SqliteStore::open(&path).unwrap().projects())
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acked.len()
    );
}
