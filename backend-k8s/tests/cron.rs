//! Cron jobs as Kubernetes CronJobs, created on the in-memory API server of `fake/`
//! beside the instance whose release they run: the job's policies map to the
//! CronJob's fields, its pods run the instance's image and env but are never
//! selected by the instance's Service, and it goes with the instance.

mod fake;

use std::time::Duration;

use fake::FakeCluster;
use k8s_openapi::api::batch::v1::CronJob as K8sCronJob;
use kube::api::{Api, PostParams};
use wharf_core::*;
use wharf_k8s::cron::{cron_job, cron_job_name, owned_by, CRON_JOB_LABEL};
use wharf_k8s::manifest::build;
use wharf_k8s::{KubernetesConfig, KubernetesRuntime, INSTANCE_LABEL};

fn spec() -> InstanceSpec {
    wharf_testkit::spec("shop-web-1", "registry.local/shop:1")
        .env("DATABASE_URL", "postgres://app:s3cr3t-pw@db/app")
        .health(
            Probe::Http {
                path: "/healthz".into(),
            },
            Duration::from_secs(2),
            Duration::from_secs(30),
        )
        .label(label::PROJECT, "prj0123456789abcdef")
        .label(label::SERVICE, "svc0123456789abcdef")
        .label(label::SERVICE_NAME, "web")
        .build()
}

#[tokio::test]
async fn a_cron_job_becomes_a_cron_job_beside_its_instance_and_goes_with_it() {
    let cluster = FakeCluster::new();
    let config = KubernetesConfig::default();
    let rt = KubernetesRuntime::new(cluster.client(), config.clone());
    let spec = spec();
    let instance = rt.start(&spec).await.unwrap();
    let m = build(&spec, &config).unwrap();
    let ns = m.namespace.clone();
    let deployment = m.deployment.metadata.name.clone().unwrap();
    let uid = cluster.object("deployments", &ns, &deployment).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();

    let job = CronJob {
        concurrency: Concurrency::Replace,
        timeout: Duration::from_secs(600),
        starting_deadline: Duration::from_secs(900),
        ..CronJob::new("cleanup", "*/5 * * * *", "python3 cleanup.py --days 7")
    };
    let mut cron = cron_job(&job, &spec, &config).unwrap();
    owned_by(&mut cron, &deployment, &uid);
    let api: Api<K8sCronJob> = Api::namespaced(cluster.client(), &ns);
    api.create(&PostParams::default(), &cron).await.unwrap();

    // Named after the service and the job, the same for every release.
    let name = cron_job_name(&m.deployment, "cleanup").unwrap();
    assert!(name.starts_with("web-cleanup-"), "{name}");
    let stored = cluster
        .object("cronjobs", &ns, &name)
        .expect("the CronJob is in the cluster");
    let s = &stored["spec"];
    assert_eq!(s["schedule"], "*/5 * * * *");
    assert_eq!(s["timeZone"], "Etc/UTC");
    assert_eq!(s["concurrencyPolicy"], "Replace");
    assert_eq!(s["startingDeadlineSeconds"], 900);
    let job_spec = &s["jobTemplate"]["spec"];
    assert_eq!(job_spec["activeDeadlineSeconds"], 600);
    assert_eq!(job_spec["backoffLimit"], 0);
    let pod = &job_spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.local/shop:1");
    assert_eq!(
        c["command"],
        serde_json::json!(["sh", "-c", "python3 cleanup.py --days 7"])
    );
    assert!(
        c.get("readinessProbe").is_none() && c.get("ports").is_none(),
        "{c}"
    );
    // The instance's env, by reference to its Secret: no value in the CronJob.
    let secret = c["envFrom"][0]["secretRef"]["name"].as_str().unwrap();
    assert!(cluster.object("secrets", &ns, secret).is_some());
    assert!(!stored.to_string().contains("s3cr3t-pw"));

    // Its pods are never selected by the instance's Service.
    let pod_labels = &job_spec["template"]["metadata"]["labels"];
    assert_eq!(pod_labels[CRON_JOB_LABEL], "cleanup");
    assert_eq!(pod_labels[label::SERVICE], "svc0123456789abcdef");
    let service = cluster.object("services", &ns, &deployment).unwrap();
    let selector = service["spec"]["selector"].as_object().unwrap();
    assert!(selector.contains_key(INSTANCE_LABEL));
    assert!(
        !selector.iter().all(|(k, v)| &pod_labels[k] == v),
        "the Service selects cron pods: {selector:?} vs {pod_labels}"
    );

    // The instance goes, and its cron jobs with it.
    rt.stop(&instance.id, Duration::from_secs(1)).await.unwrap();
    assert!(cluster.object("cronjobs", &ns, &name).is_none());
}

#[test]
fn each_concurrency_maps_to_its_policy_and_seconds_are_refused() {
    let config = KubernetesConfig::default();
    for (c, policy) in [
        (Concurrency::Forbid, "Forbid"),
        (Concurrency::Allow, "Allow"),
        (Concurrency::Replace, "Replace"),
    ] {
        let job = CronJob {
            concurrency: c,
            ..CronJob::new("report", "0 3 * * *", "true")
        };
        let cron = cron_job(&job, &spec(), &config).unwrap();
        let s = cron.spec.unwrap();
        assert_eq!(s.concurrency_policy.as_deref(), Some(policy));
        assert_eq!(
            s.starting_deadline_seconds,
            Some(3600),
            "the default deadline"
        );
        assert_eq!(
            s.job_template.spec.unwrap().active_deadline_seconds,
            Some(3600),
            "the default timeout"
        );
    }
    let every_second = CronJob::new("tick", "*/1 * * * * *", "true");
    let e = cron_job(&every_second, &spec(), &config).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    // Wharf's parser takes the last day of the month; Kubernetes' does not.
    let month_end = CronJob::new("close", "0 0 L * *", "true");
    month_end.validate().expect("Wharf's own scheduler runs it");
    let e = cron_job(&month_end, &spec(), &config).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(cron_job(&CronJob::new("Bad", "* * * * *", "true"), &spec(), &config).is_err());
}
