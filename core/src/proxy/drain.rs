//! Counting requests in flight per upstream, and a runtime wrapper that waits for an
//! instance's requests to finish before stopping it.

use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::Notify;

use super::ProxyRouter;
use crate::error::Result;
use crate::model::{
    Endpoint, Instance, InstanceId, InstanceSpec, InstanceStatus, Labels, LogLine, ProjectId,
    VolumeInfo, VolumeRef,
};
use crate::traits::{DynRuntime, LogOptions, Runtime};

/// Requests in flight per upstream endpoint.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    counts: Mutex<HashMap<Endpoint, usize>>,
    changed: Notify,
}

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>, e: &Endpoint) -> InFlightGuard {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(e.clone())
            .or_default() += 1;
        InFlightGuard {
            owner: self.clone(),
            endpoint: e.clone(),
        }
    }

    pub(crate) fn count(&self, e: &Endpoint) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(e)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until no request to `e` is in flight, or `timeout`; true if drained.
    pub(crate) async fn drained(&self, e: &Endpoint, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.changed.notified();
                if self.count(e) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

/// One request in flight; dropping it (when the response body is done or dropped)
/// counts it out.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    owner: Arc<InFlight>,
    endpoint: Endpoint,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut g = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.get_mut(&self.endpoint) {
            *c -= 1;
            if *c == 0 {
                g.remove(&self.endpoint);
            }
        }
        drop(g);
        self.owner.changed.notify_waiters();
    }
}

/// A response body that keeps its request counted in flight until it is done.
pub(crate) struct Tracked {
    pub(crate) inner: BoxBody<Bytes, hyper::Error>,
    pub(crate) guard: Option<InFlightGuard>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(r, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.guard = None;
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A proxy that knows which requests it has in flight to each upstream.
#[async_trait]
pub trait Drain: Send + Sync + fmt::Debug {
    /// Waits until no request is in flight to `upstream`, at most `timeout`; true if
    /// drained.
    async fn drained(&self, upstream: &Endpoint, timeout: Duration) -> bool;
}

#[async_trait]
impl Drain for ProxyRouter {
    async fn drained(&self, upstream: &Endpoint, timeout: Duration) -> bool {
        ProxyRouter::drained(self, upstream, timeout).await
    }
}

/// A [`Runtime`] wrapper that, before stopping an instance, waits (up to the stop's
/// grace period, at most `max_wait`) for the requests the built-in proxy has in
/// flight to it to finish. With it, a redeploy that stops the old instance right after
/// switching the route cuts no request short, whatever its method.
///
/// ```
/// # use std::{sync::Arc, time::Duration};
/// use wharf_core::{memory::MemoryRuntime, proxy::{DrainingRuntime, ProxyRouter}};
/// let proxy = ProxyRouter::new();
/// let runtime = DrainingRuntime::new(Arc::new(MemoryRuntime::new()), proxy.clone(), Duration::from_secs(30));
/// # let _ = runtime;
/// ```
pub struct DrainingRuntime {
    inner: DynRuntime,
    proxy: Arc<dyn Drain>,
    max_wait: Duration,
}

impl fmt::Debug for DrainingRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainingRuntime")
            .field("inner", &self.inner)
            .field("max_wait", &self.max_wait)
            .finish()
    }
}

impl DrainingRuntime {
    /// Wraps `inner`, draining through `proxy` (the in-process [`ProxyRouter`], or a
    /// [`super::RemoteProxy`]) for at most `max_wait` per stop.
    pub fn new(inner: DynRuntime, proxy: impl Drain + 'static, max_wait: Duration) -> Self {
        DrainingRuntime {
            inner,
            proxy: Arc::new(proxy),
            max_wait,
        }
    }
}

// A wrapper forwards every method: a default would silently hide the inner runtime's
// volumes.
#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl Runtime for DrainingRuntime {
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.inner.start(spec).await
    }

    async fn stop(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        let wait = grace.min(self.max_wait);
        if !wait.is_zero() {
            let all = self.inner.list(&Labels::new()).await?;
            if let Some(inst) = all.iter().find(|i| &i.id == id) {
                if !self.proxy.drained(&inst.endpoint, wait).await {
                    tracing::info!(instance = %id, "requests still in flight after {wait:?}; stopping anyway");
                }
            }
        }
        self.inner.stop(id, grace).await
    }

    async fn status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        self.inner.status(id).await
    }

    async fn logs(
        &self,
        id: &InstanceId,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogLine>>> {
        self.inner.logs(id, opts).await
    }

    async fn list(&self, labels: &Labels) -> Result<Vec<Instance>> {
        self.inner.list(labels).await
    }

    async fn volumes(&self, project: &ProjectId, wanted: &[VolumeRef]) -> Result<Vec<VolumeInfo>> {
        self.inner.volumes(project, wanted).await
    }

    async fn remove_volume(&self, volume: &VolumeRef) -> Result<()> {
        self.inner.remove_volume(volume).await
    }

    fn peer_address(&self, alias: &str, port: u16, live: Option<&Instance>) -> Option<Endpoint> {
        self.inner.peer_address(alias, port, live)
    }

    async fn export_volume(&self, volume: &VolumeRef) -> Result<crate::ByteStream> {
        self.inner.export_volume(volume).await
    }

    async fn import_volume(&self, volume: &VolumeRef, tar: crate::ByteStream) -> Result<()> {
        self.inner.import_volume(volume, tar).await
    }

    async fn exec(
        &self,
        id: &InstanceId,
        command: &[String],
        env: &std::collections::BTreeMap<String, String>,
        stdin: Option<crate::ByteStream>,
    ) -> Result<crate::ByteStream> {
        self.inner.exec(id, command, env, stdin).await
    }

    fn replicates(&self) -> bool {
        self.inner.replicates()
    }

    async fn set_replicas(&self, id: &InstanceId, replicas: u32) -> Result<()> {
        self.inner.set_replicas(id, replicas).await
    }

    fn schedules_cron(&self) -> bool {
        self.inner.schedules_cron()
    }

    async fn schedule_cron(&self, id: &InstanceId, jobs: &[crate::CronJob]) -> Result<()> {
        self.inner.schedule_cron(id, jobs).await
    }

    async fn cron_runs(
        &self,
        id: &InstanceId,
        known: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<crate::cron::ScheduledRun>> {
        self.inner.cron_runs(id, known).await
    }
}
