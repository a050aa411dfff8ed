//! `GET /v1/metrics`: what Prometheus scrapes, parsed as Prometheus parses it. A
//! deployment going live, one failing, and a refused webhook each show in it; only
//! the operator reads it.

mod inproc;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::Method;
use inproc::api_with;
use serde_json::json;
use wharf_server::auth::Role;

/// The samples of the exposition as `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            };
            (format!("{}{{{}}}", s.metric, labels.join(",")), value)
        })
        .collect()
}

#[tokio::test]
async fn deployments_and_webhooks_are_counted_for_the_operator() {
    let api = api_with(Some("a-webhook-secret-of-some-length"));
    let admin = Some(api.admin.as_str());
    // One deployment goes live (an image on the in-memory runtime)...
    let live = api.project("shop").await;
    // ...one fails: nothing answers at its repository.
    let (status, b) = api
        .call(
            &Method::PUT,
            "/v1/projects/shop/services/api",
            admin,
            Some(json!({"source": {"git": {"url": "http://127.0.0.1:9/acme/api.git"}}})),
        )
        .await;
    assert!(status < 300, "{b}");
    let (status, failing) = api
        .call(
            &Method::POST,
            "/v1/projects/shop/services/api/deployments",
            admin,
            None,
        )
        .await;
    assert_eq!(status, 202, "{failing}");
    // A webhook with a wrong signature.
    let (status, _) = api
        .call_with_headers(
            &Method::POST,
            "/hooks/github",
            &[
                ("x-hub-signature-256", "sha256=00"),
                ("x-github-event", "push"),
                ("x-github-delivery", "d-1"),
            ],
            json!({"repository": {"clone_url": "http://example.test/x.git"}}),
        )
        .await;
    assert_eq!(status, 401);

    let settled = |state: &str| format!("wharf_deployment_states_total{{state={state}}}");
    let mut seen = BTreeMap::new();
    for _ in 0..100 {
        let (status, text) = api.text(&Method::GET, "/v1/metrics", admin).await;
        assert_eq!(status, 200, "{text}");
        seen = samples(&text);
        if seen.get(&settled("live")) == Some(&1.0) && seen.get(&settled("failed")) == Some(&1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.get(&settled("live")), Some(&1.0), "{live}: {seen:#?}");
    assert_eq!(
        seen.get(&settled("failed")),
        Some(&1.0),
        "{failing}: {seen:#?}"
    );
    assert_eq!(seen.get(&settled("queued")), Some(&2.0), "{seen:#?}");
    // Time in a step is observed once the deployment leaves it: the failing one
    // fetched, the image went straight to starting.
    for step in ["fetching", "starting", "health_checking"] {
        let count = format!("wharf_deployment_step_seconds_count{{step={step}}}");
        assert_eq!(seen.get(&count), Some(&1.0), "{step}: {seen:#?}");
        let now = format!("wharf_deployments_in_step{{step={step}}}");
        assert_eq!(seen.get(&now), Some(&0.0), "{step}: {seen:#?}");
    }
    assert_eq!(
        seen.get("wharf_webhook_deliveries_total{provider=github,result=bad_signature}"),
        Some(&1.0),
        "{seen:#?}"
    );

    // The operator's alone.
    let owner = api
        .tokens
        .create("o", false, BTreeMap::from([("shop".into(), Role::Owner)]))
        .unwrap();
    assert_eq!(
        api.text(&Method::GET, "/v1/metrics", Some(&owner)).await.0,
        403
    );
    assert_eq!(api.text(&Method::GET, "/v1/metrics", None).await.0, 401);
}
