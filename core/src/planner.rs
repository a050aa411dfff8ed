//! Dependency ordering of a project's services (petgraph).
//!
//! A [`DependencyGraph`] is built from a project's services, keyed by service name
//! ([`Service::depends_on`] holds names of services in the same project, and a
//! reference `${{ db.X }}` in a service's env makes it depend on `db` too, see
//! [`crate::refs`]). Building it
//! checks the whole set: every name is unique, every dependency exists, and there is no
//! cycle (a cycle is reported with its members in order, e.g.
//! `dependency cycle: a -> b -> c -> a`, where `x -> y` reads "x depends on y").
//!
//! [`DependencyGraph::waves`] orders the services for a full deployment: wave 0 holds
//! the services without dependencies, and every service sits in the first wave after
//! all of its dependencies. Services in one wave do not depend on each other and can be
//! deployed in parallel. [`DependencyGraph::cascade`] gives the services to redeploy
//! after one changed: everything that depends on it, directly or not, in the same kind
//! of waves.
//!
//! Names are sorted within a wave, so the plan does not depend on the order the
//! services were given in. Building the graph and computing the waves are linear in
//! services plus dependencies (Kahn's algorithm), apart from the sort within waves.
//!
//! ```
//! use wharf_core::planner::DependencyGraph;
//! use wharf_core::{ErrorKind, ProjectId, Service, SourceSpec};
//!
//! let project = ProjectId::from("prj_demo");
//! let image = |i: &str| SourceSpec::Image { image: i.into() };
//! let db = Service::new(&project, "db", image("postgres:16"))?;
//! let cache = Service::new(&project, "cache", image("redis:7"))?;
//! let mut api = Service::new(&project, "api", image("demo/api:1"))?;
//! api.depends_on = vec!["db".into(), "cache".into()];
//! let mut web = Service::new(&project, "web", image("demo/web:1"))?;
//! web.depends_on = vec!["api".into()];
//!
//! let graph = DependencyGraph::new([&web, &api, &db, &cache])?;
//! assert_eq!(graph.waves(), vec![vec!["cache", "db"], vec!["api"], vec!["web"]]);
//! // After a change to db, api and then web are redeployed.
//! assert_eq!(graph.cascade("db")?, vec![vec!["api"], vec!["web"]]);
//! assert_eq!(graph.dependencies("api")?, vec!["cache", "db"]);
//! assert_eq!(graph.id("db"), Some(&db.id));
//!
//! // A cycle is refused, naming its members in order.
//! let mut db2 = db.clone();
//! db2.depends_on = vec!["web".into()];
//! let err = DependencyGraph::new([&web, &api, &db2, &cache]).unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::InvalidInput);
//! assert_eq!(err.message(), "dependency cycle: api -> db -> web -> api");
//! # Ok::<(), wharf_core::Error>(())
//! ```

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction::{Incoming, Outgoing};

use crate::error::{Error, Result};
use crate::model::{Service, ServiceId};

/// A service in the graph.
#[derive(Debug, Clone)]
struct Node {
    name: String,
    id: ServiceId,
}

/// The dependencies between a project's services, checked to be complete and acyclic.
///
/// Edges point from a dependency to its dependent (`db -> api` when `api` depends on
/// `db`). See the [module documentation](self) for an example.
#[derive(Debug, Clone)]
pub struct DependencyGraph {
    graph: DiGraph<Node, ()>,
    by_name: HashMap<String, NodeIndex>,
    /// Computed once in `new` (the cycle check needs them anyway).
    waves: Vec<Vec<NodeIndex>>,
}

impl DependencyGraph {
    /// Builds the graph of `services`, keyed by name.
    ///
    /// Fails with [`crate::ErrorKind::InvalidInput`] when two services share a name,
    /// when a service depends on a name that is not in the set
    /// (`service web depends on unknown service db`), or when the dependencies form a
    /// cycle (`dependency cycle: a -> b -> c -> a`, where `x -> y` reads "x depends on
    /// y"; a service depending on itself is the cycle `a -> a`). A service whose env
    /// references another (`${{ db.URL }}`) depends on it as through `depends_on`: an
    /// unknown one (`service web references unknown service db`), a reference to
    /// itself or a malformed reference is refused too. A dependency listed twice
    /// counts once.
    pub fn new<'a>(services: impl IntoIterator<Item = &'a Service>) -> Result<Self> {
        let services: Vec<&Service> = services.into_iter().collect();
        let mut graph = DiGraph::with_capacity(services.len(), services.len() * 2);
        let mut by_name = HashMap::with_capacity(services.len());
        for s in &services {
            if by_name.contains_key(s.name.as_str()) {
                return Err(Error::invalid(format!("duplicate service name {}", s.name)));
            }
            let ix = graph.add_node(Node {
                name: s.name.clone(),
                id: s.id.clone(),
            });
            by_name.insert(s.name.clone(), ix);
        }

        let mut deps: Vec<NodeIndex> = Vec::new();
        for (i, s) in services.iter().enumerate() {
            let dependent = NodeIndex::new(i);
            deps.clear();
            for dep in &s.depends_on {
                match by_name.get(dep.as_str()) {
                    Some(&ix) => deps.push(ix),
                    None => {
                        return Err(Error::invalid(format!(
                            "service {} depends on unknown service {dep}",
                            s.name
                        )))
                    }
                }
            }
            // A reference `${{ db.X }}` in its env is a dependency on db too.
            let referenced = crate::refs::referenced_services(&s.env)
                .map_err(|e| e.context(format!("service {}", s.name)))?;
            for dep in referenced {
                if dep == s.name {
                    return Err(Error::invalid(format!(
                        "service {} references itself",
                        s.name
                    )));
                }
                match by_name.get(dep.as_str()) {
                    Some(&ix) => deps.push(ix),
                    None => {
                        return Err(Error::invalid(format!(
                            "service {} references unknown service {dep}",
                            s.name
                        )))
                    }
                }
            }
            deps.sort_unstable();
            deps.dedup();
            for &dep in &deps {
                graph.add_edge(dep, dependent, ());
            }
        }

        let mut planner = DependencyGraph {
            graph,
            by_name,
            waves: Vec::new(),
        };
        let all = vec![true; planner.graph.node_count()];
        let waves = planner.layer(&all);
        let placed: usize = waves.iter().map(Vec::len).sum();
        if placed != planner.graph.node_count() {
            return Err(planner.cycle_error());
        }
        planner.waves = waves;
        Ok(planner)
    }

    /// Every service in deployment order: wave 0 holds the services without
    /// dependencies, and each service is in the first wave after all of its
    /// dependencies. Names are sorted within a wave.
    pub fn waves(&self) -> Vec<Vec<String>> {
        self.names(&self.waves)
    }

    /// The services to redeploy after `changed` changed: its transitive dependents,
    /// not `changed` itself, in waves such that each comes after those of its
    /// dependencies that are in the set (the first wave holds the services whose only
    /// affected dependency is `changed`). Names are sorted within a wave; a service
    /// nothing depends on gives no waves.
    ///
    /// Fails with [`crate::ErrorKind::NotFound`] when no service is named `changed`.
    pub fn cascade(&self, changed: &str) -> Result<Vec<Vec<String>>> {
        let start = self.index(changed)?;
        let mut in_set = vec![false; self.graph.node_count()];
        let mut queue = VecDeque::new();
        for d in self.graph.neighbors_directed(start, Outgoing) {
            if !in_set[d.index()] {
                in_set[d.index()] = true;
                queue.push_back(d);
            }
        }
        while let Some(n) = queue.pop_front() {
            for d in self.graph.neighbors_directed(n, Outgoing) {
                if !in_set[d.index()] {
                    in_set[d.index()] = true;
                    queue.push_back(d);
                }
            }
        }
        Ok(self.names(&self.layer(&in_set)))
    }

    /// The direct dependencies of `name`, sorted. Fails with
    /// [`crate::ErrorKind::NotFound`] for an unknown name.
    pub fn dependencies(&self, name: &str) -> Result<Vec<String>> {
        self.neighbors(name, Incoming)
    }

    /// The services that depend directly on `name`, sorted. Fails with
    /// [`crate::ErrorKind::NotFound`] for an unknown name.
    pub fn dependents(&self, name: &str) -> Result<Vec<String>> {
        self.neighbors(name, Outgoing)
    }

    /// The id of the service named `name`.
    pub fn id(&self, name: &str) -> Option<&ServiceId> {
        self.by_name.get(name).map(|&ix| &self.graph[ix].id)
    }

    /// Whether a service is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The number of services.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether there are no services.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    fn index(&self, name: &str) -> Result<NodeIndex> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| Error::not_found(format!("no service named {name} in the graph")))
    }

    fn neighbors(&self, name: &str, dir: petgraph::Direction) -> Result<Vec<String>> {
        let ix = self.index(name)?;
        let mut out: Vec<String> = self
            .graph
            .neighbors_directed(ix, dir)
            .map(|n| self.graph[n].name.clone())
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    fn names(&self, waves: &[Vec<NodeIndex>]) -> Vec<Vec<String>> {
        waves
            .iter()
            .map(|w| w.iter().map(|&n| self.graph[n].name.clone()).collect())
            .collect()
    }

    /// Kahn's algorithm, level by level, over the nodes with `in_set[i]`, counting only
    /// dependencies inside the set. Nodes on (or behind) a cycle are left out.
    fn layer(&self, in_set: &[bool]) -> Vec<Vec<NodeIndex>> {
        let mut pending = vec![0usize; in_set.len()];
        let mut current = Vec::new();
        for n in self.graph.node_indices().filter(|n| in_set[n.index()]) {
            let count = self
                .graph
                .neighbors_directed(n, Incoming)
                .filter(|d| in_set[d.index()])
                .count();
            pending[n.index()] = count;
            if count == 0 {
                current.push(n);
            }
        }
        let mut waves = Vec::new();
        while !current.is_empty() {
            current.sort_unstable_by(|a, b| self.graph[*a].name.cmp(&self.graph[*b].name));
            let mut next = Vec::new();
            for &n in &current {
                for d in self.graph.neighbors_directed(n, Outgoing) {
                    if in_set[d.index()] {
                        pending[d.index()] -= 1;
                        if pending[d.index()] == 0 {
                            next.push(d);
                        }
                    }
                }
            }
            waves.push(std::mem::replace(&mut current, next));
        }
        waves
    }

    /// The error for a graph with a cycle: finds the strongly connected components
    /// (Kosaraju's algorithm, which petgraph implements without recursion, unlike its
    /// Tarjan, so a cycle through thousands of services cannot overflow the stack),
    /// takes the cyclic one holding the smallest name, and walks the shortest cycle
    /// from that name through it (neighbours in name order, so the report is
    /// deterministic).
    fn cycle_error(&self) -> Error {
        let g = &self.graph;
        let name = |n: NodeIndex| g[n].name.as_str();
        let scc = kosaraju_scc(g)
            .into_iter()
            .filter(|scc| scc.len() > 1 || g.contains_edge(scc[0], scc[0]))
            .filter_map(|scc| {
                let min = scc.iter().copied().min_by(|a, b| name(*a).cmp(name(*b)))?;
                Some((min, scc))
            })
            .min_by(|(a, _), (b, _)| name(*a).cmp(name(*b)));
        let Some((start, scc)) = scc else {
            return Error::internal("dependency graph: Kahn's algorithm stalled without a cycle");
        };
        let mut in_scc = vec![false; g.node_count()];
        for n in &scc {
            in_scc[n.index()] = true;
        }
        if g.contains_edge(start, start) {
            return Error::invalid(format!("dependency cycle: {0} -> {0}", name(start)));
        }

        // Breadth-first along "depends on" edges (incoming, as edges point from a
        // dependency to its dependent), inside the SCC, until an edge leads back to
        // `start`: the shortest cycle through `start`.
        let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut last = None;
        'walk: while let Some(n) = queue.pop_front() {
            let mut deps: Vec<NodeIndex> = g
                .neighbors_directed(n, Incoming)
                .filter(|d| in_scc[d.index()])
                .collect();
            deps.sort_unstable_by(|a, b| name(*a).cmp(name(*b)));
            for d in deps {
                if d == start {
                    last = Some(n);
                    break 'walk;
                }
                if let Entry::Vacant(e) = parent.entry(d) {
                    e.insert(n);
                    queue.push_back(d);
                }
            }
        }
        let Some(mut n) = last else {
            return Error::internal("dependency graph: cycle walk did not return to its start");
        };
        let mut path = vec![name(n)];
        while n != start {
            n = parent[&n];
            path.push(name(n));
        }
        path.reverse();
        path.push(name(start));
        Error::invalid(format!("dependency cycle: {}", path.join(" -> ")))
    }
}
