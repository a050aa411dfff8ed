//! KubernetesRuntime against the in-memory API server of `fake/` (real kube client,
//! real HTTP requests and watch streams, served in process).

mod fake;

use std::time::Duration;

use fake::{FakeCluster, Outcome};
use futures::StreamExt;
use wharf_core::conformance::runtime::{run_all, RuntimeCase};
use wharf_core::*;
use wharf_k8s::{IngressConfig, KubernetesConfig, KubernetesRuntime, NamespacePolicy};

/// Images tell the simulated kubelet what to do.
fn behaviour(image: &str) -> Outcome {
    if image.contains("missing") {
        Outcome::ImagePullBackOff
    } else if image.contains("crash") {
        Outcome::CrashLoop(3)
    } else if image.contains("huge") {
        Outcome::Unschedulable
    } else if image.contains("unready") {
        Outcome::NotReady
    } else {
        Outcome::Ready
    }
}

fn cluster() -> FakeCluster {
    FakeCluster::with_behaviour(behaviour)
}

fn runtime(c: &FakeCluster, config: KubernetesConfig) -> KubernetesRuntime {
    KubernetesRuntime::new(c.client(), config)
}

/// A fake cluster and a runtime with `config` on it.
fn runtime_with(config: KubernetesConfig) -> (FakeCluster, KubernetesRuntime) {
    let c = cluster();
    let rt = runtime(&c, config);
    (c, rt)
}

/// A fake cluster and a runtime with the default configuration on it.
fn default_runtime() -> (FakeCluster, KubernetesRuntime) {
    runtime_with(KubernetesConfig::default())
}

/// Starts [`spec`]`(name, image)`, which must succeed.
async fn started(rt: &KubernetesRuntime, name: &str, image: &str) -> Instance {
    rt.start(&spec(name, image)).await.unwrap()
}

/// Starts [`spec`]`(name, image)`, which must fail; why.
async fn refused(rt: &KubernetesRuntime, name: &str, image: &str) -> Error {
    rt.start(&spec(name, image)).await.unwrap_err()
}

/// Waits for `id`'s rollout, which must fail within `timeout`; why.
async fn rollout_failure(rt: &KubernetesRuntime, id: &InstanceId, timeout: Duration) -> Error {
    rt.wait_rollout(id, timeout).await.unwrap_err()
}

/// Checks that `err` is of `kind` and that its message says each of `says`.
fn assert_error(err: &Error, kind: ErrorKind, says: &[&str]) {
    assert_eq!(err.kind(), kind, "{err}");
    assert_says(err, says);
}

/// Checks that the message of `err` says each of `says`.
fn assert_says(err: &Error, says: &[&str]) {
    let msg = err.to_string();
    for words in says {
        assert!(msg.contains(words), "{msg}");
    }
}

/// The texts of the log lines of `id` that `opts` asks for.
async fn log_texts(rt: &KubernetesRuntime, id: &InstanceId, opts: LogOptions) -> Vec<String> {
    let lines = rt.logs(id, opts).await.unwrap();
    lines.map(|l| l.unwrap().text).collect().await
}

fn spec(name: &str, image: &str) -> InstanceSpec {
    let healthz = Probe::Http {
        path: "/healthz".into(),
    };
    wharf_testkit::spec(name, image)
        .env("PORT", "8080")
        .env("DATABASE_URL", "postgres://app:s3cr3t-pw@db/app")
        .limits(256, 500)
        .health(healthz, Duration::from_secs(2), Duration::from_secs(30))
        .label(label::PROJECT, "prj0123456789abcdef")
        .label(label::SERVICE, "svc0123456789abcdef")
        .label(label::SERVICE_NAME, "web")
        .label(label::DEPLOYMENT, "dep0123456789abcdef")
        .build()
}

/// A task ([`InstanceSpec::run_once`]) of [`spec`] running `script` through `sh -c`.
fn task(name: &str, script: &str) -> InstanceSpec {
    let mut t = spec(name, "registry.local/web@sha256:abc");
    t.run_once = true;
    t.command = Some(vec!["sh".into(), "-c".into(), script.into()]);
    t.health_check.probe = Probe::None;
    t.labels.insert(TASK_LABEL.into(), "run".into());
    t
}

#[tokio::test]
async fn conforms() {
    let (_cluster, rt) = default_runtime();
    let mut healthy = spec("kit-web", "registry.local/web@sha256:abc");
    healthy.health_check.timeout = Duration::from_secs(10);
    let mut crash = spec("kit-crash", "registry.local/crash:1");
    crash.health_check.timeout = Duration::from_secs(10);
    run_all(
        &rt,
        &RuntimeCase {
            healthy,
            exits_at_start: Some(crash),
            task: Some(task("kit-task", "echo task-output; exit 4")),
        },
    )
    .await;
}

#[tokio::test]
async fn start_creates_owned_objects_and_stop_removes_them_all() {
    let (c, rt) = default_runtime();
    let inst = started(&rt, "web-1", "registry.local/web:1").await;
    assert_eq!(inst.id.0, "default/web-1");
    assert_eq!(inst.endpoint.host, "web-1.default.svc.cluster.local");
    assert_eq!(inst.endpoint.port, 8080);

    let dep = c.object("deployments", "default", "web-1").unwrap();
    let uid = dep["metadata"]["uid"].clone();
    for resource in ["services", "secrets"] {
        let o = c.object(resource, "default", "web-1").unwrap();
        let owner = &o["metadata"]["ownerReferences"][0];
        assert_eq!(
            owner["uid"], uid,
            "{resource} must be owned by the Deployment"
        );
        assert_eq!(owner["kind"], "Deployment");
        assert_eq!(o["metadata"]["labels"]["wharf.instance"], "web-1");
    }
    // The environment lives in the Secret only, never in clear in the pod template.
    assert!(!dep.to_string().contains("s3cr3t-pw"), "{dep}");
    let secret = c.object("secrets", "default", "web-1").unwrap();
    assert!(secret["data"]["DATABASE_URL"].is_string());
    assert_eq!(c.objects("pods", "default").len(), 1);

    // start waited with a watch on the pods, after listing them.
    let reqs = c.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/default/pods?")
                && r.contains("watch=true")),
        "{reqs:#?}"
    );

    rt.stop(&inst.id, Duration::from_secs(5)).await.unwrap();
    for resource in ["deployments", "services", "secrets", "pods"] {
        assert!(
            c.objects(resource, "default").is_empty(),
            "{resource} left behind after stop"
        );
    }
    rt.stop(&inst.id, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_start_with_the_pods_reason() {
    let (c, rt) = default_runtime();
    let err = refused(&rt, "web-2", "registry.local/missing:1").await;
    assert_says(
        &err,
        &["ImagePullBackOff", "Back-off pulling image", "web-2"],
    );
    assert!(!err.is_retryable());
    assert!(
        c.objects("deployments", "default").is_empty()
            && c.objects("secrets", "default").is_empty(),
        "a failed start must leave nothing behind"
    );
}

#[tokio::test]
async fn an_unschedulable_pod_fails_start_with_the_schedulers_message() {
    let (_cluster, rt) = default_runtime();
    let err = refused(&rt, "web-3", "registry.local/huge:1").await;
    assert_says(&err, &["Unschedulable", "Insufficient memory"]);
}

#[tokio::test]
async fn a_crash_loop_is_exited_with_its_code_and_fails_the_rollout() {
    let (_cluster, rt) = default_runtime();
    let inst = started(&rt, "web-4", "registry.local/crash:1").await;
    match rt.status(&inst.id).await.unwrap() {
        InstanceStatus::Exited { code, reason } => {
            assert_eq!(code, Some(3));
            assert!(reason.contains("CrashLoopBackOff"), "{reason}");
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    let err = rollout_failure(&rt, &inst.id, Duration::from_secs(10)).await;
    assert_error(&err, ErrorKind::HealthCheckFailed, &["last exit code 3"]);
}

#[tokio::test]
async fn wait_rollout_succeeds_when_ready_and_times_out_when_never_ready() {
    let (_cluster, rt) = default_runtime();
    let ok = started(&rt, "web-5", "registry.local/web:1").await;
    rt.wait_rollout(&ok.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(rt.status(&ok.id).await.unwrap(), InstanceStatus::Healthy);

    let slow = started(&rt, "web-6", "registry.local/unready:1").await;
    assert_eq!(rt.status(&slow.id).await.unwrap(), InstanceStatus::Running);
    let err = rollout_failure(&rt, &slow.id, Duration::from_millis(300)).await;
    assert_error(&err, ErrorKind::Timeout, &[]);
}

#[tokio::test]
async fn the_watch_recovers_from_a_compacted_history() {
    // A watch from a resourceVersion the server no longer has answers 410 Gone: the
    // runtime lists again and goes on.
    let c = cluster();
    c.expire_next_watch();
    let rt = runtime(&c, KubernetesConfig::default());
    started(&rt, "web-7", "registry.local/web:1").await;
    let pod_lists = c
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET /api/v1/namespaces/default/pods?") && !r.contains("watch=true")
        })
        .count();
    assert!(
        pod_lists >= 2,
        "the runtime must list again after 410 Gone: {:#?}",
        c.requests()
    );
}

#[tokio::test]
async fn namespace_per_project_and_ingress() {
    let (c, rt) = runtime_with(KubernetesConfig {
        namespace: NamespacePolicy::PerProject {
            prefix: "wharf-".into(),
        },
        ingress: Some(IngressConfig {
            class: Some("nginx".into()),
            host_suffix: "apps.example.com".into(),
            tls_secret: None,
        }),
        ..KubernetesConfig::default()
    });
    let inst = started(&rt, "web-8", "registry.local/web:1").await;
    let ns = "wharf-prj0123456789abcdef";
    assert_eq!(inst.id.0, format!("{ns}/web-8"));
    assert!(c.object("namespaces", "", ns).is_some());
    let ing = c.object("ingresses", ns, "web-8").unwrap();
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    assert_eq!(ing["spec"]["rules"][0]["host"], "web.apps.example.com");
    // A second instance reuses the namespace.
    started(&rt, "web-9", "registry.local/web:1").await;
    let all = rt.list(&Labels::new()).await.unwrap();
    assert_eq!(all.len(), 2);
    rt.stop(&inst.id, Duration::from_secs(5)).await.unwrap();
    assert!(c.object("ingresses", ns, "web-8").is_none());
}

#[tokio::test]
async fn logs_come_from_the_pod() {
    let (_cluster, rt) = default_runtime();
    let inst = started(&rt, "web-10", "registry.local/web:1").await;
    let all = log_texts(&rt, &inst.id, LogOptions::default()).await;
    assert_eq!(
        all,
        vec![
            "starting registry.local/web:1",
            "listening on :8080",
            "ready"
        ]
    );
    let last_one = LogOptions {
        follow: false,
        tail: Some(1),
    };
    let last = log_texts(&rt, &inst.id, last_one).await;
    assert_eq!(last, vec!["ready"]);
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_created() {
    let (c, rt) = default_runtime();
    let mut bad_label = spec("web-11", "registry.local/web:1");
    bad_label
        .labels
        .insert("wharf.note".into(), "not a label value!".into());
    let mut bad_name = spec("Web_11", "registry.local/web:1");
    bad_name.labels.clear();
    for s in [bad_label, bad_name] {
        let err = rt.start(&s).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    let err = rt
        .list(&Labels::from([("bad key!".to_string(), "x".to_string())]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(c.objects("deployments", "default").is_empty());
    // A second start with the same name is a Conflict.
    started(&rt, "web-12", "registry.local/web:1").await;
    let err = refused(&rt, "web-12", "registry.local/web:1").await;
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
}

#[tokio::test]
async fn the_fake_keeps_resource_version_conflicts() {
    // The double must refuse a stale replace, as a real API server does.
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    let c = cluster();
    let api: Api<Secret> = Api::namespaced(c.client(), "default");
    let mut s = Secret::default();
    s.metadata.name = Some("x".into());
    let created = api.create(&PostParams::default(), &s).await.unwrap();
    let mut a = created.clone();
    a.metadata.labels = Some([("a".to_string(), "1".to_string())].into());
    api.replace("x", &PostParams::default(), &a).await.unwrap();
    let mut stale = created;
    stale.metadata.labels = Some([("b".to_string(), "1".to_string())].into());
    let err = api
        .replace("x", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err}"
    );
}

/// The manifests for a sample service, kept as a reviewed snapshot. Set
/// `WHARF_UPDATE_SNAPSHOTS=1` to rewrite it after an intended change, then review the
/// diff.
#[test]
fn manifest_snapshot() {
    let rt_config = KubernetesConfig {
        namespace: NamespacePolicy::PerProject {
            prefix: "wharf-".into(),
        },
        ingress: Some(IngressConfig {
            class: Some("nginx".into()),
            host_suffix: "apps.example.com".into(),
            tls_secret: Some("apps-example-com-tls".into()),
        }),
        image_pull_secret: Some("registry-credentials".into()),
        ..KubernetesConfig::default()
    };
    let mut s = spec(
        "shop-web-3f9a1c",
        "registry.example.com/shop/web@sha256:0123456789abcdef",
    );
    s.command = Some(vec!["node".into(), "server.js".into()]);
    s.volumes = vec![VolumeMount::new("uploads", "/data/uploads").with_size("20Gi")];
    s.network = Some("wharf-shop".into());
    let mut m = wharf_k8s::manifest::build(&s, &rt_config).unwrap();
    m.owned_by("00000000-0000-4000-8000-000000000001");
    let doc = serde_json::json!({
        "namespace": m.namespace,
        "deployment": m.deployment,
        "service": m.service,
        "secret": m.secret,
        "ingress": m.ingress,
        "claims": m.claims,
    });
    let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/web.json");
    if std::env::var_os("WHARF_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with WHARF_UPDATE_SNAPSHOTS=1)",
            path.display()
        )
    });
    assert_eq!(
        text,
        want,
        "manifests changed: review and update {}",
        path.display()
    );
}

#[tokio::test]
async fn long_instance_names_get_a_stable_short_object_name() {
    let (c, rt) = default_runtime();
    let long = format!("{}-{}-a1b2c3", "p".repeat(40), "s".repeat(40));
    let inst = started(&rt, &long, "registry.local/web:1").await;
    let (_, name) = inst.id.0.split_once('/').unwrap();
    assert!(name.len() <= 63, "{name}");
    assert_eq!(
        name,
        wharf_k8s::manifest::object_name(&long).unwrap(),
        "stable"
    );
    let other = format!("{}-{}-ffffff", "p".repeat(40), "s".repeat(40));
    assert_ne!(
        name,
        wharf_k8s::manifest::object_name(&other).unwrap(),
        "distinct"
    );
    assert_eq!(rt.status(&inst.id).await.unwrap(), InstanceStatus::Healthy);
    rt.stop(&inst.id, Duration::from_secs(1)).await.unwrap();
    assert!(c.objects("deployments", "default").is_empty());
}

#[tokio::test]
async fn namespace_by_label_for_environments() {
    let (c, rt) = runtime_with(KubernetesConfig {
        namespace: NamespacePolicy::ByLabel {
            label: "example.com/environment".into(),
            prefix: "shop-".into(),
        },
        ..KubernetesConfig::default()
    });
    let mut s = spec("web-13", "registry.local/web:1");
    s.labels
        .insert("example.com/environment".into(), "staging".into());
    let inst = rt.start(&s).await.unwrap();
    assert_eq!(inst.id.0, "shop-staging/web-13");
    assert!(c.object("namespaces", "", "shop-staging").is_some());
    let mut unlabelled = spec("web-14", "registry.local/web:1");
    unlabelled.labels.remove("example.com/environment");
    let err = rt.start(&unlabelled).await.unwrap_err();
    assert_error(&err, ErrorKind::InvalidInput, &["example.com/environment"]);
}

#[tokio::test]
async fn following_logs_streams_new_lines_until_the_instance_stops() {
    let (c, rt) = default_runtime();
    let inst = started(&rt, "web-15", "registry.local/web:1").await;
    let mut lines = rt
        .logs(
            &inst.id,
            LogOptions {
                follow: true,
                tail: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(lines.next().await.unwrap().unwrap().text, "ready");
    let pod = c.objects("pods", "default")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.append_log("default", &pod, "GET / 200");
    assert_eq!(lines.next().await.unwrap().unwrap().text, "GET / 200");
    rt.stop(&inst.id, Duration::from_secs(1)).await.unwrap();
    assert!(lines.next().await.is_none(), "the stream ends with the pod");
}

/// An image that exists only on the engine that built it (a build that was not pushed
/// to a registry) is refused before anything reaches the cluster, with an error that
/// says how to fix it.
#[tokio::test]
async fn a_local_only_image_is_refused_before_anything_is_created() {
    let (c, rt) = runtime_with(KubernetesConfig {
        namespace: NamespacePolicy::PerProject {
            prefix: "wharf-".into(),
        },
        ..KubernetesConfig::default()
    });
    let mut s = spec("web-local", "wharf/shop-web:dep_0123");
    s.image_local_only = true;
    let err = rt.start(&s).await.unwrap_err();
    let says = [
        "wharf/shop-web:dep_0123",
        "registry push",
        "allow_local_images",
    ];
    assert_error(&err, ErrorKind::InvalidInput, &says);
    assert!(!err.is_retryable());
    assert!(c.requests().is_empty(), "{:#?}", c.requests());
}

/// With `allow_local_images` (a cluster sharing the build engine's images) a local
/// image runs, and the node is told never to pull it.
#[tokio::test]
async fn local_images_run_when_allowed_and_are_never_pulled() {
    let (c, rt) = runtime_with(KubernetesConfig {
        allow_local_images: true,
        ..KubernetesConfig::default()
    });
    let mut s = spec("web-kind", "wharf/shop-web:dep_0123");
    s.image_local_only = true;
    rt.start(&s).await.unwrap();
    let d = c.object("deployments", "default", "web-kind").unwrap();
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "wharf/shop-web:dep_0123");
    assert_eq!(container["imagePullPolicy"], "Never");
    // A pullable image keeps the cluster's default policy.
    started(&rt, "web-reg", "registry.local/web@sha256:0123").await;
    let d = c.object("deployments", "default", "web-reg").unwrap();
    assert!(d["spec"]["template"]["spec"]["containers"][0]
        .get("imagePullPolicy")
        .is_none());
}

/// [`spec`] on network `wharf-shop` mounting `data` (5Gi) and `cache` (no size).
fn with_volumes(name: &str) -> InstanceSpec {
    let mut s = spec(name, "registry.local/web:1");
    s.network = Some("wharf-shop".into());
    s.volumes = vec![
        VolumeMount::new("data", "/data").with_size("5Gi"),
        VolumeMount::new("cache", "/cache"),
    ];
    s
}

#[tokio::test]
async fn volumes_are_claims_that_outlive_their_instances() {
    let (c, rt) = default_runtime();
    let first = rt.start(&with_volumes("shop-web-1")).await.unwrap();
    let (ns, dep_name) = first.id.0.split_once('/').unwrap();
    let ns = ns.to_owned();
    let dep = c.object("deployments", &ns, dep_name).unwrap();
    assert_eq!(
        dep["spec"]["strategy"]["type"], "Recreate",
        "one writer per volume"
    );
    let claims = |c: &FakeCluster| {
        let mut v: Vec<(String, String)> = c
            .objects("persistentvolumeclaims", &ns)
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap().to_owned(),
                    o["spec"]["resources"]["requests"]["storage"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let want = [
        ("wharf-shop.cache".to_owned(), "1Gi".to_owned()),
        ("wharf-shop.data".to_owned(), "5Gi".to_owned()),
    ];
    assert_eq!(claims(&c), want);
    let claim = c
        .object("persistentvolumeclaims", &ns, "wharf-shop.data")
        .unwrap();
    assert!(claim["metadata"]["ownerReferences"].is_null(), "{claim}");
    let pod_volumes = &dep["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        pod_volumes[0]["persistentVolumeClaim"]["claimName"],
        "wharf-shop.data"
    );

    // Stopping (a foreground delete of everything the Deployment owns) keeps them,
    // and the next instance mounts the same claims.
    rt.stop(&first.id, Duration::ZERO).await.unwrap();
    assert!(c.object("deployments", &ns, dep_name).is_none());
    assert_eq!(claims(&c), want);
    let second = rt.start(&with_volumes("shop-web-2")).await.unwrap();
    assert_eq!(claims(&c), want);
    rt.stop(&second.id, Duration::ZERO).await.unwrap();
    assert_eq!(claims(&c), want);

    // Without volumes, rolling updates as before.
    let plain = started(&rt, "shop-api-1", "registry.local/api:1").await;
    let (_, name) = plain.id.0.split_once('/').unwrap();
    let dep = c.object("deployments", &ns, name).unwrap();
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
}

#[tokio::test]
async fn a_claim_of_another_project_is_never_mounted() {
    // One namespace for both projects (named by a label they share), as a fixed
    // namespace would be.
    let (c, rt) = runtime_with(KubernetesConfig {
        namespace: NamespacePolicy::ByLabel {
            label: label::SERVICE_NAME.into(),
            prefix: "apps-".into(),
        },
        ..KubernetesConfig::default()
    });
    let mine = rt.start(&with_volumes("shop-web-1")).await.unwrap();
    rt.stop(&mine.id, Duration::ZERO).await.unwrap();
    let mut theirs = with_volumes("other-web-1");
    theirs
        .labels
        .insert(label::PROJECT.into(), "prjother".into());
    let err = rt.start(&theirs).await.unwrap_err();
    assert_error(
        &err,
        ErrorKind::Conflict,
        &["wharf-shop.data", "not made by Wharf for this project"],
    );
    assert_eq!(c.objects("persistentvolumeclaims", "apps-web").len(), 2);
}

#[test]
fn claim_names_never_collide_across_projects_or_environments() {
    use wharf_k8s::manifest::claim_name;
    let names = [
        claim_name(Some("wharf-shop"), "x-data").unwrap(),
        claim_name(Some("wharf-shop-x"), "data").unwrap(),
        claim_name(Some("wharf-shop_x"), "data").unwrap(),
        claim_name(Some("wharf-shop_x-data"), "d").unwrap(),
        claim_name(Some("wharf-shop_x"), "data-d").unwrap(),
        claim_name(None, "data").unwrap(),
    ];
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    assert!(claim_name(Some("Wharf/x"), "data").is_err());
    assert!(claim_name(Some("wharf-x"), "../data").is_err());
}

#[tokio::test]
async fn a_claim_named_the_old_way_in_a_projects_namespace_is_mounted_in_place() {
    let (c, rt) = runtime_with(KubernetesConfig {
        namespace: NamespacePolicy::PerProject {
            prefix: "wharf-".into(),
        },
        ..KubernetesConfig::default()
    });
    // A first start makes the namespace; the operator had made claim `data` there.
    let probe = started(&rt, "shop-probe-1", "registry.local/web:1").await;
    let (ns, _) = probe.id.0.split_once('/').unwrap();
    let ns = ns.to_owned();
    let api: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(c.client(), &ns);
    let old = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "3Gi"}}},
    }))
    .unwrap();
    api.create(&Default::default(), &old).await.unwrap();

    // A preview (or any environment) of the project never mounts it: that data is
    // the project's own scope's, which an environment's never is.
    let mut preview = with_volumes("shop-web-2");
    preview.network = Some("wharf-shop_pr-7".into());
    let inst = rt.start(&preview).await.unwrap();
    let (_, name) = inst.id.0.split_once('/').unwrap();
    let dep = c.object("deployments", &ns, name).unwrap();
    let vols = &dep["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        vols[0]["persistentVolumeClaim"]["claimName"], "wharf-shop.pr-7.data",
        "{vols}"
    );
    rt.stop(&inst.id, std::time::Duration::ZERO).await.unwrap();

    let inst = rt.start(&with_volumes("shop-web-1")).await.unwrap();
    let (_, name) = inst.id.0.split_once('/').unwrap();
    let dep = c.object("deployments", &ns, name).unwrap();
    let vols = &dep["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        vols[0]["persistentVolumeClaim"]["claimName"], "data",
        "{vols}"
    );
    assert_eq!(
        vols[1]["persistentVolumeClaim"]["claimName"],
        "wharf-shop.cache"
    );
    let mut names: Vec<String> = c
        .objects("persistentvolumeclaims", &ns)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "data",
            "wharf-shop.cache",
            "wharf-shop.pr-7.cache",
            "wharf-shop.pr-7.data"
        ],
        "no new claim for an adopted volume"
    );
}

/// A managed database's protocol probe becomes a TCP check on its port: the kubelet
/// speaks no database protocol.
#[test]
fn database_probes_become_tcp_checks() {
    for probe in [Probe::Postgres, Probe::Mysql, Probe::Redis] {
        let mut s = spec("shop-db-3f9a1c", "postgres:15");
        s.port = 5432;
        s.health_check.probe = probe.clone();
        let m = wharf_k8s::manifest::build(&s, &KubernetesConfig::default()).unwrap();
        let deployment = serde_json::to_value(&m.deployment).unwrap();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        for kind in ["readinessProbe", "startupProbe", "livenessProbe"] {
            assert_eq!(
                container[kind]["tcpSocket"]["port"], 5432,
                "{probe:?} {kind}: {container}"
            );
        }
    }
}

/// `wharf volumes ls/rm` on Kubernetes: the project's claims listed as its volumes
/// (scope included), a claim refused while a pod mounts it, deleted once none does,
/// and never found for another project; across namespaces named by a label too.
#[tokio::test]
async fn claims_are_listed_and_removed_only_when_unmounted_and_ours() {
    for config in [
        KubernetesConfig::default(),
        KubernetesConfig {
            namespace: NamespacePolicy::ByLabel {
                label: label::SERVICE_NAME.into(),
                prefix: "apps-".into(),
            },
            ..KubernetesConfig::default()
        },
    ] {
        let (c, rt) = runtime_with(config);
        let project = ProjectId("prj0123456789abcdef".into());
        let first = rt.start(&with_volumes("shop-web-1")).await.unwrap();
        let (ns, _) = first.id.0.split_once('/').unwrap();
        let ns = ns.to_owned();
        let data = VolumeRef {
            project: project.clone(),
            scope: Some("wharf-shop".into()),
            name: "data".into(),
        };
        let mut listed: Vec<(VolumeRef, String)> = rt
            .volumes(&project, &[])
            .await
            .unwrap()
            .into_iter()
            .map(|v| (v.volume, v.runtime_name))
            .collect();
        listed.sort();
        let cache = VolumeRef {
            name: "cache".into(),
            ..data.clone()
        };
        assert_eq!(
            listed,
            vec![
                (cache.clone(), format!("{ns}/wharf-shop.cache")),
                (data.clone(), format!("{ns}/wharf-shop.data")),
            ]
        );
        let other = ProjectId("prjother".into());
        assert!(rt.volumes(&other, &[]).await.unwrap().is_empty());

        let e = rt.remove_volume(&data).await.unwrap_err();
        assert_error(&e, ErrorKind::Conflict, &["mounted by a pod"]);
        rt.stop(&first.id, Duration::ZERO).await.unwrap();
        let theirs = VolumeRef {
            project: other,
            ..data.clone()
        };
        let e = rt.remove_volume(&theirs).await.unwrap_err();
        assert_error(&e, ErrorKind::NotFound, &["no volume data"]);
        rt.remove_volume(&data).await.unwrap();
        assert!(c
            .object("persistentvolumeclaims", &ns, "wharf-shop.data")
            .is_none());
        assert!(c
            .object("persistentvolumeclaims", &ns, "wharf-shop.cache")
            .is_some());
        let e = rt.remove_volume(&data).await.unwrap_err();
        assert_error(&e, ErrorKind::NotFound, &["no volume data"]);
    }
}

/// A scope too long for a label value (an environment of a long project name) still
/// makes its claim, and listing reads the scope back from the claim's name.
#[tokio::test]
async fn a_long_scope_is_read_back_from_the_claim_name() {
    let (c, rt) = default_runtime();
    let scope = format!("wharf-{}_{}", "p".repeat(40), "staging-environment-x");
    assert!(scope.len() > 63);
    let mut spec = with_volumes("shop-web-1");
    spec.network = Some(scope.clone());
    let inst = rt.start(&spec).await.unwrap();
    let (ns, _) = inst.id.0.split_once('/').unwrap();
    let claim_name = wharf_k8s::manifest::claim_name(Some(&scope), "data").unwrap();
    let claim = c.object("persistentvolumeclaims", ns, &claim_name).unwrap();
    assert!(claim["metadata"]["labels"]
        .get(label::VOLUME_SCOPE)
        .is_none());
    let project = ProjectId("prj0123456789abcdef".into());
    let listed = rt.volumes(&project, &[]).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|v| v.volume.scope.as_deref() == Some(scope.as_str()) && v.volume.name == "data"),
        "{listed:?}"
    );
}

/// A task is a Job: one pod, never restarted, serving nothing, with the instance's
/// env in a Secret the Job owns (no value in the Job); no Service selects its pod;
/// it is listed beside the Deployments, and stopping it removes the Job, its pod
/// and its Secret.
#[tokio::test]
async fn a_task_is_a_job_that_owns_its_secret_and_goes_whole() {
    let (c, rt) = default_runtime();
    let web = started(&rt, "web-1", "registry.local/web:1").await;
    let t = rt
        .start(&task("web-run-1", "echo hello; sleep 600"))
        .await
        .unwrap();
    assert_eq!(t.id.0, "default/job/web-run-1");
    assert_eq!(
        rt.status(&t.id).await.unwrap(),
        InstanceStatus::Running,
        "a sleeping task runs"
    );

    let job = c.object("jobs", "default", "web-run-1").expect("its Job");
    let s = &job["spec"];
    assert_eq!(s["backoffLimit"], 0);
    assert_eq!(s["ttlSecondsAfterFinished"], 86400);
    let pod = &s["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    assert!(
        container.get("ports").is_none() && container.get("readinessProbe").is_none(),
        "{container}"
    );
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], "web-run-1");
    assert!(!job.to_string().contains("s3cr3t-pw"), "{job}");
    let secret = c
        .object("secrets", "default", "web-run-1")
        .expect("its Secret");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "Job");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        job["metadata"]["uid"]
    );
    assert!(c.object("services", "default", "web-run-1").is_none());
    // The Job first (suspended: no pod), then its Secret owned by it, then let go:
    // at no time is there a Secret without an owner.
    let writes: Vec<String> = c
        .requests()
        .into_iter()
        .filter(|r| r.contains("web-run-1") || r.starts_with("POST"))
        .filter(|r| r.contains("/jobs") || r.contains("/secrets"))
        .filter(|r| !r.starts_with("GET"))
        .skip_while(|r| !r.contains("/jobs"))
        .collect();
    assert!(
        writes.len() >= 3
            && writes[0].starts_with("POST")
            && writes[0].contains("/jobs")
            && writes[1].starts_with("POST")
            && writes[1].contains("/secrets")
            && writes[2].starts_with("PATCH")
            && writes[2].contains("/jobs/web-run-1"),
        "{writes:#?}"
    );
    assert_eq!(job["spec"]["suspend"], false);
    let task_pod = c
        .objects("pods", "default")
        .into_iter()
        .find(|p| p["metadata"]["labels"][TASK_LABEL] == "run")
        .expect("the task's pod");
    let service = c.object("services", "default", "web-1").unwrap();
    let selector = service["spec"]["selector"].as_object().unwrap();
    assert!(
        !selector
            .iter()
            .all(|(k, v)| &task_pod["metadata"]["labels"][k] == v),
        "the web Service selects the task's pod"
    );

    let mut listed: Vec<InstanceId> = rt
        .list(&Labels::new())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(listed, [t.id.clone(), web.id.clone()]);
    assert_eq!(log_texts(&rt, &t.id, LogOptions::last(10)).await, ["hello"]);
    // A task has no replicas nor rollout.
    assert_eq!(
        rt.set_replicas(&t.id, 2).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    rt.stop(&t.id, Duration::ZERO).await.unwrap();
    assert!(c.object("jobs", "default", "web-run-1").is_none());
    assert!(c.object("secrets", "default", "web-run-1").is_none());
    assert!(c
        .objects("pods", "default")
        .iter()
        .all(|p| p["metadata"]["labels"].get(TASK_LABEL).is_none()));
    assert_eq!(
        rt.status(&t.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Stopping it again is fine; the web instance is untouched.
    rt.stop(&t.id, Duration::ZERO).await.unwrap();
    assert_eq!(rt.status(&web.id).await.unwrap(), InstanceStatus::Healthy);
}

/// A task whose image cannot be pulled is refused at start with the pod's reason,
/// and nothing of it is left.
#[tokio::test]
async fn a_task_that_cannot_start_is_refused_and_removed() {
    let (c, rt) = default_runtime();
    let mut t = task("web-run-2", "echo never");
    t.image = "registry.local/missing:1".into();
    let err = rt.start(&t).await.unwrap_err();
    assert_says(&err, &["ImagePullBackOff", "web-run-2"]);
    assert!(c.objects("jobs", "default").is_empty());
    assert!(c.objects("secrets", "default").is_empty());
}
