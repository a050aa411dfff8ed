//! References between services in env values: `${{ db.DATABASE_URL }}`.
//!
//! A value may hold text and any number of references, each `${{ service.NAME }}`
//! (whitespace inside the braces optional, as in Railway's syntax). `service` is
//! another service of the same project and environment; `NAME` is one of the
//! variables it runs with (project, environment and its own layers merged; plain or
//! secret) or a built-in:
//!
//! - `HOST`: the name other services connect to it by (the network alias on
//!   runtimes with a project network, `127.0.0.1` for host processes);
//! - `PORT`: the port it is reached on there;
//! - `URL`: its public URL (an error when it has no route).
//!
//! Built-ins win over variables of the same name. Anything else with a `$` is left
//! alone: `$HOME`, `${VAR}`, `{{ x }}`. `$${{` writes a literal `${{` (the text
//! after it is not read as a reference). A `${{` that does not close, an empty or
//! malformed name, or nested braces are errors (InvalidInput), so a typo never
//! reaches an app as text. Error messages name the variable, never its value (which
//! may be a secret).
//!
//! Resolution is a pure function ([`resolve`]): a value that references a secret
//! becomes a secret, so it stays sealed in the release and is never shown.
//!
//! ```
//! use std::collections::BTreeMap;
//! use wharf_core::refs::{resolve, Target};
//! use wharf_core::{EnvValue, EnvVars, Secret};
//!
//! let mut db = Target::default();
//! db.env.insert("PASSWORD".into(), EnvValue::Secret(Secret::new("s3cret")));
//! db.host = Some("db".into());
//! db.port = Some(5432);
//! let targets = BTreeMap::from([("db".to_string(), db)]);
//!
//! let env: EnvVars = [(
//!     "DATABASE_URL".to_string(),
//!     EnvValue::Plain("postgres://app:${{ db.PASSWORD }}@${{db.HOST}}:${{ db.PORT }}/app".into()),
//! )]
//! .into();
//! let out = resolve("api", &env, &targets, true)?;
//! assert!(out["DATABASE_URL"].is_secret());
//! assert_eq!(out["DATABASE_URL"].expose(), "postgres://app:s3cret@db:5432/app");
//! # Ok::<(), wharf_core::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::model::{EnvValue, EnvVars, Secret};

/// The built-in names every service answers to (besides its variables).
pub const BUILTINS: [&str; 3] = ["HOST", "PORT", "URL"];

/// One reference, `${{ service.name }}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// The service referenced.
    pub service: String,
    /// The variable or built-in of it.
    pub name: String,
}

/// A piece of a parsed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text taken as it is (escapes already applied).
    Text(String),
    /// A reference to resolve.
    Ref(Reference),
}

/// Splits `value` into text and references. Fails (InvalidInput) on a `${{` that
/// does not close, an empty or malformed service or variable name, or braces inside
/// a reference. The error says where, never what the value holds.
pub fn parse(value: &str) -> Result<Vec<Part>> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = value;
    let mut offset = 0;
    while let Some(at) = rest.find("${{") {
        // `$${{` is a literal `${{`.
        if at > 0 && rest.as_bytes()[at - 1] == b'$' {
            text.push_str(&rest[..at - 1]);
            text.push_str("${{");
            rest = &rest[at + 3..];
            offset += at + 3;
            continue;
        }
        text.push_str(&rest[..at]);
        let inner_start = at + 3;
        let Some(len) = rest[inner_start..].find("}}") else {
            return Err(Error::invalid(format!(
                "unterminated reference: `${{{{` at byte {} has no closing `}}}}`",
                offset + at
            )));
        };
        let inner = &rest[inner_start..inner_start + len];
        let reference = parse_inner(inner).map_err(|why| {
            Error::invalid(format!("invalid reference at byte {}: {why}", offset + at))
        })?;
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Ref(reference));
        let end = inner_start + len + 2;
        rest = &rest[end..];
        offset += end;
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// `service.NAME` between the braces, whitespace around it allowed.
fn parse_inner(inner: &str) -> std::result::Result<Reference, String> {
    let inner = inner.trim_matches([' ', '\t']);
    if inner.contains(['{', '}', '$']) {
        return Err("references cannot be nested or hold braces".into());
    }
    let Some((service, name)) = inner.split_once('.') else {
        return Err("expected `${{ service.NAME }}`".into());
    };
    crate::model::validate_name(service).map_err(|e| format!("service: {}", e.message()))?;
    crate::model::validate_env_key(name).map_err(|e| format!("variable: {}", e.message()))?;
    Ok(Reference {
        service: service.to_owned(),
        name: name.to_owned(),
    })
}

/// Every reference in `env`'s values, sorted and without repeats. Fails as
/// [`parse`] does, naming the variable.
pub fn references(env: &EnvVars) -> Result<BTreeSet<Reference>> {
    let mut out = BTreeSet::new();
    for (key, value) in env {
        for part in parse(value.expose()).map_err(|e| e.context(format!("env {key}")))? {
            if let Part::Ref(r) = part {
                out.insert(r);
            }
        }
    }
    Ok(out)
}

/// The services `env` references, sorted and without repeats.
pub fn referenced_services(env: &EnvVars) -> Result<BTreeSet<String>> {
    Ok(references(env)?.into_iter().map(|r| r.service).collect())
}

/// What a referenced service offers: its variables and built-ins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// The variables it runs with (project, environment and its own, merged). A
    /// value may itself hold references; they are resolved first.
    pub env: EnvVars,
    /// `HOST`, when known.
    pub host: Option<String>,
    /// `PORT`, when known.
    pub port: Option<u16>,
    /// `URL`, when it has a route.
    pub url: Option<String>,
}

/// Checks, before anything is stored or started, that every reference in `owner`'s
/// `env` names another service of `known` and, for a variable, one it has (built-ins
/// are always accepted here: whether they are known yet is for [`resolve`]).
pub fn check(owner: &str, env: &EnvVars, known: &BTreeMap<String, EnvVars>) -> Result<()> {
    for r in references(env).map_err(|e| e.context(format!("service {owner}")))? {
        if r.service == owner {
            return Err(Error::invalid(format!(
                "service {owner} references itself (${{{{ {}.{} }}}}): refer to its own variables directly",
                r.service, r.name
            )));
        }
        let Some(vars) = known.get(&r.service) else {
            return Err(Error::invalid(format!(
                "service {owner} references unknown service {} (${{{{ {}.{} }}}})",
                r.service, r.service, r.name
            )));
        };
        if !BUILTINS.contains(&r.name.as_str()) && !vars.contains_key(&r.name) {
            return Err(Error::invalid(format!(
                "service {owner} references unknown variable {} of service {} (it has no such variable, and the built-ins are HOST, PORT and URL)",
                r.name, r.service
            )));
        }
    }
    Ok(())
}

/// Resolves the references in `owner`'s `env` against `targets` (by service name).
///
/// A value holding no reference comes back as it was. A value referencing a secret
/// (directly or through another reference) becomes [`EnvValue::Secret`]. With
/// `secrets` false (a fork's preview, which runs without secrets), such a value is
/// left out, as the preview's own secrets are. Fails (InvalidInput) on a malformed
/// value, a reference to `owner` itself, to a service not in `targets`, to a variable
/// the target does not have, to a built-in it cannot tell yet (`URL` without a
/// route), or on references that go round in a circle.
pub fn resolve(
    owner: &str,
    env: &EnvVars,
    targets: &BTreeMap<String, Target>,
    secrets: bool,
) -> Result<EnvVars> {
    let mut out = EnvVars::new();
    for (key, value) in env {
        let mut path = vec![(owner.to_owned(), key.clone())];
        let (text, secret) = resolve_value(owner, value, targets, &mut path)
            .map_err(|e| e.context(format!("service {owner}: env {key}")))?;
        if secret && !secrets {
            continue;
        }
        let resolved = if secret {
            EnvValue::Secret(Secret::new(text))
        } else {
            EnvValue::Plain(text)
        };
        out.insert(key.clone(), resolved);
    }
    Ok(out)
}

/// The text of `value` (of service `owner`) and whether any part of it is secret.
/// `path` holds the variables being resolved, to report a circle.
fn resolve_value(
    owner: &str,
    value: &EnvValue,
    targets: &BTreeMap<String, Target>,
    path: &mut Vec<(String, String)>,
) -> Result<(String, bool)> {
    let parts = parse(value.expose())?;
    let mut secret = value.is_secret();
    let mut text = String::new();
    for part in parts {
        let r = match part {
            Part::Text(t) => {
                text.push_str(&t);
                continue;
            }
            Part::Ref(r) => r,
        };
        let shown = format!("${{{{ {}.{} }}}}", r.service, r.name);
        if r.service == owner {
            return Err(Error::invalid(format!(
                "{shown}: service {owner} references itself"
            )));
        }
        let Some(target) = targets.get(&r.service) else {
            return Err(Error::invalid(format!(
                "{shown}: unknown service {}",
                r.service
            )));
        };
        let missing =
            |what: &str| Error::invalid(format!("{shown}: service {} has no {what}", r.service));
        match r.name.as_str() {
            "HOST" => text.push_str(
                target
                    .host
                    .as_deref()
                    .ok_or_else(|| missing("address yet (it is not live)"))?,
            ),
            "PORT" => text.push_str(
                &target
                    .port
                    .ok_or_else(|| missing("known port yet (it is not live and sets none)"))?
                    .to_string(),
            ),
            "URL" => text.push_str(
                target
                    .url
                    .as_deref()
                    .ok_or_else(|| missing("route, so no URL"))?,
            ),
            name => {
                let Some(v) = target.env.get(name) else {
                    return Err(missing(&format!("variable {name}")));
                };
                let step = (r.service.clone(), name.to_owned());
                if path.contains(&step) {
                    let circle: Vec<String> = path
                        .iter()
                        .chain(std::iter::once(&step))
                        .map(|(s, k)| format!("{s}.{k}"))
                        .collect();
                    return Err(Error::invalid(format!(
                        "references go round in a circle: {}",
                        circle.join(" -> ")
                    )));
                }
                path.push(step);
                let (t, s) = resolve_value(&r.service, v, targets, path)?;
                path.pop();
                text.push_str(&t);
                secret |= s;
            }
        }
    }
    Ok((text, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(v: &str) -> EnvValue {
        EnvValue::Plain(v.into())
    }

    fn r(service: &str, name: &str) -> Part {
        Part::Ref(Reference {
            service: service.into(),
            name: name.into(),
        })
    }

    fn t(text: &str) -> Part {
        Part::Text(text.into())
    }

    #[test]
    fn parses_text_and_several_references_with_or_without_spaces() {
        assert_eq!(
            parse("postgres://${{ db.USER }}@${{db.HOST}}:5432/app").unwrap(),
            vec![
                t("postgres://"),
                r("db", "USER"),
                t("@"),
                r("db", "HOST"),
                t(":5432/app")
            ]
        );
        assert_eq!(parse("${{\tapi.URL  }}").unwrap(), vec![r("api", "URL")]);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn leaves_plain_dollars_and_shell_syntax_alone() {
        for v in [
            "$HOME",
            "${VAR}",
            "a $ b",
            "{{ x.Y }}",
            "$$",
            "${ {a.B}}",
            "$",
            "${",
        ] {
            assert_eq!(parse(v).unwrap(), vec![t(v)], "{v}");
        }
    }

    #[test]
    fn double_dollar_escapes_a_reference() {
        assert_eq!(parse("$${{ db.HOST }}").unwrap(), vec![t("${{ db.HOST }}")]);
        assert_eq!(
            parse("a$${{x ${{ db.PORT }}").unwrap(),
            vec![t("a${{x "), r("db", "PORT")]
        );
    }

    #[test]
    fn malformed_references_are_errors_that_do_not_echo_the_value() {
        for v in [
            "s3cret ${{ db.HOST",
            "${{ db.HOST }",
            "${{}",
            "${{}}",
            "${{ . }}",
            "${{ db. }}",
            "${{ .HOST }}",
            "${{ db }}",
            "${{ Db.HOST }}",
            "${{ db.1X }}",
            "${{ db.HO-ST }}",
            "${{ db.a.b }}",
            "${{ a.${{ b.C }} }}",
            "${{ db.{X} }}",
        ] {
            let e = parse(v).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{v}");
            assert!(!e.message().contains("s3cret"), "{e}");
        }
        assert!(parse("x ${{ db.HOST")
            .unwrap_err()
            .message()
            .contains("unterminated"));
    }

    fn targets() -> BTreeMap<String, Target> {
        let mut db = Target {
            host: Some("db".into()),
            port: Some(5432),
            url: None,
            ..Default::default()
        };
        db.env.insert("USER".into(), plain("app"));
        db.env
            .insert("PASSWORD".into(), EnvValue::Secret(Secret::new("pw")));
        db.env.insert(
            "DATABASE_URL".into(),
            EnvValue::Secret(Secret::new("postgres://app:pw@db/app")),
        );
        db.env.insert("HOST".into(), plain("shadowed"));
        let mut api = Target {
            url: Some("http://api.demo.localhost:8080".into()),
            ..Default::default()
        };
        api.env.insert("DB".into(), plain("${{ db.DATABASE_URL }}"));
        api.env.insert("WHO".into(), plain("user ${{ db.USER }}"));
        BTreeMap::from([("db".to_string(), db), ("api".to_string(), api)])
    }

    fn env(pairs: &[(&str, EnvValue)]) -> EnvVars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn resolves_variables_and_builtins_and_keeps_plain_values_plain() {
        let out = resolve(
            "web",
            &env(&[
                ("A", plain("${{ db.USER }}@${{ db.HOST }}:${{ db.PORT }}")),
                ("B", plain("${{ api.URL }}/x")),
                ("C", plain("no refs")),
            ]),
            &targets(),
            true,
        )
        .unwrap();
        // HOST is the built-in, not db's own variable HOST.
        assert_eq!(out["A"], plain("app@db:5432"));
        assert_eq!(out["B"], plain("http://api.demo.localhost:8080/x"));
        assert_eq!(out["C"], plain("no refs"));
    }

    #[test]
    fn a_value_referencing_a_secret_is_secret_even_through_another_reference() {
        let out = resolve(
            "web",
            &env(&[("X", plain("${{ api.DB }}"))]),
            &targets(),
            true,
        )
        .unwrap();
        assert_eq!(out["X"].expose(), "postgres://app:pw@db/app");
        assert!(out["X"].is_secret());
        // Through a plain chain, plain.
        let out = resolve(
            "web",
            &env(&[("W", plain("${{ api.WHO }}!"))]),
            &targets(),
            true,
        )
        .unwrap();
        assert_eq!(out["W"], plain("user app!"));
        // A secret holding only plain references stays secret.
        let out = resolve(
            "web",
            &env(&[("Y", EnvValue::Secret(Secret::new("${{ db.USER }}")))]),
            &targets(),
            true,
        )
        .unwrap();
        assert_eq!(out["Y"], EnvValue::Secret(Secret::new("app")));
    }

    #[test]
    fn without_secrets_a_value_that_would_hold_one_is_left_out() {
        let out = resolve(
            "web",
            &env(&[
                ("X", plain("${{ db.PASSWORD }}")),
                ("Y", plain("${{ db.USER }}")),
            ]),
            &targets(),
            false,
        )
        .unwrap();
        assert!(!out.contains_key("X"));
        assert_eq!(out["Y"], plain("app"));
    }

    #[test]
    fn unknown_targets_self_references_and_unknown_builtins_are_errors() {
        let cases = [
            ("${{ cache.HOST }}", "unknown service cache"),
            ("${{ db.NOPE }}", "has no variable NOPE"),
            ("${{ web.HOST }}", "references itself"),
            ("${{ db.URL }}", "has no route"),
            ("${{ api.PORT }}", "no known port"),
            ("${{ api.HOST }}", "no address"),
        ];
        for (v, want) in cases {
            let e = resolve("web", &env(&[("K", plain(v))]), &targets(), true).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            assert!(e.message().contains(want), "{v}: {e}");
            assert!(e.message().contains("env K"), "{e}");
        }
    }

    #[test]
    fn references_going_round_in_a_circle_are_an_error() {
        let mut t = targets();
        t.get_mut("api")
            .unwrap()
            .env
            .insert("LOOP".into(), plain("${{ db.LOOP }}"));
        t.get_mut("db")
            .unwrap()
            .env
            .insert("LOOP".into(), plain("${{ api.LOOP }}"));
        let e = resolve("web", &env(&[("K", plain("${{ api.LOOP }}"))]), &t, true).unwrap_err();
        assert!(
            e.message()
                .contains("circle: web.K -> api.LOOP -> db.LOOP -> api.LOOP"),
            "{e}"
        );
    }

    #[test]
    fn check_accepts_known_names_and_builtins_and_refuses_the_rest() {
        let known = BTreeMap::from([("db".to_string(), env(&[("USER", plain("app"))]))]);
        let ok = env(&[(
            "A",
            plain("${{ db.USER }} ${{ db.HOST }} ${{ db.PORT }} ${{ db.URL }}"),
        )]);
        check("web", &ok, &known).unwrap();
        for (v, want) in [
            ("${{ cache.HOST }}", "unknown service cache"),
            ("${{ db.PASS }}", "unknown variable PASS of service db"),
            ("${{ web.HOST }}", "references itself"),
            ("${{ db.HOST", "unterminated"),
        ] {
            let e = check("web", &env(&[("K", plain(v))]), &known).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
            assert!(e.message().contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn referenced_services_lists_each_once() {
        let e = env(&[
            ("A", plain("${{ db.USER }}${{ db.HOST }}")),
            ("B", plain("${{ api.URL }}")),
        ]);
        assert_eq!(
            referenced_services(&e)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["api", "db"]
        );
    }
}
