//! An in-memory [`Store`]: always compiled, for tests, docs and throw-away engines.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::model::*;
use crate::traits::{CronRunFilter, DeploymentFilter, Store};

#[derive(Debug, Default)]
struct Inner {
    projects: BTreeMap<ProjectId, Project>,
    environments: BTreeMap<EnvironmentId, Environment>,
    services: BTreeMap<ServiceId, Service>,
    deployments: BTreeMap<DeploymentId, (u64, Deployment)>,
    next_deployment: u64,
    releases: BTreeMap<ReleaseId, Release>,
    events: Vec<Event>,
    last_seq: u64,
    /// Cron runs by id, with their insertion order.
    cron_runs: BTreeMap<CronRunId, (u64, CronRun)>,
    next_cron_run: u64,
}

/// A [`Store`] that keeps everything in memory (lost when dropped).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied change behind
        // (every method validates before it mutates), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_found(what: &str, id: impl std::fmt::Display) -> Error {
    Error::not_found(format!("{what} {id} not found"))
}

/// The Conflict of a `what` whose `name` is taken (`place`: by whom, or where).
fn name_used(what: &str, name: &str, place: String) -> Error {
    Error::conflict(format!("{what} name {name:?} is already used {place}"))
}

/// The records `keep` selects, sorted by `name`.
fn by_name<'a, V: Clone + 'a>(
    records: impl Iterator<Item = &'a V>,
    keep: impl Fn(&V) -> bool,
    name: impl Fn(&V) -> &str,
) -> Vec<V> {
    let mut v: Vec<V> = records.filter(|r| keep(r)).cloned().collect();
    v.sort_by(|a, b| name(a).cmp(name(b)));
    v
}

/// The record `id` of `map`, or NotFound naming it as a `what`.
fn cloned<K: Ord + std::fmt::Display, V: Clone>(
    map: &BTreeMap<K, V>,
    id: &K,
    what: &str,
) -> Result<V> {
    map.get(id).cloned().ok_or_else(|| not_found(what, id))
}

impl Inner {
    /// NotFound unless `service` exists; a Conflict if `map` already holds `id` (a new
    /// record of `service`, called a `what`).
    fn check_new<K: Ord + std::fmt::Display, V>(
        &self,
        service: &ServiceId,
        map: &BTreeMap<K, V>,
        id: &K,
        what: &str,
    ) -> Result<()> {
        if !self.services.contains_key(service) {
            return Err(not_found("service", service));
        }
        if map.contains_key(id) {
            return Err(Error::conflict(format!("{what} {id} already exists")));
        }
        Ok(())
    }

    /// Removes the services `which` selects, with their history.
    fn remove_services_where(&mut self, which: impl Fn(&Service) -> bool) {
        let services: Vec<ServiceId> = self
            .services
            .values()
            .filter(|s| which(s))
            .map(|s| s.id.clone())
            .collect();
        for s in &services {
            self.remove_service_history(s);
        }
    }

    fn remove_service_history(&mut self, service: &ServiceId) {
        let deps: Vec<DeploymentId> = self
            .deployments
            .iter()
            .filter(|(_, (_, d))| &d.service == service)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &deps {
            self.deployments.remove(id);
        }
        self.events.retain(|e| &e.service != service);
        self.releases.retain(|_, r| &r.service != service);
        self.cron_runs.retain(|_, (_, r)| &r.service != service);
        self.services.remove(service);
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_project(&self, project: &Project) -> Result<()> {
        validate_name(&project.name)?;
        let mut g = self.lock();
        if let Some(other) = g
            .projects
            .values()
            .find(|p| p.name == project.name && p.id != project.id)
        {
            let by = format!("by project {}", other.id);
            return Err(name_used("project", &project.name, by));
        }
        g.projects.insert(project.id.clone(), project.clone());
        Ok(())
    }

    async fn project(&self, id: &ProjectId) -> Result<Project> {
        cloned(&self.lock().projects, id, "project")
    }

    async fn project_by_name(&self, name: &str) -> Result<Project> {
        self.lock()
            .projects
            .values()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| super::project_name_not_found(name))
    }

    async fn projects(&self) -> Result<Vec<Project>> {
        Ok(by_name(
            self.lock().projects.values(),
            |_| true,
            |p| &p.name,
        ))
    }

    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        let mut g = self.lock();
        if g.projects.remove(id).is_none() {
            return Err(not_found("project", id));
        }
        g.remove_services_where(|s| &s.project == id);
        g.environments.retain(|_, e| &e.project != id);
        Ok(())
    }

    async fn put_environment(&self, env: &Environment) -> Result<()> {
        validate_name(&env.name)?;
        let mut g = self.lock();
        if !g.projects.contains_key(&env.project) {
            return Err(not_found("project", &env.project));
        }
        if g.environments
            .values()
            .any(|e| e.project == env.project && e.name == env.name && e.id != env.id)
        {
            let project = format!("in project {}", env.project);
            return Err(name_used("environment", &env.name, project));
        }
        g.environments.insert(env.id.clone(), env.clone());
        Ok(())
    }

    async fn environment(&self, id: &EnvironmentId) -> Result<Environment> {
        cloned(&self.lock().environments, id, "environment")
    }

    async fn environment_by_name(&self, project: &ProjectId, name: &str) -> Result<Environment> {
        self.lock()
            .environments
            .values()
            .find(|e| &e.project == project && e.name == name)
            .cloned()
            .ok_or_else(|| super::environment_name_not_found(project, name))
    }

    async fn environments(&self, project: &ProjectId) -> Result<Vec<Environment>> {
        let g = self.lock();
        Ok(by_name(
            g.environments.values(),
            |e| &e.project == project,
            |e| &e.name,
        ))
    }

    async fn delete_environment(&self, id: &EnvironmentId) -> Result<()> {
        let mut g = self.lock();
        if g.environments.remove(id).is_none() {
            return Err(not_found("environment", id));
        }
        g.remove_services_where(|s| s.environment.as_ref() == Some(id));
        Ok(())
    }

    async fn put_service(&self, service: &Service) -> Result<()> {
        service.validate()?;
        let mut g = self.lock();
        if !g.projects.contains_key(&service.project) {
            return Err(not_found("project", &service.project));
        }
        if let Some(env) = &service.environment {
            match g.environments.get(env) {
                Some(e) if e.project == service.project => {}
                _ => return Err(not_found("environment", env)),
            }
        }
        if g.services.values().any(|s| {
            s.project == service.project
                && s.environment == service.environment
                && s.name == service.name
                && s.id != service.id
        }) {
            let project = format!("in project {}", service.project);
            return Err(name_used("service", &service.name, project));
        }
        if let Some(old) = g.services.get(&service.id) {
            if old.project != service.project {
                return Err(Error::invalid(format!(
                    "service {} cannot move to another project",
                    service.id
                )));
            }
        }
        g.services.insert(service.id.clone(), service.clone());
        Ok(())
    }

    async fn service(&self, id: &ServiceId) -> Result<Service> {
        cloned(&self.lock().services, id, "service")
    }

    async fn service_by_name(
        &self,
        project: &ProjectId,
        environment: Option<&EnvironmentId>,
        name: &str,
    ) -> Result<Service> {
        self.lock()
            .services
            .values()
            .find(|s| {
                &s.project == project && s.environment.as_ref() == environment && s.name == name
            })
            .cloned()
            .ok_or_else(|| super::service_name_not_found(project, environment, name))
    }

    async fn services(&self, project: &ProjectId) -> Result<Vec<Service>> {
        let g = self.lock();
        Ok(by_name(
            g.services.values(),
            |s| &s.project == project,
            |s| &s.name,
        ))
    }

    async fn delete_service(&self, id: &ServiceId) -> Result<()> {
        let mut g = self.lock();
        if !g.services.contains_key(id) {
            return Err(not_found("service", id));
        }
        g.remove_service_history(id);
        Ok(())
    }

    async fn insert_deployment(&self, deployment: &Deployment) -> Result<()> {
        if deployment.version != 0 {
            return Err(Error::invalid(format!(
                "a new deployment must have version 0, not {}",
                deployment.version
            )));
        }
        let mut g = self.lock();
        g.check_new(
            &deployment.service,
            &g.deployments,
            &deployment.id,
            "deployment",
        )?;
        g.next_deployment += 1;
        let order = g.next_deployment;
        g.deployments
            .insert(deployment.id.clone(), (order, deployment.clone()));
        Ok(())
    }

    async fn deployment(&self, id: &DeploymentId) -> Result<Deployment> {
        self.lock()
            .deployments
            .get(id)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| not_found("deployment", id))
    }

    async fn deployments(&self, filter: &DeploymentFilter) -> Result<Vec<Deployment>> {
        let g = self.lock();
        let mut v: Vec<&(u64, Deployment)> = g
            .deployments
            .values()
            .filter(|(_, d)| {
                filter.project.as_ref().is_none_or(|p| &d.project == p)
                    && filter.service.as_ref().is_none_or(|s| &d.service == s)
                    && (!filter.active_only || d.state.is_active())
            })
            .collect();
        v.sort_by_key(|d| std::cmp::Reverse(d.0));
        let limit = filter.limit.unwrap_or(usize::MAX);
        Ok(v.into_iter().take(limit).map(|(_, d)| d.clone()).collect())
    }

    async fn update_deployment(&self, deployment: &Deployment) -> Result<Deployment> {
        let mut g = self.lock();
        let Some((_, stored)) = g.deployments.get_mut(&deployment.id) else {
            return Err(not_found("deployment", &deployment.id));
        };
        if stored.version != deployment.version {
            return Err(Error::conflict(format!(
                "deployment {} was changed concurrently (version {} expected, {} stored)",
                deployment.id, deployment.version, stored.version
            )));
        }
        let mut next = deployment.clone();
        next.version += 1;
        *stored = next.clone();
        Ok(next)
    }

    async fn insert_release(&self, release: &Release) -> Result<()> {
        let mut g = self.lock();
        g.check_new(&release.service, &g.releases, &release.id, "release")?;
        let last = g
            .releases
            .values()
            .filter(|r| r.service == release.service)
            .map(|r| r.number)
            .max()
            .unwrap_or(0);
        if release.number != last + 1 {
            return Err(Error::conflict(format!(
                "release number {} for service {} is not the next one ({})",
                release.number,
                release.service,
                last + 1
            )));
        }
        g.releases.insert(release.id.clone(), release.clone());
        Ok(())
    }

    async fn release(&self, id: &ReleaseId) -> Result<Release> {
        cloned(&self.lock().releases, id, "release")
    }

    async fn releases(&self, service: &ServiceId) -> Result<Vec<Release>> {
        let mut v: Vec<_> = self
            .lock()
            .releases
            .values()
            .filter(|r| &r.service == service)
            .cloned()
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.number));
        Ok(v)
    }

    async fn append_events(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        let mut g = self.lock();
        let mut out = Vec::with_capacity(events.len());
        for mut e in events {
            g.last_seq += 1;
            e.seq = g.last_seq;
            g.events.push(e.clone());
            out.push(e);
        }
        Ok(out)
    }

    async fn events(&self, deployment: &DeploymentId, after: u64) -> Result<Vec<Event>> {
        Ok(self
            .lock()
            .events
            .iter()
            .filter(|e| &e.deployment == deployment && e.seq > after)
            .cloned()
            .collect())
    }
    async fn insert_cron_run(&self, run: &CronRun) -> Result<()> {
        run.validate()?;
        let mut g = self.lock();
        g.check_new(&run.service, &g.cron_runs, &run.id, "cron run")?;
        g.next_cron_run += 1;
        let order = g.next_cron_run;
        g.cron_runs.insert(run.id.clone(), (order, run.clone()));
        Ok(())
    }

    async fn update_cron_run(&self, run: &CronRun) -> Result<()> {
        run.validate()?;
        let mut g = self.lock();
        let Some((_, stored)) = g.cron_runs.get_mut(&run.id) else {
            return Err(not_found("cron run", &run.id));
        };
        let mut next = run.clone();
        next.project = stored.project.clone();
        next.service = stored.service.clone();
        next.job = stored.job.clone();
        *stored = next;
        Ok(())
    }

    async fn cron_runs(&self, filter: &CronRunFilter) -> Result<Vec<CronRun>> {
        let g = self.lock();
        let mut v: Vec<&(u64, CronRun)> = g
            .cron_runs
            .values()
            .filter(|(_, r)| {
                filter.project.as_ref().is_none_or(|p| &r.project == p)
                    && filter.service.as_ref().is_none_or(|s| &r.service == s)
                    && filter.job.as_ref().is_none_or(|j| &r.job == j)
                    && filter.outcome.is_none_or(|o| r.outcome == o)
            })
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.0));
        let limit = filter.limit.unwrap_or(usize::MAX);
        Ok(v.into_iter().take(limit).map(|(_, r)| r.clone()).collect())
    }

    async fn prune_cron_runs(&self, service: &ServiceId, job: &str, keep: usize) -> Result<u64> {
        let mut g = self.lock();
        let mut ended: Vec<(u64, CronRunId)> = g
            .cron_runs
            .values()
            .filter(|(_, r)| {
                &r.service == service && r.job == job && r.outcome != CronOutcome::Running
            })
            .map(|(o, r)| (*o, r.id.clone()))
            .collect();
        ended.sort_by_key(|(o, _)| std::cmp::Reverse(*o));
        let gone: Vec<CronRunId> = ended.into_iter().skip(keep).map(|(_, id)| id).collect();
        for id in &gone {
            g.cron_runs.remove(id);
        }
        Ok(gone.len() as u64)
    }
}
