//! The [`Builder`] conformance kit.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::error::{ErrorKind, Result};
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

/// Builds `case` (with `cancel` as its token), under a tag and labels of its own run;
/// returns the result and the log lines the build streamed.
async fn build(
    builder: &dyn Builder,
    case: &BuildCase,
    cancel: CancellationToken,
) -> (Result<Artifact>, Vec<LogLine>) {
    let run = super::unique("b");
    let mut labels = case.labels.clone();
    labels.insert("wharf.conformance".into(), run.clone());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink_lines = lines.clone();
    let result = builder
        .build(BuildRequest {
            source_dir: case.source_dir.clone(),
            plan: case.plan.clone(),
            tag: format!("wharf-conformance/{run}:latest"),
            labels,
            logs: LogSink::from_fn(move |l| {
                sink_lines.lock().unwrap_or_else(|p| p.into_inner()).push(l)
            }),
            cancel,
        })
        .await;
    let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
    (result, lines)
}

/// A good build returns an artifact and streams build output.
pub async fn builds(builder: &dyn Builder, ok: &BuildCase) {
    let (art, lines) = build(builder, ok, CancellationToken::new()).await;
    let art = art.expect("build of the good case failed");
    assert!(!art.image.is_empty(), "artifact has no image");
    assert!(!lines.is_empty(), "the build streamed no log lines");
}

/// The same source and plan built twice give the same digest (when digests are
/// reported).
pub async fn rebuild_is_stable(builder: &dyn Builder, ok: &BuildCase) {
    let (a, _) = build(builder, ok, CancellationToken::new()).await;
    let a = a.expect("build 1");
    let (b, _) = build(builder, ok, CancellationToken::new()).await;
    let b = b.expect("build 2");
    if let (Some(da), Some(db)) = (&a.digest, &b.digest) {
        assert_eq!(da, db, "an unchanged rebuild changed the digest");
    }
}

/// A failing build is `BuildFailed` and says why in its output.
pub async fn build_failure(builder: &dyn Builder, failing: &BuildCase) {
    let (result, _) = build(builder, failing, CancellationToken::new()).await;
    let err = result.expect_err("the failing case must fail");
    assert_eq!(err.kind(), ErrorKind::BuildFailed, "{err}");
    assert!(!err.message().is_empty(), "a build failure must say why");
}

/// A build whose token is already cancelled ends `Cancelled` and produces nothing.
pub async fn cancelled_build(builder: &dyn Builder, ok: &BuildCase) {
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (result, _) = build(builder, ok, cancel).await;
    let err = result.expect_err("a cancelled build must not succeed");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
}

/// Every check above.
pub async fn run_all(builder: &dyn Builder, ok: &BuildCase, failing: &BuildCase) {
    builds(builder, ok).await;
    rebuild_is_stable(builder, ok).await;
    build_failure(builder, failing).await;
    cancelled_build(builder, ok).await;
}
