//! Project volumes on Cinder, mounted by the Nova and Zun runtimes: the Nova, Zun
//! and Cinder doubles, found through the real Keystone's catalog.

mod support;

use std::time::Duration;

use support::cinder_double::{CinderDouble, Volume};
use support::nova_double::{NovaDouble, FLAVOR, VM_IMAGE};
use support::zun_double::ZunDouble;
use support::{with, Catalogued, Cleanup};
use wharf_core::{label, ErrorKind, InstanceSpec, ProjectId, Runtime, VolumeMount, VolumeRef};
use wharf_openstack::{NovaOptions, NovaRuntime, ZunOptions, ZunRuntime};

/// A compute double (Nova or Zun) and the Cinder double it attaches through, in one
/// region of the real Keystone's catalog.
struct Fixture<D> {
    compute: Catalogued<D>,
    cinder: CinderDouble,
}

impl<D> Fixture<D> {
    /// Registers `compute` and a Cinder double beside it (under `cinder_path`, what
    /// follows the double's `/v3` in the catalog).
    async fn new(
        service_type: &str,
        name: &str,
        compute: impl std::future::Future<Output = D>,
        url: impl Fn(&D) -> String,
        cinder_path: &str,
    ) -> Option<Self> {
        let mut compute = Catalogued::new(service_type, name, compute, url).await?;
        let cinder = CinderDouble::start().await;
        let url = format!("{}{cinder_path}", cinder.url);
        compute
            .admin
            .register_also(&mut compute.reg, "block-storage", "cinder", &url)
            .await;
        Some(Fixture { compute, cinder })
    }

    /// The only volume Cinder holds.
    fn the_volume(&self) -> Volume {
        let all = self.cinder.volumes();
        assert_eq!(all.len(), 1, "{all:?}");
        all.into_iter().next().unwrap()
    }

    /// Waits until the volume `id` is `available` (panics after 2 s).
    async fn available(&self, id: &str) {
        for _ in 0..100 {
            if self.cinder.volume(id).status == "available" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("volume {id} is still {}", self.cinder.volume(id).status);
    }

    /// Waits until the volume `id` is gone from Cinder.
    async fn gone(&self, id: &str) -> bool {
        for _ in 0..100 {
            if self.cinder.volumes().iter().all(|v| v.id != id) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl<D> Cleanup for Fixture<D> {
    async fn done(self) {
        self.compute.done().await;
    }
}

impl Fixture<NovaDouble> {
    async fn nova() -> Option<Self> {
        // The catalog URL as clouds list it, with the project id for Keystone to fill.
        let f = Self::new(
            "compute",
            "nova",
            NovaDouble::start(),
            |d| d.url.clone(),
            "/$(project_id)s",
        )
        .await?;
        f.compute.double.use_cinder(&f.cinder);
        Some(f)
    }
    fn runtime(&self) -> NovaRuntime {
        let mut opts = NovaOptions::new(VM_IMAGE, FLAVOR);
        opts.state_timeout = Duration::from_secs(20);
        opts.poll_min = Duration::from_millis(20);
        opts.poll_max = Duration::from_millis(200);
        NovaRuntime::new(self.compute.session(), opts).unwrap()
    }
}

impl Fixture<ZunDouble> {
    async fn zun() -> Option<Self> {
        // A catalog URL without the project id (the client adds the token's).
        let f = Self::new(
            "container",
            "zun",
            ZunDouble::start(),
            |d| d.url.clone(),
            "",
        )
        .await?;
        f.compute.double.use_cinder(&f.cinder);
        Some(f)
    }
    fn runtime(&self) -> ZunRuntime {
        let opts = ZunOptions {
            state_timeout: Duration::from_secs(20),
            poll_min: Duration::from_millis(20),
            poll_max: Duration::from_millis(200),
            ..ZunOptions::default()
        };
        ZunRuntime::new(self.compute.session(), opts).unwrap()
    }
}

/// Whether every server is deleted (Nova shows one as DELETED for a moment).
async fn all_deleted(nova: &NovaDouble) -> bool {
    for _ in 0..100 {
        if nova.servers().iter().all(|s| s.status == "DELETED") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// An instance of project `project` mounting its volume `data` (1.5 GiB asked).
fn spec(name: &str, project: &str) -> InstanceSpec {
    let mut s = wharf_testkit::spec(name, "registry.example.com/shop/web:42")
        .label(label::MANAGED, "true")
        .label(label::PROJECT, project)
        .build();
    s.network = Some(format!("wharf-{project}"));
    s.volumes = vec![VolumeMount::new("data", "/var/lib/app").with_size("1536Mi")];
    s
}

fn data_of(project: &str) -> VolumeRef {
    VolumeRef {
        project: ProjectId(project.into()),
        scope: Some(format!("wharf-{project}")),
        name: "data".into(),
    }
}

/// What every runtime owes about a project's volume, whatever attaches it: listed
/// for its project only, refused for removal while `in_use`, NotFound for another
/// project.
async fn assert_listed_and_guarded(rt: &dyn Runtime, volume_id: &str) {
    let listed = rt.volumes(&ProjectId("shop".into()), &[]).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].volume, data_of("shop"));
    assert_eq!(listed[0].runtime_name, volume_id);
    assert_eq!(listed[0].size_bytes, Some(2 << 30));
    let err = rt.remove_volume(&data_of("shop")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.message().contains("data"), "{err}");
    let other = rt.volumes(&ProjectId("other".into()), &[]).await.unwrap();
    assert!(other.is_empty(), "{other:?}");
    let mut namesake = data_of("other");
    namesake.scope = Some("wharf-shop".into());
    let err = rt.remove_volume(&namesake).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn a_nova_volume_outlives_its_servers_and_goes_only_when_removed() {
    with(Fixture::nova(), async |f| {
        let rt = f.runtime();
        let first = rt.start(&spec("web-a", "shop")).await.unwrap();

        // Made on the first start, of the size rounded up, marked as the project's.
        let v = f.the_volume();
        assert_eq!((v.size, v.name.as_str()), (2, "wharf-shop.data"));
        assert_eq!(v.metadata[label::PROJECT], "shop");
        assert_eq!(v.metadata[label::VOLUME], "data");
        assert_eq!(v.metadata[label::VOLUME_SCOPE], "wharf-shop");
        assert_eq!(v.status, "in-use");
        assert_eq!(v.attachments[0].0.as_deref(), Some(first.id.as_str()));
        let server = f.compute.double.servers().remove(0);
        assert_eq!(server.volumes, std::slice::from_ref(&v.id));
        let bind = "/var/lib/wharf/volumes/data:/var/lib/app";
        assert!(
            server.argv.windows(2).any(|w| w == ["-v", bind]),
            "{:?}",
            server.argv
        );

        // One writer: a second server cannot take the volume while the first has it.
        let err = rt.start(&spec("web-b", "shop")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.message().contains("volume data"), "{err}");
        assert_eq!(f.compute.double.servers().len(), 1, "no second server");

        assert_listed_and_guarded(&rt, &v.id).await;

        // Detached, not deleted, by stop; the next server gets the same volume.
        rt.stop(&first.id, Duration::from_secs(1)).await.unwrap();
        let after = f.cinder.volume(&v.id);
        assert_eq!(after.status, "available");
        assert!(after.attachments.is_empty());
        let second = rt.start(&spec("web-b", "shop")).await.unwrap();
        let again = f.the_volume();
        assert_eq!(
            (again.id.as_str(), again.status.as_str()),
            (v.id.as_str(), "in-use")
        );
        assert_eq!(again.attachments[0].0.as_deref(), Some(second.id.as_str()));
        rt.stop(&second.id, Duration::from_secs(1)).await.unwrap();

        // Taken by another server between the check and the attach: a Conflict, and
        // the half-made server is removed.
        *f.compute.double.state.race_for_volume.lock().unwrap() = Some(v.id.clone());
        let err = rt.start(&spec("web-c", "shop")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.message().contains("racing-server"), "{err}");
        assert!(
            all_deleted(&f.compute.double).await,
            "the server was left behind"
        );
        f.cinder.state.detach(&v.id);
        f.available(&v.id).await;

        // Removed only when asked, once available; then it is gone for good.
        rt.remove_volume(&data_of("shop")).await.unwrap();
        assert!(f.gone(&v.id).await, "the volume was not deleted");
        assert!(rt
            .volumes(&ProjectId("shop".into()), &[])
            .await
            .unwrap()
            .is_empty());
        let err = rt.remove_volume(&data_of("shop")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    })
    .await;
}

#[tokio::test]
async fn another_project_never_gets_a_namesake_volume() {
    with(Fixture::nova(), async |f| {
        let rt = f.runtime();
        let shop = rt.start(&spec("web-a", "shop")).await.unwrap();
        // Same scope and volume name, another project: a volume of its own.
        let mut other = spec("web-o", "other");
        other.network = Some("wharf-shop".into());
        let o = rt.start(&other).await.unwrap();
        let all = f.cinder.volumes();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all.iter().all(|v| v.status == "in-use"));
        rt.stop(&shop.id, Duration::from_secs(1)).await.unwrap();
        rt.stop(&o.id, Duration::from_secs(1)).await.unwrap();
        rt.remove_volume(&data_of("shop")).await.unwrap();
        let left = rt.volumes(&ProjectId("other".into()), &[]).await.unwrap();
        assert_eq!(left.len(), 1, "the other project's volume stays: {left:?}");
    })
    .await;
}

#[tokio::test]
async fn a_zun_volume_is_mounted_by_id_and_outlives_its_containers() {
    with(Fixture::zun(), async |f| {
        let rt = f.runtime();
        let first = rt.start(&spec("web-a", "shop")).await.unwrap();
        let v = f.the_volume();
        assert_eq!(v.status, "in-use");
        let c = f.compute.double.containers().remove(0);
        assert_eq!(c.body["mounts"][0]["source"], v.id.as_str());
        assert_eq!(c.body["mounts"][0]["destination"], "/var/lib/app");
        // Wharf's bookkeeping label is not one of the instance's labels.
        assert!(
            first.labels.keys().all(|k| !k.contains("cinder")),
            "{first:?}"
        );

        let err = rt.start(&spec("web-b", "shop")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert_listed_and_guarded(&rt, &v.id).await;

        rt.stop(&first.id, Duration::from_secs(1)).await.unwrap();
        assert_eq!(f.cinder.volume(&v.id).status, "available");
        let second = rt.start(&spec("web-b", "shop")).await.unwrap();
        assert_eq!(f.the_volume().id, v.id, "the same volume, re-mounted");
        let c = f.compute.double.containers().remove(0);
        assert_eq!(c.body["mounts"][0]["source"], v.id.as_str());
        rt.stop(&second.id, Duration::from_secs(1)).await.unwrap();

        // Taken by another host between the check and the create: still a Conflict.
        *f.compute.double.inner.race_for_volume.lock().unwrap() = Some(v.id.clone());
        let err = rt.start(&spec("web-c", "shop")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.message().contains("racing-host"), "{err}");
        assert!(f.compute.double.containers().is_empty());
        f.cinder.state.detach(&v.id);
        f.available(&v.id).await;

        rt.remove_volume(&data_of("shop")).await.unwrap();
        assert!(f.gone(&v.id).await, "the volume was not deleted");
    })
    .await;
}
