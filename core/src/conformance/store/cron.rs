//! Cron runs: recorded, updated, listed newest first with filters, pruned, and
//! deleted with their service.

use super::*;
use crate::traits::CronRunFilter;

fn run_of(s: &Service, job: &str, scheduled_for: i64) -> CronRun {
    CronRun::start(&s.project, &s.id, job, Timestamp(scheduled_for))
}

async fn runs(store: &dyn Store, filter: CronRunFilter) -> Vec<CronRun> {
    ok(store.cron_runs(&filter).await, "cron_runs")
}

fn ids(runs: &[CronRun]) -> Vec<CronRunId> {
    runs.iter().map(|r| r.id.clone()).collect()
}

/// Runs come back as stored (output included), newest recorded first, filtered by
/// project, service, job and outcome, limited; an update replaces the record but
/// not its keys; a duplicate id is a Conflict, an unknown service or run NotFound,
/// an over-long output InvalidInput.
pub async fn cron_runs_record_and_list(store: &dyn Store) {
    let p = new_project(store).await;
    let web = new_service(store, &p.id, "web", None).await;
    let worker = new_service(store, &p.id, "worker", None).await;

    let mut first = run_of(&web, "cleanup", 1_000);
    first.output = "line one\nline two ✓\n".into();
    ok(store.insert_cron_run(&first).await, "insert_cron_run");
    let second = run_of(&web, "report", 2_000);
    ok(store.insert_cron_run(&second).await, "insert_cron_run");
    let mut third = run_of(&web, "cleanup", 3_000);
    third.end(CronOutcome::Skipped, "the previous run is still running");
    ok(store.insert_cron_run(&third).await, "insert_cron_run");
    let other = run_of(&worker, "cleanup", 4_000);
    ok(store.insert_cron_run(&other).await, "insert_cron_run");

    let by_service = CronRunFilter {
        service: Some(web.id.clone()),
        ..Default::default()
    };
    assert_eq!(
        runs(store, by_service.clone()).await,
        vec![third.clone(), second.clone(), first.clone()],
        "store conformance: cron_runs must return a service's runs as stored, newest first"
    );
    let by_project = CronRunFilter {
        project: Some(p.id.clone()),
        ..Default::default()
    };
    assert_eq!(
        ids(&runs(store, by_project.clone()).await),
        ids(&[other.clone(), third.clone(), second.clone(), first.clone()]),
        "store conformance: cron_runs by project"
    );
    let cleanup = CronRunFilter {
        job: Some("cleanup".into()),
        ..by_service.clone()
    };
    assert_eq!(
        ids(&runs(store, cleanup.clone()).await),
        ids(&[third.clone(), first.clone()]),
        "store conformance: cron_runs by job"
    );
    let newest = CronRunFilter {
        limit: Some(1),
        ..cleanup.clone()
    };
    assert_eq!(
        ids(&runs(store, newest).await),
        ids(&[third.clone()]),
        "store conformance: cron_runs with a limit keeps the newest"
    );
    let running = CronRunFilter {
        outcome: Some(CronOutcome::Running),
        ..by_project.clone()
    };
    assert_eq!(
        ids(&runs(store, running.clone()).await),
        ids(&[other.clone(), second.clone(), first.clone()]),
        "store conformance: cron_runs by outcome"
    );

    // An update ends a run; its keys stay what they were.
    let mut ended = first.clone();
    ended.exit_code = Some(3);
    ended.output.push_str("more\n");
    ended.end(CronOutcome::Failed, "exited with code 3");
    let mut moved = ended.clone();
    moved.job = "elsewhere".into();
    moved.service = worker.id.clone();
    ok(store.update_cron_run(&moved).await, "update_cron_run");
    let listed = runs(store, cleanup.clone()).await;
    assert_eq!(
        listed,
        vec![third.clone(), ended.clone()],
        "store conformance: update_cron_run must replace the record in place, keeping its \
         service, job and place in the order"
    );
    assert_eq!(
        ids(&runs(store, running).await),
        ids(&[other.clone(), second.clone()]),
        "store conformance: an updated outcome must be what cron_runs filters on"
    );

    expect_err(
        store.insert_cron_run(&first).await,
        ErrorKind::Conflict,
        "insert_cron_run with an existing id",
    );
    let stray = CronRun::start(&p.id, &ServiceId::random(), "cleanup", Timestamp(1));
    expect_err(
        store.insert_cron_run(&stray).await,
        ErrorKind::NotFound,
        "insert_cron_run for an unknown service",
    );
    expect_err(
        store.update_cron_run(&run_of(&web, "cleanup", 9)).await,
        ErrorKind::NotFound,
        "update_cron_run of an unknown run",
    );
    let mut huge = run_of(&web, "cleanup", 5_000);
    huge.output = "x".repeat(CronRun::MAX_OUTPUT_BYTES + 1);
    expect_err(
        store.insert_cron_run(&huge).await,
        ErrorKind::InvalidInput,
        "insert_cron_run with an output over the bound",
    );
    let mut bad_name = run_of(&web, "cleanup", 5_000);
    bad_name.job = "Not A Name".into();
    expect_err(
        store.insert_cron_run(&bad_name).await,
        ErrorKind::InvalidInput,
        "insert_cron_run with an invalid job name",
    );
    assert_eq!(
        runs(store, by_project).await.len(),
        4,
        "store conformance: refused runs must not be stored"
    );
    assert_eq!(
        runs(
            store,
            CronRunFilter {
                service: Some(ServiceId::random()),
                ..Default::default()
            }
        )
        .await,
        vec![],
        "store conformance: cron_runs of an unknown service is empty"
    );
}

/// Pruning keeps the newest `keep` ended runs of one job, never a running one nor
/// another job's; runs go with their service.
pub async fn cron_runs_prune_and_cascade(store: &dyn Store) {
    let p = new_project(store).await;
    let web = new_service(store, &p.id, "web", None).await;
    let kept_service = new_service(store, &p.id, "worker", None).await;
    let mut all = Vec::new();
    for i in 0..5 {
        let mut r = run_of(&web, "cleanup", i * 1000);
        if i != 1 {
            r.end(CronOutcome::Succeeded, "");
        }
        ok(store.insert_cron_run(&r).await, "insert_cron_run");
        all.push(r);
    }
    let mut report = run_of(&web, "report", 10);
    report.end(CronOutcome::Succeeded, "");
    ok(store.insert_cron_run(&report).await, "insert_cron_run");
    let elsewhere = run_of(&kept_service, "cleanup", 10);
    ok(store.insert_cron_run(&elsewhere).await, "insert_cron_run");

    let gone = ok(
        store.prune_cron_runs(&web.id, "cleanup", 2).await,
        "prune_cron_runs",
    );
    assert_eq!(
        gone, 2,
        "store conformance: prune_cron_runs must say how many it deleted"
    );
    let left = runs(
        store,
        CronRunFilter {
            service: Some(web.id.clone()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        ids(&left),
        ids(&[
            report.clone(),
            all[4].clone(),
            all[3].clone(),
            all[1].clone()
        ]),
        "store conformance: prune_cron_runs must keep the newest ended runs, running ones \
         and other jobs'"
    );
    assert_eq!(
        ok(
            store.prune_cron_runs(&web.id, "cleanup", 2).await,
            "prune_cron_runs"
        ),
        0
    );

    ok(store.delete_service(&web.id).await, "delete_service");
    assert_eq!(
        runs(
            store,
            CronRunFilter {
                project: Some(p.id.clone()),
                ..Default::default()
            }
        )
        .await,
        vec![elsewhere],
        "store conformance: a deleted service's cron runs must be gone, others kept"
    );
    ok(store.delete_project(&p.id).await, "delete_project");
    assert_eq!(
        runs(
            store,
            CronRunFilter {
                project: Some(p.id.clone()),
                ..Default::default()
            }
        )
        .await,
        vec![],
        "store conformance: a deleted project's cron runs must be gone"
    );
}
