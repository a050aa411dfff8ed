//! Canary and blue-green deployments: a new release goes out beside the live one
//! with a share of the traffic ([`Engine::deploy_canary`]), stays in the parked
//! [`DeploymentState::Canary`] step, and is then promoted ([`Engine::promote`]: it
//! takes all the traffic and the old release is retired) or aborted
//! ([`Engine::abort_canary`]: the old release takes all the traffic back and the
//! canary's instances stop).
//!
//! One canary per service at a time, and nothing else deploys the service while it
//! is out: a new deployment, a rollback or a scale of the service is refused with a
//! conflict until the canary is promoted or aborted. Queueing them instead would
//! leave a request waiting on a person for an unbounded time, and whichever release
//! it replaced would no longer be the one its requester saw serving.
//!
//! Blue-green is a canary at 0 %: the route leaves upstreams without a share out (a
//! weight of 0 means different things to different proxies), so the new release runs
//! healthy and reachable at its instances' own endpoints for checks, and takes no
//! traffic until promoted.

use std::time::Duration;

use super::{DeploymentHandle, Emitter, Engine};
use crate::error::{Error, Result};
use crate::model::*;
use crate::state::{DeployEvent, DeploymentState};
use crate::traits::*;

/// The upstreams of a route that gives `percent` of the traffic to the `canary`
/// endpoints and the rest to the `live` ones, each group's share split evenly among
/// its endpoints. A group without a share (0 % or 100 %) or without endpoints is left
/// out; the weights are divided by their greatest common divisor, so that routers
/// that cycle through the weights in blocks (Caddy's `weighted_round_robin`) cycle
/// over 10 requests for 90/10, not over 10,000.
///
/// ```
/// # use wharf_core::{Endpoint, engine::canary_upstreams};
/// let e = |port| Endpoint { host: "127.0.0.1".into(), port };
/// let ups = canary_upstreams(&[e(1)], &[e(2)], 10);
/// assert_eq!(ups.iter().map(|u| u.weight).collect::<Vec<_>>(), [9, 1]);
/// assert_eq!(canary_upstreams(&[e(1)], &[e(2)], 0).len(), 1);
/// ```
pub fn canary_upstreams(live: &[Endpoint], canary: &[Endpoint], percent: u8) -> Vec<Upstream> {
    let percent = u32::from(percent.min(100));
    let (n, m) = (live.len() as u32, canary.len() as u32);
    let (live_w, canary_w) = match (n, m) {
        (0, _) => (0, 1),
        (_, 0) => (1, 0),
        _ => ((100 - percent) * m, percent * n),
    };
    let mut ups: Vec<Upstream> = live
        .iter()
        .map(|e| (e, live_w))
        .chain(canary.iter().map(|e| (e, canary_w)))
        .filter(|(_, w)| *w > 0)
        .map(|(e, weight)| Upstream {
            endpoint: e.clone(),
            weight,
        })
        .collect();
    let divisor = ups.iter().fold(0, |g, u| gcd(g, u.weight)).max(1);
    for u in &mut ups {
        u.weight /= divisor;
    }
    ups
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Engine {
    /// Deploys the service's current source (or `source`, as
    /// [`Engine::deploy_source`] does) as a canary: once its instances are healthy,
    /// it serves `percent` of the traffic (0 to 100; 0 is blue-green) beside the live
    /// release and stays [`DeploymentState::Canary`] until [`Engine::promote`] or
    /// [`Engine::abort_canary`]. A service with nothing live simply goes live.
    /// Refused (conflict) while another canary of the service is out.
    pub async fn deploy_canary(
        &self,
        service: &ServiceId,
        trigger: Trigger,
        source: Option<SourceSpec>,
        percent: u8,
    ) -> Result<DeploymentHandle> {
        if percent > 100 {
            return Err(Error::invalid(format!(
                "a canary takes 0 to 100 % of the traffic, not {percent}"
            )));
        }
        let mut svc = self.inner.store.service(service).await?;
        if let Some(source) = source {
            svc.source = source;
        }
        svc.validate()?;
        self.check_references(&svc).await?;
        let mut dep = self.new_deployment(&svc, trigger, None, None);
        dep.canary = Some(percent);
        self.launch(dep, None).await
    }

    /// The service's deployment that is out as a canary, if any.
    pub async fn canary_of(&self, service: &ServiceId) -> Result<Option<Deployment>> {
        let all = self
            .inner
            .store
            .deployments(&DeploymentFilter {
                service: Some(service.clone()),
                ..Default::default()
            })
            .await?;
        Ok(all.into_iter().find(|d| d.state == DeploymentState::Canary))
    }

    /// Refuses (conflict) while `service` has a canary out other than `except`.
    pub(super) async fn refuse_during_canary(
        &self,
        service: &ServiceId,
        except: Option<&DeploymentId>,
    ) -> Result<()> {
        match self.canary_of(service).await? {
            Some(c) if Some(&c.id) != except => Err(Error::conflict(format!(
                "deployment {} of this service is out as a canary: promote or abort it first",
                c.id
            ))),
            _ => Ok(()),
        }
    }

    /// The upstreams of `svc`'s route: its live release's web endpoints, shared with
    /// `canary`'s as its percent says when one is out.
    pub(super) fn upstreams_of(
        live: Option<&Deployment>,
        canary: Option<&Deployment>,
    ) -> Vec<Upstream> {
        let live = live.map(Deployment::web_endpoints).unwrap_or_default();
        match canary {
            Some(c) => canary_upstreams(&live, &c.web_endpoints(), c.canary.unwrap_or(0)),
            None => canary_upstreams(&live, &[], 0),
        }
    }

    /// Moves all the traffic of its service to `deployment`, a canary: it goes
    /// [`DeploymentState::Live`], then the release that was live is superseded and
    /// its instances stop (after the route moved, with the stop grace). If the route
    /// cannot be written, the shared route is put back and it stays a canary.
    pub async fn promote(&self, deployment: &DeploymentId) -> Result<Deployment> {
        let store = &self.inner.store;
        let service = store.deployment(deployment).await?.service;
        let lock = self.service_lock(&service);
        let _turn = lock.lock_owned().await;
        let mut dep = self.parked_canary(deployment).await?;
        let project = store.project(&dep.project).await?;
        let (emit, _rx, pump) = Emitter::spawn(&self.inner, &dep, None);
        let route_lock = self.route_lock(&service);
        let route_turn = route_lock.lock().await;
        let svc = store.service(&service).await?;
        let live = store.live_deployment(&service).await?;
        if let Err(e) = self.publish(&project, &svc, &dep.web_endpoints()).await {
            let _ = self
                .publish_upstreams(
                    &project,
                    &svc,
                    Self::upstreams_of(live.as_ref(), Some(&dep)),
                )
                .await;
            emit.note(format!(
                "could not promote: {e}; the canary keeps its share"
            ));
            drop(emit);
            let _ = pump.await;
            return Err(e.context("promoting"));
        }
        self.step(&mut dep, DeployEvent::Promote, &emit).await?;
        drop(route_turn);
        emit.note("promoted: it takes all the traffic");
        if let Err(e) = self.schedule_cron(&svc, &dep).await {
            emit.note(format!("could not schedule the cron jobs: {e}"));
        }
        let retired = self.retire_others(&dep, &emit).await;
        drop(emit);
        let _ = pump.await;
        retired?;
        Ok(dep)
    }

    /// Takes `deployment`, a canary, out of its service's route: the live release
    /// takes all the traffic back (untouched: it stays live), then the canary's
    /// instances stop and it ends [`DeploymentState::Cancelled`].
    pub async fn abort_canary(&self, deployment: &DeploymentId) -> Result<Deployment> {
        let store = &self.inner.store;
        let service = store.deployment(deployment).await?.service;
        let lock = self.service_lock(&service);
        let _turn = lock.lock_owned().await;
        let dep = self.parked_canary(deployment).await?;
        let (emit, _rx, pump) = Emitter::spawn(&self.inner, &dep, None);
        let result = self
            .take_out(dep, DeployEvent::Abort, self.inner.config.stop_grace, &emit)
            .await;
        if result.is_ok() {
            emit.note("aborted: the live release takes all the traffic back");
        }
        drop(emit);
        let _ = pump.await;
        result
    }

    /// Routes the service of canary `dep` to its live release only, records `event`
    /// (abort or fail) and stops the canary's instances after `grace`.
    pub(super) async fn take_out(
        &self,
        mut dep: Deployment,
        event: DeployEvent,
        grace: Duration,
        emit: &Emitter,
    ) -> Result<Deployment> {
        let store = &self.inner.store;
        let project = store.project(&dep.project).await?;
        {
            let route_lock = self.route_lock(&dep.service);
            let _route_turn = route_lock.lock().await;
            let svc = store.service(&dep.service).await?;
            let live = store.live_deployment(&dep.service).await?;
            let endpoints = live
                .as_ref()
                .map(Deployment::web_endpoints)
                .unwrap_or_default();
            if endpoints.is_empty() {
                let id = RouteId(svc.id.0.clone());
                self.retrying(|| self.inner.router.remove(&id)).await?;
            } else {
                self.publish(&project, &svc, &endpoints).await?;
            }
            self.step(&mut dep, event, emit).await?;
        }
        self.settle().await;
        for (_, inst) in dep.instances() {
            if let Err(e) = self.inner.runtime.stop(&inst.id, grace).await {
                emit.note(format!("could not stop canary instance {}: {e}", inst.id));
            }
        }
        Ok(dep)
    }

    /// `deployment` as it is now, if it is a canary; a conflict otherwise.
    async fn parked_canary(&self, deployment: &DeploymentId) -> Result<Deployment> {
        let dep = self.inner.store.deployment(deployment).await?;
        if dep.state != DeploymentState::Canary {
            return Err(Error::conflict(format!(
                "deployment {} is {}, not a canary",
                dep.id, dep.state
            )));
        }
        Ok(dep)
    }
}

impl Engine {
    /// At recovery, keeps canary `dep` if all its instances still run, or fails it
    /// (the live release takes all the traffic, what is left of it stops). Returns
    /// it if kept.
    pub(super) async fn recover_canary(
        &self,
        dep: Deployment,
        report: &mut super::RecoveryReport,
    ) -> Result<Option<Deployment>> {
        let mut gone = None;
        for (_, inst) in dep.instances() {
            let alive = matches!(
                self.retrying(|| self.inner.runtime.status(&inst.id)).await,
                Ok(InstanceStatus::Healthy | InstanceStatus::Running | InstanceStatus::Starting)
            );
            if !alive {
                gone = Some(inst.id.clone());
                break;
            }
        }
        let Some(gone) = gone else {
            report.canaries.push(dep.id.clone());
            return Ok(Some(dep));
        };
        let (emit, _rx, pump) = Emitter::spawn(&self.inner, &dep, None);
        let reason = format!(
            "recovery: canary instance {gone} is gone; the live release takes all the traffic"
        );
        emit.note(reason.clone());
        let id = dep.id.clone();
        report
            .removed_instances
            .extend(dep.instances().map(|(_, i)| i.id.clone()));
        let ended = self
            .take_out(dep, DeployEvent::Fail { reason }, Duration::ZERO, &emit)
            .await;
        drop(emit);
        let _ = pump.await;
        ended?;
        report.failed.push(id);
        Ok(None)
    }
}
