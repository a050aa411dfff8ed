//! Caddy JSON for Wharf's server block, routes and TLS policies, and reading routes
//! back from it.

use serde_json::{json, Value};
use wharf_core::{Endpoint, Error, Labels, Result, Route, RouteId, TlsPolicy, Upstream};

use crate::{CaddyOptions, Issuer};

const ROUTE_PREFIX: &str = "wharf.route.";
const TLS_PREFIX: &str = "wharf.tls.";
/// Key of the `vars` handler entry that carries what Caddy's config cannot express.
const META: &str = "wharf_route";

pub(crate) fn route_id(id: &RouteId) -> String {
    format!("{ROUTE_PREFIX}{id}")
}
pub(crate) fn tls_id(id: &RouteId) -> String {
    format!("{TLS_PREFIX}{id}")
}
pub(crate) fn catch_all_id(server: &str) -> String {
    format!("wharf.catch_all.{server}")
}

/// Ids and names end up in admin API paths (`/id/<id>`): keep them to a safe set.
pub(crate) fn check_id_text(s: &str, what: &str) -> Result<()> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(Error::invalid(format!(
            "{what} {s:?} must be 1 to 128 characters of a-z, A-Z, 0-9, '-', '_', '.'"
        )));
    }
    Ok(())
}

/// The port of a listen address such as `:80`, `127.0.0.1:8080` or `[::1]:443`.
pub(crate) fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| Error::invalid(format!("listen address {addr:?} has no port")))
}

pub(crate) fn server_block(o: &CaddyOptions) -> Value {
    let mut listen = vec![o.http_listen.clone()];
    let mut server = json!({
        "routes": [catch_all(&o.server)],
        "automatic_https": {"disable_redirects": true, "skip_certificates": []},
    });
    if let Some(https) = &o.https_listen {
        listen.push(https.clone());
        server["tls_connection_policies"] = json!([{}]);
    }
    server["listen"] = json!(listen);
    server
}

pub(crate) fn catch_all(server: &str) -> Value {
    json!({
        "@id": catch_all_id(server),
        "handle": [{
            "handler": "static_response",
            "status_code": 404,
            "body": "no route for this host\n",
        }],
        "terminal": true,
    })
}

pub(crate) fn check_route(route: &Route, o: &CaddyOptions) -> Result<()> {
    route.validate()?;
    check_id_text(route.id.as_str(), "route id")?;
    if let Some(p) = &route.path_prefix {
        if p.contains(['*', '%', '\\']) {
            return Err(Error::invalid(format!(
                "route {}: path prefix {p:?} must not hold '*', '%' or '\\'",
                route.id
            )));
        }
    }
    if route.tls != TlsPolicy::None && o.https_listen.is_none() {
        return Err(Error::invalid(format!(
            "route {} asks for TLS but this Caddy router has no HTTPS listener",
            route.id
        )));
    }
    Ok(())
}

fn path_patterns(prefix: &str) -> Vec<String> {
    if prefix.ends_with('/') {
        vec![format!("{prefix}*")]
    } else {
        vec![prefix.to_owned(), format!("{prefix}/*")]
    }
}

fn dial(e: &Endpoint) -> String {
    e.to_string()
}

fn parse_dial(d: &str) -> Option<Endpoint> {
    let (host, port) = d.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(Endpoint {
        host: host.to_owned(),
        port: port.parse().ok()?,
    })
}

pub(crate) fn route_json(route: &Route) -> Value {
    let mut matcher = json!({ "host": route.hosts });
    if let Some(p) = &route.path_prefix {
        matcher["path"] = json!(path_patterns(p));
    }
    let upstreams: Vec<Value> = route
        .upstreams
        .iter()
        .map(|u| json!({"dial": dial(&u.endpoint)}))
        .collect();
    let weights: Vec<u32> = route.upstreams.iter().map(|u| u.weight).collect();
    json!({
        "@id": route_id(&route.id),
        "match": [matcher],
        "handle": [
            {
                "handler": "vars",
                META: {
                    "id": route.id,
                    "path_prefix": route.path_prefix,
                    "tls": route.tls,
                    "labels": route.labels,
                    // The weights as given; Caddy gets them reduced (see `reduced`).
                    "weights": weights,
                },
            },
            {
                "handler": "reverse_proxy",
                "upstreams": upstreams,
                "load_balancing": {
                    "selection_policy": {"policy": "weighted_round_robin", "weights": reduced(&weights)},
                },
            },
        ],
        "terminal": true,
    })
}

/// Weights divided by their greatest common divisor. Caddy's weighted round robin
/// is not smooth: it sends `w` requests in a row to an upstream of weight `w`
/// before it moves on (its index walks the sum of the weights), so three equal
/// replicas of weight 100 would each take 100 requests in turn, and a 90/10 canary
/// 90 then 10. Reduced (1, 1, 1 and 9/1) the rotation is as fine as the ratio
/// allows.
pub(crate) fn reduced(weights: &[u32]) -> Vec<u32> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = weights.iter().copied().fold(0, gcd);
    if g <= 1 {
        return weights.to_vec();
    }
    weights.iter().map(|w| w / g).collect()
}

/// Order of routes in the server: longer path prefixes first, then exact hosts before
/// wildcards, so a more specific route is never shadowed by a broader one.
pub(crate) fn rank(route: &Value) -> (usize, bool) {
    let m = &route["match"][0];
    let path_len = m["path"][0]
        .as_str()
        .map_or(0, |p| p.trim_end_matches('*').len());
    let exact = m["host"]
        .as_array()
        .is_some_and(|h| h.iter().all(|h| !h.as_str().unwrap_or("").starts_with('*')));
    (path_len, exact)
}

/// A Wharf route from its Caddy JSON; `None` for routes Wharf does not own.
pub(crate) fn parse_route(v: &Value) -> Option<Route> {
    let id = v["@id"].as_str()?.strip_prefix(ROUTE_PREFIX)?;
    let handle = v["handle"].as_array()?;
    let meta = handle
        .iter()
        .find(|h| h["handler"] == "vars")
        .map(|h| &h[META])?;
    let proxy = handle.iter().find(|h| h["handler"] == "reverse_proxy")?;
    let hosts: Vec<String> = v["match"][0]["host"]
        .as_array()?
        .iter()
        .filter_map(|h| h.as_str().map(str::to_owned))
        .collect();
    let weights = meta["weights"]
        .as_array()
        .or_else(|| proxy["load_balancing"]["selection_policy"]["weights"].as_array());
    let upstreams = proxy["upstreams"]
        .as_array()?
        .iter()
        .enumerate()
        .map(|(i, u)| {
            Some(Upstream {
                endpoint: parse_dial(u["dial"].as_str()?)?,
                weight: weights
                    .and_then(|w| w.get(i))
                    .and_then(Value::as_u64)
                    .map_or(1, |w| w as u32),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let path_prefix = v["match"][0]["path"][0].as_str().map(|p| {
        let p = p.strip_suffix('*').unwrap_or(p);
        p.to_owned()
    });
    let tls: TlsPolicy = serde_json::from_value(meta["tls"].clone()).unwrap_or_default();
    let labels: Labels = serde_json::from_value(meta["labels"].clone()).unwrap_or_default();
    Some(Route {
        id: RouteId(id.to_owned()),
        hosts,
        path_prefix,
        upstreams,
        tls,
        labels,
    })
}

fn issuer(i: &Issuer) -> Value {
    match i {
        Issuer::Acme => json!({"module": "acme"}),
        Issuer::AcmeWithEmail(email) => json!({"module": "acme", "email": email}),
        Issuer::Internal => json!({"module": "internal"}),
    }
}

/// The automation policy for a route's certificates; `None` for plain HTTP.
pub(crate) fn tls_policy(route: &Route, o: &CaddyOptions) -> Option<Value> {
    let (iss, on_demand) = match route.tls {
        TlsPolicy::None => return None,
        TlsPolicy::Acme => (issuer(&o.acme_issuer), false),
        TlsPolicy::Internal => (issuer(&Issuer::Internal), false),
        TlsPolicy::OnDemand => (issuer(&o.on_demand_issuer), true),
    };
    let mut p = json!({
        "@id": tls_id(&route.id),
        "subjects": route.hosts,
        "issuers": [iss],
    });
    if on_demand {
        p["on_demand"] = json!(true);
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(tls: TlsPolicy, path: Option<&str>) -> Route {
        Route {
            id: RouteId("web".into()),
            hosts: vec!["web.example.com".into(), "*.web.example.com".into()],
            path_prefix: path.map(str::to_owned),
            upstreams: vec![
                Upstream {
                    endpoint: Endpoint {
                        host: "127.0.0.1".into(),
                        port: 8080,
                    },
                    weight: 90,
                },
                Upstream {
                    endpoint: Endpoint {
                        host: "::1".into(),
                        port: 8081,
                    },
                    weight: 10,
                },
            ],
            tls,
            labels: Labels::from([("wharf.managed".to_string(), "true".to_string())]),
        }
    }

    #[test]
    fn route_round_trips_through_caddy_json() {
        for path in [None, Some("/api"), Some("/api/")] {
            for tls in [
                TlsPolicy::None,
                TlsPolicy::Acme,
                TlsPolicy::Internal,
                TlsPolicy::OnDemand,
            ] {
                let r = route(tls, path);
                let v = route_json(&r);
                assert_eq!(parse_route(&v).as_ref(), Some(&r), "{v}");
            }
        }
    }

    #[test]
    fn weighted_round_robin_and_paths() {
        let v = route_json(&route(TlsPolicy::None, Some("/api")));
        assert_eq!(
            v["handle"][1]["load_balancing"]["selection_policy"],
            json!({"policy": "weighted_round_robin", "weights": [9, 1]})
        );
        assert_eq!(v["handle"][0][META]["weights"], json!([90, 10]));
        assert_eq!(reduced(&[100, 100, 100]), [1, 1, 1]);
        assert_eq!(reduced(&[0, 100]), [0, 1]);
        assert_eq!(reduced(&[7, 3]), [7, 3]);
        assert_eq!(v["handle"][1]["upstreams"][1]["dial"], "[::1]:8081");
        assert_eq!(v["match"][0]["path"], json!(["/api", "/api/*"]));
        assert_eq!(rank(&v), (4, false));
    }

    #[test]
    fn tls_policies_per_kind() {
        let o = CaddyOptions {
            on_demand_issuer: Issuer::Internal,
            ..CaddyOptions::new("http://127.0.0.1:2019")
        };
        assert!(tls_policy(&route(TlsPolicy::None, None), &o).is_none());
        let p = tls_policy(&route(TlsPolicy::Acme, None), &o).unwrap();
        assert_eq!(p["issuers"], json!([{"module": "acme"}]));
        assert!(p.get("on_demand").is_none());
        let p = tls_policy(&route(TlsPolicy::OnDemand, None), &o).unwrap();
        assert_eq!(p["issuers"], json!([{"module": "internal"}]));
        assert_eq!(p["on_demand"], true);
        assert_eq!(p["@id"], "wharf.tls.web");
    }

    #[test]
    fn foreign_routes_are_ignored() {
        assert!(parse_route(&json!({"@id": "someone.else", "handle": []})).is_none());
        assert!(parse_route(&catch_all("wharf")).is_none());
        assert!(parse_route(&json!({"handle": []})).is_none());
    }

    #[test]
    fn ports_and_ids() {
        assert_eq!(port_of(":80").unwrap(), 80);
        assert_eq!(port_of("[::1]:8443").unwrap(), 8443);
        assert!(port_of("localhost").is_err());
        assert!(check_id_text("web-1_a.b", "id").is_ok());
        assert!(check_id_text("a/b", "id").is_err());
        assert!(check_id_text("", "id").is_err());
    }
}
