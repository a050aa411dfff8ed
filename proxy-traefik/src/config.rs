//! Traefik dynamic configuration (v3) for Wharf's routes.

use serde_json::{json, Map, Value};
use wharf_core::{validate_hostname, Error, Result, Route, TlsPolicy};

use crate::TraefikOptions;

/// Route ids become Traefik router and service names: keep them to a safe set.
fn check_id(route: &Route) -> Result<()> {
    let id = route.id.as_str();
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(format!(
            "route id {id:?} must be 1 to 128 characters of a-z, A-Z, 0-9, '-', '_', '.'"
        )));
    }
    Ok(())
}

pub(crate) fn check_route(route: &Route, opts: &TraefikOptions) -> Result<()> {
    route.validate()?;
    check_id(route)?;
    rule(route)?;
    match route.tls {
        TlsPolicy::None => {}
        TlsPolicy::Internal => {}
        TlsPolicy::Acme | TlsPolicy::OnDemand if opts.cert_resolver.is_none() => {
            return Err(Error::invalid(format!(
                "route {} asks for {:?} certificates but this Traefik router has no certificate resolver",
                route.id, route.tls
            )))
        }
        _ => {}
    }
    if route.tls != TlsPolicy::None && opts.tls_entry_points.is_empty() {
        return Err(Error::invalid(format!(
            "route {} asks for TLS but this Traefik router has no TLS entry points",
            route.id
        )));
    }
    Ok(())
}

/// A Traefik v3 rule for the route's hosts and path prefix, built only from values
/// that passed validation: every host is checked again with [`validate_hostname`]
/// (so a backtick, space or quote can never reach the rule), and the path prefix may
/// hold only URL path characters. Wildcard hosts become an anchored `HostRegexp`
/// matching exactly one more label. A prefix `/api` matches `/api` and `/api/...`,
/// not `/apix`.
///
/// ```
/// use wharf_core::{Route, RouteId, TlsPolicy};
/// let route = Route {
///     id: RouteId("web".into()),
///     hosts: vec!["web.example.com".into(), "*.preview.example.com".into()],
///     path_prefix: Some("/api".into()),
///     upstreams: vec![],
///     tls: TlsPolicy::None,
///     labels: Default::default(),
/// };
/// assert_eq!(
///     wharf_traefik::rule(&route).unwrap(),
///     r"(Host(`web.example.com`) || HostRegexp(`^[a-z0-9-]+\.preview\.example\.com$`)) && (Path(`/api`) || PathPrefix(`/api/`))"
/// );
/// let mut bad = route.clone();
/// bad.hosts = vec!["a`) || Host(`evil.com".into()];
/// assert!(wharf_traefik::rule(&bad).is_err());
/// ```
pub fn rule(route: &Route) -> Result<String> {
    if route.hosts.is_empty() {
        return Err(Error::invalid(format!("route {}: no hosts", route.id)));
    }
    let mut hosts = Vec::new();
    for h in &route.hosts {
        validate_hostname(h).map_err(|e| e.context(format!("route {}", route.id)))?;
        hosts.push(match h.strip_prefix("*.") {
            Some(domain) => format!(
                "HostRegexp(`^[a-z0-9-]+\\.{}$`)",
                domain.replace('.', "\\.")
            ),
            None => format!("Host(`{h}`)"),
        });
    }
    let hosts = if hosts.len() == 1 {
        hosts.remove(0)
    } else {
        format!("({})", hosts.join(" || "))
    };
    let Some(p) = &route.path_prefix else {
        return Ok(hosts);
    };
    let path_ok = p.starts_with('/')
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@%".contains(c));
    if !path_ok {
        return Err(Error::invalid(format!(
            "route {}: path prefix {p:?} must start with '/' and hold only URL path characters",
            route.id
        )));
    }
    let path = if p.ends_with('/') {
        format!("PathPrefix(`{p}`)")
    } else {
        format!("(Path(`{p}`) || PathPrefix(`{p}/`))")
    };
    Ok(format!("{hosts} && {path}"))
}

fn name(route: &Route) -> String {
    format!("wharf-{}", route.id)
}

/// Traefik's dynamic configuration (the `http` section) for `routes`: per route a
/// weighted service `wharf-<id>` over load-balancer services `wharf-<id>-<n>` (one per
/// upstream with a weight above 0), a router `wharf-<id>` on the HTTP entry points and,
/// for routes with TLS, a router `wharf-<id>-tls` on the TLS entry points with the
/// certificate resolver (ACME, on-demand) or Traefik's default certificate (internal).
/// Routes that fail [`rule`] are left out (routers refuse them before they get here).
/// With no routes it holds a single unused middleware, `wharf-no-routes`: Traefik ignores
/// configuration with empty sections, which would leave the last route in place.
pub fn dynamic_config(routes: &[Route], opts: &TraefikOptions) -> Value {
    let mut routers = Map::new();
    let mut services = Map::new();
    for route in routes {
        let Ok(rule) = rule(route) else { continue };
        let base = name(route);
        let mut weighted = Vec::new();
        for (i, u) in route.upstreams.iter().enumerate() {
            if u.weight == 0 {
                continue;
            }
            let child = format!("{base}-{i}");
            services.insert(
                child.clone(),
                json!({"loadBalancer": {
                    "servers": [{"url": format!("http://{}", u.endpoint)}],
                    "passHostHeader": true,
                }}),
            );
            weighted.push(json!({"name": child, "weight": u.weight}));
        }
        services.insert(base.clone(), json!({"weighted": {"services": weighted}}));
        routers.insert(
            base.clone(),
            json!({"rule": rule, "service": base, "entryPoints": opts.entry_points}),
        );
        let tls = match (&route.tls, &opts.cert_resolver) {
            (TlsPolicy::None, _) => None,
            (TlsPolicy::Internal, _) => Some(json!({})),
            (_, Some(resolver)) => Some(json!({"certResolver": resolver})),
            (_, None) => None,
        };
        if let Some(tls) = tls {
            routers.insert(
                format!("{base}-tls"),
                json!({
                    "rule": rule,
                    "service": base,
                    "entryPoints": opts.tls_entry_points,
                    "tls": tls,
                }),
            );
        }
    }
    // Traefik refuses an empty `routers` or `services` map ("cannot be a standalone
    // element") and keeps the previous configuration: with no routes, define one
    // unused middleware so the removal of the last route still takes effect.
    if routers.is_empty() {
        return json!({"http": {"middlewares": {"wharf-no-routes": {"addPrefix": {"prefix": "/"}}}}});
    }
    json!({"http": {"routers": routers, "services": services}})
}
