//! Docker named volumes against the real engine: one project's volume is never
//! another's, volumes made under the old naming scheme are adopted by their own
//! project only, and listing and removing go through the runtime.

mod common;

use std::time::Duration;

use common::*;
use wharf_core::traits::Runtime;
use wharf_core::*;
use wharf_docker::DockerRuntime;

async fn runtime() -> Option<DockerRuntime> {
    if !docker_ready().await {
        return None;
    }
    Some(DockerRuntime::connect().await.expect("connect"))
}

/// A busybox instance of project `project` on `network` that mounts `volume` at
/// `/data` and runs `script`.
fn mounting(
    name: &str,
    project: &str,
    network: &str,
    volume: &str,
    script: &str,
    run: &str,
) -> InstanceSpec {
    let mut spec = busybox_sh(name, script, run);
    spec.labels.insert(label::PROJECT.into(), project.into());
    spec.network = Some(network.into());
    spec.volumes = vec![VolumeMount::new(volume, "/data")];
    spec
}

/// Starts `spec`, waits for its first log line (or 20 s), stops it; returns the lines.
async fn run_once(rt: &DockerRuntime, spec: &InstanceSpec) -> Vec<String> {
    let inst = rt.start(spec).await.expect("start");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while tokio::time::Instant::now() < deadline && lines.is_empty() {
        lines = log_texts(rt, &inst.id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.stop(&inst.id, Duration::ZERO).await.expect("stop");
    lines
}

/// Every Docker volume whose name contains `part`.
async fn volumes_with(part: &str) -> Vec<String> {
    docker_cli(&["volume", "ls", "-q"])
        .await
        .lines()
        .filter(|l| l.contains(part))
        .map(str::to_owned)
        .collect()
}

async fn remove_volumes_and_networks(run: &str) {
    for v in volumes_with(run).await {
        docker_cli(&["volume", "rm", "-f", &v]).await;
    }
    for n in docker_cli(&["network", "ls", "-q", "--filter", &format!("name={run}")])
        .await
        .lines()
    {
        docker_cli(&["network", "rm", n]).await;
    }
}

/// Project `shop` with volume `x-data` and project `shop-x` with volume `data` were
/// both `wharf-shop-x-data` on the engine: one tenant read the other's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_of_one_project_is_never_anothers_namesake() {
    let Some(rt) = runtime().await else { return };
    let run = unique("volx");
    // Networks as the engine names them: `wharf-<project>`.
    let shop = format!("wharf-{run}");
    let shop_x = format!("wharf-{run}-x");
    let secret = format!("secret-of-shop-{run}");
    let writer = mounting(
        &format!("w-{run}"),
        "prj_shop",
        &shop,
        "x-data",
        &format!("echo {secret} > /data/file; echo written; exec sleep 600"),
        &run,
    );
    assert_eq!(run_once(&rt, &writer).await, ["written"]);

    let reader = mounting(
        &format!("r-{run}"),
        "prj_shopx",
        &shop_x,
        "data",
        "cat /data/file 2>/dev/null || echo nothing-here; exec sleep 600",
        &run,
    );
    let seen = run_once(&rt, &reader).await;
    cleanup(&rt, &run).await;
    remove_volumes_and_networks(&run).await;
    assert_eq!(
        seen,
        ["nothing-here"],
        "project shop-x read project shop's volume"
    );
}

/// Makes a volume as the naming before `<scope>.<volume>` did (`<scope>-<volume>`,
/// labelled for `project`) holding `/file` = `text`, from the outside.
async fn legacy_volume(name: &str, project: &str, text: &str) {
    docker_cli(&[
        "volume",
        "create",
        "--label",
        "wharf.managed=true",
        "--label",
        &format!("wharf.project={project}"),
        name,
    ])
    .await;
    let out = tokio::process::Command::new("docker")
        .args([
            "run",
            "--rm",
            "-v",
            &format!("{name}:/data"),
            BUSYBOX,
            "sh",
            "-c",
        ])
        .arg(format!("echo {text} > /data/file"))
        .output()
        .await
        .expect("docker run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A volume made under the old name keeps its data for the project that made it (it
/// is adopted where it is, never copied or deleted), and the project whose new name
/// used to collide with it cannot adopt it: its labels name another project.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_volumes_are_adopted_by_their_own_project_only() {
    let Some(rt) = runtime().await else { return };
    let run = unique("volm");
    let shop = format!("wharf-{run}");
    let shop_x = format!("wharf-{run}-x");
    let old = format!("wharf-{run}-x-data");
    legacy_volume(&old, "prj_shop", "kept-from-before").await;

    let read = "cat /data/file 2>/dev/null || echo nothing-here; exec sleep 600";
    let intruder = mounting(
        &format!("i-{run}"),
        "prj_shopx",
        &shop_x,
        "data",
        read,
        &run,
    );
    let intruder_saw = run_once(&rt, &intruder).await;
    let owner = mounting(&format!("o-{run}"), "prj_shop", &shop, "x-data", read, &run);
    let owner_saw = run_once(&rt, &owner).await;

    let shop_wants = [VolumeRef {
        project: ProjectId::from("prj_shop"),
        scope: Some(shop.clone()),
        name: "x-data".into(),
    }];
    let listed = rt
        .volumes(&ProjectId::from("prj_shop"), &shop_wants)
        .await
        .expect("list");
    let listed_x = rt
        .volumes(&ProjectId::from("prj_shopx"), &[])
        .await
        .expect("list");
    let left = volumes_with(&run).await;
    cleanup(&rt, &run).await;
    remove_volumes_and_networks(&run).await;

    assert_eq!(
        intruder_saw,
        ["nothing-here"],
        "another project adopted the old volume"
    );
    assert_eq!(
        owner_saw,
        ["kept-from-before"],
        "the old volume's data was not kept"
    );
    assert!(left.contains(&old), "the old volume was deleted: {left:?}");
    assert_eq!(
        listed
            .iter()
            .map(|v| (&v.volume, v.runtime_name.as_str()))
            .collect::<Vec<_>>(),
        [(&shop_wants[0], old.as_str())]
    );
    assert_eq!(
        listed_x
            .iter()
            .map(|v| (v.volume.name.as_str(), v.runtime_name.clone()))
            .collect::<Vec<_>>(),
        [("data", format!("{shop_x}.data"))],
        "the intruder's own volume is a new one"
    );
}

/// Removing: only the project's own volume, never while a container uses it, and
/// then the data is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_volume_checks_the_project_and_use() {
    let Some(rt) = runtime().await else { return };
    let run = unique("volr");
    let net = format!("wharf-{run}");
    let writer = mounting(
        &format!("w-{run}"),
        "prj_a",
        &net,
        "data",
        "echo v1 > /data/file; echo written; exec sleep 600",
        &run,
    );
    let inst = rt.start(&writer).await.expect("start");
    let mine = VolumeRef {
        project: ProjectId::from("prj_a"),
        scope: Some(net.clone()),
        name: "data".into(),
    };
    let theirs = VolumeRef {
        project: ProjectId::from("prj_b"),
        ..mine.clone()
    };
    let in_use = rt.remove_volume(&mine).await.unwrap_err();
    let not_theirs = rt.remove_volume(&theirs).await.unwrap_err();
    rt.stop(&inst.id, Duration::ZERO).await.expect("stop");
    let removed = rt.remove_volume(&mine).await;
    let left = volumes_with(&run).await;
    let again = rt.remove_volume(&mine).await.unwrap_err();
    cleanup(&rt, &run).await;
    remove_volumes_and_networks(&run).await;

    assert_eq!(in_use.kind(), ErrorKind::Conflict, "{in_use}");
    assert_eq!(not_theirs.kind(), ErrorKind::NotFound, "{not_theirs}");
    removed.expect("remove");
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(again.kind(), ErrorKind::NotFound, "{again}");
}
