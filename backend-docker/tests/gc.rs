//! Garbage collection against the real engine: only Wharf-labelled resources go, and
//! never an image a retained release (or a running container) uses.
//!
//! In its own test binary: gc acts on every Wharf resource of the engine, so it must
//! not run beside the other tests' builds.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use tokio_util::sync::CancellationToken;
use wharf_core::detect::detect;
use wharf_core::store::MemoryStore;
use wharf_core::traits::{BuildRequest, Builder, LogSink, Runtime, Store};
use wharf_core::*;
use wharf_docker::{retained_images, DockerBuilder, DockerRuntime, RestartPolicy, RuntimeOptions};

async fn exists(kind: &str, name: &str) -> bool {
    tokio::process::Command::new("docker")
        .args([kind, "inspect", name])
        .output()
        .await
        .expect("docker")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_unretained_wharf_resources() {
    if !docker_ready().await {
        return;
    }
    let builder = DockerBuilder::connect(images()).await.expect("connect");
    let rt = DockerRuntime::connect()
        .await
        .expect("connect")
        .with_options(RuntimeOptions::default().restart_policy(RestartPolicy::No));
    let run = unique("gc");

    // Three releases of one service; the store retains the newest two.
    let dir = tempfile::tempdir().unwrap();
    let mut tags = Vec::new();
    for n in 1..=3 {
        std::fs::write(dir.path().join("index.html"), format!("{run} v{n}\n")).unwrap();
        let tag = format!("wharf-test/{run}:{n}");
        let mut l = labels(&run);
        l.insert(label::SERVICE.into(), format!("svc_{run}"));
        builder
            .build(BuildRequest {
                source_dir: dir.path().to_owned(),
                plan: detect(dir.path()).unwrap(),
                tag: tag.clone(),
                labels: l,
                logs: LogSink::discard(),
                cancel: CancellationToken::new(),
            })
            .await
            .expect("build");
        tags.push(tag);
    }
    let store = MemoryStore::new();
    let project = Project::new(format!("p{}", &run[2..])).unwrap();
    store.put_project(&project).await.unwrap();
    let svc = Service::new(
        &project.id,
        "web",
        SourceSpec::Dir {
            path: dir.path().to_owned(),
        },
    )
    .unwrap();
    store.put_service(&svc).await.unwrap();
    for (n, tag) in tags.iter().enumerate() {
        let n = n as u64 + 1;
        store
            .insert_release(&Release {
                id: ReleaseId::random(),
                project: project.id.clone(),
                service: svc.id.clone(),
                number: n,
                deployment: DeploymentId::random(),
                artifact: Artifact {
                    image: tag.clone(),
                    digest: None,
                    local_only: false,
                },
                port: 8080,
                revision: None,
                config: None,
                created_at: Timestamp::now(),
            })
            .await
            .unwrap();
    }
    let keep: BTreeSet<String> = retained_images(&store, 2).await.unwrap();
    assert!(keep.contains(&tags[1]) && keep.contains(&tags[2]) && !keep.contains(&tags[0]));

    // A running Wharf container on an unretained image of another service (in use),
    // a stopped Wharf container, a stopped container that is not Wharf's, an idle
    // Wharf network and a network in use.
    let other = format!("wharf-test/{run}-other:1");
    std::fs::write(dir.path().join("index.html"), "other\n").unwrap();
    builder
        .build(BuildRequest {
            source_dir: dir.path().to_owned(),
            plan: detect(dir.path()).unwrap(),
            tag: other.clone(),
            labels: labels(&run),
            logs: LogSink::discard(),
            cancel: CancellationToken::new(),
        })
        .await
        .expect("build other");
    let net_busy = format!("wharf-test-{run}-busy");
    let mut running = busybox_site(&format!("running-{run}"), "x", &run);
    running.image = other.clone();
    running.command = None;
    running.network = Some(net_busy.clone());
    let running = rt.start(&running).await.expect("start");
    let mut stopped = busybox_site(&format!("stopped-{run}"), "", &run);
    stopped.command = Some(vec!["true".into()]);
    stopped.network = Some(format!("wharf-test-{run}-idle"));
    let stopped = rt.start(&stopped).await.expect("start");
    wait_status(&rt, &stopped.id, Duration::from_secs(20), |s| {
        matches!(s, InstanceStatus::Exited { .. })
    })
    .await;
    let foreign = format!("foreign-{run}");
    docker_cli(&["run", "--name", &foreign, BUSYBOX, "true"]).await;
    // An untagged Wharf image (a tag moved away, a build cut short): listed with
    // the tag `<none>:<none>`, it goes by its id.
    let untagged_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        untagged_dir.path().join("Dockerfile"),
        format!("FROM {BUSYBOX}\nLABEL wharf.managed=true {TEST_LABEL}={run} untagged={run}\n"),
    )
    .unwrap();
    let untagged = docker_cli(&["build", "-q", untagged_dir.path().to_str().unwrap()])
        .await
        .trim()
        .to_owned();
    assert!(untagged.starts_with("sha256:"), "{untagged}");

    let report = rt.gc(&keep).await.expect("gc");

    assert!(
        report.containers.contains(&stopped.id.to_string()),
        "{report:?}"
    );
    assert!(!exists("container", stopped.id.as_str()).await);
    assert!(
        exists("container", running.id.as_str()).await,
        "running stays"
    );
    assert!(exists("container", &foreign).await, "not Wharf's: stays");
    assert!(report.images.contains(&tags[0]), "{report:?}");
    assert!(report.images.contains(&untagged), "{report:?}");
    assert!(!exists("image", &untagged).await, "untagged image goes");
    assert!(
        !exists("image", &tags[0]).await,
        "unretained release image goes"
    );
    assert!(
        exists("image", &tags[1]).await,
        "retained release image stays"
    );
    assert!(
        exists("image", &tags[2]).await,
        "retained release image stays"
    );
    assert!(exists("image", &other).await, "image in use stays");
    assert!(exists("image", BUSYBOX).await && exists("image", DEBIAN).await);
    assert!(report.networks.contains(&format!("wharf-test-{run}-idle")));
    assert!(exists("network", &net_busy).await, "network in use stays");
    // The old release rolls back fine from what stayed.
    let mut spec = busybox_site(&format!("rollback-{run}"), "", &run);
    spec.image = tags[1].clone();
    spec.command = None;
    let back = rt.start(&spec).await.expect("start a retained release");
    let st = wait_status(&rt, &back.id, Duration::from_secs(20), |s| {
        *s == InstanceStatus::Healthy
    })
    .await;
    assert_eq!(st, InstanceStatus::Healthy);
    let (code, body) = http_get(back.endpoint.port, "/").await.expect("GET");
    assert_eq!((code, body.trim()), (200, format!("{run} v2").as_str()));

    // Clean up.
    rt.stop(&back.id, Duration::ZERO).await.unwrap();
    rt.stop(&running.id, Duration::ZERO).await.unwrap();
    docker_cli(&["rm", "-f", &foreign]).await;
    let report = rt.gc(&BTreeSet::new()).await.expect("gc");
    for t in tags.iter().skip(1).chain([&other]) {
        assert!(
            !exists("image", t).await,
            "{t} left after the final gc: {report:?}"
        );
    }
    assert!(!exists("network", &net_busy).await);
}
