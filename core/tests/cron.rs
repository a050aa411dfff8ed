//! The cron scheduler's semantics on a fake clock (the times given to `tick`) and a
//! fake runner whose runs end when the test says: forbid, allow and replace, one
//! catch-up run after downtime and none past the starting deadline, recovery of runs
//! a stopped control plane left, timeouts and exit codes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use wharf_core::cron::{
    CronConfig, CronRunner, CronScheduler, JobOutcome, JobRequest, ScheduledRun,
};
use wharf_core::store::MemoryStore;
use wharf_core::*;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

fn minute(n: i64) -> i64 {
    T0 + n * 60_000
}

fn at(ms: i64) -> Timestamp {
    Timestamp(ms)
}

/// A runner whose runs end when [`FakeRunner::finish`] says, when cancelled, or at
/// their timeout; it records what happened in order.
#[derive(Debug, Default)]
struct FakeRunner {
    log: Mutex<Vec<String>>,
    gates: Mutex<HashMap<CronRunId, oneshot::Sender<i32>>>,
    calls: Mutex<Vec<(CronRunId, Vec<String>)>>,
    stopped: Mutex<Vec<CronRunId>>,
}

impl FakeRunner {
    /// Ends `run` with exit code `code` (waiting for it to reach the runner).
    async fn finish(&self, run: &CronRunId, code: i32) {
        self.started(run).await;
        let gate = self.gates.lock().unwrap().remove(run);
        gate.expect("the run is going").send(code).unwrap();
    }
    /// Waits until `run` has reached the runner.
    async fn started(&self, run: &CronRunId) {
        for _ in 0..500 {
            if self.calls().contains(run) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("run {run} never reached the runner");
    }
    fn calls(&self) -> Vec<CronRunId> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect()
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

#[async_trait]
impl CronRunner for FakeRunner {
    async fn run(&self, _service: &Service, req: JobRequest) -> Result<JobOutcome> {
        let (tx, rx) = oneshot::channel();
        self.gates.lock().unwrap().insert(req.run.clone(), tx);
        self.calls
            .lock()
            .unwrap()
            .push((req.run.clone(), req.command.clone()));
        self.log.lock().unwrap().push(format!("start {}", req.run));
        req.logs
            .send(LogStream::Stdout, format!("ran: {}", req.command.join(" ")));
        let out = tokio::select! {
            code = rx => JobOutcome { exit_code: code.ok(), ..Default::default() },
            _ = req.cancel.cancelled() => JobOutcome {
                reason: "stopped".into(),
                ..Default::default()
            },
            _ = tokio::time::sleep(req.timeout) => JobOutcome {
                timed_out: true,
                ..Default::default()
            },
        };
        self.log.lock().unwrap().push(format!("end {}", req.run));
        Ok(out)
    }

    async fn stop_leftovers(&self, run: &CronRun) -> Result<()> {
        self.stopped.lock().unwrap().push(run.id.clone());
        Ok(())
    }
}

struct Fixture {
    store: Arc<MemoryStore>,
    runner: Arc<FakeRunner>,
    service: Service,
}

impl Fixture {
    /// A service with `job`, live.
    async fn new(job: CronJob) -> Fixture {
        Self::with(job, true).await
    }

    async fn with(job: CronJob, live: bool) -> Fixture {
        let store = Arc::new(MemoryStore::new());
        let project = Project::new("shop").unwrap();
        store.put_project(&project).await.unwrap();
        let mut service = Service::new(
            &project.id,
            "web",
            SourceSpec::Image {
                image: "app:1".into(),
            },
        )
        .unwrap();
        service.cron = vec![job];
        service.validate().unwrap();
        store.put_service(&service).await.unwrap();
        if live {
            let d = Deployment {
                state: DeploymentState::Live,
                ..Deployment::queued(&service, Trigger::Manual)
            };
            store.insert_deployment(&d).await.unwrap();
        }
        Fixture {
            store,
            runner: Arc::new(FakeRunner::default()),
            service,
        }
    }

    /// A scheduler on the fixture's store and runner (a fresh one is a control plane
    /// that restarted: it knows only what the store holds).
    fn scheduler(&self) -> CronScheduler {
        CronScheduler::new(
            self.store.clone(),
            self.runner.clone(),
            CronConfig::default(),
        )
    }

    /// The job's runs, newest first.
    async fn runs(&self) -> Vec<CronRun> {
        self.store
            .cron_runs(&CronRunFilter {
                service: Some(self.service.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    async fn outcomes(&self) -> Vec<CronOutcome> {
        self.runs().await.iter().map(|r| r.outcome).collect()
    }

    /// Waits until run `id` is recorded with an outcome other than running.
    async fn ended(&self, id: &CronRunId) -> CronRun {
        for _ in 0..500 {
            let runs = self.runs().await;
            let r = runs.iter().find(|r| &r.id == id).unwrap();
            if r.outcome != CronOutcome::Running {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("run {id} did not end");
    }
}

fn job(schedule: &str, concurrency: Concurrency) -> CronJob {
    CronJob {
        concurrency,
        ..CronJob::new("report", schedule, "python3 report.py > /data/out")
    }
}

#[tokio::test]
async fn forbid_skips_a_run_while_the_previous_one_still_runs() {
    let f = Fixture::new(job("* * * * *", Concurrency::Forbid)).await;
    let s = f.scheduler();
    // The first tick only learns where the schedule stands: nothing ran before.
    assert!(s.tick(at(minute(0) + 1)).await.unwrap().started.is_empty());
    let first = s.tick(at(minute(1) + 200)).await.unwrap();
    assert_eq!(first.started.len(), 1);
    // Nothing new is due within the same minute.
    assert_eq!(
        s.tick(at(minute(1) + 900)).await.unwrap(),
        Default::default()
    );

    let second = s.tick(at(minute(2) + 200)).await.unwrap();
    assert!(second.started.is_empty(), "{second:?}");
    assert_eq!(second.skipped.len(), 1);
    f.runner.started(&first.started[0]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        f.runner.calls(),
        first.started,
        "a skipped run never reaches the runner"
    );
    let skipped = &f.runs().await[0];
    assert_eq!(skipped.outcome, CronOutcome::Skipped);
    assert_eq!(skipped.scheduled_for, at(minute(2)));
    assert!(
        skipped.reason.contains(first.started[0].as_str()),
        "{}",
        skipped.reason
    );
    assert!(skipped.ended_at.is_some());

    f.runner.finish(&first.started[0], 0).await;
    s.settle().await;
    let done = f.ended(&first.started[0]).await;
    assert_eq!(done.outcome, CronOutcome::Succeeded);
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.scheduled_for, at(minute(1)));
    assert_eq!(done.output, "ran: sh -c python3 report.py > /data/out\n");

    // Once it ended, the next time runs.
    let third = s.tick(at(minute(3) + 200)).await.unwrap();
    assert_eq!(third.started.len(), 1);
    assert_eq!(
        f.outcomes().await,
        [
            CronOutcome::Running,
            CronOutcome::Skipped,
            CronOutcome::Succeeded
        ]
    );
    f.runner.finish(&third.started[0], 0).await;
    s.settle().await;
}

#[tokio::test]
async fn replace_stops_the_running_one_before_the_new_one_starts() {
    let f = Fixture::new(job("* * * * *", Concurrency::Replace)).await;
    let s = f.scheduler();
    s.tick(at(minute(0) + 1)).await.unwrap();
    let first = s.tick(at(minute(1) + 200)).await.unwrap().started;
    let second = s.tick(at(minute(2) + 200)).await.unwrap();
    assert_eq!(second.replaced, first);
    assert_eq!(second.started.len(), 1);
    let old = f.ended(&first[0]).await;
    assert_eq!(old.outcome, CronOutcome::Replaced);
    assert!(
        old.reason.contains(second.started[0].as_str()),
        "{}",
        old.reason
    );
    // The new run starts once the old one has stopped.
    f.runner.started(&second.started[0]).await;
    assert_eq!(
        f.runner.log(),
        [
            format!("start {}", first[0]),
            format!("end {}", first[0]),
            format!("start {}", second.started[0]),
        ]
    );
    f.runner.finish(&second.started[0], 0).await;
    s.settle().await;
    assert_eq!(
        f.outcomes().await,
        [CronOutcome::Succeeded, CronOutcome::Replaced]
    );
}

#[tokio::test]
async fn allow_runs_overlapping_runs_side_by_side() {
    let f = Fixture::new(job("* * * * *", Concurrency::Allow)).await;
    let s = f.scheduler();
    s.tick(at(minute(0) + 1)).await.unwrap();
    let a = s.tick(at(minute(1) + 200)).await.unwrap().started;
    let b = s.tick(at(minute(2) + 200)).await.unwrap().started;
    assert_eq!((a.len(), b.len()), (1, 1));
    f.runner.started(&a[0]).await;
    f.runner.started(&b[0]).await;
    assert_eq!(f.runner.calls().len(), 2, "both run at once");
    assert_eq!(
        f.outcomes().await,
        [CronOutcome::Running, CronOutcome::Running]
    );
    f.runner.finish(&a[0], 0).await;
    f.runner.finish(&b[0], 7).await;
    s.settle().await;
    let runs = f.runs().await;
    assert_eq!(runs[0].outcome, CronOutcome::Failed);
    assert_eq!(runs[0].exit_code, Some(7));
    assert_eq!(runs[0].reason, "exited with code 7");
    assert_eq!(runs[1].outcome, CronOutcome::Succeeded);
}

#[tokio::test]
async fn after_a_long_downtime_a_job_gets_one_catch_up_run_not_a_burst() {
    let f = Fixture::new(job("* * * * *", Concurrency::Allow)).await;
    {
        let s = f.scheduler();
        s.tick(at(minute(0) + 1)).await.unwrap();
        let r = s.tick(at(minute(1) + 200)).await.unwrap().started;
        f.runner.finish(&r[0], 0).await;
        s.settle().await;
        // The control plane stops here, for 29 minutes.
    }
    let s = f.scheduler();
    assert_eq!(s.recover().await.unwrap(), 0);
    let back = s.tick(at(minute(30) + 5_000)).await.unwrap();
    assert_eq!(back.started.len(), 1, "one catch-up run: {back:?}");
    // More ticks in the same minute fire nothing more.
    for ms in [5_100, 20_000, 59_999] {
        assert!(s
            .tick(at(minute(30) + ms))
            .await
            .unwrap()
            .started
            .is_empty());
    }
    let runs = f.runs().await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        runs[0].scheduled_for,
        at(minute(30)),
        "the latest missed time"
    );
    // The schedule goes on as before.
    let next = s.tick(at(minute(31) + 100)).await.unwrap();
    assert_eq!(next.started.len(), 1);
    for id in back.started.iter().chain(&next.started) {
        f.runner.finish(id, 0).await;
    }
    s.settle().await;
    assert_eq!(f.runner.calls().len(), 3);
}

#[tokio::test]
async fn no_catch_up_run_past_the_starting_deadline() {
    let hourly = CronJob {
        starting_deadline: Duration::from_secs(600),
        ..job("0 * * * *", Concurrency::Forbid)
    };
    let hour = |n: i64, min: i64| T0 + n * 3_600_000 + min * 60_000;
    for (back_at, expected) in [(hour(5, 30), 0), (hour(5, 9), 1)] {
        let f = Fixture::new(hourly.clone()).await;
        {
            let s = f.scheduler();
            s.tick(at(hour(0, 30))).await.unwrap();
            let r = s.tick(at(hour(1, 0) + 500)).await.unwrap().started;
            f.runner.finish(&r[0], 0).await;
            s.settle().await;
        }
        let s = f.scheduler();
        let report = s.tick(at(back_at)).await.unwrap();
        assert_eq!(
            report.started.len(),
            expected,
            "back {} min after 05:00 with a 10 min deadline",
            (back_at - hour(5, 0)) / 60_000
        );
        for id in &report.started {
            assert_eq!(f.ended_or_running(id).await.scheduled_for, at(hour(5, 0)));
            f.runner.finish(id, 0).await;
        }
        s.settle().await;
        // The next hour runs on time either way.
        let next = s.tick(at(hour(6, 0) + 300)).await.unwrap().started;
        assert_eq!(next.len(), 1);
        f.runner.finish(&next[0], 0).await;
        s.settle().await;
        assert_eq!(f.runs().await.len(), 2 + expected);
    }
}

impl Fixture {
    async fn ended_or_running(&self, id: &CronRunId) -> CronRun {
        self.runs().await.into_iter().find(|r| &r.id == id).unwrap()
    }
}

#[tokio::test]
async fn a_run_left_running_by_a_stopped_control_plane_is_failed_and_stopped() {
    let f = Fixture::new(job("* * * * *", Concurrency::Forbid)).await;
    let left = CronRun::start(&f.service.project, &f.service.id, "report", at(minute(1)));
    f.store.insert_cron_run(&left).await.unwrap();
    let s = f.scheduler();
    assert_eq!(s.recover().await.unwrap(), 1);
    assert_eq!(
        *f.runner.stopped.lock().unwrap(),
        std::slice::from_ref(&left.id)
    );
    let run = f.ended(&left.id).await;
    assert_eq!(run.outcome, CronOutcome::Failed);
    assert_eq!(run.reason, "the control plane restarted while it ran");
    // Its scheduled time counts as handled: the next tick in that minute fires nothing.
    assert!(s
        .tick(at(minute(1) + 30_000))
        .await
        .unwrap()
        .started
        .is_empty());
    // Forbid does not hold back the next run: the failed one is not running.
    let next = s.tick(at(minute(2) + 100)).await.unwrap();
    assert_eq!(next.started.len(), 1);
    f.runner.finish(&next.started[0], 0).await;
    s.settle().await;
}

#[tokio::test]
async fn a_run_past_its_timeout_is_recorded_timed_out() {
    let f = Fixture::new(CronJob {
        timeout: Duration::from_secs(1),
        ..job("* * * * *", Concurrency::Forbid)
    })
    .await;
    let s = f.scheduler();
    s.tick(at(minute(0) + 1)).await.unwrap();
    let r = s.tick(at(minute(1) + 1)).await.unwrap().started;
    s.settle().await;
    let run = f.ended(&r[0]).await;
    assert_eq!(run.outcome, CronOutcome::TimedOut);
    assert_eq!(run.reason, "stopped after its timeout of 1 s");
}

#[tokio::test]
async fn a_service_without_a_live_release_runs_nothing() {
    let f = Fixture::with(job("* * * * *", Concurrency::Allow), false).await;
    let s = f.scheduler();
    s.tick(at(minute(0) + 1)).await.unwrap();
    assert_eq!(s.tick(at(minute(1) + 1)).await.unwrap(), Default::default());
    assert!(f.runs().await.is_empty());
    assert!(f.runner.calls().is_empty());
}

#[test]
fn jobs_are_validated_with_their_service() {
    let p = ProjectId::random();
    let mut s = Service::new(
        &p,
        "web",
        SourceSpec::Image {
            image: "a:1".into(),
        },
    )
    .unwrap();
    s.cron = vec![CronJob::new("a", "*/5 * * * *", "true")];
    s.validate().unwrap();
    let bad = [
        CronJob::new("A", "*/5 * * * *", "true"),
        CronJob::new("a", "*/5 * * *", "true"),
        CronJob::new("a", "*/5 * * * *", "  "),
        CronJob {
            timeout: Duration::from_secs(2 * 24 * 3600),
            ..CronJob::new("a", "*/5 * * * *", "true")
        },
        CronJob {
            starting_deadline: Duration::from_millis(10),
            ..CronJob::new("a", "*/5 * * * *", "true")
        },
    ];
    for b in bad {
        s.cron = vec![b.clone()];
        assert!(s.validate().is_err(), "{b:?}");
    }
    s.cron = vec![
        CronJob::new("a", "*/5 * * * *", "true"),
        CronJob::new("a", "0 * * * *", "false"),
    ];
    let e = s.validate().unwrap_err();
    assert!(e.message().contains("declared twice"), "{e}");
}

/// A runtime that schedules the jobs itself: it reports run `k1` (unless the
/// scheduler says it knows it), first with a job name the store refuses, then as it
/// should be.
#[derive(Debug, Default)]
struct NativeRunner {
    asked: Mutex<usize>,
    synced: Mutex<usize>,
}

#[async_trait]
impl CronRunner for NativeRunner {
    async fn run(&self, _service: &Service, _req: JobRequest) -> Result<JobOutcome> {
        panic!("a runtime that schedules the jobs itself is never asked to run one");
    }

    async fn stop_leftovers(&self, _run: &CronRun) -> Result<()> {
        Ok(())
    }

    fn schedules_itself(&self) -> bool {
        true
    }

    async fn sync(&self, _service: &Service) -> Result<()> {
        *self.synced.lock().unwrap() += 1;
        Ok(())
    }

    async fn scheduled_runs(
        &self,
        _service: &Service,
        known: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<ScheduledRun>> {
        if known.contains("k1") {
            return Ok(Vec::new());
        }
        let mut asked = self.asked.lock().unwrap();
        *asked += 1;
        let job = if *asked == 1 { "Not A Name" } else { "report" };
        let now = Timestamp::now();
        let mut run = ScheduledRun::new("k1", job, now, now);
        run.exit_code = Some(0);
        run.output = "42 rows\n".into();
        Ok(vec![run])
    }
}

/// With a runtime that schedules the jobs itself, the scheduler hands the jobs over
/// once, fires nothing, and records each run the runtime made once; a run the store
/// refused is asked for again (its key is remembered only once it is recorded).
#[tokio::test]
async fn runs_a_runtime_fired_are_recorded_once_and_a_refused_one_is_asked_again() {
    let f = Fixture::new(CronJob::new("report", "*/5 * * * *", "true")).await;
    let runner = Arc::new(NativeRunner::default());
    let scheduler = CronScheduler::new(
        f.store.clone(),
        runner.clone(),
        CronConfig {
            collect_every: Duration::ZERO,
            ..CronConfig::default()
        },
    );
    let first = scheduler.tick(Timestamp::now()).await.unwrap();
    assert!(
        first.started.is_empty() && first.recorded.is_empty(),
        "{first:?}"
    );
    assert!(
        f.runs().await.is_empty(),
        "the store refused the first report"
    );
    let second = scheduler.tick(Timestamp::now()).await.unwrap();
    assert_eq!(second.recorded.len(), 1, "{second:?}");
    let runs = f.runs().await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, CronOutcome::Succeeded);
    assert_eq!(runs[0].output.trim(), "42 rows");
    let third = scheduler.tick(Timestamp::now()).await.unwrap();
    assert!(third.recorded.is_empty(), "{third:?}");
    assert_eq!(
        *runner.asked.lock().unwrap(),
        2,
        "a recorded run is not asked for"
    );
    assert_eq!(*runner.synced.lock().unwrap(), 1, "handed over once");
}
