//! The OpenAPI 3.1 document served at `/openapi.json`.

use serde_json::{json, Map, Value};

/// (method, path, summary, success status, role needed)
const OPERATIONS: &[(&str, &str, &str, &str, &str)] = &[
    ("get", "/v1/health", "Liveness of the API (no token needed)", "200", "none"),
    ("get", "/v1/projects", "Projects this token holds a role in", "200", "viewer"),
    ("post", "/v1/projects", "Create a project ({name, env})", "201", "operator"),
    ("get", "/v1/projects/{project}", "A project, by name or id", "200", "viewer"),
    ("delete", "/v1/projects/{project}", "Tear down every service and delete the project", "204", "owner"),
    ("get", "/v1/projects/{project}/services", "Services with their URL and live deployment", "200", "viewer"),
    ("get", "/v1/projects/{project}/services/{service}", "A service", "200", "viewer"),
    ("put", "/v1/projects/{project}/services/{service}", "Create or change a service (source: {git: {url, ref, subdir}} or {image: ref}; build, port, env, depends_on, health_check, resources, domains: the full list of custom domains, each claimed and routed once DNS proves it)", "200", "owner"),
    ("delete", "/v1/projects/{project}/services/{service}", "Tear down and delete a service", "204", "owner"),
    ("put", "/v1/projects/{project}/services/{service}/env", "Set env vars: {KEY: \"value\" | {secret: \"value\"} | null}; secrets are write-only", "200", "developer"),
    ("get", "/v1/projects/{project}/services/{service}/deployments", "Deployments, newest first (?limit=)", "200", "viewer"),
    ("post", "/v1/projects/{project}/services/{service}/deployments", "Deploy: a .tar.gz body (Content-Type: application/gzip), or JSON {source: {git: ...} | {image: ...}}, or an empty body for the current source", "202", "developer"),
    ("get", "/v1/projects/{project}/services/{service}/releases", "Releases, newest first", "200", "viewer"),
    ("post", "/v1/projects/{project}/services/{service}/rollback", "Re-activate a release without rebuilding ({release: number}; default the one before the live release)", "202", "developer"),
    ("get", "/v1/projects/{project}/services/{service}/domains", "Custom domains of a service: each with verified and the DNS records that prove it", "200", "viewer"),
    ("post", "/v1/projects/{project}/services/{service}/domains", "Claim a custom domain ({domain}): 201 and routed when DNS already proves it (a CNAME to the service's hostname, or TXT _wharf-challenge.<domain> = wharf-verify=<token>), else 202 with the records to publish", "201", "owner"),
    ("post", "/v1/projects/{project}/services/{service}/domains/{domain}/verify", "Check a claimed domain's DNS again; routed once proven, else 409 domain_unverified saying what was found", "200", "owner"),
    ("delete", "/v1/projects/{project}/services/{service}/domains/{domain}", "Unroute and release a custom domain", "204", "owner"),
    ("get", "/v1/projects/{project}/services/{service}/status", "The live instance's status from the runtime, health probed now ({live_deployment, release, instance, status: {kind: starting|running|healthy|unhealthy|exited|missing, reason, code}}; nulls when nothing is live)", "200", "viewer"),
    ("get", "/v1/projects/{project}/environments", "Environments: standing ones and pr-<n> previews, with their services", "200", "viewer"),
    ("post", "/v1/projects/{project}/environments", "Create a standing environment ({name, env}); its services are served at <service>.<environment>.<project>.<base domain>", "201", "owner"),
    ("get", "/v1/projects/{project}/environments/{environment}", "An environment", "200", "viewer"),
    ("put", "/v1/projects/{project}/environments/{environment}", "Create a standing environment or change its env vars ({env}; null removes one)", "200", "owner"),
    ("delete", "/v1/projects/{project}/environments/{environment}", "Tear down an environment's services and delete it", "204", "owner"),
    ("get", "/v1/projects/{project}/environments/{environment}/services", "An environment's services; each route under /v1/projects/{project}/services/{service} also exists under /v1/projects/{project}/environments/{environment}/services/{service}", "200", "viewer"),
    ("get", "/v1/deployments/{id}", "A deployment", "200", "viewer"),
    ("post", "/v1/deployments/{id}/cancel", "Cancel a running deployment", "200", "developer"),
    ("post", "/hooks/github", "GitHub webhook (push, pull_request), signed with X-Hub-Signature-256 over the body with the server's webhook_secret", "202", "signature"),
    ("post", "/hooks/gitlab", "GitLab webhook (Push Hook, Merge Request Hook), with X-Gitlab-Token equal to the server's webhook_secret", "202", "signature"),
    ("get", "/v1/projects/{project}/services/{service}/logs", "The live instance's runtime (app) output as server-sent events (event: log, data {at, stream, text}): the last ?tail=N lines (default 100, at most 10000), then with ?follow=true new lines until the instance stops", "200", "viewer"),
    ("get", "/v1/deployments/{id}/events", "State changes and log lines as server-sent events; resumable with Last-Event-ID (or ?after=seq); ends after the final state", "200", "viewer"),
];

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    // Every service route exists for an environment's services too.
    let scoped: Vec<(&str, String, &str, &str, &str)> = OPERATIONS
        .iter()
        .filter(|op| {
            op.1.starts_with("/v1/projects/{project}/services/{service}")
        })
        .map(|&(m, path, summary, status, role)| {
            let path = path.replace(
                "/v1/projects/{project}/services/",
                "/v1/projects/{project}/environments/{environment}/services/",
            );
            (m, path, summary, status, role)
        })
        .collect();
    let all = OPERATIONS
        .iter()
        .map(|&(m, p, su, st, r)| (m, p.to_owned(), su, st, r))
        .chain(scoped);
    for (method, path, summary, status, role) in all {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": summary,
            "description": format!("Role needed: {role}."),
            "parameters": params,
            "responses": {
                (status): {"description": "Success", "content": {"application/json": {}}},
                "default": {"$ref": "#/components/responses/Error"}
            }
        });
        if role == "none" || role == "signature" {
            op["security"] = json!([]);
        }
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item is an object")
            .insert(method.to_string(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Wharf API", "version": env!("CARGO_PKG_VERSION")},
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": {
                "description": "An error with a stable code (invalid_input, unauthorized, forbidden, not_found, conflict, domain_unverified, too_large, build_failed, health_check_failed, unavailable, timeout, backend, internal)",
                "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"}}}}
                }}}
            }}
        }
    })
}
