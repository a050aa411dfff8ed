//! Scaling a live release in place: [`Engine::scale`] starts or stops instances of
//! its process types to match the service's [`Service::replicas`], without a new
//! build or release.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Emitter, Engine, Stop};
use crate::error::{Error, Result};
use crate::model::*;
use crate::traits::*;

impl Engine {
    /// Brings the live release of `service` to the service's replica counts: starts
    /// the instances missing (each healthy, or running for a type without a probe,
    /// before it counts), routes to the `web` ones, then stops the extra ones (after
    /// their traffic moved). Waits for an active deployment of the service to end
    /// first (which itself starts the counts the service then has). Returns the live
    /// deployment as it now is, `None` if nothing is live.
    ///
    /// If an instance fails to start or to become healthy, the ones this call started
    /// are stopped and the release runs as before: the error says why. Refused
    /// (conflict) while a canary of the service is out.
    pub async fn scale(&self, service: &ServiceId) -> Result<Option<Deployment>> {
        let lock = self.service_lock(service);
        let _turn = lock.lock_owned().await;
        let store = &self.inner.store;
        let svc = store.service(service).await?;
        validate_replicas(&svc.replicas)?;
        // The route is shared with a canary: promote or abort it first.
        self.refuse_during_canary(&svc.id, None).await?;
        let project = store.project(&svc.project).await?;
        let Some(mut live) = store.live_deployment(&svc.id).await? else {
            return Ok(None);
        };
        let config = self.config_for(&project, &svc, &live).await?;
        let mut wanted: BTreeMap<String, Vec<InstanceSpec>> = BTreeMap::new();
        for (process, spec) in self.process_specs(&project, &svc, &live, &config).await? {
            wanted.entry(process).or_default().push(spec);
        }
        let mut have: BTreeMap<String, Vec<Instance>> = BTreeMap::new();
        for (process, inst) in live.instances() {
            have.entry(process.to_owned())
                .or_default()
                .push(inst.clone());
        }
        let (emit, _rx, pump) = Emitter::spawn(&self.inner, &live, None);

        // A runtime that runs replicas itself changes the count in place, and the
        // engine waits for every replica to be ready again.
        let mut resized = 0;
        if self.inner.runtime.replicates() {
            for (process, specs) in &wanted {
                let (Some(spec), Some(inst)) =
                    (specs.first(), have.get(process).and_then(|v| v.first()))
                else {
                    continue;
                };
                self.inner
                    .runtime
                    .set_replicas(&inst.id, spec.replicas)
                    .await?;
                let cancel = tokio_util::sync::CancellationToken::new();
                let ready = self.wait_ready(process, inst, spec, &emit, &cancel).await;
                if let Err(Stop::Failed(why)) = ready {
                    emit.note(format!("scaling {process} failed: {why}"));
                    drop(emit);
                    let _ = pump.await;
                    return Err(Error::health_check_failed(why)
                        .context(format!("scaling {} ({process})", svc.name)));
                }
                resized += 1;
            }
        }

        // Start what is missing, each healthy before it counts.
        let mut added: Vec<(String, InstanceSpec)> = Vec::new();
        for (process, specs) in &wanted {
            let n = have.get(process).map_or(0, Vec::len);
            added.extend(specs.iter().skip(n).map(|s| (process.clone(), s.clone())));
        }
        let mut fresh = live.clone();
        fresh.instance = None;
        fresh.more_instances.clear();
        let started = if added.is_empty() {
            Ok(())
        } else {
            match self.start_all(&mut fresh, &added, &emit).await {
                Ok(()) => {
                    let cancel = tokio_util::sync::CancellationToken::new();
                    self.wait_all_healthy(&fresh, &added, &emit, &cancel)
                        .await
                        .map_err(|stop| match stop {
                            Stop::Failed(why) => Error::health_check_failed(why),
                            Stop::Cancelled => Error::cancelled("scaling was cancelled"),
                        })
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = started {
            for (_, inst) in fresh.instances() {
                let _ = self.inner.runtime.stop(&inst.id, Duration::ZERO).await;
            }
            emit.note(format!("scaling failed, nothing changed: {e}"));
            drop(emit);
            let _ = pump.await;
            return Err(e.context(format!("scaling {}", svc.name)));
        }

        // The instances past each type's count go, newest first (never the first web
        // instance: web keeps at least one).
        let mut extra: Vec<Instance> = Vec::new();
        for (process, insts) in &have {
            let keep = wanted.get(process).map_or(0, Vec::len);
            extra.extend(insts.iter().skip(keep).cloned());
        }
        live.more_instances
            .retain(|p| !extra.iter().any(|e| e.id == p.instance.id));
        // Started in the order of `added` (whatever `fresh` calls its first one).
        live.more_instances
            .extend(
                fresh
                    .instances()
                    .zip(&added)
                    .map(|((_, inst), (process, _))| ProcessInstance {
                        process: process.clone(),
                        instance: inst.clone(),
                    }),
            );
        live.updated_at = Timestamp::now();

        let web_changed = added.iter().any(|(p, _)| p == WEB_PROCESS)
            || extra.iter().any(|i| {
                i.labels
                    .get(label::PROCESS)
                    .is_none_or(|p| p == WEB_PROCESS)
            });
        // The route and the record change under the route lock together, so a
        // refresh of the route in between never brings back what goes.
        let route_turn = self.route_lock(&svc.id).lock_owned().await;
        if web_changed {
            let svc = store.service(&svc.id).await?;
            self.publish(&project, &svc, &live.web_endpoints()).await?;
        }
        let live = store.update_deployment(&live).await?;
        drop(route_turn);
        if web_changed && !extra.is_empty() {
            self.settle().await;
        }
        for inst in &extra {
            if let Err(e) = self
                .inner
                .runtime
                .stop(&inst.id, self.inner.config.stop_grace)
                .await
            {
                emit.note(format!("could not stop instance {}: {e}", inst.id));
            }
        }
        let counts: Vec<String> = wanted
            .iter()
            .map(|(p, specs)| format!("{p}={}", specs.iter().map(|s| s.replicas).sum::<u32>()))
            .chain(
                have.keys()
                    .filter(|p| !wanted.contains_key(*p))
                    .map(|p| format!("{p}=0")),
            )
            .collect();
        let resized = if resized > 0 {
            format!(", {resized} resized by the runtime")
        } else {
            String::new()
        };
        emit.note(format!(
            "scaled to {} ({} started, {} stopped{resized})",
            counts.join(" "),
            added.len(),
            extra.len()
        ));
        drop(emit);
        let _ = pump.await;
        Ok(Some(live))
    }
}
