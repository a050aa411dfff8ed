//! `POST .../run` on the in-memory backends: the limits that keep one project from
//! taking the control plane down (at most 4 runs at once per project), no runs in a
//! managed database, and the output of a run that ended.

mod inproc;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::json;
use tower::ServiceExt;
use wharf_core::{Project, Service, SourceSpec, Store as _, Trigger};

fn run_request(token: &str, path: &str, command: &[&str]) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(json!({ "command": command }).to_string()))
        .unwrap()
}

#[tokio::test]
async fn runs_are_bounded_per_project_and_never_enter_a_database() {
    let m = inproc::memory_app(None);
    let router = wharf_server::api::router(m.app.clone());
    let project = Project::new("shop").unwrap();
    m.store.put_project(&project).await.unwrap();
    let mut svc = Service::new(
        &project.id,
        "web",
        SourceSpec::Image {
            image: "example/web:1".into(),
        },
    )
    .unwrap();
    svc.health_check = Some(wharf_core::HealthCheck {
        timeout: Duration::from_secs(5),
        ..Default::default()
    });
    m.store.put_service(&svc).await.unwrap();
    let dep = m
        .app
        .engine
        .deploy(&svc.id, Trigger::Manual)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(dep.state, wharf_core::DeploymentState::Live);
    let path = "/v1/projects/shop/services/web/run";

    // A run that ends: its output, then how it ended.
    let resp = router
        .clone()
        .oneshot(run_request(&m.admin, path, &["sh", "-c", "exit 3"]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("event: log"), "{text}");
    assert!(text.contains("ran: sh -c exit 3"), "{text}");
    assert!(text.contains("event: exit"), "{text}");
    assert!(text.contains(r#""exit_code":3"#), "{text}");

    // Four runs that go on (held open), then a fifth is refused.
    let mut open = Vec::new();
    for _ in 0..4 {
        let resp = router
            .clone()
            .oneshot(run_request(&m.admin, path, &["sleep", "600"]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        open.push(resp);
    }
    let (status, body) = inproc::send(&router, run_request(&m.admin, path, &["true"])).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "too_many_runs", "{body}");
    // A client that goes away stops its run and frees its slot.
    drop(open);
    let mut freed = false;
    for _ in 0..100 {
        let (status, _) = inproc::send(&router, run_request(&m.admin, path, &["true"])).await;
        if status == 200 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "the slots were never given back");
    let tasks_running = m
        .runtime
        .instances()
        .into_iter()
        .filter(|i| i.labels.contains_key(wharf_core::TASK_LABEL))
        .count();
    assert_eq!(tasks_running, 0, "runs of clients that left still run");

    // Detached: answered at once, removed at its time to live.
    let detached = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("authorization", format!("Bearer {}", m.admin))
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"command": ["sleep", "600"], "timeout_secs": 1, "detach": true}).to_string(),
        ))
        .unwrap();
    let (status, body) = inproc::send(&router, detached).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["ttl_secs"], 1);
    let tasks = || {
        m.runtime
            .instances()
            .into_iter()
            .filter(|i| i.labels.contains_key(wharf_core::TASK_LABEL))
            .count()
    };
    // It starts in the background, then goes at its time to live.
    let mut seen = Vec::new();
    for _ in 0..60 {
        seen.push(tasks());
        if seen.contains(&1) && tasks() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen.contains(&1), "the detached run never ran: {seen:?}");
    assert_eq!(
        tasks(),
        0,
        "a detached run outlived its time to live: {seen:?}"
    );

    // No command runs in a managed database (its env holds the superuser's password).
    let (status, body) = inproc::call(
        &router,
        &Method::POST,
        "/v1/projects/shop/databases",
        Some(&m.admin),
        Some(json!({"name": "pg", "engine": "postgres"})),
    )
    .await;
    assert!(status < 300, "{status} {body}");
    let (status, body) = inproc::send(
        &router,
        run_request(&m.admin, "/v1/projects/shop/services/pg/run", &["env"]),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("managed database"),
        "{body}"
    );
}
