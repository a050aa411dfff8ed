//! `GET /v1/metrics`: the server's metrics in Prometheus' text format (OpenMetrics),
//! for the operator's token (Prometheus' `authorization` setting).
//!
//! Deployments are counted from the engine's event stream, so every way a deployment
//! starts (API, CLI, webhook, cascade, recovery) is counted the same. Labels take only
//! bounded values (state, step, provider, result names): no ids, no project names.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use wharf_core::{DeploymentId, DeploymentState, Engine, EventKind};

use super::extract::Operator;
use super::{ApiResult, App};

/// A deployment state's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// A deployment step's name (the states a deployment passes through on its way).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: &'static str,
}

/// A webhook delivery's provider and what came of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HookLabels {
    provider: &'static str,
    result: &'static str,
}

/// The metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Deployments that reached a state, by state.
    reached: Family<StateLabel, Counter>,
    /// Time spent in each step, by step (the state left).
    step_seconds: Family<StepLabel, Histogram>,
    /// Deployments in each step now.
    in_step: Family<StepLabel, Gauge>,
    /// Webhook deliveries by provider and result.
    webhooks: Family<HookLabels, Counter>,
    /// The step each deployment on its way is in, since when.
    open: Mutex<HashMap<DeploymentId, (&'static str, Instant)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wharf");
        let reached = Family::<StateLabel, Counter>::default();
        registry.register(
            "deployment_states",
            "Deployments that reached a state (live, failed, cancelled... and each step)",
            reached.clone(),
        );
        let step_seconds = Family::<StepLabel, Histogram>::new_with_constructor(|| {
            // 50 ms to about 27 minutes.
            Histogram::new(exponential_buckets(0.05, 2.0, 16))
        });
        registry.register(
            "deployment_step_seconds",
            "Time deployments spent in each step after the queue (fetching, building...)",
            step_seconds.clone(),
        );
        let in_step = Family::<StepLabel, Gauge>::default();
        registry.register(
            "deployments_in_step",
            "Deployments now in each step (building: builds running; queued: waiting)",
            in_step.clone(),
        );
        let webhooks = Family::<HookLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by provider and result",
            webhooks.clone(),
        );
        Metrics {
            registry,
            reached,
            step_seconds,
            in_step,
            webhooks,
            open: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// New metrics, following `engine`'s deployments from now on (a task that ends
    /// with the engine's event stream).
    pub fn watching(engine: &Engine) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::default());
        let mut events = engine.subscribe();
        let m = metrics.clone();
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if let EventKind::State { from, to } = &e.kind {
                            m.moved(&e.deployment, from, to);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "metrics missed deployment events");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        metrics
    }

    /// A deployment moved from `from` to `to`. A deployment is made queued without an
    /// event: it is counted as queued when it first moves on (its time in the queue is
    /// not measured).
    fn moved(&self, deployment: &DeploymentId, from: &DeploymentState, to: &DeploymentState) {
        let name = to.name();
        self.reached
            .get_or_create(&StateLabel { state: name })
            .inc();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        match open.remove(deployment) {
            Some((step, since)) => {
                self.step_seconds
                    .get_or_create(&StepLabel { step })
                    .observe(since.elapsed().as_secs_f64());
                self.in_step.get_or_create(&StepLabel { step }).dec();
            }
            None if *from == DeploymentState::Queued => {
                self.reached
                    .get_or_create(&StateLabel { state: from.name() })
                    .inc();
            }
            None => {}
        }
        if to.is_active() {
            open.insert(deployment.clone(), (name, Instant::now()));
            self.in_step.get_or_create(&StepLabel { step: name }).inc();
        }
    }

    /// A webhook delivery of `provider` ended with `result` (`accepted`, or the
    /// refusal's code).
    pub fn webhook(&self, provider: &'static str, result: &'static str) {
        self.webhooks
            .get_or_create(&HookLabels { provider, result })
            .inc();
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// `GET /v1/metrics`.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "metrics",
    security(("bearer" = ["operator"])),
    responses((status = 200, description = "The server's metrics in the OpenMetrics text format (deployments reaching each state, time per step, deployments in each step, webhook deliveries by result)", content_type = "application/openmetrics-text", body = String)))]
pub(crate) async fn get(State(app): State<App>, _: Operator) -> ApiResult<impl IntoResponse> {
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    ))
}
