//! Routes that follow their instances' health: [`Engine::check_routes`] takes a web
//! replica whose instance is not healthy (crashed and being restarted by its runtime,
//! failing its probe) out of its service's route, and puts it back once it is
//! healthy again. `wharf serve` runs it every few seconds ([`Engine::watch_routes`]).

use std::time::Duration;

use super::Engine;
use crate::error::Result;
use crate::model::*;
use crate::state::DeploymentState;
use crate::traits::*;

impl Engine {
    /// One pass over every service with more than one web upstream (its live
    /// release's replicas, and a canary's): an upstream whose instance is not
    /// healthy leaves the route, one healthy again comes back, and a route whose
    /// upstreams are all unhealthy is left whole (nothing better to send traffic
    /// to). A canary keeps its share among the healthy ones. Returns how many routes
    /// it changed.
    pub async fn check_routes(&self) -> Result<usize> {
        let store = &self.inner.store;
        let mut changed = 0;
        for project in store.projects().await? {
            for svc in store.services(&project.id).await? {
                if !svc.routed() {
                    continue;
                }
                match self.check_route(&project, &svc).await {
                    Ok(true) => changed += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(service = %svc.name, error = %e, "could not check the route's instances")
                    }
                }
            }
        }
        Ok(changed)
    }

    async fn check_route(&self, project: &Project, svc: &Service) -> Result<bool> {
        let route_lock = self.route_lock(&svc.id);
        let _turn = route_lock.lock().await;
        let recent = self
            .inner
            .store
            .deployments(&DeploymentFilter {
                service: Some(svc.id.clone()),
                limit: Some(20),
                ..Default::default()
            })
            .await?;
        let live = recent.iter().find(|d| d.state == DeploymentState::Live);
        let canary = recent.iter().find(|d| d.state == DeploymentState::Canary);
        let all = Self::upstreams_of(live, canary);
        if all.len() < 2 {
            return Ok(false);
        }
        let mut out = Vec::new();
        for dep in live.into_iter().chain(canary) {
            for (process, inst) in dep.instances() {
                // Only what the route sends traffic to (a blue-green canary gets none).
                if process != WEB_PROCESS || !all.iter().any(|u| u.endpoint == inst.endpoint) {
                    continue;
                }
                let healthy = matches!(
                    self.inner.runtime.status(&inst.id).await,
                    Ok(InstanceStatus::Healthy)
                );
                if !healthy {
                    out.push(inst.endpoint.clone());
                }
            }
        }
        let healthy: Vec<Upstream> = all
            .iter()
            .filter(|u| !out.contains(&u.endpoint))
            .cloned()
            .collect();
        // All down: leave the route whole rather than empty.
        if healthy.is_empty() || healthy.iter().all(|u| u.weight == 0) {
            out.clear();
        }
        let before = self
            .inner
            .taken_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&svc.id)
            .cloned()
            .unwrap_or_default();
        if before == out {
            return Ok(false);
        }
        let upstreams = if out.is_empty() { all } else { healthy };
        self.publish_upstreams(project, svc, upstreams).await?;
        for e in &out {
            tracing::warn!(service = %svc.name, endpoint = %e, "instance not healthy: out of the route");
        }
        self.inner
            .taken_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(svc.id.clone(), out);
        Ok(true)
    }

    /// Runs [`Engine::check_routes`] every `interval` until the engine is dropped
    /// (the task holds a weak handle).
    pub fn watch_routes(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = std::sync::Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine { inner };
                if let Err(e) = engine.check_routes().await {
                    tracing::warn!(error = %e, "checking routes failed");
                }
            }
        })
    }
}
