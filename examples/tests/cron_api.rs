//! The cron API on the in-memory backends: jobs set with the service (bad ones
//! refused), listed with their next run and newest run, and the run history newest
//! first, by job.

mod inproc;

use axum::http::Method;
use serde_json::{json, Value};
use wharf_core::{CronOutcome, CronRun, Store as _, Timestamp};

async fn call(
    m: &inproc::MemoryApp,
    router: &axum::Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    inproc::call(router, &method, path, Some(&m.admin), body).await
}

#[tokio::test]
async fn jobs_and_runs_are_listed_for_members() {
    let m = inproc::memory_app(None);
    let router = wharf_server::api::router(m.app.clone());
    let (s, b) = call(
        &m,
        &router,
        Method::POST,
        "/v1/projects",
        Some(json!({"name": "shop"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let jobs = json!([
        {"name": "cleanup", "schedule": "*/5 * * * *", "command": "python3 cleanup.py",
         "concurrency": "replace", "timeout": 600_000},
        {"name": "report", "schedule": "0 3 * * *", "command": "true"},
    ]);
    let svc = json!({"source": {"image": "app:1"}, "port": 8080, "cron": jobs});
    let (s, b) = call(
        &m,
        &router,
        Method::PUT,
        "/v1/projects/shop/services/web",
        Some(svc),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["cron"][0]["concurrency"], "replace");
    assert_eq!(b["cron"][1]["concurrency"], "forbid", "the default");
    assert_eq!(b["cron"][1]["timeout"], 3_600_000, "the default");

    for bad in [
        json!([{"name": "x", "schedule": "every day", "command": "true"}]),
        json!([{"name": "x", "schedule": "* * * * *", "command": "true", "timeout": 10}]),
        json!([{"name": "x", "schedule": "* * * * *", "command": ""}]),
        json!([{"name": "x", "schedule": "* * * * *", "command": "true"},
               {"name": "x", "schedule": "* * * * *", "command": "false"}]),
    ] {
        let (s, b) = call(
            &m,
            &router,
            Method::PUT,
            "/v1/projects/shop/services/web",
            Some(json!({"cron": bad})),
        )
        .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }

    let (s, listed) = call(
        &m,
        &router,
        Method::GET,
        "/v1/projects/shop/services/web/cron",
        None,
    )
    .await;
    assert_eq!(s, 200, "{listed}");
    assert_eq!(
        listed.as_array().unwrap().len(),
        2,
        "bad PUTs changed nothing: {listed}"
    );
    assert_eq!(listed[0]["job"]["name"], "cleanup");
    let next = listed[0]["next_run_at"].as_i64().unwrap();
    let now = Timestamp::now().0;
    assert!(next > now && next <= now + 5 * 60_000, "{next} vs {now}");
    assert_eq!(next % 300_000, 0, "on a 5-minute mark");
    assert!(listed[0].get("last_run").is_none());

    let project = m.store.project_by_name("shop").await.unwrap();
    let web = m
        .store
        .service_by_name(&project.id, None, "web")
        .await
        .unwrap();
    let mut first = CronRun::start(&project.id, &web.id, "cleanup", Timestamp(now - 600_000));
    first.exit_code = Some(0);
    first.output = "removed 3 files\n".into();
    first.end(CronOutcome::Succeeded, "");
    m.store.insert_cron_run(&first).await.unwrap();
    let mut report = CronRun::start(&project.id, &web.id, "report", Timestamp(now - 400_000));
    report.exit_code = Some(1);
    report.end(CronOutcome::Failed, "exited with code 1");
    m.store.insert_cron_run(&report).await.unwrap();
    let mut skipped = CronRun::start(&project.id, &web.id, "cleanup", Timestamp(now - 300_000));
    skipped.end(CronOutcome::Skipped, "the previous run is still running");
    m.store.insert_cron_run(&skipped).await.unwrap();

    let (_, runs) = call(
        &m,
        &router,
        Method::GET,
        "/v1/projects/shop/services/web/cron/runs",
        None,
    )
    .await;
    let outcomes: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["skipped", "failed", "succeeded"], "{runs}");
    assert_eq!(runs[2]["output"], "removed 3 files\n");
    let (_, runs) = call(
        &m,
        &router,
        Method::GET,
        "/v1/projects/shop/services/web/cron/runs?job=cleanup&limit=1",
        None,
    )
    .await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["id"], skipped.id.as_str());
    let (s, b) = call(
        &m,
        &router,
        Method::GET,
        "/v1/projects/shop/services/web/cron/runs?job=nightly",
        None,
    )
    .await;
    assert_eq!(s, 404, "{b}");

    let (_, listed) = call(
        &m,
        &router,
        Method::GET,
        "/v1/projects/shop/services/web/cron",
        None,
    )
    .await;
    assert_eq!(listed[0]["last_run"]["id"], skipped.id.as_str());
    assert_eq!(listed[1]["last_run"]["exit_code"], 1);

    // Removing the jobs keeps their history readable by name.
    let (s, b) = call(
        &m,
        &router,
        Method::PUT,
        "/v1/projects/shop/services/web",
        Some(json!({"cron": []})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert!(b.get("cron").is_none_or(|c| c == &json!([])), "{b}");
    let (s, runs) = call(
        &m,
        &router,
        Method::GET,
        "/v1/projects/shop/services/web/cron/runs?job=report",
        None,
    )
    .await;
    assert_eq!((s, runs.as_array().map(Vec::len)), (200, Some(1)), "{runs}");
}
