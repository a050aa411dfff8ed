//! The Zun runtime against the Zun double, found through the real Keystone's catalog.

mod support;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use support::zun_double::ZunDouble;
use support::{assert_local_only_refused, with, Catalogued, Cleanup};
use wharf_core::conformance::runtime::{run_all, RuntimeCase};
use wharf_core::{
    label, ErrorKind, InstanceSpec, InstanceStatus, Labels, LogOptions, Probe, Runtime,
};
use wharf_openstack::{api_error, ApiError, ZunOptions, ZunRuntime};

struct Fixture {
    zun: Catalogued<ZunDouble>,
    rt: ZunRuntime,
}

impl Fixture {
    async fn new() -> Option<Self> {
        let zun =
            Catalogued::new("container", "zun", ZunDouble::start(), |d| d.url.clone()).await?;
        let opts = ZunOptions {
            state_timeout: Duration::from_secs(20),
            poll_min: Duration::from_millis(20),
            poll_max: Duration::from_millis(200),
            ..ZunOptions::default()
        };
        let rt = ZunRuntime::new(zun.session(), opts).unwrap();
        Some(Fixture { zun, rt })
    }
}

impl Fixture {
    /// Checks that the double holds no container (`why`: what it says otherwise).
    fn assert_no_containers(&self, why: &str) {
        assert!(self.zun.double.containers().is_empty(), "{why}");
    }
}

impl Cleanup for Fixture {
    async fn done(self) {
        self.zun.done().await;
    }
}

fn spec(name: &str) -> InstanceSpec {
    let healthz = Probe::Http {
        path: "/healthz".into(),
    };
    wharf_testkit::spec(name, "example/web:1")
        .env("GREETING", "hi")
        .limits(256, 500)
        .health(healthz, Duration::from_millis(100), Duration::from_secs(10))
        .build()
}

#[tokio::test]
async fn runtime_conformance_on_zun() {
    with(Fixture::new(), async |f| {
        let mut exits = spec("kit-exit");
        exits.command = Some(vec!["sh".into(), "-c".into(), "exit 3".into()]);
        run_all(
            &f.rt,
            &RuntimeCase {
                healthy: spec("kit-web"),
                exits_at_start: Some(exits),
                task: None,
            },
        )
        .await;
        f.assert_no_containers("the kit left containers behind");
    })
    .await;
}

#[tokio::test]
async fn create_sends_resources_labels_and_the_microversion() {
    with(Fixture::new(), async |f| {
        let inst = f.rt.start(&spec("res-web")).await.unwrap();
        let c = &f.zun.double.containers()[0];
        assert_eq!(c.body["cpu"], 0.5);
        assert_eq!(c.body["memory"], 256);
        assert_eq!(c.body["environment"]["GREETING"], "hi");
        assert_eq!(c.body["labels"][label::MANAGED], "true");
        assert_eq!(c.body["exposed_ports"]["8080/tcp"], serde_json::json!({}));
        assert_eq!(inst.endpoint.host, c.addr.to_string());
        assert_eq!(inst.endpoint.port, 8080);
        // Wharf's own bookkeeping labels do not leak into the instance.
        assert_eq!(inst.labels, spec("x").labels);
        for (_, _, version) in f.zun.double.inner.requests.lock().unwrap().iter() {
            assert_eq!(version.as_deref(), Some("container 1.40"));
        }
        // The app answers on the instance endpoint.
        let answer = wharf_testkit::http_get(&inst.endpoint.to_string(), "/", &[])
            .await
            .unwrap();
        assert_eq!(answer.text(), "hello from res-web");
        assert_eq!(
            f.rt.status(&inst.id).await.unwrap(),
            InstanceStatus::Healthy
        );
        let logs: Vec<_> = futures::StreamExt::collect::<Vec<_>>(
            f.rt.logs(&inst.id, LogOptions::default()).await.unwrap(),
        )
        .await;
        assert!(logs
            .iter()
            .any(|l| l.as_ref().unwrap().text.contains("listening on")));
        f.rt.stop(&inst.id, Duration::from_secs(1)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn outages_are_retried_and_refusals_are_not() {
    with(Fixture::new(), async |f| {
        // Two 503s in a row: retried with back-off, then the start goes through.
        f.zun.double.inner.fail_next.store(2, SeqCst);
        let inst = f.rt.start(&spec("retry-web")).await.unwrap();
        assert_eq!(f.zun.double.inner.creates.load(SeqCst), 1);
        // A quota refusal (403) is not retried and says what it is.
        *f.zun.double.inner.quota.lock().unwrap() = Some(1);
        let err = f.rt.start(&spec("retry-web2")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(
            matches!(api_error(&err), Some(ApiError::QuotaExceeded(_))),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        assert_eq!(f.zun.double.inner.creates.load(SeqCst), 2);
        // A name already taken is a conflict.
        *f.zun.double.inner.quota.lock().unwrap() = None;
        let err = f.rt.start(&spec("retry-web")).await.unwrap_err();
        assert!(
            matches!(api_error(&err), Some(ApiError::Conflict(_))),
            "{err:?}"
        );
        // A 500 on create may mean the container was made: not retried (no duplicate).
        f.zun.double.inner.fail_status.store(500, SeqCst);
        f.zun.double.inner.fail_next.store(1, SeqCst);
        let posts = || {
            f.zun
                .double
                .inner
                .requests
                .lock()
                .unwrap()
                .iter()
                .filter(|(m, u, _)| m == "POST" && u.ends_with("/containers"))
                .count()
        };
        let before = posts();
        let err = f.rt.start(&spec("retry-web3")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert_eq!(
            posts(),
            before + 1,
            "a create answered 500 must not be retried"
        );
        f.rt.stop(&inst.id, Duration::from_secs(1)).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_missing_image_is_not_found_and_nothing_is_left_behind() {
    with(Fixture::new(), async |f| {
        let mut s = spec("img-web");
        s.image = "missing/nope:1".into();
        let err = f.rt.start(&s).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(
            matches!(api_error(&err), Some(ApiError::ImageNotFound(_))),
            "{err:?}"
        );
        // The failed container was deleted (Zun deletes asynchronously).
        for _ in 0..100 {
            if f.zun.double.containers().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f.assert_no_containers("failed container leaked");
    })
    .await;
}

#[tokio::test]
async fn list_follows_pages_for_recovery() {
    with(Fixture::new(), async |f| {
        let mut ids = Vec::new();
        for i in 0..5 {
            let mut s = spec(&format!("page-web-{i}"));
            s.labels.insert("wharf.test".into(), "pages".into());
            s.port = 9000 + i;
            ids.push(f.rt.start(&s).await.unwrap());
        }
        let found =
            f.rt.list(&Labels::from([(
                "wharf.test".to_string(),
                "pages".to_string(),
            )]))
            .await
            .unwrap();
        assert_eq!(
            found.len(),
            5,
            "the double pages by 2: list must follow next"
        );
        for i in &ids {
            let f2 = found.iter().find(|x| x.id == i.id).unwrap();
            assert_eq!(f2.endpoint, i.endpoint, "endpoint rebuilt from Zun");
        }
        for i in ids {
            f.rt.stop(&i.id, Duration::from_secs(1)).await.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_zun_is_unavailable_after_retries() {
    // A port nothing listens on.
    let down = async {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", l.local_addr().unwrap())
    };
    with(
        Catalogued::new("container", "zun", down, String::clone),
        async |zun| {
            let rt = ZunRuntime::new(zun.session(), ZunOptions::default()).unwrap();
            let err = rt.start(&spec("down-web")).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
            assert!(err.is_retryable());
        },
    )
    .await;
}

#[tokio::test]
async fn following_logs_ends_when_the_container_is_gone() {
    with(Fixture::new(), async |f| {
        let inst = f.rt.start(&spec("follow-web")).await.unwrap();
        let mut stream =
            f.rt.logs(
                &inst.id,
                LogOptions {
                    follow: true,
                    tail: None,
                },
            )
            .await
            .unwrap();
        let first = futures::StreamExt::next(&mut stream)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.text, "pulled example/web:1");
        let rt = f.rt.clone();
        let id = inst.id.clone();
        let stopper = tokio::spawn(async move { rt.stop(&id, Duration::from_secs(1)).await });
        // The stop writes "stopped" to the log; then the container goes and the stream ends.
        let rest: Vec<String> = futures::StreamExt::collect::<Vec<_>>(stream)
            .await
            .into_iter()
            .map(|l| l.unwrap().text)
            .collect();
        assert!(
            rest.iter().any(|l| l.starts_with("listening on")),
            "{rest:?}"
        );
        stopper.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_local_only_image_is_refused_before_any_request() {
    with(Fixture::new(), async |f| {
        assert_local_only_refused(&f.rt, spec("local-web")).await;
        f.assert_no_containers("a refused start left a container");
    })
    .await;
}
