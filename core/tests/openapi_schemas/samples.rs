//! A value of every shape the API's model types take, for `openapi_schemas.rs`.

use std::time::Duration;

use wharf_core::conformance::store::rich_service;
use wharf_core::state::Step;
use wharf_core::*;

use super::{ok, Components, Seen};

fn env_vars() -> EnvVars {
    let mut env = EnvVars::new();
    env.insert("MODE".into(), EnvValue::Plain("prod".into()));
    env.insert("TOKEN".into(), EnvValue::Secret(Secret::new("s3cret")));
    env
}

fn health_checks() -> Vec<HealthCheck> {
    let probes = [
        Probe::Http { path: "/up".into() },
        Probe::Tcp,
        Probe::None,
        Probe::Postgres,
        Probe::Mysql,
        Probe::Redis,
    ];
    let check = |probe| HealthCheck {
        probe,
        interval: Duration::from_millis(250),
        timeout: Duration::from_secs(30),
    };
    probes.into_iter().map(check).collect()
}

fn build_plans() -> Vec<BuildPlan> {
    use ProjectKind::*;
    let plan = |kind| BuildPlan {
        processes: [("worker".to_owned(), vec!["node".into(), "worker.js".into()])].into(),
        kind,
        base_image: "node:22".into(),
        install: vec!["npm ci".into()],
        build: vec![],
        start: vec!["node".into(), "server.js".into()],
        port: 3000,
        dockerfile: (kind == Dockerfile).then(|| "Dockerfile".into()),
    };
    [Dockerfile, Node, Python, Go, Rust, Static]
        .into_iter()
        .map(plan)
        .collect()
}

fn sources() -> Vec<SourceSpec> {
    let git = |reference, subdir: Option<&str>| SourceSpec::Git {
        url: "https://example.com/app.git".into(),
        reference,
        subdir: subdir.map(Into::into),
    };
    vec![
        git(GitRef::Default, Some("web")),
        git(GitRef::Branch("main".into()), None),
        git(GitRef::Tag("v1".into()), None),
        git(GitRef::Commit("0123abc".into()), None),
        SourceSpec::Archive {
            path: "/var/lib/wharf/up.tar.gz".into(),
        },
        SourceSpec::Dir {
            path: "/srv/app".into(),
        },
        SourceSpec::Image {
            image: "nginx:1".into(),
        },
    ]
}

fn services(c: &Components, seen: &mut Seen, project: &ProjectId) {
    let builds = [
        BuildSpec::Auto,
        BuildSpec::Dockerfile {
            path: "ops/Dockerfile".into(),
        },
        BuildSpec::Plan {
            plan: build_plans().remove(1),
        },
    ];
    for (i, source) in sources().into_iter().enumerate() {
        let mut s = if i == 0 {
            // Every optional field set, in an environment.
            let env = EnvironmentId::random();
            rich_service(project, "web", Some(&env))
        } else {
            Service::new(project, "web", source.clone()).expect("valid service")
        };
        s.source = source;
        s.build = builds[i % builds.len()].clone();
        s.health_check = health_checks().get(i).cloned();
        ok(c, seen, s);
    }
    // Every engine as a managed database.
    for engine in wharf_core::database::DbEngine::ALL {
        let spec = wharf_core::database::DatabaseSpec::new(engine, None).expect("valid spec");
        let s = wharf_core::database::service(project, "db", spec, &Default::default())
            .expect("valid database");
        ok(c, seen, s);
    }
}

fn deployment_states() -> Vec<DeploymentState> {
    use DeploymentState::*;
    let failed = Step::ALL.map(|step| Failed {
        step,
        reason: "boom".into(),
    });
    let skipped = Skipped {
        reason: "db failed".into(),
    };
    // Every in-progress state, then the ones no step leads to.
    let mut states: Vec<_> = Step::ALL.map(Step::state).into();
    states.extend([Live, Cancelled, Superseded, RolledBack, Stopped, skipped]);
    states.extend(failed);
    states
}

fn deployments(c: &Components, seen: &mut Seen, project: &ProjectId) {
    let triggers = [
        Trigger::Manual,
        Trigger::Webhook {
            provider: "github".into(),
            reference: "refs/heads/main".into(),
        },
        Trigger::Cascade {
            from: ServiceId::random(),
        },
        Trigger::Rollback {
            release: ReleaseId::random(),
            run_release: true,
        },
    ];
    let plans = build_plans();
    let mut labels = Labels::new();
    labels.insert("wharf.managed".into(), "true".into());
    for (i, state) in deployment_states().into_iter().enumerate() {
        let full = i % 2 == 0;
        let endpoint = Endpoint {
            host: "10.0.0.2".into(),
            port: 3000,
        };
        let instance = Instance {
            id: InstanceId::random(),
            endpoint,
            labels: labels.clone(),
        };
        let artifact = Artifact {
            image: "app@sha256:ab".into(),
            digest: Some("sha256:ab".into()),
            local_only: i % 4 == 0,
        };
        ok(
            c,
            seen,
            Deployment {
                more_instances: if full {
                    vec![ProcessInstance {
                        process: "worker".into(),
                        instance: instance.clone(),
                    }]
                } else {
                    Vec::new()
                },
                canary: full.then_some(10),
                id: DeploymentId::random(),
                project: project.clone(),
                service: ServiceId::random(),
                state,
                version: i as u64,
                trigger: triggers[i % triggers.len()].clone(),
                source: sources().remove(i % 7),
                revision: full.then(|| "0123abc".into()),
                plan: full.then(|| plans[i % plans.len()].clone()),
                artifact: full.then_some(artifact),
                instance: full.then_some(instance),
                release: full.then(ReleaseId::random),
                retry_of: full.then(|| DeploymentId("dep_interrupted".into())),
                created_at: Timestamp(1_700_000_000_000),
                updated_at: Timestamp::now(),
            },
        );
    }
}

fn releases_and_events(c: &Components, seen: &mut Seen, project: &ProjectId) {
    for full in [true, false] {
        let config = ReleaseConfig {
            env: env_vars(),
            resources: Resources::default(),
            health_check: health_checks().pop(),
        };
        ok(
            c,
            seen,
            Release {
                id: ReleaseId::random(),
                project: project.clone(),
                service: ServiceId::random(),
                number: 3,
                deployment: DeploymentId::random(),
                artifact: Artifact {
                    image: "nginx:1".into(),
                    digest: None,
                    local_only: false,
                },
                port: 80,
                revision: full.then(|| "0123abc".into()),
                config: full.then_some(config),
                created_at: Timestamp::now(),
            },
        );
    }
    let state = EventKind::State {
        from: DeploymentState::Queued,
        to: DeploymentState::Fetching,
    };
    let streams = [
        LogStream::Stdout,
        LogStream::Stderr,
        LogStream::Build,
        LogStream::System,
    ];
    let logs = streams.map(|s| EventKind::Log(LogLine::new(s, "hello")));
    for kind in std::iter::once(state).chain(logs) {
        let (deployment, service) = (DeploymentId::random(), ServiceId::random());
        ok(
            c,
            seen,
            Event {
                seq: 9,
                deployment,
                service,
                at: Timestamp::now(),
                kind,
            },
        );
    }
}

fn instances_and_routes(c: &Components, seen: &mut Seen) {
    for status in [
        InstanceStatus::Starting,
        InstanceStatus::Running,
        InstanceStatus::Healthy,
        InstanceStatus::Unhealthy {
            reason: "503".into(),
        },
        InstanceStatus::Exited {
            code: Some(137),
            reason: "OOM-killed".into(),
        },
        InstanceStatus::Exited {
            code: None,
            reason: "gone".into(),
        },
    ] {
        ok(c, seen, status);
    }
    let tls = [
        TlsPolicy::None,
        TlsPolicy::Acme,
        TlsPolicy::Internal,
        TlsPolicy::OnDemand,
    ];
    for (i, tls) in tls.into_iter().enumerate() {
        let endpoint = Endpoint {
            host: "::1".into(),
            port: 8080,
        };
        ok(
            c,
            seen,
            Route {
                id: RouteId::random(),
                hosts: vec!["web.example.com".into()],
                path_prefix: (i == 0).then(|| "/api".into()),
                upstreams: vec![Upstream {
                    endpoint,
                    weight: 100,
                }],
                tls,
                labels: [("wharf.managed".to_owned(), "true".to_owned())].into(),
            },
        );
    }
}

/// A value of every shape the API's model types take.
pub(crate) fn samples(c: &Components, seen: &mut Seen) {
    let project = Project {
        id: ProjectId::random(),
        name: "demo".into(),
        env: env_vars(),
        previews: PreviewSettings {
            forks: ForkPreviews::Approve,
            env: env_vars(),
        },
        webhook_secret: None,
        created_at: Timestamp::now(),
    };
    ok(
        c,
        seen,
        Project {
            env: EnvVars::new(),
            ..project.clone()
        },
    );
    ok(c, seen, project.clone());
    for kind in [
        EnvironmentKind::Standing,
        EnvironmentKind::Preview {
            number: 7,
            branch: "fix".into(),
            fork: None,
        },
        EnvironmentKind::Preview {
            number: 8,
            branch: "evil".into(),
            fork: Some(Fork {
                repository: "https://github.com/mallory/shop.git".into(),
                awaiting: Some("a".repeat(40)),
                approved: Some("b".repeat(40)),
            }),
        },
    ] {
        let (id, name) = (EnvironmentId::random(), "staging".to_owned());
        ok(
            c,
            seen,
            Environment {
                id,
                project: project.id.clone(),
                name,
                kind,
                env: env_vars(),
                created_at: Timestamp(0),
            },
        );
    }
    services(c, seen, &project.id);
    deployments(c, seen, &project.id);
    releases_and_events(c, seen, &project.id);
    instances_and_routes(c, seen);
}
