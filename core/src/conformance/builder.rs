//! The [`Builder`] conformance kit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::error::ErrorKind;
use crate::model::*;
use crate::traits::{BuildRequest, Builder, LogSink};

/// One build the kit asks for.
#[derive(Debug, Clone)]
pub struct BuildCase {
    /// The source folder.
    pub source_dir: PathBuf,
    /// The plan.
    pub plan: BuildPlan,
    /// Labels (the kit adds its own).
    pub labels: Labels,
}

fn request(
    case: &BuildCase,
    lines: &Arc<Mutex<Vec<LogLine>>>,
    cancel: CancellationToken,
) -> BuildRequest {
    let run = super::unique("b");
    let mut labels = case.labels.clone();
    labels.insert("wharf.conformance".into(), run.clone());
    let sink_lines = lines.clone();
    BuildRequest {
        source_dir: case.source_dir.clone(),
        plan: case.plan.clone(),
        tag: format!("wharf-conformance/{run}:latest"),
        labels,
        logs: LogSink::from_fn(move |l| {
            sink_lines.lock().unwrap_or_else(|p| p.into_inner()).push(l)
        }),
        cancel,
    }
}

/// A good build returns an artifact and streams build output.
pub async fn builds(builder: &dyn Builder, ok: &BuildCase) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let art = builder
        .build(request(ok, &lines, CancellationToken::new()))
        .await
        .expect("build of the good case failed");
    assert!(!art.image.is_empty(), "artifact has no image");
    assert!(
        !lines.lock().unwrap().is_empty(),
        "the build streamed no log lines"
    );
}

/// The same source and plan built twice give the same digest (when digests are
/// reported).
pub async fn rebuild_is_stable(builder: &dyn Builder, ok: &BuildCase) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let a = builder
        .build(request(ok, &lines, CancellationToken::new()))
        .await
        .expect("build 1");
    let b = builder
        .build(request(ok, &lines, CancellationToken::new()))
        .await
        .expect("build 2");
    if let (Some(da), Some(db)) = (&a.digest, &b.digest) {
        assert_eq!(da, db, "an unchanged rebuild changed the digest");
    }
}

/// A failing build is `BuildFailed` and says why in its output.
pub async fn build_failure(builder: &dyn Builder, failing: &BuildCase) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let err = builder
        .build(request(failing, &lines, CancellationToken::new()))
        .await
        .expect_err("the failing case must fail");
    assert_eq!(err.kind(), ErrorKind::BuildFailed, "{err}");
    assert!(!err.message().is_empty(), "a build failure must say why");
}

/// A build whose token is already cancelled ends `Cancelled` and produces nothing.
pub async fn cancelled_build(builder: &dyn Builder, ok: &BuildCase) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = builder
        .build(request(ok, &lines, cancel))
        .await
        .expect_err("a cancelled build must not succeed");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
}

/// Every check above.
pub async fn run_all(builder: &dyn Builder, ok: &BuildCase, failing: &BuildCase) {
    builds(builder, ok).await;
    rebuild_is_stable(builder, ok).await;
    build_failure(builder, failing).await;
    cancelled_build(builder, ok).await;
}
