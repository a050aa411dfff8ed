//! The immutable route table a proxy reads per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::model::{Endpoint, Route};

/// One route with its round-robin state.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) route: Route,
    current: Mutex<Vec<i64>>,
}

impl Entry {
    /// Smooth weighted round robin: every upstream gains its weight, the highest is
    /// picked and pays the total back.
    fn pick(&self) -> Option<Endpoint> {
        let ups = &self.route.upstreams;
        let total: i64 = ups.iter().map(|u| i64::from(u.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        for (c, u) in cur.iter_mut().zip(ups) {
            *c += i64::from(u.weight);
        }
        let (best, _) = cur
            .iter()
            .enumerate()
            .filter(|(i, _)| ups[*i].weight > 0)
            .max_by_key(|(i, c)| (**c, -(*i as i64)))?;
        cur[best] -= total;
        Some(ups[best].endpoint.clone())
    }
}

/// Routes by host, each host's routes longest path prefix first.
#[derive(Debug, Default)]
pub(crate) struct Table {
    order: Vec<Arc<Entry>>,
    by_host: HashMap<String, Vec<Arc<Entry>>>,
}

/// Lower case, without a port (`Web.Demo.localhost:8080` is `web.demo.localhost`).
pub(crate) fn normalize_host(host: &str) -> String {
    let h = if host.starts_with('[') {
        // An IPv6 literal: keep the brackets' content.
        host.split(']')
            .next()
            .unwrap_or(host)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

impl Table {
    pub(crate) fn new(routes: Vec<Route>) -> Table {
        let order: Vec<Arc<Entry>> = routes
            .into_iter()
            .map(|route| {
                Arc::new(Entry {
                    current: Mutex::new(vec![0; route.upstreams.len()]),
                    route,
                })
            })
            .collect();
        let mut by_host: HashMap<String, Vec<Arc<Entry>>> = HashMap::new();
        for e in &order {
            for h in &e.route.hosts {
                by_host.entry(h.clone()).or_default().push(e.clone());
            }
        }
        for v in by_host.values_mut() {
            v.sort_by_key(|e| {
                std::cmp::Reverse(e.route.path_prefix.as_ref().map_or(0, String::len))
            });
        }
        Table { order, by_host }
    }

    pub(crate) fn routes(&self) -> Vec<Route> {
        self.order.iter().map(|e| e.route.clone()).collect()
    }

    fn find(&self, host: &str, path: &str) -> Option<&Arc<Entry>> {
        self.by_host.get(host)?.iter().find(|e| {
            e.route
                .path_prefix
                .as_ref()
                .is_none_or(|p| path.starts_with(p.as_str()))
        })
    }

    /// The route and upstream for a normalised host and a path.
    pub(crate) fn resolve(&self, host: &str, path: &str) -> Option<(Arc<Entry>, Endpoint)> {
        let entry = self.find(host, path).or_else(|| {
            let (_, rest) = host.split_once('.')?;
            self.find(&format!("*.{rest}"), path)
        })?;
        Some((entry.clone(), entry.pick()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn route(id: &str, host: &str, prefix: Option<&str>, ups: &[(u16, u32)]) -> Route {
        Route {
            id: RouteId::from(id),
            hosts: vec![host.into()],
            path_prefix: prefix.map(Into::into),
            upstreams: ups
                .iter()
                .map(|(port, weight)| Upstream {
                    endpoint: Endpoint {
                        host: "127.0.0.1".into(),
                        port: *port,
                    },
                    weight: *weight,
                })
                .collect(),
            tls: TlsPolicy::None,
            labels: Labels::new(),
        }
    }

    #[test]
    fn host_prefix_and_wildcard() {
        let t = Table::new(vec![
            route("a", "web.localhost", None, &[(1, 1)]),
            route("b", "web.localhost", Some("/api"), &[(2, 1)]),
            route("c", "*.localhost", None, &[(3, 1)]),
        ]);
        let port = |h: &str, p: &str| t.resolve(h, p).map(|(_, e)| e.port);
        assert_eq!(port("web.localhost", "/"), Some(1));
        assert_eq!(port("web.localhost", "/api/x"), Some(2));
        assert_eq!(port("other.localhost", "/"), Some(3));
        assert_eq!(port("a.b.localhost", "/"), None);
        assert_eq!(port("example.com", "/"), None);
    }

    #[test]
    fn smooth_weighted_round_robin() {
        let t = Table::new(vec![route(
            "a",
            "w.localhost",
            None,
            &[(1, 5), (2, 1), (3, 1), (4, 0)],
        )]);
        let picks: Vec<u16> = (0..7)
            .map(|_| t.resolve("w.localhost", "/").unwrap().1.port)
            .collect();
        assert_eq!(picks, [1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn normalizes_hosts() {
        assert_eq!(
            normalize_host("Web.Demo.LOCALHOST:8080"),
            "web.demo.localhost"
        );
        assert_eq!(normalize_host("web.localhost."), "web.localhost");
        assert_eq!(normalize_host("[::1]:80"), "::1");
    }
}
