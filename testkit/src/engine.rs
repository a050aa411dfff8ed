//! Driving the engine the way most tests do.

use futures::{Stream, StreamExt};
use wharf_core::{Deployment, DeploymentState, Engine, Event, EventKind, ServiceId, Trigger};

/// Deploys `service` by hand and waits for the deployment to end, live or not.
pub async fn deploy(engine: &Engine, service: &ServiceId) -> Deployment {
    let handle = engine.deploy(service, Trigger::Manual).await.unwrap();
    handle.wait().await.unwrap()
}

/// Reads `events` until the deployment enters `state`; `false` when the stream ends
/// first.
pub async fn reach(
    events: &mut (impl Stream<Item = Event> + Unpin),
    state: &DeploymentState,
) -> bool {
    while let Some(e) = events.next().await {
        if matches!(&e.kind, EventKind::State { to, .. } if to == state) {
            return true;
        }
    }
    false
}
