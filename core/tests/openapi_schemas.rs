//! The `utoipa` schemas of the model types match what serde really produces.
//!
//! Every type the API sends or receives is serialized with `serde_json` in a
//! representative value of each of its shapes (every enum variant, optional fields
//! present and absent) and checked against its generated schema by the small validator
//! below. The validator is strict about objects (a key the schema does not declare is
//! an error, like a required key that is missing), and the test also demands that the
//! values reach every `oneOf` branch and every declared property, so a serde attribute
//! the schema does not follow, or a variant or field added without a value here, fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;
use wharf_core::*;

/// Generated schemas by component name, as JSON.
type Components = BTreeMap<String, Value>;

/// Paths into the schemas (`Comp#branch.property`) a value went through.
type Seen = BTreeSet<String>;

fn collect<T: ToSchema>(into: &mut Vec<(String, RefOr<Schema>)>) {
    into.push((T::name().into_owned(), T::schema()));
    T::schemas(into);
}

/// The schemas of the API's model types and everything they reference.
fn components() -> Components {
    let mut all = Vec::new();
    collect::<Project>(&mut all);
    collect::<Environment>(&mut all);
    collect::<Service>(&mut all);
    collect::<Deployment>(&mut all);
    collect::<Release>(&mut all);
    collect::<Event>(&mut all);
    collect::<InstanceStatus>(&mut all);
    collect::<Route>(&mut all);
    let to_json = |s| serde_json::to_value(s).expect("schemas serialize");
    all.into_iter().map(|(n, s)| (n, to_json(s))).collect()
}

fn resolve<'a>(comps: &'a Components, reference: &str) -> Result<(&'a str, &'a Value), String> {
    let name = reference
        .strip_prefix("#/components/schemas/")
        .ok_or_else(|| format!("unexpected $ref {reference}"))?;
    let (name, schema) = comps
        .get_key_value(name)
        .ok_or_else(|| format!("$ref to missing component {name}"))?;
    Ok((name, schema))
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// Property names an object schema declares, through `allOf` and `$ref`.
fn declared(comps: &Components, s: &Value) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = s["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(r) = s["$ref"].as_str() {
        keys.extend(
            resolve(comps, r)
                .map(|(_, s)| declared(comps, s))
                .unwrap_or_default(),
        );
    }
    for part in s["allOf"].as_array().into_iter().flatten() {
        keys.extend(declared(comps, part));
    }
    keys
}

/// Checks `v` against schema `s`. `strict`: keys `s` does not declare are errors
/// (off inside `allOf`, whose parts each declare only some keys). `at` names the place
/// in the schemas for `seen` and for messages.
fn check(
    c: &Components,
    s: &Value,
    v: &Value,
    strict: bool,
    at: &str,
    seen: &mut Seen,
) -> Result<(), String> {
    let fail = |why: String| -> Result<(), String> { Err(format!("{at}: {why} (value {v})")) };
    if let Some(r) = s["$ref"].as_str() {
        let (name, target) = resolve(c, r)?;
        seen.insert(name.to_owned());
        return check(c, target, v, strict, name, seen);
    }
    for part in s["allOf"].as_array().into_iter().flatten() {
        check(c, part, v, false, at, seen)?;
    }
    if s["allOf"].is_array() && strict && s["properties"].is_null() {
        let known = declared(c, s);
        if let Some(k) = v
            .as_object()
            .and_then(|o| o.keys().find(|k| !known.contains(*k)))
        {
            return fail(format!("key {k:?} is in no part of allOf"));
        }
    }
    for (kw, exactly_one) in [("oneOf", true), ("anyOf", false)] {
        let Some(branches) = s[kw].as_array() else {
            continue;
        };
        let mut passed = Vec::new();
        let mut errors = Vec::new();
        for (i, b) in branches.iter().enumerate() {
            let mut trial = Seen::new();
            let here = format!("{at}#{i}");
            match check(c, b, v, strict, &here, &mut trial) {
                Ok(()) => passed.push((here, trial)),
                Err(e) => errors.push(e),
            }
        }
        match passed.len() {
            0 => return fail(format!("no {kw} branch matches: {errors:?}")),
            n if n > 1 && exactly_one => return fail(format!("{n} oneOf branches match")),
            _ => {}
        }
        for (here, trial) in passed {
            seen.insert(here);
            seen.extend(trial);
        }
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            return fail(format!("not one of {allowed:?}"));
        }
    }
    let types: Vec<&str> = match &s["type"] {
        Value::String(t) => vec![t],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, v)) {
        return fail(format!("not of type {types:?}"));
    }
    if let (Some(min), Some(n)) = (s["minimum"].as_f64(), v.as_f64()) {
        if n < min {
            return fail(format!("below minimum {min}"));
        }
    }
    if let (Some(items), Some(elems)) = (s.get("items"), v.as_array()) {
        for (i, e) in elems.iter().enumerate() {
            check(c, items, e, true, &format!("{at}[{i}]"), seen)?;
        }
    }
    if let Some(obj) = v.as_object() {
        check_object(c, s, obj, strict, at, seen).or_else(fail)?;
    }
    Ok(())
}

fn check_object(
    c: &Components,
    s: &Value,
    obj: &serde_json::Map<String, Value>,
    strict: bool,
    at: &str,
    seen: &mut Seen,
) -> Result<(), String> {
    for key in s["required"].as_array().into_iter().flatten() {
        let key = key.as_str().unwrap_or_default();
        if !obj.contains_key(key) {
            return Err(format!("required key {key:?} missing"));
        }
    }
    let props = s["properties"].as_object();
    for (k, val) in obj {
        match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
            (Some(p), _) => {
                seen.insert(format!("{at}.{k}"));
                check(c, p, val, true, &format!("{at}.{k}"), seen)?;
            }
            (None, Some(Value::Bool(false))) => return Err(format!("key {k:?} not allowed")),
            (None, Some(extra)) if extra.is_object() => {
                check(c, extra, val, true, &format!("{at}[{k}]"), seen)?
            }
            (None, _) if strict && props.is_some() => {
                return Err(format!(
                    "key {k:?} is not declared (serde and schema disagree)"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every `oneOf`/`anyOf` branch and property the components declare, named as
/// [`check`] records them in `seen`.
fn reachable(s: &Value, at: &str, out: &mut Seen) {
    for kw in ["oneOf", "anyOf"] {
        for (i, b) in s[kw].as_array().into_iter().flatten().enumerate() {
            let here = format!("{at}#{i}");
            out.insert(here.clone());
            reachable(b, &here, out);
        }
    }
    for part in s["allOf"].as_array().into_iter().flatten() {
        reachable(part, at, out);
    }
    for (k, _) in s["properties"].as_object().into_iter().flatten() {
        out.insert(format!("{at}.{k}"));
    }
}

/// Serializes `value` and checks it against its type's schema; panics on a mismatch.
fn ok<T: Serialize + ToSchema + fmt::Debug>(c: &Components, seen: &mut Seen, value: T) {
    let json = serde_json::to_value(&value).expect("value serializes");
    if let Err(e) = validate_json(c, &T::name(), &json, seen) {
        panic!("{value:?} does not match the schema of {}: {e}", T::name());
    }
}

fn validate_json(c: &Components, name: &str, json: &Value, seen: &mut Seen) -> Result<(), String> {
    let reference = json!({ "$ref": format!("#/components/schemas/{name}") });
    check(c, &reference, json, true, name, seen)
}

#[path = "openapi_schemas/samples.rs"]
mod samples;

#[test]
fn every_shape_serde_produces_matches_its_schema() {
    let comps = components();
    let mut seen = Seen::new();
    samples::samples(&comps, &mut seen);
    let mut expected = Seen::new();
    for (name, schema) in &comps {
        expected.insert(name.clone());
        reachable(schema, name, &mut expected);
    }
    let missed: Vec<_> = expected.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "no sample reached {missed:?}: add one to samples.rs"
    );
}

#[test]
fn the_validator_rejects_what_serde_would_not_produce() {
    let c = components();
    let mut seen = Seen::new();
    let mut bad = |name: &str, json: Value| {
        let r = validate_json(&c, name, &json, &mut seen);
        assert!(r.is_err(), "{name} accepted {json}");
    };
    bad("Probe", json!({"type": "tcp"}));
    bad("Probe", json!({"kind": "Tcp"}));
    bad("Probe", json!({"kind": "http"}));
    bad("GitRef", json!({"kind": "branch", "value": "main"}));
    bad("Artifact", json!({"image": "a", "localOnly": true}));
    bad("Artifact", json!({"image": 3}));
    bad(
        "HealthCheck",
        json!({"probe": {"kind": "tcp"}, "interval": "1s", "timeout": 5}),
    );
    bad(
        "HealthCheck",
        json!({"probe": {"kind": "tcp"}, "interval": -1, "timeout": 5}),
    );
    bad(
        "EventKind",
        json!({"kind": "log", "at": 1, "stream": "stdout"}),
    );
    bad(
        "EventKind",
        json!({"kind": "log", "at": 1, "stream": "stdout", "text": "", "x": 1}),
    );
    bad(
        "Project",
        json!({"id": "p", "name": "n", "created_at": 1, "env": {"A": "plain"}}),
    );
    bad("ProjectId", json!({"0": "prj_1"}));
    let good = json!({"kind": "log", "at": 1, "stream": "build", "text": "ok"});
    validate_json(&c, "EventKind", &good, &mut seen).expect("a log event matches");
}
