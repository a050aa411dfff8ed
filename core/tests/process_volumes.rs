//! Volumes of host-process apps: a folder per volume that outlives its instances,
//! found by the app in `WHARF_VOLUME_<NAME>`, listed per project, and deleted only by
//! `remove_volume` once no app mounts it. Needs `python3`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_core::process::{kill_recorded, HostBuilder, HostRuntime, HostRuntimeConfig};
use wharf_core::*;
use wharf_testkit::python_present;

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        kill_recorded(&self.0);
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python-app")
}

/// An instance of `image` in project `prj_vol`, network `net-a`, mounting volume
/// `data`, that appends `line` to `log` in it before serving.
fn spec(image: &str, line: &str) -> InstanceSpec {
    let mut s = wharf_testkit::spec("web", image)
        .port(8000)
        .health(
            Probe::Http { path: "/".into() },
            Duration::from_millis(100),
            Duration::from_secs(20),
        )
        .label(label::PROJECT, "prj_vol")
        .build();
    s.network = Some("net-a".into());
    s.volumes = vec![VolumeMount {
        name: "data".into(),
        path: "/data".into(),
        size: None,
    }];
    s.command = Some(vec![
        "sh".into(),
        "-c".into(),
        format!("echo {line} >> \"$WHARF_VOLUME_DATA/log\" && exec python3 app.py"),
    ]);
    s
}

async fn healthy(rt: &HostRuntime, spec: &InstanceSpec) -> Instance {
    let inst = rt.start(spec).await.unwrap();
    for _ in 0..200 {
        if rt.status(&inst.id).await.unwrap() == InstanceStatus::Healthy {
            return inst;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("instance never became healthy");
}

#[tokio::test]
async fn a_volume_folder_outlives_its_instances_until_removed() {
    if !python_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _cleanup = Cleanup(state.clone());
    let mut plan = detect::detect(&fixture()).unwrap();
    plan.build.clear();
    let art = HostBuilder::new(dir.path().join("builds"))
        .build(BuildRequest {
            source_dir: fixture(),
            plan,
            tag: "wharf/vol-web:test".into(),
            labels: Labels::new(),
            logs: LogSink::discard(),
            cancel: CancellationToken::new(),
        })
        .await
        .unwrap();
    let rt = HostRuntime::open(HostRuntimeConfig::new(&state))
        .await
        .unwrap();
    let project = ProjectId("prj_vol".into());
    let volume = VolumeRef {
        project: project.clone(),
        scope: Some("net-a".into()),
        name: "data".into(),
    };

    let first = healthy(&rt, &spec(&art.image, "one")).await;
    rt.stop(&first.id, Duration::from_secs(2)).await.unwrap();
    let second = healthy(&rt, &spec(&art.image, "two")).await;
    let listed = rt.volumes(&project, &[]).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].volume, volume);
    let folder = PathBuf::from(&listed[0].runtime_name);
    assert_eq!(
        std::fs::read_to_string(folder.join("log")).unwrap(),
        "one\ntwo\n",
        "the second instance sees what the first wrote"
    );
    assert_eq!(listed[0].size_bytes, Some(8));
    assert!(rt
        .volumes(&ProjectId("prj_other".into()), &[])
        .await
        .unwrap()
        .is_empty());

    // Not while an app mounts it; a runtime restart keeps it.
    let err = rt.remove_volume(&volume).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    rt.stop(&second.id, Duration::from_secs(2)).await.unwrap();
    drop(rt);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rt = HostRuntime::open(HostRuntimeConfig::new(&state))
        .await
        .unwrap();
    assert!(folder.join("log").is_file());

    rt.remove_volume(&volume).await.unwrap();
    assert!(!folder.exists());
    let err = rt.remove_volume(&volume).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}
