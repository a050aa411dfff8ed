//! The in-memory builder.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{service_name, Faults};
use crate::error::{Error, Result};
use crate::model::{Artifact, LogStream};
use crate::traits::{BuildRequest, Builder};

/// A [`Builder`] that "builds" by hashing the source folder and the plan: the artifact's
/// digest changes exactly when either does. Counts its builds, so tests can check a
/// rollback did not rebuild.
#[derive(Debug, Default)]
pub struct MemoryBuilder {
    faults: Faults,
    builds: AtomicUsize,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

impl MemoryBuilder {
    /// A builder without faults.
    pub fn new() -> Self {
        Self::default()
    }
    /// A builder reading faults from `faults`.
    pub fn with_faults(faults: Faults) -> Self {
        MemoryBuilder {
            faults,
            ..Default::default()
        }
    }
    /// How many builds were started.
    pub fn builds(&self) -> usize {
        self.builds.load(Ordering::SeqCst)
    }
    /// The most builds that ever ran at the same time.
    pub fn max_concurrent(&self) -> usize {
        self.max_active.load(Ordering::SeqCst)
    }
}

/// Counts a build as active while alive.
struct Active<'a>(&'a MemoryBuilder);

impl<'a> Active<'a> {
    fn enter(b: &'a MemoryBuilder) -> Self {
        let now = b.active.fetch_add(1, Ordering::SeqCst) + 1;
        b.max_active.fetch_max(now, Ordering::SeqCst);
        Active(b)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn hash_dir(hasher: &mut Sha256, root: &Path, dir: &Path) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        hasher.update(rel.to_string_lossy().as_bytes());
        let ft = e.file_type()?;
        if ft.is_dir() {
            hash_dir(hasher, root, &path)?;
        } else if ft.is_file() {
            hasher.update(std::fs::read(&path)?);
        }
    }
    Ok(())
}

#[async_trait]
impl Builder for MemoryBuilder {
    async fn build(&self, req: BuildRequest) -> Result<Artifact> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        let _active = Active::enter(self);
        let faults = self.faults.get(service_name(&req.labels));
        let log = |t: String| req.logs.send(LogStream::Build, t);
        log(format!("building {} ({} project)", req.tag, req.plan.kind));
        log(format!("FROM {}", req.plan.base_image));
        for cmd in req.plan.install.iter().chain(&req.plan.build) {
            log(format!("RUN {cmd}"));
        }
        for i in 0..faults.build_output_lines {
            log(format!("output line {i}"));
        }
        if let (Some(delay), true) = (faults.build_delay, faults.build_ignores_cancel) {
            tokio::time::sleep(delay).await;
        } else if let Some(delay) = faults.build_delay {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = req.cancel.cancelled() => {
                    log("build cancelled".into());
                    return Err(Error::cancelled("build cancelled"));
                }
            }
        }
        if req.cancel.is_cancelled() {
            return Err(Error::cancelled("build cancelled"));
        }
        if faults.fail_build {
            log("error: injected build failure".into());
            return Err(Error::build_failed(
                "injected build failure: RUN step exited with code 1",
            ));
        }
        let dir = req.source_dir.clone();
        let plan = serde_json::to_vec(&req.plan)?;
        let digest = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut h = Sha256::new();
            h.update(&plan);
            if dir.exists() {
                hash_dir(&mut h, &dir, &dir)?;
            }
            let d = h.finalize();
            Ok(crate::fetch::hex(&d))
        })
        .await
        .map_err(|e| Error::internal(format!("build task failed: {e}")))??;
        log(format!("built {} sha256:{}", req.tag, &digest[..12]));
        Ok(Artifact {
            image: req.tag,
            digest: Some(format!("sha256:{digest}")),
            local_only: false,
        })
    }
}
