//! The OpenAPI document against the router it is generated with: every documented
//! operation is routed and every other method of a documented path is not (405);
//! each operation's `security` scope is the least role the API really enforces; path
//! parameters are declared, operation ids unique and links point at operations that
//! exist.

mod inproc;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::Method;
use inproc::api;
use serde_json::Value;
use wharf_server::auth::Role;

async fn document(api: &inproc::Api) -> Value {
    let (status, doc) = api.call(&Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, 200);
    doc
}

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            if let Some(op) = item.get(m) {
                out.push((m.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    out
}

fn fill(path: &str, project: &str, deployment: &str) -> String {
    path.replace("{project}", project)
        .replace("{service}", "web")
        .replace("{environment}", "staging")
        .replace("{domain}", "shop.example.com")
        .replace("{volume}", "data")
        .replace("{database}", "pg")
        .replace("{backup}", "0123456789abcdef0123456789abcdef")
        .replace("{id}", deployment)
        .replace("{number}", "1")
}

/// The least role an operation's `security` names (empty: any valid token); `None`
/// when it needs no token.
fn scope(op: &Value) -> Option<String> {
    let security = op.get("security")?.as_array()?;
    let bearer = security.iter().find_map(|s| s.get("bearer")?.as_array())?;
    assert!(bearer.len() <= 1, "{op}");
    Some(
        bearer
            .first()
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
    )
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method_is() {
    let api = api();
    let doc = document(&api).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 45, "only {} operations documented", ops.len());
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = fill(path, "nobody", "dep_none");
        for m in METHODS {
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            // The operator's token passes the auth layer, so an undocumented method
            // meets the router's 405 rather than the 401 in front of it.
            let token = item.get(m).is_none().then_some(api.admin.as_str());
            let (status, body) = api.call(&method, &uri, token, None).await;
            match item.get(m) {
                // Routed: an API answer (401 without a token, or the public
                // operation's own answer), never the router's 404/405.
                Some(op) => {
                    assert!(
                        body["error"]["code"].is_string() || status < 300,
                        "{m} {path}: {status} {body}"
                    );
                    if scope(op).is_some() {
                        assert_eq!(status, 401, "{m} {path} answered without a token: {body}");
                    }
                }
                None => assert_eq!(status, 405, "{m} {path} is routed but not documented"),
            }
        }
    }
    // What is served besides the API: the document itself and the dashboard.
    for undocumented in ["/openapi.json", "/"] {
        assert!(doc["paths"].get(undocumented).is_none());
        let (status, _) = api.call(&Method::GET, undocumented, None, None).await;
        assert_eq!(status, 200, "{undocumented}");
    }
}

#[tokio::test]
async fn each_operation_needs_exactly_the_role_its_security_names() {
    let api = api();
    let doc = document(&api).await;
    let mut checked = 0;
    for (i, (m, path, op)) in operations(&doc).into_iter().enumerate() {
        let Some(role) = scope(&op) else { continue };
        // A project of its own per operation, so what one call changes cannot
        // change what the next sees.
        let project = format!("p{i}");
        let deployment = api.project(&project).await;
        let grant = |r: Role| BTreeMap::from([(project.clone(), r)]);
        let token = |r: Option<Role>| {
            let roles = r.map(grant).unwrap_or_default();
            api.tokens.create("t", false, roles).unwrap()
        };
        let (below, exact) = match role.as_str() {
            // Any valid token; without one, 401.
            "" => ("wharf_not_a_token".to_owned(), token(None)),
            "operator" => (token(Some(Role::Owner)), api.admin.clone()),
            "viewer" => (token(None), token(Some(Role::Viewer))),
            "developer" => (token(Some(Role::Viewer)), token(Some(Role::Developer))),
            "owner" => (token(Some(Role::Developer)), token(Some(Role::Owner))),
            other => panic!("{m} {path}: unknown scope {other}"),
        };
        let uri = fill(&path, &project, &deployment);
        let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
        let (status, body) = api.call(&method, &uri, Some(&below), None).await;
        // Without any role the project is hidden (404); with too small a role, 403.
        let refused = match role.as_str() {
            "" => 401,
            "viewer" => 404,
            _ => 403,
        };
        assert_eq!(
            status, refused,
            "{m} {path} with a role below {role}: {body}"
        );
        let (status, body) = api.call(&method, &uri, Some(&exact), None).await;
        let hidden = status == 404
            && body["error"]["message"]
                .as_str()
                .is_some_and(|s| s.starts_with("no project"));
        assert!(
            ![401, 403].contains(&status) && !hidden,
            "{m} {path} refused {role}: {status} {body}"
        );
        checked += 1;
    }
    assert_eq!(checked, 70, "operations with a role checked");
}

#[tokio::test]
async fn parameters_operation_ids_and_links_hold_together() {
    let doc = document(&api()).await;
    let ops = operations(&doc);
    let ids: Vec<&str> = ops
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "operation ids repeat: {ids:?}");
    for (m, path, op) in &ops {
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_path: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_path, "{m} {path}");
        assert_eq!(
            op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{m} {path}: errors are documented"
        );
        for resp in op["responses"].as_object().unwrap().values() {
            for (name, link) in resp["links"].as_object().into_iter().flatten() {
                let target = link["operationId"].as_str().unwrap();
                assert!(
                    unique.contains(target),
                    "{m} {path}: link {name} to unknown {target}"
                );
            }
        }
    }
    let deploy = &doc["paths"]["/v1/projects/{project}/services/{service}/deployments"]["post"];
    assert_eq!(
        deploy["responses"]["202"]["links"]["GetDeployment"]["parameters"]["id"],
        "$response.body#/id"
    );
    // The constraints the API enforces are in the schemas.
    let name = &doc["components"]["schemas"]["NewProject"]["properties"]["name"];
    assert_eq!(name["maxLength"], 63, "{name}");
    assert!(name["pattern"].is_string(), "{name}");
}
