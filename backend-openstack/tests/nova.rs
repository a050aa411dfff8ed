//! The Nova runtime against the Nova double, found through the real Keystone's catalog.

mod support;

use std::time::Duration;

use support::nova_double::{NovaDouble, FLAVOR, VM_IMAGE};
use support::{assert_local_only_refused, with, Catalogued};
use wharf_core::conformance::runtime::{run_all, RuntimeCase};
use wharf_core::{label, ErrorKind, InstanceSpec, InstanceStatus, LogOptions, Probe, Runtime};
use wharf_openstack::{api_error, ApiError, NovaOptions, NovaRuntime};

type Fixture = Catalogued<NovaDouble>;

impl Fixture {
    async fn start() -> Option<Self> {
        Catalogued::new("compute", "nova", NovaDouble::start(), |d| d.url.clone()).await
    }
    fn runtime(&self, image: &str) -> NovaRuntime {
        let mut opts = NovaOptions::new(image, FLAVOR);
        opts.state_timeout = Duration::from_secs(20);
        opts.poll_min = Duration::from_millis(20);
        opts.poll_max = Duration::from_millis(200);
        NovaRuntime::new(self.session(), opts).unwrap()
    }
}

fn spec(name: &str) -> InstanceSpec {
    wharf_testkit::spec(name, "registry.example.com/shop/web:42")
        .env("GREETING", "hi there")
        .limits(512, 1500)
        .health(
            Probe::Tcp,
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
        .build()
}

/// Nova shows a deleted server as DELETED for a moment before it is gone.
async fn all_gone(nova: &NovaDouble) -> bool {
    for _ in 0..100 {
        if nova.servers().iter().all(|s| s.status == "DELETED") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn runtime_conformance_on_nova() {
    with(Fixture::start(), async |f| {
        // A VM stays ACTIVE when its container exits: no exit-at-start case on Nova.
        run_all(
            &f.runtime(VM_IMAGE),
            &RuntimeCase {
                healthy: spec("kit-vm"),
                exits_at_start: None,
                task: None,
            },
        )
        .await;
        assert!(all_gone(&f.double).await, "the kit left servers behind");
    })
    .await;
}

#[tokio::test]
async fn the_server_runs_the_container_through_cloud_init() {
    with(Fixture::start(), async |f| {
        let rt = f.runtime(VM_IMAGE);
        let inst = rt.start(&spec("ci-web")).await.unwrap();
        let s = f.double.servers().remove(0);
        assert_eq!(s.body["flavorRef"], FLAVOR);
        assert_eq!(s.body["metadata"][label::MANAGED], "true");
        assert_eq!(s.argv[..3], ["docker", "run", "-d"]);
        assert!(s.argv.windows(2).any(|w| w == ["-p", "8080:8080"]));
        assert!(s.argv.windows(2).any(|w| w == ["--memory", "512m"]));
        assert!(s.argv.windows(2).any(|w| w == ["--cpus", "1.5"]));
        assert_eq!(s.argv.last().unwrap(), "registry.example.com/shop/web:42");
        assert_eq!(s.env_file, "GREETING=hi there\n");
        assert_eq!(inst.endpoint.host, s.addr.to_string());
        assert_eq!(rt.status(&inst.id).await.unwrap(), InstanceStatus::Healthy);
        let lines: Vec<_> = futures::StreamExt::collect::<Vec<_>>(
            rt.logs(
                &inst.id,
                LogOptions {
                    follow: false,
                    tail: Some(2),
                },
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(lines.len(), 2);
        assert!(lines[1]
            .as_ref()
            .unwrap()
            .text
            .contains("listening on 8080"));
        rt.stop(&inst.id, Duration::from_secs(1)).await.unwrap();
        assert!(all_gone(&f.double).await);
    })
    .await;
}

#[tokio::test]
async fn refusals_are_specific_errors() {
    with(Fixture::start(), async |f| {
        let err = f
            .runtime("no-such-image")
            .start(&spec("img-web"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert!(
            matches!(api_error(&err), Some(ApiError::ImageNotFound(_))),
            "{err:?}"
        );
        *f.double.state.quota.lock().unwrap() = Some(0);
        let err = f
            .runtime(VM_IMAGE)
            .start(&spec("quota-web"))
            .await
            .unwrap_err();
        assert!(
            matches!(api_error(&err), Some(ApiError::QuotaExceeded(_))),
            "{err:?}"
        );
        assert!(f.double.servers().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_local_only_image_is_refused_before_any_request() {
    with(Fixture::start(), async |f| {
        assert_local_only_refused(&f.runtime(VM_IMAGE), spec("local-web")).await;
        assert!(f.double.servers().is_empty());
    })
    .await;
}
