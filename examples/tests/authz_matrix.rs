//! The authorization matrix: every operation of the API against every kind of
//! caller, with the expected answer of each cell in one table below.
//!
//! The operations come from the OpenAPI document, which `openapi.rs` proves is the
//! router's own route list (every route documented, every documented operation
//! routed): a new route is in the document, and an operation without a row here fails
//! this test, so no route escapes the matrix.

mod inproc;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::Method;
use serde_json::Value;
use wharf_server::auth::Role;

/// The callers, in the order of the table's columns.
const CALLERS: [&str; 6] = [
    "no token",
    "viewer",
    "developer",
    "owner of another project",
    "owner",
    "operator",
];

/// What each caller gets, per kind of operation: `ok` (served: neither 401, 403 nor
/// the 404 that hides a project or deployment), `401`, `403`, or `404` (the project
/// or deployment is hidden from a caller without a role in it).
const PUBLIC: [&str; 6] = ["ok", "ok", "ok", "ok", "ok", "ok"];
const SIGNED: [&str; 6] = ["401", "401", "401", "401", "401", "401"];
const ANY_TOKEN: [&str; 6] = ["401", "ok", "ok", "ok", "ok", "ok"];
const OPERATOR: [&str; 6] = ["401", "403", "403", "403", "403", "ok"];
const VIEWER: [&str; 6] = ["401", "ok", "ok", "404", "ok", "ok"];
const DEVELOPER: [&str; 6] = ["401", "403", "ok", "404", "ok", "ok"];
const OWNER: [&str; 6] = ["401", "403", "403", "404", "ok", "ok"];

/// The matrix: every operation of the API, by the answers its callers get.
const MATRIX: &[([&str; 6], &[&str])] = &[
    // No bearer token needed, and none replaces a webhook's signature.
    (PUBLIC, &["health"]),
    (SIGNED, &["github_webhook", "gitlab_webhook"]),
    // Each token sees the projects it holds a role in.
    (ANY_TOKEN, &["list_projects"]),
    (OPERATOR, &["create_project", "metrics"]),
    (
        VIEWER,
        &[
            "get_project",
            "list_services",
            "list_environments",
            "get_environment",
            "list_environment_services",
            "get_previews",
            "get_service",
            "get_service_in_environment",
            "service_status",
            "service_status_in_environment",
            "service_logs",
            "service_logs_in_environment",
            "list_deployments",
            "list_deployments_in_environment",
            "list_releases",
            "list_releases_in_environment",
            "list_domains",
            "list_domains_in_environment",
            "get_deployment",
            "deployment_events",
            "list_volumes",
            "list_databases",
            "list_backups",
            "get_backup_settings",
            "list_cron_jobs",
            "list_cron_jobs_in_environment",
            "list_cron_runs",
            "list_cron_runs_in_environment",
        ],
    ),
    (
        DEVELOPER,
        &[
            "deploy",
            "deploy_in_environment",
            "cancel_deployment",
            "promote_deployment",
            "abort_deployment",
            "rollback",
            "rollback_in_environment",
            "set_env",
            "set_env_in_environment",
            "backup_now",
            "backup_database",
            "check_backup",
            "run_command",
            "run_command_in_environment",
            "scale_service",
            "scale_service_in_environment",
        ],
    ),
    (
        OWNER,
        &[
            "delete_project",
            "create_environment",
            "put_environment",
            "delete_environment",
            "put_service",
            "put_service_in_environment",
            "delete_service",
            "delete_service_in_environment",
            "add_domain",
            "add_domain_in_environment",
            "verify_domain",
            "verify_domain_in_environment",
            "remove_domain",
            "remove_domain_in_environment",
            "set_previews",
            "approve_preview",
            "rotate_webhook_secret",
            "delete_volume",
            "create_database",
            "database_credentials",
            "rotate_database_password",
            "put_backup_settings",
            "restore_backup",
        ],
    ),
];

fn operations(doc: &Value) -> BTreeMap<String, (Method, String)> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, op) in item.as_object().unwrap() {
            let Ok(method) = Method::from_bytes(m.to_uppercase().as_bytes()) else {
                continue;
            };
            if let Some(id) = op["operationId"].as_str() {
                out.insert(id.to_owned(), (method, path.clone()));
            }
        }
    }
    out
}

/// Whether an answer is the 404 that hides a project or deployment.
fn hidden(status: u16, body: &Value) -> bool {
    let message = body["error"]["message"].as_str().unwrap_or("");
    status == 404 && (message.starts_with("no project") || message.starts_with("no deployment"))
}

#[tokio::test]
async fn every_operation_answers_every_caller_as_the_matrix_says() {
    let api = inproc::api_with(Some("matrix-webhook-secret"));
    let (_, doc) = api.call(&Method::GET, "/openapi.json", None, None).await;
    let ops = operations(&doc);
    let rows: Vec<(&str, &[&str; 6])> = MATRIX
        .iter()
        .flat_map(|(cells, ids)| ids.iter().map(move |id| (*id, cells)))
        .collect();
    let listed: BTreeSet<&str> = rows.iter().map(|(id, _)| *id).collect();
    let documented: BTreeSet<&str> = ops.keys().map(String::as_str).collect();
    assert_eq!(listed.len(), rows.len(), "an operation is listed twice");
    assert_eq!(
        documented, listed,
        "operations without a row (or rows without an operation)"
    );

    let mut cells = 0;
    for (i, (id, expected)) in rows.iter().enumerate() {
        let (method, path) = &ops[*id];
        for (c, want) in expected.iter().enumerate() {
            // A project of its own per cell: what one call changes (a deletion, say)
            // cannot change what the next caller sees.
            let project = format!("m{i}c{c}");
            let deployment = api.project(&project).await;
            let grant = |p: &str, r: Role| BTreeMap::from([(p.to_owned(), r)]);
            let token = match CALLERS[c] {
                "no token" => None,
                "viewer" => Some(api.tokens.create("v", false, grant(&project, Role::Viewer))),
                "developer" => Some(api.tokens.create(
                    "d",
                    false,
                    grant(&project, Role::Developer),
                )),
                "owner of another project" => Some(api.tokens.create(
                    "x",
                    false,
                    grant("elsewhere", Role::Owner),
                )),
                "owner" => Some(api.tokens.create("o", false, grant(&project, Role::Owner))),
                _ => Some(Ok(api.admin.clone())),
            }
            .map(Result::unwrap);
            let uri = path
                .replace("{project}", &project)
                .replace("{service}", "web")
                .replace("{environment}", "staging")
                .replace("{domain}", "shop.example.com")
                .replace("{volume}", "data")
                .replace("{database}", "pg")
                .replace("{backup}", "0123456789abcdef0123456789abcdef")
                .replace("{backup}", "0123456789abcdef0123456789abcdef")
                .replace("{id}", &deployment)
                .replace("{number}", "1");
            let (status, body) = api.call(method, &uri, token.as_deref(), None).await;
            let got_ok = ![401, 403].contains(&status) && !hidden(status, &body);
            let fits = match *want {
                "ok" => got_ok,
                "404" => hidden(status, &body),
                code => status.to_string() == code,
            };
            assert!(
                fits,
                "{id} ({method} {path}) for {}: expected {want}, got {status} {body}",
                CALLERS[c]
            );
            cells += 1;
        }
    }
    assert_eq!(cells, rows.len() * CALLERS.len());
}
