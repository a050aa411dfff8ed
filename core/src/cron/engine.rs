//! The engine as the [`CronRunner`]: each run is an [`Engine::run_command`] task of
//! the service's live release ([`TaskKind::Cron`]).

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;

use super::job::{CronRun, ScheduledRun};
use super::scheduler::{CronRunner, JobOutcome, JobRequest};
use crate::engine::{Engine, RunOptions, TaskKind, TASK_LABEL};
use crate::error::Result;
use crate::model::{label, Deployment, Labels, Service};
use crate::traits::StoreExt;

#[async_trait]
impl CronRunner for Engine {
    async fn run(&self, service: &Service, request: JobRequest) -> Result<JobOutcome> {
        let opts = RunOptions::new(request.timeout)
            .logs(request.logs)
            .cancel(request.cancel)
            .kind(TaskKind::Cron);
        let o = self.run_command(&service.id, request.command, opts).await?;
        Ok(JobOutcome {
            exit_code: o.exit_code,
            timed_out: o.timed_out,
            reason: o.reason,
        })
    }

    /// Stops every cron task instance of the run's service: called at start-up only,
    /// before this control plane started any, so each one is a leftover.
    async fn stop_leftovers(&self, run: &CronRun) -> Result<()> {
        let labels = Labels::from([
            (label::MANAGED.to_owned(), "true".to_owned()),
            (label::SERVICE.to_owned(), run.service.to_string()),
            (TASK_LABEL.to_owned(), TaskKind::Cron.as_str().to_owned()),
        ]);
        let runtime = self.runtime();
        for instance in runtime.list(&labels).await? {
            runtime.stop(&instance.id, Duration::from_secs(5)).await?;
        }
        Ok(())
    }

    fn schedules_itself(&self) -> bool {
        self.runtime().schedules_cron()
    }

    async fn sync(&self, service: &Service) -> Result<()> {
        match self.store().live_deployment(&service.id).await? {
            Some(live) => self.schedule_cron(service, &live).await,
            None => Ok(()),
        }
    }

    async fn scheduled_runs(
        &self,
        service: &Service,
        known: &BTreeSet<String>,
    ) -> Result<Vec<ScheduledRun>> {
        match self.store().live_deployment(&service.id).await? {
            Some(Deployment {
                instance: Some(web),
                ..
            }) => self.runtime().cron_runs(&web.id, known).await,
            _ => Ok(Vec::new()),
        }
    }
}
