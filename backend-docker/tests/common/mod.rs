//! Helpers shared by the tests that run against the real Docker engine.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use wharf_core::detect::ImageMap;
use wharf_core::traits::{LogOptions, Runtime};
use wharf_core::*;
pub use wharf_testkit::{require, unique};

/// The tiny image scripts/base-images makes.
pub const BUSYBOX: &str = "wharf-local/busybox:1";
/// The Debian image with python3 and nodejs scripts/base-images makes.
pub const DEBIAN: &str = "wharf-local/debian-runtimes:bookworm";
/// A label on everything the tests create, to find leftovers.
pub const TEST_LABEL: &str = "wharf.test";

/// Whether the tests run: the engine answers and the base images exist. Skips (or,
/// with WHARF_REQUIRE=docker, fails) otherwise.
pub async fn docker_ready() -> bool {
    let probe = match wharf_docker::probe_engine().await {
        Err(e) => Err(e),
        Ok(()) => missing_images().await,
    };
    require("docker", probe)
}

async fn missing_images() -> Result<(), String> {
    for image in [BUSYBOX, DEBIAN] {
        let out = tokio::process::Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .output()
            .await
            .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the base image {image} is missing: run scripts/base-images"
            ));
        }
    }
    Ok(())
}

/// The image map the tests build with.
pub fn images() -> ImageMap {
    ImageMap::new()
        .with("python", DEBIAN)
        .with("node", DEBIAN)
        .with("busybox", BUSYBOX)
}

/// Labels every test resource carries.
pub fn labels(run: &str) -> Labels {
    BTreeMap::from([
        (label::MANAGED.to_string(), "true".to_string()),
        (TEST_LABEL.to_string(), run.to_string()),
    ])
}

/// The command that runs `script` with the image's `sh`.
pub fn sh(script: &str) -> Option<Vec<String>> {
    Some(vec!["sh".into(), "-c".into(), script.into()])
}

/// A busybox instance that runs the shell `script`; it serves nothing, so it has no
/// health probe.
pub fn busybox_sh(name: &str, script: &str, run: &str) -> InstanceSpec {
    let mut spec = busybox_site(name, "", run);
    spec.health_check.probe = Probe::None;
    spec.command = sh(script);
    spec
}

/// A busybox instance serving `body` over HTTP on port 8080.
pub fn busybox_site(name: &str, body: &str, run: &str) -> InstanceSpec {
    let serve = format!(
        "mkdir -p /www && echo '{body}' > /www/index.html && echo serving && exec httpd -f -p 8080 -h /www"
    );
    wharf_testkit::spec(name, BUSYBOX)
        .command(["sh", "-c", &serve])
        .health_timeout(Duration::from_secs(30))
        .labels(labels(run))
        .build()
}

/// Every line `id` has logged so far.
pub async fn log_lines(rt: &dyn Runtime, id: &InstanceId) -> Vec<LogLine> {
    let lines = rt.logs(id, LogOptions::default()).await.expect("logs");
    lines.map(|l| l.expect("line")).collect().await
}

/// The text of every line `id` has logged so far.
pub async fn log_texts(rt: &dyn Runtime, id: &InstanceId) -> Vec<String> {
    log_lines(rt, id)
        .await
        .into_iter()
        .map(|l| l.text)
        .collect()
}

/// Polls `status` until `pred` holds or `timeout` passes; returns the last status.
pub async fn wait_status(
    rt: &dyn Runtime,
    id: &InstanceId,
    timeout: Duration,
    pred: impl Fn(&InstanceStatus) -> bool,
) -> InstanceStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let st = rt.status(id).await.expect("status");
        if pred(&st) || tokio::time::Instant::now() >= deadline {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One plain HTTP/1.0 GET on 127.0.0.1: (status, body).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let a = wharf_testkit::http_get(&format!("127.0.0.1:{port}"), path, &[]).await?;
    Ok((a.status, a.text()))
}

/// Waits up to `timeout` for `inst` to become healthy, which it must (not exit), then
/// GETs `/` from it: (status, body).
pub async fn get_when_healthy(
    rt: &dyn Runtime,
    inst: &Instance,
    timeout: Duration,
) -> (u16, String) {
    let st = wait_status(rt, &inst.id, timeout, |s| {
        matches!(s, InstanceStatus::Healthy | InstanceStatus::Exited { .. })
    })
    .await;
    assert_eq!(st, InstanceStatus::Healthy);
    http_get(inst.endpoint.port, "/").await.expect("GET /")
}

/// Stops every container left with the test label `run` (cleanup after a failure).
pub async fn cleanup(rt: &dyn Runtime, run: &str) {
    let mut l = Labels::new();
    l.insert(TEST_LABEL.into(), run.into());
    if let Ok(list) = rt.list(&l).await {
        for i in list {
            let _ = rt.stop(&i.id, Duration::ZERO).await;
        }
    }
}

/// Runs the docker CLI, returning stdout (for checks from the outside).
pub async fn docker_cli(args: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .expect("run docker");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
