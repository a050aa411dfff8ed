//! Generated configuration checked against Traefik v3's JSON Schema (SchemaStore's
//! `traefik-v3-file-provider.schema.json`, draft-07), with a small validator written
//! here for the keywords that schema uses (`type`, `properties`,
//! `additionalProperties`, `patternProperties`, `items`, `required`, `minItems`,
//! `minimum`, `maximum`, `oneOf`, `$ref` into `#/definitions`). Any other keyword
//! fails the test, so a schema update cannot be silently half-checked.

use serde_json::{json, Value};
use wharf_core::{Endpoint, Route, TlsPolicy};
use wharf_testkit::route;
use wharf_traefik::{dynamic_config, TraefikOptions};

const KNOWN: &[&str] = &[
    "$schema",
    "$id",
    "description",
    "default",
    "definitions",
    "type",
    "properties",
    "additionalProperties",
    "patternProperties",
    "items",
    "required",
    "minItems",
    "minimum",
    "maximum",
    "oneOf",
    "$ref",
];

fn schema() -> Value {
    serde_json::from_str(include_str!("traefik-v3-file-provider.schema.json")).unwrap()
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        other => panic!("unknown type {other}"),
    }
}

fn pattern_matches(pattern: &str, key: &str) -> bool {
    // The one pattern the schema uses, unanchored as JSON Schema patterns are.
    assert_eq!(pattern, "[a-zA-Z0-9-_]+", "unsupported pattern");
    key.chars()
        .any(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Errors found validating `v` at `path` against schema node `s`.
fn validate(root: &Value, s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    let Some(obj) = s.as_object() else {
        if s == &Value::Bool(false) {
            errs.push(format!("{path}: not allowed"));
        }
        return;
    };
    for k in obj.keys() {
        assert!(
            KNOWN.contains(&k.as_str()),
            "schema keyword {k} not supported"
        );
    }
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/definitions/").expect("local $ref");
        validate(root, &root["definitions"][name], v, path, errs);
    }
    match obj.get("type") {
        Some(Value::String(t)) if !type_ok(t, v) => {
            errs.push(format!("{path}: expected {t}, got {v}"));
            return;
        }
        Some(Value::Array(ts)) if !ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)) => {
            errs.push(format!("{path}: expected one of {ts:?}, got {v}"));
            return;
        }
        _ => {}
    }
    if let Some(one_of) = obj.get("oneOf").and_then(Value::as_array) {
        let passing = one_of
            .iter()
            .filter(|alt| {
                let mut e = Vec::new();
                validate(root, alt, v, path, &mut e);
                e.is_empty()
            })
            .count();
        if passing != 1 {
            errs.push(format!("{path}: {passing} of the oneOf alternatives match"));
        }
    }
    if let Some(n) = v.as_f64() {
        if obj
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errs.push(format!("{path}: {n} below minimum"));
        }
        if obj
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errs.push(format!("{path}: {n} above maximum"));
        }
    }
    if let Some(items) = v.as_array() {
        if let Some(min) = obj.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                errs.push(format!("{path}: fewer than {min} items"));
            }
        }
        if let Some(item_schema) = obj.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(root, item_schema, item, &format!("{path}[{i}]"), errs);
            }
        }
    }
    if let Some(map) = v.as_object() {
        for req in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap();
            if !map.contains_key(req) {
                errs.push(format!("{path}: missing required {req}"));
            }
        }
        let props = obj.get("properties").and_then(Value::as_object);
        let patterns = obj.get("patternProperties").and_then(Value::as_object);
        for (k, child) in map {
            let at = format!("{path}.{k}");
            let mut matched = false;
            if let Some(ps) = props.and_then(|p| p.get(k)) {
                validate(root, ps, child, &at, errs);
                matched = true;
            }
            for (pat, ps) in patterns.into_iter().flatten() {
                if pattern_matches(pat, k) {
                    validate(root, ps, child, &at, errs);
                    matched = true;
                }
            }
            if !matched {
                match obj.get("additionalProperties") {
                    Some(Value::Bool(false)) => errs.push(format!("{at}: unknown property")),
                    Some(extra @ Value::Object(_)) => validate(root, extra, child, &at, errs),
                    _ => {}
                }
            }
        }
    }
}

fn errors(config: &Value) -> Vec<String> {
    let root = schema();
    let mut errs = Vec::new();
    validate(&root, &root, config, "$", &mut errs);
    errs
}

fn local(port: u16) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
    }
}

fn routes() -> Vec<Route> {
    let web = |id: &str, host: &str| route(id).host(host).upstream(&local(8080), 1);
    vec![
        web("web", "web.example.com").build(),
        route("canary")
            .host("canary.example.com")
            .host("*.canary.example.com")
            .upstream(&local(8080), 90)
            .upstream(&local(8081), 10)
            .upstream(&local(8082), 0)
            .tls(TlsPolicy::Acme)
            .build(),
        web("api", "web.example.com")
            .prefix("/api")
            .tls(TlsPolicy::Internal)
            .build(),
        web("docs", "xn--bcher-kva.example")
            .prefix("/docs/")
            .tls(TlsPolicy::OnDemand)
            .build(),
    ]
}

fn opts() -> TraefikOptions {
    TraefikOptions {
        cert_resolver: Some("letsencrypt".into()),
        ..TraefikOptions::default()
    }
}

#[test]
fn generated_config_matches_the_schema() {
    let config = dynamic_config(&routes(), &opts());
    assert_eq!(errors(&config), Vec::<String>::new(), "{config:#}");
    // And with no routes at all: never an empty section (Traefik refuses those).
    let empty = dynamic_config(&[], &opts());
    assert_eq!(errors(&empty), Vec::<String>::new());
    assert!(empty["http"].get("routers").is_none());
    assert!(empty["http"].get("services").is_none());
    assert_eq!(empty["http"]["middlewares"].as_object().unwrap().len(), 1);
    // Every route got its service and routers.
    let http = &config["http"];
    assert_eq!(http["routers"].as_object().unwrap().len(), 4 + 3);
    assert_eq!(
        http["services"]["wharf-canary"]["weighted"]["services"],
        json!([{"name": "wharf-canary-0", "weight": 90}, {"name": "wharf-canary-1", "weight": 10}])
    );
    assert_eq!(
        http["routers"]["wharf-canary-tls"]["tls"],
        json!({"certResolver": "letsencrypt"})
    );
    assert_eq!(http["routers"]["wharf-api-tls"]["tls"], json!({}));
    assert!(http["routers"].get("wharf-web-tls").is_none());
}

#[test]
fn the_validator_catches_wrong_config() {
    // Guard against a validator that accepts everything.
    let bad = [
        json!({"http": {"routers": {"r": {"rule": 5, "service": "s"}}}}),
        json!({"http": {"routers": {"r": {"rule": "Host(`a`)", "service": "s", "bogus": 1}}}}),
        json!({"http": {"services": {"s": {"weighted": {"services": [{"name": "x", "weight": "many"}]}, "loadBalancer": {}}}}}),
        json!({"http": {"services": {"s": {"loadBalancer": {"servers": "http://x"}}}}}),
        json!({"htp": {}}),
    ];
    for b in bad {
        assert!(!errors(&b).is_empty(), "accepted: {b}");
    }
}
