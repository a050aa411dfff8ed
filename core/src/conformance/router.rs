//! The [`Router`] conformance kit.

use crate::error::ErrorKind;
use crate::model::*;
use crate::traits::Router;

/// A valid route for the kit: `<id>.<domain>` to `upstream`.
pub fn sample_route(id: &str, domain: &str, upstream: Endpoint) -> Route {
    let mut labels = Labels::new();
    labels.insert(label::MANAGED.into(), "true".into());
    labels.insert("wharf.conformance".into(), id.to_owned());
    Route {
        id: RouteId(id.to_owned()),
        hosts: vec![format!("{id}.{domain}")],
        path_prefix: None,
        upstreams: vec![Upstream {
            endpoint: upstream,
            weight: 100,
        }],
        tls: TlsPolicy::None,
        labels,
    }
}

fn find(routes: &[Route], id: &RouteId) -> Vec<Route> {
    routes.iter().filter(|r| &r.id == id).cloned().collect()
}

/// Upsert is idempotent and replaces; remove is idempotent.
pub async fn upsert_list_remove(router: &dyn Router, domain: &str, upstream: Endpoint) {
    let id = super::unique("kit");
    let mut route = sample_route(&id, domain, upstream.clone());
    router.upsert(&route).await.expect("upsert");
    router
        .upsert(&route)
        .await
        .expect("upsert again (idempotent)");
    let listed = find(&router.list().await.expect("list"), &route.id);
    assert_eq!(
        listed.len(),
        1,
        "route listed {} times after two upserts",
        listed.len()
    );
    assert_eq!(listed[0].hosts, route.hosts, "hosts changed on the way");
    assert_eq!(
        listed[0].upstreams, route.upstreams,
        "upstreams changed on the way"
    );

    route.upstreams = vec![
        Upstream {
            endpoint: upstream.clone(),
            weight: 90,
        },
        Upstream {
            endpoint: Endpoint {
                host: upstream.host.clone(),
                port: upstream.port.wrapping_add(1).max(1),
            },
            weight: 10,
        },
    ];
    router.upsert(&route).await.expect("upsert weighted");
    let listed = find(&router.list().await.expect("list"), &route.id);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].upstreams, route.upstreams,
        "weighted upstreams not kept"
    );

    router.remove(&route.id).await.expect("remove");
    assert!(
        find(&router.list().await.expect("list"), &route.id).is_empty(),
        "removed route still listed"
    );
    router
        .remove(&route.id)
        .await
        .expect("removing a missing route must succeed");
}

/// Invalid routes are refused with InvalidInput and never applied.
pub async fn rejects_invalid(router: &dyn Router, domain: &str, upstream: Endpoint) {
    let id = super::unique("kit");
    let good = sample_route(&id, domain, upstream);
    let mut cases = Vec::new();
    let mut r = good.clone();
    r.hosts = vec![format!("a`) || Host(`evil.{domain}")];
    cases.push(("backtick in host", r));
    let mut r = good.clone();
    r.hosts = vec![format!("two words.{domain}")];
    cases.push(("space in host", r));
    let mut r = good.clone();
    r.hosts = vec![];
    cases.push(("no hosts", r));
    let mut r = good.clone();
    r.upstreams = vec![];
    cases.push(("no upstreams", r));
    let mut r = good.clone();
    r.path_prefix = Some("api".into());
    cases.push(("path prefix without '/'", r));
    for (what, route) in cases {
        let err = router
            .upsert(&route)
            .await
            .expect_err(&format!("a route with {what} must be refused"));
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{what}: {err}");
    }
    assert!(
        find(&router.list().await.expect("list"), &good.id).is_empty(),
        "a refused route was applied"
    );
}

/// Every check above.
pub async fn run_all(router: &dyn Router, domain: &str, upstream: Endpoint) {
    upsert_list_remove(router, domain, upstream.clone()).await;
    rejects_invalid(router, domain, upstream).await;
}
