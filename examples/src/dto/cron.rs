//! Cron jobs as the API shows them, with their next and last runs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_core::{CronJob, CronRun, Timestamp};

/// One cron job of a service (`GET .../cron`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CronJobView {
    /// The job as the service declares it.
    pub job: CronJob,
    /// When it next falls due (Unix milliseconds, UTC); runs only while the service
    /// has a live release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<Timestamp>,
    /// Its newest run (or skipped run), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<CronRun>,
}
