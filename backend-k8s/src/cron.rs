//! A service's cron jobs as Kubernetes `CronJob`s, built from the job and the spec of
//! the instance whose release they run (plain data, like [`crate::manifest`]).
//!
//! A CronJob runs the instance's image with its env (the instance's Secret, by
//! reference: no value is copied into it) and volumes, the job's command through
//! `sh -c`, once per schedule, never restarted (`backoffLimit: 0`,
//! `restartPolicy: Never`). The job's policies map one to one: `concurrencyPolicy`
//! (Forbid, Allow, Replace), `startingDeadlineSeconds` (the starting deadline: one
//! late run at most, as Wharf's own scheduler does) and `activeDeadlineSeconds`
//! (the timeout). One CronJob per job of a service ([`cron_job_name`]), owned by the
//! Deployment of the web instance it runs from ([`owned_by`]): a new release takes it
//! over in place (its runs going on and its history stay), and it goes with the
//! instance it was last handed to.
//!
//! Its pods carry the instance's labels but not [`INSTANCE_LABEL`], which selects
//! the instance's pods for its Service: no request is ever routed to a cron run.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob as K8sCronJob;
use serde_json::json;
use wharf_core::{label, Concurrency, CronJob, Error, InstanceSpec, Result};

use crate::manifest::{build, object_name, owner, run_once_template, INSTANCE_LABEL};
use crate::KubernetesConfig;

/// The label naming the job on a CronJob and its pods.
pub const CRON_JOB_LABEL: &str = "wharf.cron-job";
/// The label naming, on a CronJob and its pods, the instance whose release it runs.
pub const CRON_OF_LABEL: &str = "wharf.cron-of";

/// How many finished Jobs of each kind a CronJob keeps (their pods' logs with them).
const JOBS_KEPT: i32 = 3;

/// The CronJob running `job` from the release of the instance `spec`, in its
/// namespace. Refused: a schedule with seconds (Kubernetes counts in minutes).
pub fn cron_job(
    job: &CronJob,
    spec: &InstanceSpec,
    config: &KubernetesConfig,
) -> Result<K8sCronJob> {
    cron_job_of(job, &build(spec, config)?.deployment)
}

/// The CronJob running `job` from the release of the instance whose Deployment is
/// `deployment` (as built, or as read back from the cluster), in its namespace.
/// Refused: a schedule with seconds (Kubernetes counts in minutes).
pub fn cron_job_of(job: &CronJob, deployment: &Deployment) -> Result<K8sCronJob> {
    job.validate()?;
    if wharf_core::cron::has_seconds(&job.schedule) {
        return Err(Error::unsupported(format!(
            "cron job {}: Kubernetes CronJobs cannot run a schedule with seconds ({:?}); \
             use 5 fields",
            job.name, job.schedule
        )));
    }
    // Kubernetes' parser knows no L, W or # (last day, weekday, nth weekday).
    if job.schedule.contains(['L', 'W', '#']) {
        return Err(Error::unsupported(format!(
            "cron job {}: Kubernetes CronJobs cannot run {:?} (L, W and # are not in its \
             cron syntax)",
            job.name, job.schedule
        )));
    }
    let instance = deployment.metadata.name.clone().unwrap_or_default();
    let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
    let name = cron_job_name(deployment, &job.name)?;
    let mut template = run_once_template(deployment)?;
    let mut labels = template["metadata"]["labels"].take();
    if let Some(l) = labels.as_object_mut() {
        l.remove(INSTANCE_LABEL);
        l.insert(CRON_JOB_LABEL.into(), json!(job.name));
        l.insert(CRON_OF_LABEL.into(), json!(instance));
    }
    template["metadata"]["labels"] = labels.clone();
    let container = &mut template["spec"]["containers"][0];
    container["command"] = json!(job.argv());
    let policy = match job.concurrency {
        Concurrency::Forbid => "Forbid",
        Concurrency::Allow => "Allow",
        Concurrency::Replace => "Replace",
    };
    let object = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
        "spec": {
            "schedule": job.schedule,
            // Wharf's schedules are UTC, whatever the controller manager's zone.
            "timeZone": "Etc/UTC",
            "concurrencyPolicy": policy,
            "startingDeadlineSeconds": job.starting_deadline.as_secs(),
            "successfulJobsHistoryLimit": JOBS_KEPT,
            "failedJobsHistoryLimit": JOBS_KEPT,
            "jobTemplate": {
                "metadata": { "labels": labels },
                "spec": {
                    "activeDeadlineSeconds": job.timeout.as_secs().max(1),
                    "backoffLimit": 0,
                    "template": template,
                },
            },
        },
    });
    serde_json::from_value(object.clone()).map_err(|e| {
        Error::internal(format!(
            "the generated CronJob {name} is malformed ({e}): {object}"
        ))
    })
}

/// Makes `cron` owned by the instance's Deployment (`uid`, named `deployment`), so
/// deleting the instance deletes its cron jobs.
pub fn owned_by(cron: &mut K8sCronJob, deployment: &str, uid: &str) {
    cron.metadata.owner_references = Some(vec![owner("apps/v1", "Deployment", deployment, uid)]);
}

/// The name of the CronJob of the job `job` of the service whose instance
/// `deployment` is: `<service name>-<job>-<8 hex digits of the service id>`, the same
/// for every release (a new release takes the CronJob over in place) and distinct
/// across services of one namespace.
pub fn cron_job_name(deployment: &Deployment, job: &str) -> Result<String> {
    let labels = deployment.metadata.labels.clone().unwrap_or_default();
    let service = labels.get(label::SERVICE).ok_or_else(|| {
        Error::invalid(format!(
            "instance {}: a cron job needs the instance's {} label",
            deployment.metadata.name.as_deref().unwrap_or_default(),
            label::SERVICE
        ))
    })?;
    let service_name = labels
        .get(label::SERVICE_NAME)
        .cloned()
        .unwrap_or_else(|| "cron".to_owned());
    let hash = fnv(service) & 0xffff_ffff;
    cron_name(&format!("{service_name}-{job}-{hash:08x}"))
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A CronJob's name: at most 52 characters (its Jobs append 11 to it), a long one
/// shortened with a hash of the whole, as [`object_name`] does at 63.
fn cron_name(full: &str) -> Result<String> {
    const MAX: usize = 52;
    if full.len() <= MAX {
        return object_name(full);
    }
    let hash = fnv(full);
    let head = full.get(..MAX - 11).unwrap_or(full).trim_end_matches('-');
    object_name(&format!("{head}-{:010x}", hash & 0xff_ffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_fit_a_cron_job_and_stay_distinct() {
        let a = cron_name(&format!("{}-a", "x".repeat(60))).unwrap();
        let b = cron_name(&format!("{}-b", "x".repeat(60))).unwrap();
        assert!(a.len() <= 52 && b.len() <= 52, "{a} {b}");
        assert_ne!(a, b);
        assert_eq!(cron_name("shop-web-cleanup").unwrap(), "shop-web-cleanup");
    }
}
