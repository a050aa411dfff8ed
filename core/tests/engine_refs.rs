//! References between services (`${{ db.PASSWORD }}`) through the engine on
//! in-memory backends: resolved into the instance's env, secret when they reference
//! a secret, ordering and cascades, and refusals before anything starts.

use std::sync::Arc;
use std::time::Duration;

use wharf_core::memory::{Faults, MemoryBuilder, MemoryRouter, MemoryRuntime};
use wharf_core::store::MemoryStore;
use wharf_core::*;

struct World {
    engine: Engine,
    store: Arc<MemoryStore>,
    runtime: Arc<MemoryRuntime>,
    router: Arc<MemoryRouter>,
    faults: Faults,
    project: Project,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let faults = Faults::default();
    let store = Arc::new(MemoryStore::new());
    let runtime = Arc::new(MemoryRuntime::with_faults(faults.clone()));
    let dir = tempfile::tempdir().unwrap();
    let router = Arc::new(MemoryRouter::with_faults(faults.clone()));
    let engine = Engine::builder()
        .store(store.clone())
        .builder(Arc::new(MemoryBuilder::with_faults(faults.clone())))
        .runtime(runtime.clone())
        .router(router.clone())
        .work_dir(dir.path().join("work"))
        .stop_grace(Duration::ZERO)
        .public_port(Some(8080))
        .build()
        .unwrap();
    let project = Project::new("demo").unwrap();
    store.put_project(&project).await.unwrap();
    World {
        engine,
        store,
        runtime,
        router,
        faults,
        project,
        _dir: dir,
    }
}

fn plain(v: &str) -> EnvValue {
    EnvValue::Plain(v.into())
}

impl World {
    /// An image service `name` listening on `port` with `env`, stored.
    async fn service(&self, name: &str, port: u16, env: &[(&str, EnvValue)]) -> Service {
        let mut s = Service::new(
            &self.project.id,
            name,
            SourceSpec::Image {
                image: format!("demo/{name}:1"),
            },
        )
        .unwrap();
        s.port = Some(port);
        s.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        s.health_check = Some(HealthCheck {
            probe: Probe::Http { path: "/".into() },
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(300),
        });
        self.store.put_service(&s).await.unwrap();
        s
    }

    /// `db` (a plain user, a secret password) and `api`, whose env references db's.
    async fn db_and_api(&self) -> (Service, Service) {
        let db = self
            .service(
                "db",
                5432,
                &[
                    ("USER", plain("app")),
                    ("PASSWORD", EnvValue::Secret(Secret::new("pw-s3cret"))),
                ],
            )
            .await;
        let api = self
            .service(
                "api",
                8000,
                &[
                    (
                        "DATABASE_URL",
                        plain("postgres://${{ db.USER }}:${{db.PASSWORD}}@${{ db.HOST }}:${{ db.PORT }}/app"),
                    ),
                    ("DB_USER", plain("${{ db.USER }}")),
                    ("DB_URL", plain("${{ db.URL }}")),
                ],
            )
            .await;
        (db, api)
    }

    fn env_of(&self, dep: &Deployment) -> std::collections::BTreeMap<String, String> {
        self.runtime
            .spec(&dep.instance.as_ref().expect("an instance").id)
            .expect("a running instance")
            .env
    }
}

#[tokio::test]
async fn references_resolve_in_dependency_order_and_a_secret_stays_secret() {
    let w = world().await;
    let (_db, api) = w.db_and_api().await;
    let rollout = w
        .engine
        .deploy_project(&w.project.id, None, Trigger::Manual)
        .await
        .unwrap();
    // No depends_on: the reference alone puts db first.
    assert_eq!(
        rollout.waves(),
        &[vec!["db".to_string()], vec!["api".to_string()]]
    );
    let report = rollout.wait().await.unwrap();
    assert!(report.all_live(), "{report:?}");

    let dep = &report.deployments["api"];
    let env = w.env_of(dep);
    assert_eq!(env["DATABASE_URL"], "postgres://app:pw-s3cret@db:5432/app");
    assert_eq!(env["DB_USER"], "app");
    assert_eq!(env["DB_URL"], "http://db.demo.localhost:8080");

    // The release records the resolved value as a secret (sealed by a sealing
    // store, masked by the API); a value built from plain ones stays plain.
    let release = w
        .store
        .release(dep.release.as_ref().unwrap())
        .await
        .unwrap();
    let config = release.config.unwrap();
    assert!(config.env["DATABASE_URL"].is_secret());
    assert_eq!(config.env["DB_USER"], plain("app"));
    // The service keeps its template.
    let stored = w.store.service(&api.id).await.unwrap();
    assert!(stored.env["DATABASE_URL"]
        .expose()
        .contains("${{db.PASSWORD}}"));
    // No event of any deployment holds the secret.
    for d in report.deployments.values() {
        let events = w.store.events(&d.id, 0).await.unwrap();
        assert!(!serde_json::to_string(&events)
            .unwrap()
            .contains("pw-s3cret"));
    }
}

#[tokio::test]
async fn changing_a_referenced_variable_cascades_to_the_referencing_service() {
    let w = world().await;
    let (mut db, _api) = w.db_and_api().await;
    let first = w
        .engine
        .deploy_project(&w.project.id, None, Trigger::Manual)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(first.all_live());

    db.env.insert("USER".into(), plain("rotated"));
    w.store.put_service(&db).await.unwrap();
    let rollout = w
        .engine
        .deploy_cascade(&db.id, Trigger::Manual)
        .await
        .unwrap();
    assert_eq!(
        rollout.waves(),
        &[vec!["db".to_string()], vec!["api".to_string()]]
    );
    let report = rollout.wait().await.unwrap();
    assert!(report.all_live(), "{report:?}");
    let api_dep = &report.deployments["api"];
    assert_eq!(
        api_dep.trigger,
        Trigger::Cascade {
            from: db.id.clone()
        }
    );
    assert_ne!(api_dep.id, first.deployments["api"].id);
    let env = w.env_of(api_dep);
    assert_eq!(env["DB_USER"], "rotated");
    assert_eq!(
        env["DATABASE_URL"],
        "postgres://rotated:pw-s3cret@db:5432/app"
    );
}

#[tokio::test]
async fn a_referenced_service_that_fails_skips_the_service_referencing_it() {
    let w = world().await;
    w.db_and_api().await;
    w.faults.update("db", |f| f.fail_health = true);
    let report = w
        .engine
        .deploy_project(&w.project.id, None, Trigger::Manual)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    match &report.deployments["api"].state {
        DeploymentState::Skipped { reason } => {
            assert!(reason.contains("dependency db did not go live"), "{reason}")
        }
        other => panic!("api should be skipped, is {other}"),
    }
}

#[tokio::test]
async fn unknown_services_variables_and_self_references_are_refused_before_anything_starts() {
    let w = world().await;
    w.db_and_api().await;
    let cases = [
        ("${{ cache.HOST }}", "references unknown service cache"),
        ("${{ db.NOPE }}", "unknown variable NOPE of service db"),
        ("${{ web.PORT }}", "references itself"),
        ("${{ db.HOST", "unterminated"),
    ];
    for (value, want) in cases {
        let web = w.service("web", 80, &[("X", plain(value))]).await;
        let err = w.engine.deploy(&web.id, Trigger::Manual).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{value}");
        assert!(err.message().contains(want), "{value}: {err}");
        let err = w
            .engine
            .deploy_project(&w.project.id, None, Trigger::Manual)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{value}");
        w.store.delete_service(&web.id).await.unwrap();
    }
    // Nothing was recorded, nothing started.
    let all = w
        .store
        .deployments(&DeploymentFilter::default())
        .await
        .unwrap();
    assert!(all.is_empty(), "{all:?}");
    assert_eq!(w.runtime.starts(), 0);
}

#[tokio::test]
async fn a_url_of_a_service_without_a_route_fails_the_deployment_before_it_starts() {
    let w = world().await;
    let (_db, api) = w.db_and_api().await;
    // db was never deployed, so it has no route (and no URL) yet.
    let dep = wharf_testkit::deploy(&w.engine, &api.id).await;
    match &dep.state {
        DeploymentState::Failed { reason, .. } => {
            assert!(
                reason.contains("${{ db.URL }}: service db has no route"),
                "{reason}"
            )
        }
        other => panic!("expected a failure, got {other}"),
    }
    assert!(dep.instance.is_none());
    assert_eq!(w.runtime.starts(), 0);
}

#[tokio::test]
async fn in_a_forks_preview_references_resolve_there_and_secrets_stay_out() {
    let w = world().await;
    // Production's db, which the preview's api must not see.
    let (prod_db, _) = w.db_and_api().await;
    let mut prod_db = prod_db;
    prod_db.env.insert("USER".into(), plain("prod-user"));
    w.store.put_service(&prod_db).await.unwrap();

    let preview = Environment {
        id: EnvironmentId::random(),
        project: w.project.id.clone(),
        name: "pr-7".into(),
        kind: EnvironmentKind::Preview {
            number: 7,
            branch: "evil".into(),
            fork: Some(Fork {
                repository: "https://forge.example/mallory/shop.git".into(),
                awaiting: None,
                approved: None,
            }),
        },
        env: EnvVars::new(),
        created_at: Timestamp::now(),
    };
    w.store.put_environment(&preview).await.unwrap();
    for svc in w.store.services(&w.project.id).await.unwrap() {
        let mut copy = svc.clone();
        copy.id = ServiceId::random();
        copy.environment = Some(preview.id.clone());
        if copy.name == "db" {
            copy.env.insert("USER".into(), plain("app"));
        }
        w.store.put_service(&copy).await.unwrap();
    }
    let report = w
        .engine
        .deploy_project(&w.project.id, Some(&preview.id), Trigger::Manual)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert!(report.all_live(), "{report:?}");
    let env = w.env_of(&report.deployments["api"]);
    // The preview's own db, at its preview URL.
    assert_eq!(env["DB_USER"], "app");
    assert_eq!(env["DB_URL"], "http://pr-7.db.demo.localhost:8080");
    // A fork's code gets no value built from a secret.
    assert!(!env.contains_key("DATABASE_URL"), "{env:?}");
    assert!(!env.values().any(|v| v.contains("pw-s3cret")));
}

/// A managed database (`wharf_core::database`) offers its connection URL to
/// references, made from its generated credentials and its address on the project
/// network, as a secret; it gets no public route unless asked, while the service
/// referencing it does.
#[tokio::test]
async fn a_managed_database_exports_its_url_and_stays_private() {
    use wharf_core::database::{self, Credentials, DatabaseSpec, DbEngine};
    let w = world().await;
    let spec = DatabaseSpec::new(DbEngine::Postgres, None).unwrap();
    let pg = database::service(&w.project.id, "pg", spec, &database::local_images()).unwrap();
    w.store.put_service(&pg).await.unwrap();
    let creds = Credentials::of(&pg.env).unwrap();
    w.service(
        "api",
        8000,
        &[
            ("DATABASE_URL", plain("${{ pg.DATABASE_URL }}")),
            ("DB_NAME", plain("${{ pg.DATABASE }}")),
        ],
    )
    .await;
    let rollout = w
        .engine
        .deploy_project(&w.project.id, None, Trigger::Manual)
        .await
        .unwrap();
    assert_eq!(
        rollout.waves(),
        &[vec!["pg".to_string()], vec!["api".to_string()]]
    );
    let report = rollout.wait().await.unwrap();
    assert!(report.all_live(), "{report:?}");

    let env = w.env_of(&report.deployments["api"]);
    assert_eq!(
        env["DATABASE_URL"],
        format!("postgres://pg:{}@pg:5432/pg", creds.password.expose())
    );
    assert_eq!(env["DB_NAME"], "pg");
    let release = w
        .store
        .release(report.deployments["api"].release.as_ref().unwrap())
        .await
        .unwrap();
    assert!(release.config.unwrap().env["DATABASE_URL"].is_secret());

    // The database runs with its template: its image, its credentials in its env.
    let db_env = w.env_of(&report.deployments["pg"]);
    assert_eq!(db_env["POSTGRES_USER"], "pg");
    assert_eq!(db_env["POSTGRES_PASSWORD"], creds.password.expose());

    assert!(
        w.router.resolve("pg.demo.localhost", "/").is_none(),
        "a private database is not routed"
    );
    assert!(w.router.resolve("api.demo.localhost", "/").is_some());

    // Asked to be public, its next deployment routes it.
    let mut pg = w.store.service(&pg.id).await.unwrap();
    pg.database.as_mut().unwrap().public = true;
    w.store.put_service(&pg).await.unwrap();
    let dep = w
        .engine
        .deploy(&pg.id, Trigger::Manual)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(dep.state, DeploymentState::Live);
    assert!(w.router.resolve("pg.demo.localhost", "/").is_some());
}

/// A reference to a database variable it does not export is refused before anything
/// starts, naming it.
#[tokio::test]
async fn a_reference_to_an_unknown_database_variable_is_refused() {
    use wharf_core::database::{self, DatabaseSpec, DbEngine};
    let w = world().await;
    let spec = DatabaseSpec::new(DbEngine::Redis, None).unwrap();
    let cache = database::service(&w.project.id, "cache", spec, &database::local_images()).unwrap();
    w.store.put_service(&cache).await.unwrap();
    w.service(
        "api",
        8000,
        &[("URL_OF", plain("${{ cache.DATABASE_URL }}"))],
    )
    .await;
    let err = match w
        .engine
        .deploy_project(&w.project.id, None, Trigger::Manual)
        .await
    {
        Ok(r) => r.wait().await.map(|_| ()).unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("DATABASE_URL"), "{err}");
}
