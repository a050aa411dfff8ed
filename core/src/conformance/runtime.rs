//! The [`Runtime`] conformance kit.

use std::time::Duration;

use futures::StreamExt;

use crate::error::ErrorKind;
use crate::model::*;
use crate::traits::{LogOptions, Runtime};

/// What the kit needs from the implementation under test.
#[derive(Debug, Clone)]
pub struct RuntimeCase {
    /// An instance that starts and becomes healthy within its health check's timeout.
    pub healthy: InstanceSpec,
    /// An instance that exits right after it starts (for the exit check), if the
    /// runtime can express one.
    pub exits_at_start: Option<InstanceSpec>,
    /// A task ([`InstanceSpec::run_once`]) that prints `task-output` and exits with
    /// code 4, if the runtime runs tasks.
    pub task: Option<InstanceSpec>,
}

fn with_run_label(spec: &InstanceSpec, run: &str) -> InstanceSpec {
    let mut s = spec.clone();
    s.name = format!("{}-{run}", s.name);
    s.labels.insert("wharf.conformance".into(), run.to_owned());
    s
}

/// Polls `rt.status(id)` every 100 ms until `pred` holds or `timeout` passes; returns
/// the last status. Panics if a status call fails. Backend tests may use it too.
pub async fn wait_status(
    rt: &dyn Runtime,
    id: &InstanceId,
    timeout: Duration,
    pred: impl Fn(&InstanceStatus) -> bool,
) -> InstanceStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let st = rt
            .status(id)
            .await
            .unwrap_or_else(|e| panic!("status of {id} failed: {e}"));
        if pred(&st) || tokio::time::Instant::now() >= deadline {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start, become healthy, keep labels, stop (idempotent), then NotFound.
pub async fn start_status_stop(rt: &dyn Runtime, case: &RuntimeCase) {
    let run = super::unique("rt");
    let spec = with_run_label(&case.healthy, &run);
    let inst = rt
        .start(&spec)
        .await
        .expect("start of the healthy spec failed");
    assert!(inst.endpoint.port != 0, "instance endpoint has port 0");
    for (k, v) in &spec.labels {
        assert_eq!(inst.labels.get(k), Some(v), "instance lost label {k}");
    }
    let st = wait_status(rt, &inst.id, spec.health_check.timeout, |s| {
        matches!(s, InstanceStatus::Healthy | InstanceStatus::Exited { .. })
    })
    .await;
    assert_eq!(st, InstanceStatus::Healthy, "instance never became healthy");
    rt.stop(&inst.id, Duration::from_secs(5))
        .await
        .expect("stop failed");
    let err = rt
        .status(&inst.id)
        .await
        .expect_err("status of a stopped (removed) instance must be NotFound");
    assert_eq!(err.kind(), ErrorKind::NotFound, "status after stop: {err}");
    rt.stop(&inst.id, Duration::from_secs(1))
        .await
        .expect("stopping an instance that is gone must succeed");
}

/// The ids `list(labels)` returns, sorted.
async fn listed_ids(rt: &dyn Runtime, labels: &Labels) -> Vec<InstanceId> {
    let mut ids: Vec<_> = rt
        .list(labels)
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

/// `list` returns exactly the instances carrying every given label.
pub async fn list_by_labels(rt: &dyn Runtime, case: &RuntimeCase) {
    let run = super::unique("rt");
    let mut a = with_run_label(&case.healthy, &run);
    a.name.push_str("-a");
    a.labels.insert("wharf.conformance-role".into(), "a".into());
    let mut b = with_run_label(&case.healthy, &run);
    b.name.push_str("-b");
    b.labels.insert("wharf.conformance-role".into(), "b".into());
    let ia = rt.start(&a).await.expect("start a");
    let ib = rt.start(&b).await.expect("start b");

    let mut by_run = Labels::new();
    by_run.insert("wharf.conformance".into(), run.clone());
    let mut want = vec![ia.id.clone(), ib.id.clone()];
    want.sort();
    assert_eq!(
        listed_ids(rt, &by_run).await,
        want,
        "list by the run label must return both instances"
    );

    let mut only_a = by_run.clone();
    only_a.insert("wharf.conformance-role".into(), "a".into());
    assert_eq!(
        listed_ids(rt, &only_a).await,
        vec![ia.id.clone()],
        "list must match every label given"
    );

    let mut none = Labels::new();
    none.insert("wharf.conformance".into(), super::unique("none"));
    assert!(
        rt.list(&none).await.expect("list").is_empty(),
        "unknown label listed instances"
    );

    rt.stop(&ia.id, Duration::from_secs(5))
        .await
        .expect("stop a");
    rt.stop(&ib.id, Duration::from_secs(5))
        .await
        .expect("stop b");
    assert!(
        rt.list(&by_run).await.expect("list").is_empty(),
        "stopped instances still listed"
    );
}

/// Logs: unknown instances are NotFound; `tail` bounds the lines returned.
pub async fn logs(rt: &dyn Runtime, case: &RuntimeCase) {
    let err = match rt
        .logs(&InstanceId(super::unique("missing")), LogOptions::default())
        .await
    {
        Ok(_) => panic!("logs of an unknown instance must fail"),
        Err(e) => e,
    };
    assert_eq!(
        err.kind(),
        ErrorKind::NotFound,
        "logs of unknown instance: {err}"
    );
    let run = super::unique("rt");
    let spec = with_run_label(&case.healthy, &run);
    let inst = rt.start(&spec).await.expect("start");
    wait_status(rt, &inst.id, spec.health_check.timeout, |s| {
        *s == InstanceStatus::Healthy
    })
    .await;
    let lines: Vec<_> = rt
        .logs(&inst.id, LogOptions::last(1))
        .await
        .expect("logs")
        .collect()
        .await;
    assert!(lines.len() <= 1, "tail 1 returned {} lines", lines.len());
    for l in lines {
        l.expect("log line error");
    }
    rt.stop(&inst.id, Duration::from_secs(5))
        .await
        .expect("stop");
}

/// Status of an unknown instance is NotFound.
pub async fn unknown_instance(rt: &dyn Runtime) {
    let err = rt
        .status(&InstanceId(super::unique("missing")))
        .await
        .expect_err("status of an unknown instance must fail");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// An instance that exits at start is reported `Exited`, never healthy.
pub async fn exit_at_start(rt: &dyn Runtime, case: &RuntimeCase) {
    let Some(spec) = &case.exits_at_start else {
        return;
    };
    let run = super::unique("rt");
    let spec = with_run_label(spec, &run);
    let inst = rt.start(&spec).await.expect("start of the exiting spec");
    let st = wait_status(rt, &inst.id, spec.health_check.timeout, |s| {
        matches!(s, InstanceStatus::Exited { .. } | InstanceStatus::Healthy)
    })
    .await;
    assert!(
        matches!(st, InstanceStatus::Exited { .. }),
        "an instance that exits at start must be reported Exited, got {st:?}"
    );
    rt.stop(&inst.id, Duration::from_secs(5))
        .await
        .expect("stop");
}

/// A task runs once: it is reported `Exited` with its exit code and stays so (it is
/// never restarted), its output stays readable until it is stopped, and stopping it
/// removes it.
pub async fn task_runs_once(rt: &dyn Runtime, case: &RuntimeCase) {
    let Some(spec) = &case.task else {
        return;
    };
    assert!(spec.run_once, "the case's task must be a run_once spec");
    let run = super::unique("rt");
    let spec = with_run_label(spec, &run);
    let inst = rt.start(&spec).await.expect("start of the task");
    let exited = |s: &InstanceStatus| matches!(s, InstanceStatus::Exited { .. });
    let st = wait_status(rt, &inst.id, Duration::from_secs(60), exited).await;
    assert!(
        matches!(st, InstanceStatus::Exited { code: Some(4), .. }),
        "the task must be reported Exited with code 4, got {st:?}"
    );
    // Longer than any restart back-off a runtime starts with.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let again = rt.status(&inst.id).await.expect("status of the ended task");
    assert_eq!(again, st, "a task must never be restarted");
    let lines: Vec<String> = rt
        .logs(&inst.id, LogOptions::last(100))
        .await
        .expect("logs of the ended task")
        .filter_map(|l| async move { l.ok().map(|l| l.text) })
        .collect()
        .await;
    assert!(
        lines.iter().any(|l| l.contains("task-output")),
        "the task's output is gone: {lines:?}"
    );
    rt.stop(&inst.id, Duration::from_secs(5))
        .await
        .expect("stop of the ended task");
    let err = rt
        .status(&inst.id)
        .await
        .expect_err("a stopped task is gone");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// Every check above.
pub async fn run_all(rt: &dyn Runtime, case: &RuntimeCase) {
    unknown_instance(rt).await;
    start_status_stop(rt, case).await;
    list_by_labels(rt, case).await;
    logs(rt, case).await;
    exit_at_start(rt, case).await;
    task_runs_once(rt, case).await;
}
