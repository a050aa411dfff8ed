//! The endpoint Caddy asks before issuing an on-demand certificate.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;

use crate::CaddyRouter;

/// Path of the permission endpoint in [`on_demand_permission_app`].
pub const PERMISSION_PATH: &str = "/caddy/on-demand-permission";

/// Whether a route host (maybe a `*.` wildcard) covers `name`. A wildcard covers
/// exactly one more label, as in TLS certificates.
///
/// ```
/// use wharf_caddy::host_matches;
/// assert!(host_matches("*.example.com", "a.example.com"));
/// assert!(!host_matches("*.example.com", "a.b.example.com"));
/// assert!(!host_matches("*.example.com", "example.com"));
/// assert!(host_matches("example.com", "example.com"));
/// ```
pub fn host_matches(route_host: &str, name: &str) -> bool {
    match route_host.strip_prefix("*.") {
        Some(domain) => name
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == domain),
        None => route_host == name,
    }
}

/// An axum app answering Caddy's on-demand TLS permission requests at
/// [`PERMISSION_PATH`]`?domain=<name>`: 200 when `router` routes the name with
/// [`wharf_core::TlsPolicy::OnDemand`], 403 otherwise, 503 when Caddy cannot be read
/// (Caddy then refuses the certificate: fail closed). Point
/// [`crate::CaddyOptions::on_demand_permission`] at it.
pub fn on_demand_permission_app(router: CaddyRouter) -> axum::Router {
    axum::Router::new()
        .route(PERMISSION_PATH, get(permission))
        .with_state(router)
}

async fn permission(
    State(router): State<CaddyRouter>,
    Query(q): Query<HashMap<String, String>>,
) -> StatusCode {
    let Some(domain) = q.get("domain") else {
        return StatusCode::BAD_REQUEST;
    };
    if wharf_core::validate_hostname(&domain.to_ascii_lowercase()).is_err() {
        return StatusCode::FORBIDDEN;
    }
    match router.approves(domain).await {
        Ok(true) => StatusCode::OK,
        Ok(false) => StatusCode::FORBIDDEN,
        Err(e) => {
            tracing::warn!(error = %e, "on-demand permission: cannot read routes from caddy");
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}
