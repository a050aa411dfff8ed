//! Builders for the model's long structs, so a test states only what it cares about
//! and a new field is added in one place.

use std::net::SocketAddr;
use std::time::Duration;

use wharf_core::{
    label, Endpoint, HealthCheck, InstanceSpec, Labels, Probe, Resources, Route, RouteId,
    TlsPolicy, Upstream,
};

/// An [`InstanceSpec`] named `name` running `image`: port 8080, no command, no env, no
/// limits, the default health check, and only the `wharf.managed` label. Change what
/// the test needs, then [`SpecBuilder::build`].
///
/// ```
/// let s = wharf_testkit::spec("web", "example/web:1").port(8000).env("GREETING", "hi").build();
/// assert_eq!((s.port, s.env["GREETING"].as_str()), (8000, "hi"));
/// ```
pub fn spec(name: &str, image: &str) -> SpecBuilder {
    SpecBuilder(InstanceSpec {
        replicas: 1,
        run_once: false,
        name: name.into(),
        image: image.into(),
        image_local_only: false,
        command: None,
        env: Default::default(),
        port: 8080,
        resources: Resources::default(),
        health_check: HealthCheck::default(),
        volumes: vec![],
        network: None,
        network_alias: None,
        labels: Labels::from([(label::MANAGED.to_string(), "true".to_string())]),
    })
}

/// Builds an [`InstanceSpec`]; see [`spec`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SpecBuilder(InstanceSpec);

impl SpecBuilder {
    /// The port the app listens on.
    pub fn port(mut self, port: u16) -> Self {
        self.0.port = port;
        self
    }

    /// The command that overrides the image's.
    pub fn command<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.0.command = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.0.env.insert(key.into(), value.into());
        self
    }

    /// Memory (MiB) and CPU (thousandths of a core) limits.
    pub fn limits(mut self, memory_mb: u64, cpu_millis: u32) -> Self {
        self.0.resources = Resources {
            memory_mb: Some(memory_mb),
            cpu_millis: Some(cpu_millis),
        };
        self
    }

    /// The health check: what to probe, how often, and for how long at most.
    pub fn health(mut self, probe: Probe, interval: Duration, timeout: Duration) -> Self {
        self.0.health_check = HealthCheck {
            probe,
            interval,
            timeout,
        };
        self
    }

    /// Only the health check's time limit (probe and interval stay the default).
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.0.health_check.timeout = timeout;
        self
    }

    /// Adds (or replaces) a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.labels.insert(key.into(), value.into());
        self
    }

    /// Replaces every label, `wharf.managed` included.
    pub fn labels(mut self, labels: Labels) -> Self {
        self.0.labels = labels;
        self
    }

    /// The spec.
    pub fn build(self) -> InstanceSpec {
        self.0
    }
}

/// `addr` as an [`Endpoint`].
pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint {
        host: addr.ip().to_string(),
        port: addr.port(),
    }
}

/// A [`Route`] with id `id` and no hosts, upstreams or labels yet, plain HTTP; add
/// them, then [`RouteBuilder::build`].
///
/// ```
/// use wharf_core::{Endpoint, TlsPolicy};
/// let up = Endpoint { host: "127.0.0.1".into(), port: 8080 };
/// let r = wharf_testkit::route("web").host("web.test").upstream(&up, 1).tls(TlsPolicy::Internal).build();
/// assert_eq!((r.hosts.len(), r.upstreams.len()), (1, 1));
/// ```
pub fn route(id: &str) -> RouteBuilder {
    RouteBuilder(Route {
        id: RouteId(id.to_owned()),
        hosts: vec![],
        path_prefix: None,
        upstreams: vec![],
        tls: TlsPolicy::None,
        labels: Labels::new(),
    })
}

/// The route most proxy tests want: `id` for `host`, plain HTTP, to `upstreams`
/// (endpoint, weight).
pub fn route_to(id: &str, host: &str, upstreams: &[(&Endpoint, u32)]) -> Route {
    upstreams
        .iter()
        .fold(route(id).host(host), |r, (e, w)| r.upstream(e, *w))
        .build()
}

/// Builds a [`Route`]; see [`route`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RouteBuilder(Route);

impl RouteBuilder {
    /// Adds a hostname.
    pub fn host(mut self, host: &str) -> Self {
        self.0.hosts.push(host.into());
        self
    }

    /// The path prefix (starting with `/`).
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.0.path_prefix = Some(prefix.into());
        self
    }

    /// Adds an upstream with `weight`.
    pub fn upstream(mut self, endpoint: &Endpoint, weight: u32) -> Self {
        self.0.upstreams.push(Upstream {
            endpoint: endpoint.clone(),
            weight,
        });
        self
    }

    /// The TLS policy.
    pub fn tls(mut self, tls: TlsPolicy) -> Self {
        self.0.tls = tls;
        self
    }

    /// Adds (or replaces) a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0.labels.insert(key.into(), value.into());
        self
    }

    /// The route.
    pub fn build(self) -> Route {
        self.0
    }
}
