//! The [`Store`] conformance kit: what every store must do, checked on a live store.
//!
//! A store backend calls [`run_all`] (or the single checks) from its own tests, on a
//! store it opened. Every check creates its own uniquely named data (random project
//! names), so they can all run, one after the other or at the same time, on one store,
//! even one that already holds data. A violation panics with a message saying what was
//! expected and what the store did.
//!
//! Enable the `conformance` feature of `wharf-core` for your tests:
//!
//! ```toml
//! [dev-dependencies]
//! wharf-core = { version = "0.1", features = ["conformance"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! then, in a test:
//!
//! ```
//! use wharf_core::conformance::store;
//! use wharf_core::store::MemoryStore;
//!
//! #[tokio::test]
//! async fn my_store_conforms() {
//!     let s = MemoryStore::new(); // your store here
//!     store::run_all(&s).await;
//! }
//! # fn main() {}
//! ```
//!
//! The kit checks the behaviour of [`crate::store::MemoryStore`], the reference: same
//! results, same [`ErrorKind`]s. Listing a project's environments or services, a
//! service's releases or a deployment's events for an id that does not exist returns
//! an empty list (not NotFound).

use std::fmt::Debug;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{ErrorKind, Result};
use crate::model::*;
use crate::state::{DeployEvent, DeploymentState, Step};
use crate::traits::{DeploymentFilter, Store, StoreExt};

mod cron;
mod lookups;
pub use cron::{cron_runs_prune_and_cascade, cron_runs_record_and_list};
pub use lookups::{environment_lookups, project_by_name, release_by_id, service_by_name};

/// Runs every check of the kit, one after the other, on `store`.
pub async fn run_all(store: &dyn Store) {
    projects(store).await;
    environments(store).await;
    services(store).await;
    deployments_compare_and_set(store).await;
    deployments_concurrent_updates(store).await;
    deployments_filter_and_order(store).await;
    releases_numbering(store).await;
    project_by_name(store).await;
    environment_lookups(store).await;
    service_by_name(store).await;
    release_by_id(store).await;
    events_sequence(store).await;
    delete_cascades(store).await;
    bad_input(store).await;
    cron_runs_record_and_list(store).await;
    cron_runs_prune_and_cascade(store).await;
}

// ---------------------------------------------------------------------------------
// Helpers

/// `prefix` followed by 8 random lower-case letters: a valid, unique name.
fn unique_name(prefix: &str) -> String {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    let tail: String = bytes[..8].iter().map(|b| (b'a' + b % 26) as char).collect();
    format!("{prefix}{tail}")
}

#[track_caller]
fn ok<T>(r: Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("store conformance: {what}: expected success, got error {e}"),
    }
}

#[track_caller]
fn expect_err<T: Debug>(r: Result<T>, kind: ErrorKind, what: &str) {
    match r {
        Ok(v) => panic!("store conformance: {what}: expected a {kind} error, got Ok({v:?})"),
        Err(e) => assert_eq!(
            e.kind(),
            kind,
            "store conformance: {what}: expected a {kind} error, got {e}"
        ),
    }
}

fn env_vars() -> EnvVars {
    let mut env = EnvVars::new();
    env.insert("PLAIN".into(), EnvValue::Plain("hello world".into()));
    env.insert("TOKEN".into(), EnvValue::Secret(Secret::new("s3cr3t")));
    env
}

/// A Node build plan with install, build and start commands set (the plan the kit's
/// deployments record); other tests may start from it too.
pub fn node_plan() -> BuildPlan {
    BuildPlan {
        processes: Default::default(),
        kind: ProjectKind::Node,
        base_image: "node:22-slim".into(),
        install: vec!["npm ci".into()],
        build: vec!["npm run build".into()],
        start: vec!["node".into(), "server.js".into()],
        port: 3000,
        dockerfile: None,
    }
}

async fn new_project(store: &dyn Store) -> Project {
    let mut p = ok(Project::new(unique_name("p")), "Project::new");
    p.env = env_vars();
    ok(store.put_project(&p).await, "put_project of a new project");
    p
}

/// A service with every field set, so round trips are meaningful (not yet stored);
/// other tests may start from it too.
pub fn rich_service(project: &ProjectId, name: &str, env: Option<&EnvironmentId>) -> Service {
    let mut s = Service::new(
        project,
        name,
        SourceSpec::Git {
            url: "https://example.invalid/app.git".into(),
            reference: GitRef::Branch("main".into()),
            subdir: Some(PathBuf::from("apps/web")),
        },
    )
    .expect("a valid service name");
    s.environment = env.cloned();
    s.build = BuildSpec::Dockerfile {
        path: "docker/Dockerfile".into(),
    };
    s.port = Some(8080);
    s.env = env_vars();
    s.depends_on = vec!["db".into()];
    s.health_check = Some(HealthCheck {
        probe: Probe::Http {
            path: "/healthz".into(),
        },
        interval: Duration::from_millis(250),
        timeout: Duration::from_secs(30),
    });
    s.resources = Resources {
        memory_mb: Some(512),
        cpu_millis: Some(500),
    };
    s.domains = vec!["app.example.com".into()];
    s.volumes = vec![VolumeMount::new("data", "/var/lib/app").with_size("10Gi")];
    s.processes = [
        ("release".to_owned(), "./migrate --all".to_owned()),
        ("worker".to_owned(), "./worker --queue mail".to_owned()),
    ]
    .into();
    s.replicas = [("web".to_owned(), 3), ("worker".to_owned(), 2)].into();
    s.process_checks = [(
        "worker".to_owned(),
        HealthCheck {
            probe: Probe::Tcp,
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(20),
        },
    )]
    .into();
    s.cron = vec![CronJob {
        concurrency: Concurrency::Allow,
        timeout: Duration::from_secs(90),
        ..CronJob::new("nightly", "0 3 * * *", "python3 manage.py clearsessions")
    }];
    s
}

async fn new_service(
    store: &dyn Store,
    project: &ProjectId,
    name: &str,
    env: Option<&EnvironmentId>,
) -> Service {
    let s = rich_service(project, name, env);
    ok(store.put_service(&s).await, "put_service of a new service");
    s
}

/// A preview environment of pull request `number` on `branch` (not yet stored).
fn preview_environment(
    project: &ProjectId,
    name: &str,
    number: u64,
    branch: &str,
    created_at: Timestamp,
) -> Environment {
    Environment {
        id: EnvironmentId::random(),
        project: project.clone(),
        name: name.into(),
        kind: EnvironmentKind::Preview {
            number,
            branch: branch.into(),
            fork: None,
        },
        env: env_vars(),
        created_at,
    }
}

/// `env` renamed to `name`, stored.
async fn renamed_environment(store: &dyn Store, env: &Environment, name: &str) -> Environment {
    let mut renamed = env.clone();
    renamed.name = name.into();
    ok(
        store.put_environment(&renamed).await,
        "put_environment renaming an environment",
    );
    renamed
}

async fn new_environment(store: &dyn Store, project: &ProjectId, name: &str) -> Environment {
    let e = Environment {
        id: EnvironmentId::random(),
        project: project.clone(),
        name: name.into(),
        kind: EnvironmentKind::Standing,
        env: env_vars(),
        created_at: Timestamp::now(),
    };
    ok(
        store.put_environment(&e).await,
        "put_environment of a new environment",
    );
    e
}

fn deployment(service: &Service, state: DeploymentState, created_at: i64) -> Deployment {
    Deployment {
        more_instances: Vec::new(),
        canary: None,
        id: DeploymentId::random(),
        project: service.project.clone(),
        service: service.id.clone(),
        state,
        version: 0,
        trigger: Trigger::Webhook {
            provider: "github".into(),
            reference: "refs/heads/main".into(),
        },
        source: service.source.clone(),
        revision: None,
        plan: Some(node_plan()),
        artifact: None,
        instance: None,
        release: None,
        retry_of: None,
        created_at: Timestamp(created_at),
        updated_at: Timestamp(created_at),
    }
}

async fn new_deployment(store: &dyn Store, service: &Service) -> Deployment {
    let d = deployment(service, DeploymentState::Queued, Timestamp::now().0);
    ok(store.insert_deployment(&d).await, "insert_deployment");
    d
}

fn release(service: &Service, deployment: &DeploymentId, number: u64) -> Release {
    Release {
        id: ReleaseId::random(),
        project: service.project.clone(),
        service: service.id.clone(),
        number,
        deployment: deployment.clone(),
        artifact: Artifact {
            image: format!("wharf/app:{number}"),
            digest: Some(format!("sha256:{number:064}")),
            local_only: false,
        },
        port: 8080,
        revision: Some("0123456789abcdef".into()),
        // A secret in the snapshot: a store must give it back as it was given.
        config: Some(ReleaseConfig {
            env: EnvVars::from([
                ("MODE".to_string(), EnvValue::Plain(format!("v{number}"))),
                (
                    "TOKEN".to_string(),
                    EnvValue::Secret(Secret::new(format!("s3cret-{number}"))),
                ),
            ]),
            resources: Resources::default(),
            health_check: None,
        }),
        created_at: Timestamp::now(),
    }
}

fn log_event(d: &Deployment, text: &str) -> Event {
    Event {
        // Junk on purpose: the store assigns the sequence number.
        seq: 424242,
        deployment: d.id.clone(),
        service: d.service.clone(),
        at: Timestamp::now(),
        kind: EventKind::Log(LogLine::new(LogStream::Build, text)),
    }
}

fn ids(ds: &[Deployment]) -> Vec<DeploymentId> {
    ds.iter().map(|d| d.id.clone()).collect()
}

async fn list(store: &dyn Store, filter: DeploymentFilter) -> Vec<Deployment> {
    ok(
        store.deployments(&filter).await,
        &format!("deployments({filter:?})"),
    )
}

// ---------------------------------------------------------------------------------
// Checks

/// Projects: round trip, listing by name, renaming, name conflicts, NotFound.
pub async fn projects(store: &dyn Store) {
    let p = new_project(store).await;
    assert_eq!(
        ok(store.project(&p.id).await, "project"),
        p,
        "store conformance: project() must return exactly what put_project stored"
    );
    ok(
        store.put_project(&p).await,
        "put_project again with the same id and name (an update)",
    );

    // Listing: sorted by name.
    let base = unique_name("p");
    let mut named = Vec::new();
    for suffix in ["b", "a", "c"] {
        let q = ok(Project::new(format!("{base}{suffix}")), "Project::new");
        ok(store.put_project(&q).await, "put_project");
        named.push(q);
    }
    let all = ok(store.projects().await, "projects");
    assert!(
        all.windows(2).all(|w| w[0].name <= w[1].name),
        "store conformance: projects() must be sorted by name, got {:?}",
        all.iter().map(|p| &p.name).collect::<Vec<_>>()
    );
    let ours: Vec<&String> = all
        .iter()
        .filter(|q| q.name.starts_with(&base))
        .map(|q| &q.name)
        .collect();
    assert_eq!(
        ours,
        vec![
            &format!("{base}a"),
            &format!("{base}b"),
            &format!("{base}c")
        ],
        "store conformance: projects() must list every project, by name"
    );
    assert!(
        all.contains(&p),
        "store conformance: projects() must include project {}",
        p.id
    );

    // A name used by another project is a Conflict and changes nothing.
    let mut clash = ok(Project::new(p.name.clone()), "Project::new");
    clash.env = EnvVars::new();
    expect_err(
        store.put_project(&clash).await,
        ErrorKind::Conflict,
        "put_project with a name another project uses",
    );
    expect_err(
        store.project(&clash.id).await,
        ErrorKind::NotFound,
        "project() of a project whose put_project failed",
    );
    let mut renamed_into = named[0].clone();
    renamed_into.name = p.name.clone();
    expect_err(
        store.put_project(&renamed_into).await,
        ErrorKind::Conflict,
        "renaming a project to a name another project uses",
    );
    assert_eq!(
        ok(store.project(&named[0].id).await, "project"),
        named[0],
        "store conformance: a failed rename must leave the project unchanged"
    );

    // Renaming frees the old name.
    let mut renamed = p.clone();
    renamed.name = unique_name("p");
    ok(store.put_project(&renamed).await, "renaming a project");
    assert_eq!(
        ok(store.project(&p.id).await, "project"),
        renamed,
        "store conformance: project() must return the renamed project"
    );
    let reuse = ok(Project::new(p.name.clone()), "Project::new");
    ok(
        store.put_project(&reuse).await,
        "put_project with the old name of a renamed project",
    );

    // NotFound.
    let missing = ProjectId::random();
    expect_err(
        store.project(&missing).await,
        ErrorKind::NotFound,
        "project() of a missing id",
    );
    expect_err(
        store.delete_project(&missing).await,
        ErrorKind::NotFound,
        "delete_project of a missing id",
    );

    // Delete.
    ok(store.delete_project(&reuse.id).await, "delete_project");
    expect_err(
        store.project(&reuse.id).await,
        ErrorKind::NotFound,
        "project() after delete_project",
    );
    expect_err(
        store.delete_project(&reuse.id).await,
        ErrorKind::NotFound,
        "delete_project twice",
    );
    let all = ok(store.projects().await, "projects");
    assert!(
        !all.iter().any(|q| q.id == reuse.id),
        "store conformance: projects() must not list a deleted project"
    );
}

/// Environments: round trip, listing by name, name conflicts per project, NotFound.
pub async fn environments(store: &dyn Store) {
    let p = new_project(store).await;
    let other = new_project(store).await;
    let staging = preview_environment(&p.id, "staging", 42, "feature/x", Timestamp(1));
    ok(store.put_environment(&staging).await, "put_environment");
    let production = new_environment(store, &p.id, "production").await;
    assert_eq!(
        ok(store.environments(&p.id).await, "environments"),
        vec![production.clone(), staging.clone()],
        "store conformance: environments() must return the project's environments, by name"
    );

    // Same name in another project is fine; in the same project a Conflict.
    let elsewhere = new_environment(store, &other.id, "production").await;
    let clash = Environment {
        id: EnvironmentId::random(),
        ..production.clone()
    };
    expect_err(
        store.put_environment(&clash).await,
        ErrorKind::Conflict,
        "put_environment with a name used in the same project",
    );
    let mut rename = staging.clone();
    rename.name = "production".into();
    expect_err(
        store.put_environment(&rename).await,
        ErrorKind::Conflict,
        "renaming an environment to a name used in the same project",
    );
    assert_eq!(
        ok(store.environments(&p.id).await, "environments"),
        vec![production.clone(), staging.clone()],
        "store conformance: failed put_environment calls must change nothing"
    );

    // Update.
    let renamed = renamed_environment(store, &staging, "preview-42").await;
    assert_eq!(
        ok(store.environments(&p.id).await, "environments"),
        vec![renamed.clone(), production.clone()],
        "store conformance: environments() must reflect a rename (and stay sorted by name)"
    );
    assert_eq!(
        ok(store.environments(&other.id).await, "environments"),
        vec![elsewhere],
        "store conformance: environments() must only list the project's own"
    );

    // NotFound and empty.
    let orphan = Environment {
        id: EnvironmentId::random(),
        project: ProjectId::random(),
        ..production.clone()
    };
    expect_err(
        store.put_environment(&orphan).await,
        ErrorKind::NotFound,
        "put_environment in a missing project",
    );
    assert_eq!(
        ok(
            store.environments(&ProjectId::random()).await,
            "environments"
        ),
        vec![],
        "store conformance: environments() of a missing project must be empty"
    );
    expect_err(
        store.delete_environment(&EnvironmentId::random()).await,
        ErrorKind::NotFound,
        "delete_environment of a missing id",
    );

    // Delete.
    ok(
        store.delete_environment(&renamed.id).await,
        "delete_environment",
    );
    assert_eq!(
        ok(store.environments(&p.id).await, "environments"),
        vec![production],
        "store conformance: a deleted environment must not be listed"
    );
    expect_err(
        store.delete_environment(&renamed.id).await,
        ErrorKind::NotFound,
        "delete_environment twice",
    );
}

/// Services: round trip, listing by name, name conflicts per project + environment,
/// missing project or environment, moving between projects.
pub async fn services(store: &dyn Store) {
    let p = new_project(store).await;
    let other = new_project(store).await;
    let prod = new_environment(store, &p.id, "production").await;
    let staging = new_environment(store, &p.id, "staging").await;
    let foreign_env = new_environment(store, &other.id, "production").await;

    let web = new_service(store, &p.id, "web", None).await;
    let api = new_service(store, &p.id, "api", Some(&prod.id)).await;
    let web_prod = new_service(store, &p.id, "web", Some(&prod.id)).await;
    let web_staging = new_service(store, &p.id, "web", Some(&staging.id)).await;
    let other_web = new_service(store, &other.id, "web", None).await;

    for s in [&web, &api, &web_prod, &web_staging, &other_web] {
        assert_eq!(
            &ok(store.service(&s.id).await, "service"),
            s,
            "store conformance: service() must return exactly what put_service stored"
        );
    }
    let listed = ok(store.services(&p.id).await, "services");
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["api", "web", "web", "web"],
        "store conformance: services() must list the project's services, by name"
    );
    for s in [&web, &api, &web_prod, &web_staging] {
        assert!(
            listed.contains(s),
            "store conformance: services() must include service {} ({})",
            s.id,
            s.name
        );
    }
    assert_eq!(
        ok(store.services(&other.id).await, "services"),
        vec![other_web.clone()],
        "store conformance: services() must only list the project's own"
    );

    // Conflicts: same name in the same project and environment (or both without one).
    let clash = rich_service(&p.id, "web", None);
    expect_err(
        store.put_service(&clash).await,
        ErrorKind::Conflict,
        "put_service with a name used in the same project (no environment)",
    );
    let clash_env = rich_service(&p.id, "api", Some(&prod.id));
    expect_err(
        store.put_service(&clash_env).await,
        ErrorKind::Conflict,
        "put_service with a name used in the same project and environment",
    );
    for s in [&clash, &clash_env] {
        expect_err(
            store.service(&s.id).await,
            ErrorKind::NotFound,
            "service() of a service whose put_service failed",
        );
    }
    let mut rename = api.clone();
    rename.name = "web".into();
    expect_err(
        store.put_service(&rename).await,
        ErrorKind::Conflict,
        "renaming a service to a name used in its project and environment",
    );
    let mut moved = web_staging.clone();
    moved.environment = Some(prod.id.clone());
    expect_err(
        store.put_service(&moved).await,
        ErrorKind::Conflict,
        "moving a service to an environment where its name is used",
    );
    assert_eq!(
        ok(store.service(&api.id).await, "service"),
        api,
        "store conformance: a failed put_service must leave the service unchanged"
    );
    assert_eq!(
        ok(store.service(&web_staging.id).await, "service"),
        web_staging,
        "store conformance: a failed put_service must leave the service unchanged"
    );

    // Update.
    let mut updated = web.clone();
    updated.port = Some(9090);
    updated.domains.push("www.example.com".into());
    updated.name = "frontend".into();
    ok(store.put_service(&updated).await, "updating a service");
    assert_eq!(
        ok(store.service(&web.id).await, "service"),
        updated,
        "store conformance: service() must return the updated service"
    );
    let reuse = new_service(store, &p.id, "web", None).await;
    assert_eq!(
        ok(store.service(&reuse.id).await, "service"),
        reuse,
        "store conformance: the old name of a renamed service must be free"
    );

    // Missing project or environment; an environment of another project.
    let orphan = rich_service(&ProjectId::random(), "web", None);
    expect_err(
        store.put_service(&orphan).await,
        ErrorKind::NotFound,
        "put_service in a missing project",
    );
    let no_env = rich_service(&p.id, "worker", Some(&EnvironmentId::random()));
    expect_err(
        store.put_service(&no_env).await,
        ErrorKind::NotFound,
        "put_service in a missing environment",
    );
    let wrong_env = rich_service(&p.id, "worker", Some(&foreign_env.id));
    expect_err(
        store.put_service(&wrong_env).await,
        ErrorKind::NotFound,
        "put_service in an environment of another project",
    );

    // A service cannot move to another project.
    let mut escape = api.clone();
    escape.project = other.id.clone();
    escape.environment = None;
    escape.name = unique_name("s");
    expect_err(
        store.put_service(&escape).await,
        ErrorKind::InvalidInput,
        "moving a service to another project",
    );
    assert_eq!(
        ok(store.service(&api.id).await, "service"),
        api,
        "store conformance: a refused move must leave the service unchanged"
    );

    // NotFound and empty.
    expect_err(
        store.service(&ServiceId::random()).await,
        ErrorKind::NotFound,
        "service() of a missing id",
    );
    expect_err(
        store.delete_service(&ServiceId::random()).await,
        ErrorKind::NotFound,
        "delete_service of a missing id",
    );
    assert_eq!(
        ok(store.services(&ProjectId::random()).await, "services"),
        vec![],
        "store conformance: services() of a missing project must be empty"
    );

    // Delete.
    ok(store.delete_service(&api.id).await, "delete_service");
    expect_err(
        store.service(&api.id).await,
        ErrorKind::NotFound,
        "service() after delete_service",
    );
    expect_err(
        store.delete_service(&api.id).await,
        ErrorKind::NotFound,
        "delete_service twice",
    );
}

/// Deployments: round trip, compare-and-set on the version (stale and future versions
/// are Conflicts that change nothing; success bumps the version by exactly 1),
/// duplicate ids, NotFound.
pub async fn deployments_compare_and_set(store: &dyn Store) {
    let p = new_project(store).await;
    let s = new_service(store, &p.id, "web", None).await;
    let d = new_deployment(store, &s).await;
    assert_eq!(
        ok(store.deployment(&d.id).await, "deployment"),
        d,
        "store conformance: deployment() must return exactly what insert_deployment stored"
    );
    expect_err(
        store.insert_deployment(&d).await,
        ErrorKind::Conflict,
        "insert_deployment with an id that exists",
    );
    let orphan = deployment(
        &rich_service(&p.id, "gone", None),
        DeploymentState::Queued,
        0,
    );
    expect_err(
        store.insert_deployment(&orphan).await,
        ErrorKind::NotFound,
        "insert_deployment for a missing service",
    );

    // A successful update bumps the version by exactly one and stores every field.
    let mut change = d.clone();
    change.state = DeploymentState::Fetching;
    change.revision = Some("abc123".into());
    change.artifact = Some(Artifact {
        image: "wharf/app:1".into(),
        digest: None,
        local_only: false,
    });
    let mut labels = Labels::new();
    labels.insert(label::MANAGED.into(), "true".into());
    change.instance = Some(Instance {
        id: InstanceId::from("container-1"),
        endpoint: Endpoint {
            host: "::1".into(),
            port: 49153,
        },
        labels,
    });
    change.release = Some(ReleaseId::random());
    change.updated_at = Timestamp(d.updated_at.0 + 1);
    let v1 = ok(store.update_deployment(&change).await, "update_deployment");
    let mut expected = change.clone();
    expected.version = 1;
    assert_eq!(
        v1, expected,
        "store conformance: update_deployment must return the deployment with version + 1"
    );
    assert_eq!(
        ok(store.deployment(&d.id).await, "deployment"),
        v1,
        "store conformance: deployment() must return what update_deployment stored"
    );

    // Stale and future versions: Conflict, nothing changes.
    let mut stale = d.clone();
    stale.state = DeploymentState::Cancelled;
    expect_err(
        store.update_deployment(&stale).await,
        ErrorKind::Conflict,
        "update_deployment with a stale version",
    );
    let mut future = v1.clone();
    future.version = 7;
    future.state = DeploymentState::Cancelled;
    expect_err(
        store.update_deployment(&future).await,
        ErrorKind::Conflict,
        "update_deployment with a version ahead of the stored one",
    );
    assert_eq!(
        ok(store.deployment(&d.id).await, "deployment"),
        v1,
        "store conformance: a refused update_deployment must change nothing"
    );

    // Through StoreExt::apply, version by version.
    let v2 = ok(
        store.apply(&v1, &DeployEvent::Fetched).await,
        "apply(Fetched)",
    );
    assert_eq!(
        (v2.version, &v2.state),
        (2, &DeploymentState::Building),
        "store conformance: apply must persist the next state with version + 1"
    );
    let v3 = ok(
        store
            .apply(
                &v2,
                &DeployEvent::Fail {
                    reason: "exit 1".into(),
                },
            )
            .await,
        "apply(Fail)",
    );
    assert_eq!(
        v3.state,
        DeploymentState::Failed {
            step: Step::Building,
            reason: "exit 1".into()
        }
    );
    assert_eq!(
        ok(store.deployment(&d.id).await, "deployment"),
        v3,
        "store conformance: deployment() must return the latest update"
    );
    expect_err(
        store.apply(&v2, &DeployEvent::Cancel).await,
        ErrorKind::Conflict,
        "apply on a stale copy",
    );

    // Missing.
    let mut missing = d.clone();
    missing.id = DeploymentId::random();
    expect_err(
        store.update_deployment(&missing).await,
        ErrorKind::NotFound,
        "update_deployment of a missing id",
    );
    expect_err(
        store.deployment(&missing.id).await,
        ErrorKind::NotFound,
        "deployment() of a missing id",
    );
}

/// Sixteen concurrent updates of one deployment at the same version: exactly one
/// wins, every other one is a Conflict, and the stored deployment is the winner's.
pub async fn deployments_concurrent_updates(store: &dyn Store) {
    let p = new_project(store).await;
    let s = new_service(store, &p.id, "web", None).await;
    let d = new_deployment(store, &s).await;
    let updates: Vec<Deployment> = (0..16)
        .map(|i| {
            let mut u = d.clone();
            u.state = DeploymentState::Fetching;
            u.revision = Some(format!("rev-{i}"));
            u
        })
        .collect();
    let results =
        futures::future::join_all(updates.iter().map(|u| store.update_deployment(u))).await;
    let mut winners = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(w) => winners.push((i, w)),
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::Conflict,
                "store conformance: a concurrent update_deployment that lost must be a \
                 Conflict, got {e}"
            ),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "store conformance: exactly one of 16 concurrent update_deployment calls on one \
         version must win, {} did",
        winners.len()
    );
    let (i, winner) = winners.pop().expect("one winner");
    assert_eq!(winner.version, 1);
    assert_eq!(
        winner.revision.as_deref(),
        Some(format!("rev-{i}").as_str())
    );
    assert_eq!(
        ok(store.deployment(&d.id).await, "deployment"),
        winner,
        "store conformance: the stored deployment must be the winner's"
    );
}

/// Listing deployments: newest first by insertion (not by timestamps, and not changed
/// by updates), filtered by project, service and activity, limited.
pub async fn deployments_filter_and_order(store: &dyn Store) {
    let p1 = new_project(store).await;
    let p2 = new_project(store).await;
    let a = new_service(store, &p1.id, "a", None).await;
    let b = new_service(store, &p1.id, "b", None).await;
    let c = new_service(store, &p2.id, "c", None).await;

    // Timestamps run backwards on purpose: order is insertion order.
    let mut d1 = deployment(&a, DeploymentState::Queued, 4_000_000_000_000);
    let d2 = deployment(&b, DeploymentState::Queued, 3_000);
    let d3 = deployment(&a, DeploymentState::Queued, 2_000);
    let d4 = deployment(&c, DeploymentState::Queued, 1_000);
    let d5 = deployment(
        &a,
        DeploymentState::Failed {
            step: Step::Fetching,
            reason: "no such repository".into(),
        },
        0,
    );
    for d in [&d1, &d2, &d3, &d4, &d5] {
        ok(store.insert_deployment(d).await, "insert_deployment");
    }
    // Updates do not reorder; d2 goes live (not active), d1 moves on (still active).
    let mut live = d2.clone();
    live.state = DeploymentState::Live;
    let d2 = ok(store.update_deployment(&live).await, "update_deployment");
    d1.state = DeploymentState::Building;
    let d1 = ok(store.update_deployment(&d1).await, "update_deployment");

    let in_p1 = DeploymentFilter {
        project: Some(p1.id.clone()),
        ..Default::default()
    };
    let got = list(store, in_p1.clone()).await;
    assert_eq!(
        got,
        vec![d5.clone(), d3.clone(), d2.clone(), d1.clone()],
        "store conformance: deployments(project) must return the project's deployments, \
         newest (last inserted) first, as stored"
    );
    assert_eq!(
        ids(&list(
            store,
            DeploymentFilter {
                project: Some(p2.id.clone()),
                ..Default::default()
            }
        )
        .await),
        ids(std::slice::from_ref(&d4)),
        "store conformance: deployments(project) must only list that project's"
    );
    assert_eq!(
        ids(&list(
            store,
            DeploymentFilter {
                service: Some(a.id.clone()),
                ..Default::default()
            }
        )
        .await),
        ids(&[d5.clone(), d3.clone(), d1.clone()]),
        "store conformance: deployments(service) must only list that service's, newest first"
    );
    assert_eq!(
        ids(&list(
            store,
            DeploymentFilter {
                active_only: true,
                ..in_p1.clone()
            }
        )
        .await),
        ids(&[d3.clone(), d1.clone()]),
        "store conformance: deployments(active_only) must skip live, failed and other \
         finished deployments"
    );
    assert_eq!(
        ids(&list(
            store,
            DeploymentFilter {
                limit: Some(2),
                ..in_p1.clone()
            }
        )
        .await),
        ids(&[d5.clone(), d3.clone()]),
        "store conformance: deployments(limit 2) must return the 2 newest"
    );
    assert_eq!(
        list(
            store,
            DeploymentFilter {
                limit: Some(0),
                ..in_p1.clone()
            }
        )
        .await,
        vec![],
        "store conformance: deployments(limit 0) must be empty"
    );
    assert_eq!(
        ids(&list(
            store,
            DeploymentFilter {
                project: Some(p1.id.clone()),
                service: Some(a.id.clone()),
                active_only: true,
                limit: Some(1),
            }
        )
        .await),
        ids(std::slice::from_ref(&d3)),
        "store conformance: deployments() must apply every filter together"
    );
    assert_eq!(
        list(
            store,
            DeploymentFilter {
                project: Some(p1.id.clone()),
                service: Some(c.id.clone()),
                ..Default::default()
            }
        )
        .await,
        vec![],
        "store conformance: deployments(project, service of another project) must be empty"
    );
    assert_eq!(
        list(
            store,
            DeploymentFilter {
                project: Some(ProjectId::random()),
                ..Default::default()
            }
        )
        .await,
        vec![],
        "store conformance: deployments() of a missing project must be empty"
    );

    // Unfiltered: ours appear newest first among whatever else the store holds.
    let all = ids(&list(store, DeploymentFilter::default()).await);
    let ours = ids(&[d5, d4, d3, d2.clone(), d1]);
    let seen: Vec<DeploymentId> = all.into_iter().filter(|id| ours.contains(id)).collect();
    assert_eq!(
        seen, ours,
        "store conformance: deployments() with no filter must list every deployment, \
         newest first"
    );

    assert_eq!(
        ok(store.live_deployment(&b.id).await, "live_deployment"),
        Some(d2),
        "store conformance: live_deployment must find the live deployment"
    );
    assert_eq!(
        ok(store.live_deployment(&a.id).await, "live_deployment"),
        None,
        "store conformance: live_deployment of a service with none live must be None"
    );
}

/// Releases: numbers are consecutive per service from 1; a gap, a duplicate, 0 or a
/// reused id is a Conflict that changes nothing; newest first.
pub async fn releases_numbering(store: &dyn Store) {
    let p = new_project(store).await;
    let s = new_service(store, &p.id, "web", None).await;
    let t = new_service(store, &p.id, "worker", None).await;
    let d = new_deployment(store, &s).await;

    let r1 = release(&s, &d.id, 1);
    let r2 = release(&s, &d.id, 2);
    let r3 = release(&s, &d.id, 3);
    for r in [&r1, &r2, &r3] {
        ok(
            store.insert_release(r).await,
            &format!("insert_release number {}", r.number),
        );
    }
    let expected = vec![r3.clone(), r2.clone(), r1.clone()];
    assert_eq!(
        ok(store.releases(&s.id).await, "releases"),
        expected,
        "store conformance: releases() must return the service's releases, newest first"
    );

    for (r, what) in [
        (release(&s, &d.id, 5), "a gap (5 after 3)"),
        (release(&s, &d.id, 3), "a duplicate number (3)"),
        (release(&s, &d.id, 2), "an old number (2)"),
        (release(&s, &d.id, 0), "number 0"),
        (
            Release {
                number: 4,
                ..r1.clone()
            },
            "an id that exists (with the next number)",
        ),
    ] {
        expect_err(
            store.insert_release(&r).await,
            ErrorKind::Conflict,
            &format!("insert_release with {what}"),
        );
    }
    assert_eq!(
        ok(store.releases(&s.id).await, "releases"),
        expected,
        "store conformance: refused insert_release calls must change nothing"
    );

    // Numbering is per service.
    expect_err(
        store.insert_release(&release(&t, &d.id, 2)).await,
        ErrorKind::Conflict,
        "insert_release: a service's first release must be number 1",
    );
    let t1 = release(&t, &d.id, 1);
    ok(
        store.insert_release(&t1).await,
        "insert_release number 1 of another service",
    );
    assert_eq!(ok(store.releases(&t.id).await, "releases"), vec![t1]);

    let r4 = release(&s, &d.id, 4);
    ok(
        store.insert_release(&r4).await,
        "insert_release number 4 after 3",
    );
    assert_eq!(
        ok(store.releases(&s.id).await, "releases")
            .iter()
            .map(|r| r.number)
            .collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );

    let orphan = release(&rich_service(&p.id, "gone", None), &d.id, 1);
    expect_err(
        store.insert_release(&orphan).await,
        ErrorKind::NotFound,
        "insert_release for a missing service",
    );
    assert_eq!(
        ok(store.releases(&ServiceId::random()).await, "releases"),
        vec![],
        "store conformance: releases() of a missing service must be empty"
    );
}

/// Events: the store assigns strictly increasing sequence numbers across calls (never
/// reused, even after deletes); `events(dep, after)` returns that deployment's events
/// with `seq > after`, in order.
pub async fn events_sequence(store: &dyn Store) {
    let p = new_project(store).await;
    let s = new_service(store, &p.id, "web", None).await;
    let d1 = new_deployment(store, &s).await;
    let d2 = new_deployment(store, &s).await;

    let batch = vec![
        log_event(&d1, "a"),
        log_event(&d2, "b"),
        Event {
            kind: EventKind::State {
                from: DeploymentState::Queued,
                to: DeploymentState::Fetching,
            },
            ..log_event(&d1, "c")
        },
    ];
    let first = ok(store.append_events(batch.clone()).await, "append_events");
    assert_eq!(
        first.len(),
        3,
        "store conformance: append_events must return every event"
    );
    for (got, sent) in first.iter().zip(&batch) {
        assert_eq!(
            Event {
                seq: sent.seq,
                ..got.clone()
            },
            *sent,
            "store conformance: append_events must return the events as given, with seq set"
        );
    }
    assert!(
        first.windows(2).all(|w| w[0].seq < w[1].seq),
        "store conformance: append_events must assign increasing seq within a call, got {:?}",
        first.iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    let second = ok(
        store.append_events(vec![log_event(&d1, "d")]).await,
        "append_events",
    );
    assert!(
        second[0].seq > first[2].seq,
        "store conformance: seq must keep increasing across calls ({} after {})",
        second[0].seq,
        first[2].seq
    );
    assert_eq!(
        ok(store.append_events(Vec::new()).await, "append_events([])"),
        vec![],
        "store conformance: appending no events returns none"
    );

    let all_d1 = vec![first[0].clone(), first[2].clone(), second[0].clone()];
    assert_eq!(
        ok(store.events(&d1.id, 0).await, "events"),
        all_d1,
        "store conformance: events(dep, 0) must return all of the deployment's events in order"
    );
    assert_eq!(
        ok(store.events(&d2.id, 0).await, "events"),
        vec![first[1].clone()],
        "store conformance: events() must only return the deployment's own"
    );
    assert_eq!(
        ok(store.events(&d1.id, first[0].seq).await, "events"),
        all_d1[1..].to_vec(),
        "store conformance: events(dep, after) must return only seq > after"
    );
    assert_eq!(
        ok(store.events(&d1.id, first[1].seq).await, "events"),
        all_d1[1..].to_vec(),
        "store conformance: events(dep, after) with `after` another deployment's seq"
    );
    assert_eq!(
        ok(store.events(&d1.id, second[0].seq).await, "events"),
        vec![],
        "store conformance: events(dep, last seq) must be empty"
    );
    assert_eq!(
        ok(store.events(&d1.id, u64::MAX).await, "events"),
        vec![],
        "store conformance: events(dep, u64::MAX) must be empty"
    );
    assert_eq!(
        ok(store.events(&DeploymentId::random(), 0).await, "events"),
        vec![],
        "store conformance: events() of a missing deployment must be empty"
    );

    // Sequence numbers are never reused, even once the newest events are deleted.
    let doomed = new_service(store, &p.id, "doomed", None).await;
    let dd = new_deployment(store, &doomed).await;
    let gone = ok(
        store
            .append_events(vec![log_event(&dd, "x"), log_event(&dd, "y")])
            .await,
        "append_events",
    );
    ok(store.delete_service(&doomed.id).await, "delete_service");
    let after = ok(
        store.append_events(vec![log_event(&d2, "z")]).await,
        "append_events",
    );
    assert!(
        after[0].seq > gone[1].seq,
        "store conformance: seq must not be reused after events are deleted ({} after {})",
        after[0].seq,
        gone[1].seq
    );
    assert_eq!(
        ok(store.events(&d2.id, first[1].seq).await, "events"),
        after,
        "store conformance: events() after a delete"
    );
}

/// Everything a project owns, for checking deletes.
struct Owned {
    service: Service,
    deployment: Deployment,
    release: Release,
    events: Vec<Event>,
}

async fn populate(
    store: &dyn Store,
    project: &ProjectId,
    name: &str,
    env: Option<&EnvironmentId>,
) -> Owned {
    let service = new_service(store, project, name, env).await;
    let deployment = new_deployment(store, &service).await;
    let release = release(&service, &deployment.id, 1);
    ok(store.insert_release(&release).await, "insert_release");
    let events = ok(
        store
            .append_events(vec![
                log_event(&deployment, "one"),
                log_event(&deployment, "two"),
            ])
            .await,
        "append_events",
    );
    Owned {
        service,
        deployment,
        release,
        events,
    }
}

async fn assert_present(store: &dyn Store, o: &Owned, why: &str) {
    assert_eq!(
        ok(store.service(&o.service.id).await, "service"),
        o.service,
        "store conformance: {why}: service {} must be kept",
        o.service.name
    );
    assert_eq!(
        ok(store.deployment(&o.deployment.id).await, "deployment"),
        o.deployment,
        "store conformance: {why}: the deployment of {} must be kept",
        o.service.name
    );
    assert_eq!(
        ok(store.releases(&o.service.id).await, "releases"),
        vec![o.release.clone()],
        "store conformance: {why}: the releases of {} must be kept",
        o.service.name
    );
    assert_eq!(
        ok(store.events(&o.deployment.id, 0).await, "events"),
        o.events,
        "store conformance: {why}: the events of {} must be kept",
        o.service.name
    );
}

async fn assert_gone(store: &dyn Store, o: &Owned, why: &str) {
    expect_err(
        store.service(&o.service.id).await,
        ErrorKind::NotFound,
        &format!("{why}: service() of a removed service"),
    );
    expect_err(
        store.deployment(&o.deployment.id).await,
        ErrorKind::NotFound,
        &format!("{why}: deployment() of a removed service's deployment"),
    );
    assert_eq!(
        ok(store.releases(&o.service.id).await, "releases"),
        vec![],
        "store conformance: {why}: a removed service's releases must be gone"
    );
    assert_eq!(
        ok(store.events(&o.deployment.id, 0).await, "events"),
        vec![],
        "store conformance: {why}: a removed service's events must be gone"
    );
    assert_eq!(
        list(
            store,
            DeploymentFilter {
                service: Some(o.service.id.clone()),
                ..Default::default()
            }
        )
        .await,
        vec![],
        "store conformance: {why}: a removed service's deployments must not be listed"
    );
}

/// Deletes: a service takes its deployments, releases and events with it (and nothing
/// else); an environment its services; a project everything it owns. Other projects
/// are untouched.
pub async fn delete_cascades(store: &dyn Store) {
    let p = new_project(store).await;
    let q = new_project(store).await;
    let e1 = new_environment(store, &p.id, "production").await;
    let e2 = new_environment(store, &p.id, "staging").await;
    let a = populate(store, &p.id, "a", None).await;
    let b = populate(store, &p.id, "b", Some(&e1.id)).await;
    let c = populate(store, &p.id, "c", Some(&e2.id)).await;
    let d = populate(store, &p.id, "d", None).await;
    let qe = new_environment(store, &q.id, "production").await;
    let x = populate(store, &q.id, "x", Some(&qe.id)).await;
    let y = populate(store, &q.id, "y", None).await;

    // A service.
    ok(store.delete_service(&a.service.id).await, "delete_service");
    assert_gone(store, &a, "after delete_service").await;
    for o in [&b, &c, &d, &x, &y] {
        assert_present(store, o, "after deleting another service").await;
    }
    assert_eq!(
        ok(store.project(&p.id).await, "project"),
        p,
        "store conformance: delete_service must keep the project"
    );
    // Its name is free again, and a new service under it starts at release 1.
    let a2 = populate(store, &p.id, "a", None).await;
    assert_eq!(a2.release.number, 1);

    // An environment.
    ok(store.delete_environment(&e1.id).await, "delete_environment");
    assert_gone(store, &b, "after delete_environment").await;
    for o in [&a2, &c, &d, &x, &y] {
        assert_present(store, o, "after deleting another environment").await;
    }
    assert_eq!(
        ok(store.environments(&p.id).await, "environments"),
        vec![e2.clone()]
    );

    // A project.
    ok(store.delete_project(&p.id).await, "delete_project");
    for o in [&a2, &c, &d] {
        assert_gone(store, o, "after delete_project").await;
    }
    for o in [&x, &y] {
        assert_present(store, o, "after deleting another project").await;
    }
    expect_err(
        store.project(&p.id).await,
        ErrorKind::NotFound,
        "project() after delete_project",
    );
    assert_eq!(
        ok(store.services(&p.id).await, "services"),
        vec![],
        "store conformance: a deleted project's services must be gone"
    );
    assert_eq!(
        ok(store.environments(&p.id).await, "environments"),
        vec![],
        "store conformance: a deleted project's environments must be gone"
    );
    assert_eq!(
        list(
            store,
            DeploymentFilter {
                project: Some(p.id.clone()),
                ..Default::default()
            }
        )
        .await,
        vec![],
        "store conformance: a deleted project's deployments must be gone"
    );
    assert_eq!(
        ok(store.environments(&q.id).await, "environments"),
        vec![qe],
        "store conformance: another project's environments must be kept"
    );
    assert_eq!(ok(store.project(&q.id).await, "project"), q);

    // The name is free again.
    let again = ok(Project::new(p.name.clone()), "Project::new");
    ok(
        store.put_project(&again).await,
        "put_project with the name of a deleted project",
    );
}

/// Invalid names and fields are InvalidInput (checked before anything else) and store
/// nothing.
pub async fn bad_input(store: &dyn Store) {
    let bad_names = [
        String::new(),
        "Web".into(),
        "9lives".into(),
        "-web".into(),
        "web-".into(),
        "web_1".into(),
        "web 1".into(),
        "../etc".into(),
        "wéb".into(),
        "a".repeat(64),
    ];
    let before: Vec<String> = ok(store.projects().await, "projects")
        .into_iter()
        .map(|p| p.name)
        .collect();
    for name in &bad_names {
        let p = Project {
            id: ProjectId::random(),
            name: name.clone(),
            ..Project::new("valid").unwrap()
        };
        expect_err(
            store.put_project(&p).await,
            ErrorKind::InvalidInput,
            &format!("put_project named {name:?}"),
        );
        expect_err(
            store.project(&p.id).await,
            ErrorKind::NotFound,
            "project() of a refused project",
        );
    }
    let after: Vec<String> = ok(store.projects().await, "projects")
        .into_iter()
        .map(|p| p.name)
        .collect();
    for name in &bad_names {
        assert!(
            before.contains(name) || !after.contains(name),
            "store conformance: a project named {name:?} must not be stored"
        );
    }
    // The longest valid name is fine.
    let long = ok(
        Project::new(format!("{}{}", unique_name("p"), "x".repeat(54))),
        "Project::new with a 63-character name",
    );
    ok(
        store.put_project(&long).await,
        "put_project with a 63-character name",
    );

    let p = new_project(store).await;
    for name in &bad_names {
        let e = Environment {
            id: EnvironmentId::random(),
            project: p.id.clone(),
            name: name.clone(),
            kind: EnvironmentKind::Standing,
            env: EnvVars::new(),
            created_at: Timestamp::now(),
        };
        expect_err(
            store.put_environment(&e).await,
            ErrorKind::InvalidInput,
            &format!("put_environment named {name:?}"),
        );
        let mut s = rich_service(&p.id, "web", None);
        s.name = name.clone();
        expect_err(
            store.put_service(&s).await,
            ErrorKind::InvalidInput,
            &format!("put_service named {name:?}"),
        );
    }
    assert_eq!(
        ok(store.environments(&p.id).await, "environments"),
        vec![],
        "store conformance: refused environments must not be stored"
    );

    // Other invalid service fields (validation comes before the project lookup).
    let mut cases: Vec<(Service, &str)> = Vec::new();
    let mut s = rich_service(&p.id, "web", None);
    s.env.insert("1BAD".into(), EnvValue::Plain("x".into()));
    cases.push((s, "an invalid env var name"));
    let mut s = rich_service(&p.id, "web", None);
    s.port = Some(0);
    cases.push((s, "port 0"));
    let mut s = rich_service(&p.id, "web", None);
    s.depends_on = vec!["web".into()];
    cases.push((s, "a dependency on itself"));
    let mut s = rich_service(&p.id, "web", None);
    s.depends_on = vec!["Bad Name".into()];
    cases.push((s, "an invalid dependency name"));
    let mut s = rich_service(&p.id, "web", None);
    s.volumes[0].path = "relative/path".into();
    cases.push((s, "a volume at a relative path"));
    let mut s = rich_service(&p.id, "web", None);
    s.volumes[0].name = "Bad".into();
    cases.push((s, "an invalid volume name"));
    let mut s = rich_service(&p.id, "web", None);
    s.health_check = Some(HealthCheck {
        probe: Probe::Http {
            path: "healthz".into(),
        },
        ..HealthCheck::default()
    });
    cases.push((s, "a health check path without '/'"));
    let mut s = rich_service(&ProjectId::random(), "web", None);
    s.name = "Bad".into();
    cases.push((s, "an invalid name in a missing project"));
    for (s, what) in &cases {
        expect_err(
            store.put_service(s).await,
            ErrorKind::InvalidInput,
            &format!("put_service with {what}"),
        );
        expect_err(
            store.service(&s.id).await,
            ErrorKind::NotFound,
            "service() of a refused service",
        );
    }
    assert_eq!(
        ok(store.services(&p.id).await, "services"),
        vec![],
        "store conformance: refused services must not be stored"
    );

    // A new deployment must have version 0.
    let s = new_service(store, &p.id, "web", None).await;
    let mut d = deployment(&s, DeploymentState::Queued, 0);
    d.version = 3;
    expect_err(
        store.insert_deployment(&d).await,
        ErrorKind::InvalidInput,
        "insert_deployment with version 3",
    );
    expect_err(
        store.deployment(&d.id).await,
        ErrorKind::NotFound,
        "deployment() of a refused deployment",
    );
}
