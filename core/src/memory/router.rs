//! The in-memory router.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{service_name, Faults};
use crate::error::{Error, Result};
use crate::model::{Endpoint, Route, RouteId};
use crate::traits::Router;

/// A [`Router`] that keeps routes in a map and resolves hosts the way a proxy would
/// (exact host, then a `*.` wildcard; longest path prefix), picking among weighted
/// upstreams by smooth weighted round robin.
#[derive(Debug, Default)]
pub struct MemoryRouter {
    faults: Faults,
    routes: Mutex<BTreeMap<RouteId, (Route, Vec<i64>)>>,
}

impl MemoryRouter {
    /// A router without faults.
    pub fn new() -> Self {
        Self::default()
    }
    /// A router reading faults from `faults`.
    pub fn with_faults(faults: Faults) -> Self {
        MemoryRouter {
            faults,
            routes: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RouteId, (Route, Vec<i64>)>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The upstream a request for `host` and `path` would go to now, or `None` (a 404).
    pub fn resolve(&self, host: &str, path: &str) -> Option<Endpoint> {
        let mut g = self.lock();
        let wildcard_of = |h: &str| h.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        let matches = |r: &Route, h: &str| r.hosts.iter().any(|x| x == h);
        let prefix_len = |r: &Route| r.path_prefix.as_ref().map_or(0, |p| p.len());
        let path_ok = |r: &Route| {
            r.path_prefix
                .as_ref()
                .is_none_or(|p| path.starts_with(p.as_str()))
        };
        let pick = |g: &BTreeMap<RouteId, (Route, Vec<i64>)>, h: &str| {
            g.iter()
                .filter(|(_, (r, _))| matches(r, h) && path_ok(r))
                .max_by_key(|(_, (r, _))| prefix_len(r))
                .map(|(id, _)| id.clone())
        };
        let id = pick(&g, host).or_else(|| wildcard_of(host).and_then(|w| pick(&g, &w)))?;
        let (route, current) = g.get_mut(&id)?;
        // Smooth weighted round robin (as nginx does).
        let total: i64 = route.upstreams.iter().map(|u| i64::from(u.weight)).sum();
        for (c, u) in current.iter_mut().zip(&route.upstreams) {
            *c += i64::from(u.weight);
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, -(*i as i64)))?;
        current[best] -= total;
        Some(route.upstreams[best].endpoint.clone())
    }
}

#[async_trait]
impl Router for MemoryRouter {
    async fn upsert(&self, route: &Route) -> Result<()> {
        route.validate()?;
        if self.faults.get(service_name(&route.labels)).fail_route {
            return Err(Error::unavailable(format!(
                "injected routing failure for route {}",
                route.id
            ))
            .with_backend("memory"));
        }
        let weights = vec![0; route.upstreams.len()];
        self.lock()
            .insert(route.id.clone(), (route.clone(), weights));
        Ok(())
    }

    async fn remove(&self, id: &RouteId) -> Result<()> {
        self.lock().remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Route>> {
        Ok(self.lock().values().map(|(r, _)| r.clone()).collect())
    }
}
