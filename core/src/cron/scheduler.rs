//! [`CronScheduler`]: fires the cron jobs of every service with a live release.
//!
//! Each tick it reads the services from the store and, for each job, asks the
//! schedule what fell due since the job's last scheduled time ([`latest_due`]): at
//! most one time per job and tick, and only within the job's starting deadline, so a
//! control plane that was down fires one catch-up run per job, not a burst. The last
//! scheduled time survives a restart because it is read back from the newest stored
//! run of the job.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::job::{CronJob, CronOutcome, CronRun, OutputTail};
use super::schedule::latest_due;
use crate::error::Result;
use crate::model::{CronRunId, InstanceId, Service, ServiceId, Timestamp};
use crate::traits::{CronRunFilter, DynStore, LogSink, StoreExt};

/// One command to run for a cron run.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// The run it is for (runners label its instance with it, so a control plane
    /// that restarts can find and stop what it left).
    pub run: CronRunId,
    /// The argv (`sh -c COMMAND`).
    pub command: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
    /// Where its output goes, line by line.
    pub logs: LogSink,
    /// Cancelled to stop it early (its run was replaced).
    pub cancel: CancellationToken,
}

/// How a command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobOutcome {
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Whether it was stopped for running past its timeout.
    pub timed_out: bool,
    /// Why it ended as it did, in words.
    pub reason: String,
}

/// What runs a job's command from a service's live release: the engine (see
/// `Engine::run_command`), or a fake in tests.
#[async_trait]
pub trait CronRunner: Send + Sync + Debug + 'static {
    /// Runs `request` in a fresh instance of `service`'s live release and waits for
    /// it to end. An error means it could not run at all.
    async fn run(&self, service: &Service, request: JobRequest) -> Result<JobOutcome>;
    /// Stops whatever `run` left running: the control plane stopped while it ran.
    async fn stop_leftovers(&self, run: &CronRun) -> Result<()>;
    /// Whether the runtime schedules the jobs itself ([`crate::Runtime::schedules_cron`]):
    /// the scheduler then fires none, keeps the runtime's jobs in step with each
    /// service's ([`CronRunner::sync`]) and records the runs it reports
    /// ([`CronRunner::scheduled_runs`]). The default: false.
    fn schedules_itself(&self) -> bool {
        false
    }
    /// Makes the runtime schedule `service`'s jobs (as they are now) from its live
    /// release. The default does nothing.
    async fn sync(&self, service: &Service) -> Result<()> {
        let _ = service;
        Ok(())
    }
    /// The ended runs the runtime reports of `service`'s jobs, but those whose keys
    /// are in `known` (recorded already). The default: none.
    async fn scheduled_runs(
        &self,
        service: &Service,
        known: &BTreeSet<String>,
    ) -> Result<Vec<super::ScheduledRun>> {
        let _ = (service, known);
        Ok(Vec::new())
    }
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct CronConfig {
    /// Time between ticks (the finest granularity a schedule gets).
    pub tick: Duration,
    /// How many ended runs of each job the store keeps (older ones are pruned).
    pub keep_runs: usize,
    /// When the runtime schedules the jobs itself: how often the runs it reports
    /// are collected into the store.
    pub collect_every: Duration,
}

impl Default for CronConfig {
    fn default() -> Self {
        CronConfig {
            tick: Duration::from_secs(1),
            keep_runs: 100,
            collect_every: Duration::from_secs(10),
        }
    }
}

/// Fires cron jobs through a [`CronRunner`], recording every run in the store.
/// Cheap to clone (clones share their state).
#[derive(Debug, Clone)]
pub struct CronScheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: DynStore,
    runner: Arc<dyn CronRunner>,
    config: CronConfig,
    jobs: Mutex<BTreeMap<(ServiceId, String), JobState>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// When the runtime schedules: each service's web instance and jobs as last
    /// handed to it.
    synced: Mutex<BTreeMap<ServiceId, Handover>>,
    /// When the runtime schedules: services whose last hand-over failed, with when
    /// to try again.
    retry_at: Mutex<BTreeMap<ServiceId, tokio::time::Instant>>,
    /// When the runtime schedules: the keys of the runs recorded, per service (so
    /// they are not asked for again).
    recorded: Mutex<BTreeMap<ServiceId, BTreeSet<String>>>,
    /// When the runtime's runs were last collected.
    collected: Mutex<Option<tokio::time::Instant>>,
}

/// What a runtime scheduling cron jobs was handed for a service: the web instance
/// they run from and the jobs.
type Handover = (Option<InstanceId>, Vec<CronJob>);

/// How long a failed hand-over waits before it is tried again.
const HANDOVER_RETRY: Duration = Duration::from_secs(30);

/// What the scheduler knows of one job.
#[derive(Debug)]
struct JobState {
    /// The last scheduled time handled (run, skipped or let pass).
    last: Timestamp,
    /// Its runs still going.
    active: Vec<Active>,
}

#[derive(Debug, Clone)]
struct Active {
    id: CronRunId,
    /// Cancelled to stop it (replace).
    cancel: CancellationToken,
    /// Cancelled once its record is final.
    done: CancellationToken,
    /// The run that replaced it, if one did.
    replaced_by: Arc<Mutex<Option<CronRunId>>>,
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Runs started.
    pub started: Vec<CronRunId>,
    /// Runs recorded skipped.
    pub skipped: Vec<CronRunId>,
    /// Runs stopped to be replaced.
    pub replaced: Vec<CronRunId>,
    /// Runs the runtime fired by itself, recorded.
    pub recorded: Vec<CronRunId>,
}

impl CronScheduler {
    /// A scheduler over `store` running commands through `runner`.
    pub fn new(store: DynStore, runner: Arc<dyn CronRunner>, config: CronConfig) -> Self {
        CronScheduler {
            inner: Arc::new(Inner {
                store,
                runner,
                config,
                jobs: Mutex::new(BTreeMap::new()),
                tasks: Mutex::new(Vec::new()),
                synced: Mutex::new(BTreeMap::new()),
                retry_at: Mutex::new(BTreeMap::new()),
                recorded: Mutex::new(BTreeMap::new()),
                collected: Mutex::new(None),
            }),
        }
    }

    /// Starts ticking in the background: first [`CronScheduler::recover`], then a
    /// [`CronScheduler::tick`] every `config.tick`. Stops when the task is aborted
    /// (the runs it started stop with the runtime).
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            match self.recover().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(runs = n, "cron: failed the runs a restart interrupted"),
                Err(e) => tracing::warn!(error = %e, "cron: could not recover interrupted runs"),
            }
            let mut every = tokio::time::interval(self.inner.config.tick);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = self.tick(Timestamp::now()).await {
                    tracing::warn!(error = %e, "cron: tick failed");
                }
            }
        })
    }

    /// Fails every run the store still records as running (the control plane that
    /// ran it stopped) and has the runner stop what it left. Returns how many.
    pub async fn recover(&self) -> Result<usize> {
        let store = &self.inner.store;
        let running = store
            .cron_runs(&CronRunFilter {
                outcome: Some(CronOutcome::Running),
                ..Default::default()
            })
            .await?;
        for mut run in running.iter().cloned() {
            if let Err(e) = self.inner.runner.stop_leftovers(&run).await {
                tracing::warn!(run = %run.id, error = %e, "cron: could not stop a leftover run");
            }
            run.end(
                CronOutcome::Failed,
                "the control plane restarted while it ran",
            );
            store.update_cron_run(&run).await?;
        }
        Ok(running.len())
    }

    /// One pass at `now`: every job of every service with a live release whose
    /// schedule fell due since its last scheduled time (within its deadline) is
    /// started, skipped or replaces its running predecessor, as its concurrency says.
    pub async fn tick(&self, now: Timestamp) -> Result<TickReport> {
        if self.inner.runner.schedules_itself() {
            return self.tick_native().await;
        }
        let store = &self.inner.store;
        let mut report = TickReport::default();
        for project in store.projects().await? {
            for svc in store.services(&project.id).await? {
                if svc.cron.is_empty() {
                    continue;
                }
                let live = store.live_deployment(&svc.id).await?.is_some();
                for job in &svc.cron {
                    let last = self.last_scheduled(&svc, job, now).await?;
                    let due = latest_due(&job.schedule, last, now, job.starting_deadline);
                    let Some(due) = due else {
                        continue;
                    };
                    self.set_last(&svc.id, &job.name, due);
                    if !live {
                        // No release to run from: the time passes, nothing runs.
                        continue;
                    }
                    self.fire(&svc, job, due, &mut report).await?;
                }
            }
        }
        Ok(report)
    }

    /// A tick when the runtime schedules the jobs: each service whose live release
    /// or jobs changed since it was last handed over is handed over again, and every
    /// [`CronConfig::collect_every`] the runs the runtime reports are recorded (each
    /// once: its id comes from the runtime's key). Fires nothing itself.
    async fn tick_native(&self) -> Result<TickReport> {
        let store = &self.inner.store;
        let mut report = TickReport::default();
        let collect = {
            let mut last = lock(&self.inner.collected);
            let due = last.is_none_or(|t| t.elapsed() >= self.inner.config.collect_every);
            if due {
                *last = Some(tokio::time::Instant::now());
            }
            due
        };
        for project in store.projects().await? {
            for svc in store.services(&project.id).await? {
                let known = lock(&self.inner.synced).get(&svc.id).cloned();
                // Nothing to hand over for a service without jobs, unless it had
                // some that must go.
                if svc.cron.is_empty() && known.as_ref().is_none_or(|k| k.1.is_empty()) {
                    continue;
                }
                let Some(live) = store.live_deployment(&svc.id).await? else {
                    continue;
                };
                // The web instance the jobs run from (a restart of the live release
                // makes a new one).
                let web = live.instance.as_ref().map(|i| i.id.clone());
                let wanted = (web, svc.cron.clone());
                let changed = known.as_ref() != Some(&wanted);
                let waiting = lock(&self.inner.retry_at)
                    .get(&svc.id)
                    .is_some_and(|t| tokio::time::Instant::now() < *t);
                if changed && !waiting {
                    match self.inner.runner.sync(&svc).await {
                        Ok(()) => {
                            lock(&self.inner.retry_at).remove(&svc.id);
                            lock(&self.inner.synced).insert(svc.id.clone(), wanted);
                        }
                        Err(e) => {
                            lock(&self.inner.retry_at).insert(
                                svc.id.clone(),
                                tokio::time::Instant::now() + HANDOVER_RETRY,
                            );
                            tracing::warn!(service = %svc.name, error = %e, "cron: could not hand the jobs to the runtime; trying again in 30 s");
                        }
                    }
                }
                if collect && !svc.cron.is_empty() {
                    report
                        .recorded
                        .extend(self.collect(&svc).await.unwrap_or_else(|e| {
                            tracing::warn!(service = %svc.name, error = %e, "cron: could not collect the runtime's runs");
                            Vec::new()
                        }));
                }
            }
        }
        Ok(report)
    }

    /// Records the ended runs the runtime reports of `svc`'s jobs that are not
    /// recorded yet; returns their ids.
    async fn collect(&self, svc: &Service) -> Result<Vec<CronRunId>> {
        let store = &self.inner.store;
        let mut recorded = Vec::new();
        let known = lock(&self.inner.recorded)
            .get(&svc.id)
            .cloned()
            .unwrap_or_default();
        let mut runs = self.inner.runner.scheduled_runs(svc, &known).await?;
        runs.sort_by_key(|r| r.started_at);
        for r in runs {
            let run = r.record(&svc.project, &svc.id);
            match store.insert_cron_run(&run).await {
                Ok(()) => {
                    tracing::info!(service = %svc.name, job = %run.job, run = %run.id, outcome = run.outcome.as_str(), "cron: recorded a run the runtime fired");
                    let keep = self.inner.config.keep_runs;
                    store.prune_cron_runs(&svc.id, &run.job, keep).await?;
                    recorded.push(run.id);
                }
                Err(e) if e.kind() == crate::ErrorKind::Conflict => {}
                // Not remembered: asked for again at the next collection.
                Err(e) => return Err(e),
            }
            let mut all = lock(&self.inner.recorded);
            let keys = all.entry(svc.id.clone()).or_default();
            // Bounded: a key forgotten is only asked for again (and refused by the
            // store as a duplicate).
            if keys.len() >= 1000 {
                keys.clear();
            }
            keys.insert(r.key.clone());
        }
        Ok(recorded)
    }

    /// Waits until every run started so far has ended and been recorded.
    pub async fn settle(&self) {
        loop {
            let tasks: Vec<_> = std::mem::take(&mut *lock(&self.inner.tasks));
            if tasks.is_empty() {
                return;
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }

    /// The job's last scheduled time: remembered, else that of its newest stored run,
    /// else `now` (a new job does not run for times before it existed).
    async fn last_scheduled(
        &self,
        svc: &Service,
        job: &CronJob,
        now: Timestamp,
    ) -> Result<Timestamp> {
        let key = (svc.id.clone(), job.name.clone());
        if let Some(s) = lock(&self.inner.jobs).get(&key) {
            return Ok(s.last);
        }
        let newest = self
            .inner
            .store
            .cron_runs(&CronRunFilter {
                service: Some(svc.id.clone()),
                job: Some(job.name.clone()),
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        let last = newest.first().map_or(now, |r| r.scheduled_for);
        lock(&self.inner.jobs).entry(key).or_insert(JobState {
            last,
            active: Vec::new(),
        });
        Ok(last)
    }

    fn set_last(&self, service: &ServiceId, job: &str, at: Timestamp) {
        let mut jobs = lock(&self.inner.jobs);
        let state = jobs
            .entry((service.clone(), job.to_owned()))
            .or_insert(JobState {
                last: at,
                active: Vec::new(),
            });
        state.last = state.last.max(at);
    }

    /// Handles one due time of `job`.
    async fn fire(
        &self,
        svc: &Service,
        job: &CronJob,
        due: Timestamp,
        report: &mut TickReport,
    ) -> Result<()> {
        let key = (svc.id.clone(), job.name.clone());
        let running: Vec<Active> = lock(&self.inner.jobs)
            .get(&key)
            .map(|s| s.active.clone())
            .unwrap_or_default();
        let mut run = CronRun::start(&svc.project, &svc.id, &job.name, due);
        if !running.is_empty() && job.concurrency == super::Concurrency::Forbid {
            let ids: Vec<String> = running.iter().map(|a| a.id.to_string()).collect();
            run.end(
                CronOutcome::Skipped,
                format!("the previous run ({}) is still running", ids.join(", ")),
            );
            self.inner.store.insert_cron_run(&run).await?;
            tracing::info!(service = %svc.name, job = %job.name, run = %run.id, "cron: run skipped (forbid)");
            report.skipped.push(run.id);
            return Ok(());
        }
        let mut wait_for = Vec::new();
        if job.concurrency == super::Concurrency::Replace {
            for a in &running {
                *lock(&a.replaced_by) = Some(run.id.clone());
                a.cancel.cancel();
                wait_for.push(a.done.clone());
                report.replaced.push(a.id.clone());
            }
        }
        self.inner.store.insert_cron_run(&run).await?;
        let active = Active {
            id: run.id.clone(),
            cancel: CancellationToken::new(),
            done: CancellationToken::new(),
            replaced_by: Arc::new(Mutex::new(None)),
        };
        if let Some(s) = lock(&self.inner.jobs).get_mut(&key) {
            s.active.push(active.clone());
        }
        report.started.push(run.id.clone());
        tracing::info!(service = %svc.name, job = %job.name, run = %run.id, "cron: run started");
        let this = self.clone();
        let (svc, job) = (svc.clone(), job.clone());
        let task = tokio::spawn(async move {
            // A replaced run is stopped before its successor starts.
            for w in wait_for {
                w.cancelled().await;
            }
            this.execute(&svc, &job, run, &active).await;
            if let Some(s) = lock(&this.inner.jobs).get_mut(&(svc.id.clone(), job.name.clone())) {
                s.active.retain(|a| a.id != active.id);
            }
            active.done.cancel();
        });
        let mut tasks = lock(&self.inner.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        Ok(())
    }

    /// Runs one run to its end and records how it ended.
    async fn execute(&self, svc: &Service, job: &CronJob, mut run: CronRun, active: &Active) {
        let tail = Arc::new(Mutex::new(OutputTail::new(CronRun::MAX_OUTPUT_BYTES)));
        let sink = {
            let tail = tail.clone();
            LogSink::from_fn(move |line| lock(&tail).push_line(&line.text))
        };
        let request = JobRequest {
            run: run.id.clone(),
            command: job.argv(),
            timeout: job.timeout,
            logs: sink,
            cancel: active.cancel.clone(),
        };
        let result = self.inner.runner.run(svc, request).await;
        run.output = lock(&tail).as_str().to_owned();
        let replaced_by = lock(&active.replaced_by).clone();
        match (result, replaced_by) {
            (_, Some(next)) => run.end(CronOutcome::Replaced, format!("replaced by run {next}")),
            (Ok(o), None) if o.timed_out => {
                run.exit_code = o.exit_code;
                let why = format!("stopped after its timeout of {} s", job.timeout.as_secs());
                run.end(CronOutcome::TimedOut, why);
            }
            (Ok(o), None) => {
                run.exit_code = o.exit_code;
                if o.exit_code == Some(0) {
                    run.end(CronOutcome::Succeeded, String::new());
                } else {
                    let why = match (o.exit_code, o.reason.is_empty()) {
                        (_, false) => o.reason,
                        (Some(c), true) => format!("exited with code {c}"),
                        (None, true) => "ended without an exit code".to_owned(),
                    };
                    run.end(CronOutcome::Failed, why);
                }
            }
            (Err(e), None) => run.end(CronOutcome::Failed, format!("could not run: {e}")),
        }
        tracing::info!(service = %svc.name, job = %job.name, run = %run.id, outcome = run.outcome.as_str(), "cron: run ended");
        if let Err(e) = self.inner.store.update_cron_run(&run).await {
            tracing::warn!(run = %run.id, error = %e, "cron: could not record the end of a run");
        }
        let keep = self.inner.config.keep_runs;
        if let Err(e) = self
            .inner
            .store
            .prune_cron_runs(&svc.id, &job.name, keep)
            .await
        {
            tracing::warn!(job = %job.name, error = %e, "cron: could not prune old runs");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing is left half-changed under these locks; poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
