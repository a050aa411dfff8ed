//! The dashboard: a static page, a script and a style sheet, compiled into the binary
//! (no build step at run time), that read the API with the token the operator pastes
//! in. The token stays in the browser tab's session storage and travels only in the
//! `Authorization` header, never in a URL.
//!
//! The page shows projects, services with their live status (polled), each service's
//! deployment history and releases with a Rollback button, and a live viewer of a
//! deployment's events (`/v1/deployments/{id}/events`, read as a stream with `fetch`
//! because `EventSource` cannot send the token header). Data is only ever inserted as
//! text, and the assets are served with a Content-Security-Policy that allows no
//! inline script or style and no other origin.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

/// The page served at `/`.
pub const PAGE: &str = include_str!("dashboard/index.html");
/// The script served at `/dashboard.js`.
pub const SCRIPT: &str = include_str!("dashboard/dashboard.js");
/// The style sheet served at `/dashboard.css`.
pub const STYLE: &str = include_str!("dashboard/dashboard.css");

/// Only this origin's own script, styles and API; no framing, no form posts, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
            // A new binary brings new assets: let browsers revalidate every time.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The dashboard's routes: `/`, `/dashboard.js` and `/dashboard.css` (no auth: the
/// assets hold no data; the API they call checks the token).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script builds the page from elements and text nodes only: none of the ways
    /// to turn a string into markup appear in it.
    #[test]
    fn the_script_never_turns_data_into_markup() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!SCRIPT.contains(sink), "dashboard.js uses {sink}");
        }
        // The page has no inline script or style for the CSP to allow.
        assert!(!PAGE.contains("<script>") && !PAGE.contains("<style"));
        assert!(!PAGE.contains(" style=") && !PAGE.contains(" onclick="));
    }
}
