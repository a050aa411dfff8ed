//! Tests of the domain model's checks, secrets, env resolution and serde forms.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use wharf_core::{
    resolve_env, validate_env_key, validate_name, Artifact, BuildPlan, BuildSpec, Deployment,
    DeploymentId, DeploymentState, Endpoint, EnvValue, EnvVars, EnvironmentId, ErrorKind, GitRef,
    HealthCheck, Instance, InstanceId, Probe, ProjectId, ReleaseId, Resources, Route, Secret,
    Service, ServiceId, SourceSpec, Step, Timestamp, TlsPolicy, Trigger, VolumeMount,
};

fn assert_invalid<T: std::fmt::Debug>(r: wharf_core::Result<T>, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected InvalidInput, got Ok({v:?})"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidInput, "{what}: {e}"),
    }
}

/// Checks that `check` accepts every one of `items`.
#[track_caller]
fn assert_all_valid(check: fn(&str) -> wharf_core::Result<()>, items: &[&str]) {
    for item in items {
        if let Err(e) = check(item) {
            panic!("{item:?} should be valid: {e}");
        }
    }
}

// ---- validate_name ---------------------------------------------------------------------

#[test]
fn names_valid_and_invalid() {
    let names = ["a", "web", "web-1", "a1", "api-v2-eu", &"a".repeat(63)];
    assert_all_valid(validate_name, &names);
    let long = "a".repeat(64);
    let cases = [
        ("", "empty"),
        (long.as_str(), "64 characters"),
        ("Web", "uppercase first"),
        ("wEb", "uppercase inside"),
        ("1web", "leading digit"),
        ("-web", "leading hyphen"),
        ("web-", "trailing hyphen"),
        ("web_1", "underscore"),
        ("web.1", "dot"),
        ("web 1", "space"),
        ("../etc", "path traversal"),
        ("a/b", "slash"),
        ("web`", "backtick"),
        ("wéb", "non-ASCII"),
        ("ｗeb", "full-width letter"),
    ];
    for (name, why) in cases {
        assert_invalid(validate_name(name), why);
    }
    let err = validate_name("web_1").unwrap_err();
    assert!(err.message().contains("web_1"), "{err}");
}

// ---- validate_env_key ------------------------------------------------------------------

#[test]
fn env_keys_valid_and_invalid() {
    let keys = ["PATH", "_X", "a", "DATABASE_URL", "x1_2", &"K".repeat(255)];
    assert_all_valid(validate_env_key, &keys);
    let long = "K".repeat(256);
    for key in [
        "",
        "1A",
        "A-B",
        "A B",
        "A=B",
        "A.B",
        "É",
        "AÉ",
        "A\0",
        long.as_str(),
    ] {
        assert_invalid(validate_env_key(key), key);
    }
}

// ---- Route::validate -------------------------------------------------------------------

fn route() -> Route {
    let at = |host: &str| Endpoint {
        host: host.into(),
        port: 8080,
    };
    wharf_testkit::route("rte_web")
        .host("web.demo.localhost")
        .host("*.demo.example")
        .prefix("/api")
        .upstream(&at("10.0.0.2"), 100)
        .upstream(&at("10.0.0.3"), 0)
        .tls(TlsPolicy::Acme)
        .label("wharf.managed", "true")
        .build()
}

#[test]
fn route_valid() {
    route().validate().unwrap();
    let mut r = route();
    r.path_prefix = None;
    r.validate().unwrap();
    r.path_prefix = Some("/".into());
    r.validate().unwrap();
}

#[test]
fn route_invalid() {
    let mut r = route();
    r.hosts.clear();
    assert_invalid(r.validate(), "no hosts");

    let mut r = route();
    r.hosts.push("evil.com`) || Host(`x".into());
    let err = r.validate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().starts_with("route rte_web: "), "{err}");

    for prefix in ["api", "/a b", "/a`b", "/a\tb", "/a\u{7f}", ""] {
        let mut r = route();
        r.path_prefix = Some(prefix.into());
        assert_invalid(r.validate(), prefix);
    }

    let mut r = route();
    r.upstreams.clear();
    assert_invalid(r.validate(), "no upstreams");

    let mut r = route();
    for u in &mut r.upstreams {
        u.weight = 0;
    }
    assert_invalid(r.validate(), "all weights zero");
}

// ---- Service::validate -----------------------------------------------------------------

fn service() -> Service {
    Service::new(
        &ProjectId::from("prj_demo"),
        "web",
        SourceSpec::Image {
            image: "nginx:1".into(),
        },
    )
    .unwrap()
}

#[test]
fn service_new_checks_the_name() {
    let err = Service::new(
        &ProjectId::from("prj_demo"),
        "Web",
        SourceSpec::Image { image: "x".into() },
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn service_valid() {
    service().validate().unwrap();
    full_service().validate().unwrap();
}

#[test]
fn service_self_dependency() {
    let mut s = service();
    s.depends_on = vec!["db".into(), "web".into()];
    let err = s.validate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.message(), "service web depends on itself");
}

#[test]
fn service_bad_dependency_name() {
    let mut s = service();
    s.depends_on = vec!["DB".into()];
    let err = s.validate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.message().starts_with("service web: depends_on: "),
        "{err}"
    );
}

#[test]
fn service_relative_volume_path() {
    let mut s = service();
    s.volumes = vec![VolumeMount::new("data", "var/lib/data")];
    let err = s.validate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("absolute path"), "{err}");

    s.volumes[0].path = "/var/lib/data".into();
    s.validate().unwrap();
    s.volumes[0].name = "../data".into();
    assert_invalid(s.validate(), "bad volume name");
}

#[test]
fn volume_sizes_paths_and_duplicates() {
    assert_eq!(wharf_core::parse_size("500Mi").unwrap(), 500 << 20);
    assert_eq!(wharf_core::parse_size("10Gi").unwrap(), 10 << 30);
    assert_eq!(wharf_core::parse_size("1Ti").unwrap(), 1 << 40);
    for bad in [
        "", "Gi", "10", "10GB", "10gi", "1.5Gi", "0Gi", "-1Gi", "010Gi", " 1Gi", "2000Ti",
    ] {
        assert_eq!(
            wharf_core::parse_size(bad).unwrap_err().kind(),
            ErrorKind::InvalidInput,
            "{bad:?}"
        );
    }
    let mut s = service();
    s.volumes = vec![VolumeMount::new("data", "/data").with_size("1Gi")];
    s.validate().unwrap();
    s.volumes[0].size = Some("1GB".into());
    assert_invalid(s.validate(), "bad size");
    for path in ["/", "/data/../etc", "/data:rw", "/da\nta"] {
        s.volumes = vec![VolumeMount::new("data", path)];
        assert_invalid(s.validate(), path);
    }
    s.volumes = vec![
        VolumeMount::new("data", "/a"),
        VolumeMount::new("data", "/b"),
    ];
    assert_invalid(s.validate(), "one volume twice");
    s.volumes = vec![
        VolumeMount::new("a", "/data"),
        VolumeMount::new("b", "/data"),
    ];
    assert_invalid(s.validate(), "two volumes at one path");
}

#[test]
fn service_bad_env_key() {
    let mut s = service();
    s.env.insert("GOOD_KEY".into(), EnvValue::Plain("1".into()));
    s.validate().unwrap();
    s.env.insert("BAD-KEY".into(), EnvValue::Plain("1".into()));
    let err = s.validate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("BAD-KEY"), "{err}");
}

#[test]
fn service_health_path() {
    let mut s = service();
    s.health_check = Some(HealthCheck {
        probe: Probe::Http {
            path: "healthz".into(),
        },
        ..HealthCheck::default()
    });
    let err = s.validate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.message().contains("healthz"), "{err}");

    s.health_check = Some(HealthCheck {
        probe: Probe::Http {
            path: "/healthz".into(),
        },
        ..HealthCheck::default()
    });
    s.validate().unwrap();
    s.health_check = Some(HealthCheck {
        probe: Probe::Tcp,
        ..HealthCheck::default()
    });
    s.validate().unwrap();
}

#[test]
fn service_port_zero() {
    let mut s = service();
    s.port = Some(0);
    assert_invalid(s.validate(), "port 0");
    s.port = Some(1);
    s.validate().unwrap();
}

// ---- secrets and env -------------------------------------------------------------------

const SECRET: &str = "hunter2-very-secret";

#[test]
fn secret_never_shows_its_value() {
    let secret = Secret::new(SECRET);
    assert_eq!(secret.expose(), SECRET);
    for shown in [
        format!("{secret:?}"),
        format!("{secret:#?}"),
        format!("{secret}"),
        format!("{:?}", EnvValue::Secret(secret.clone())),
        format!("{:?}", Some(&secret)),
    ] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    // Nor through a service that holds it.
    let mut s = service();
    s.env.insert("TOKEN".into(), EnvValue::Secret(secret));
    assert!(!format!("{s:?}").contains(SECRET));
    assert!(!format!("{s:#?}").contains(SECRET));
    assert!(s.env["TOKEN"].is_secret());
    assert_eq!(s.env["TOKEN"].expose(), SECRET);
}

#[test]
fn resolve_env_override_order() {
    let project: EnvVars = BTreeMap::from([
        ("A".into(), EnvValue::Plain("project".into())),
        ("B".into(), EnvValue::Plain("project".into())),
        ("C".into(), EnvValue::Plain("project".into())),
    ]);
    let environment: EnvVars = BTreeMap::from([
        ("B".into(), EnvValue::Plain("environment".into())),
        ("C".into(), EnvValue::Plain("environment".into())),
        ("D".into(), EnvValue::Secret(Secret::new("s3cret"))),
    ]);
    let service: EnvVars = BTreeMap::from([
        ("C".into(), EnvValue::Plain("service".into())),
        ("E".into(), EnvValue::Plain("service".into())),
    ]);
    let env = resolve_env([&project, &environment, &service]);
    let expected: BTreeMap<String, String> = [
        ("A", "project"),
        ("B", "environment"),
        ("C", "service"),
        ("D", "s3cret"),
        ("E", "service"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(env, expected);
    // Later layers win, whatever they are called.
    let reversed = resolve_env([&service, &environment, &project]);
    assert_eq!(reversed["C"], "project");
    assert!(resolve_env([]).is_empty());
}

// ---- serde -----------------------------------------------------------------------------

fn full_service() -> Service {
    Service {
        replicas: Default::default(),
        processes: Default::default(),
        process_checks: BTreeMap::from([(
            "worker".into(),
            HealthCheck {
                probe: Probe::Tcp,
                interval: Duration::from_millis(500),
                timeout: Duration::from_secs(20),
            },
        )]),
        id: ServiceId::from("svc_api"),
        project: ProjectId::from("prj_demo"),
        environment: Some(EnvironmentId::from("env_prod")),
        name: "api".into(),
        source: SourceSpec::Git {
            url: "https://example.invalid/demo.git".into(),
            reference: GitRef::Branch("main".into()),
            subdir: Some(PathBuf::from("services/api")),
        },
        build: BuildSpec::Dockerfile {
            path: "Dockerfile.prod".into(),
        },
        port: Some(8080),
        env: BTreeMap::from([
            ("LOG".into(), EnvValue::Plain("debug".into())),
            ("TOKEN".into(), EnvValue::Secret(Secret::new(SECRET))),
        ]),
        depends_on: vec!["db".into(), "cache".into()],
        health_check: Some(HealthCheck {
            probe: Probe::Http {
                path: "/healthz".into(),
            },
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(30),
        }),
        resources: Resources {
            memory_mb: Some(512),
            cpu_millis: Some(500),
        },
        domains: vec!["api.example.com".into()],
        volumes: vec![VolumeMount::new("data", "/data")],
        database: None,
        cron: vec![wharf_core::CronJob {
            concurrency: wharf_core::Concurrency::Replace,
            timeout: Duration::from_secs(600),
            ..wharf_core::CronJob::new("cleanup", "*/5 * * * *", "python3 cleanup.py --days 7")
        }],
        created_at: Timestamp(1_700_000_000_123),
    }
}

fn plan() -> BuildPlan {
    BuildPlan {
        dockerfile: Some("Dockerfile".into()),
        ..wharf_core::conformance::store::node_plan()
    }
}

fn round_trip<T>(value: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_string(value).expect("serialize");
    let back: T = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(&back, value, "{json}");
    // Through serde_json::Value too (what a JSON column or API body goes through).
    let v = serde_json::to_value(value).expect("to_value");
    let back: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(&back, value, "{v}");
    back
}

#[test]
fn service_serde_round_trip_all_fields() {
    let s = full_service();
    round_trip(&s);
    // The secret is serialized (stores need it), under its kind.
    let v = serde_json::to_value(&s).unwrap();
    assert_eq!(
        v["env"]["TOKEN"],
        serde_json::json!({"kind": "secret", "value": SECRET})
    );
    assert_eq!(v["health_check"]["interval"], 250);
    assert_eq!(v["health_check"]["timeout"], 30_000);
    assert_eq!(
        v["process_checks"]["worker"],
        serde_json::json!({"probe": {"kind": "tcp"}, "interval": 500, "timeout": 20_000})
    );
    // Left out when there are none, so a record written before they existed reads
    // back the same.
    let mut plain = s.clone();
    plain.process_checks.clear();
    let v = serde_json::to_value(&plain).unwrap();
    assert!(v.get("process_checks").is_none(), "{v}");

    // Every source kind and git reference.
    for source in [
        SourceSpec::Git {
            url: "file:///srv/demo".into(),
            reference: GitRef::Default,
            subdir: None,
        },
        SourceSpec::Git {
            url: "git@example.invalid:demo.git".into(),
            reference: GitRef::Tag("v1.2.3".into()),
            subdir: None,
        },
        SourceSpec::Git {
            url: "https://example.invalid/demo.git".into(),
            reference: GitRef::Commit("0123abc".into()),
            subdir: None,
        },
        SourceSpec::Archive {
            path: "/uploads/a.tar.gz".into(),
        },
        SourceSpec::Dir {
            path: "/srv/site".into(),
        },
        SourceSpec::Image {
            image: "nginx@sha256:abc".into(),
        },
    ] {
        let mut s = full_service();
        s.source = source;
        round_trip(&s);
    }
    for probe in [Probe::Tcp, Probe::None] {
        let mut s = full_service();
        s.health_check = Some(HealthCheck {
            probe,
            ..HealthCheck::default()
        });
        round_trip(&s);
    }
    let mut s = full_service();
    s.build = BuildSpec::Auto;
    round_trip(&s);
}

#[test]
fn service_serde_round_trip_with_build_plan() {
    let mut s = full_service();
    s.build = BuildSpec::Plan { plan: plan() };
    round_trip(&s);
}

#[test]
fn service_minimal_json_gets_defaults() {
    let json = serde_json::json!({
        "id": "svc_1",
        "project": "prj_1",
        "name": "web",
        "source": {"kind": "image", "image": "nginx:1"},
        "created_at": 0
    });
    let s: Service = serde_json::from_value(json).unwrap();
    assert_eq!(s.build, BuildSpec::Auto);
    assert_eq!(s.environment, None);
    assert!(s.env.is_empty() && s.depends_on.is_empty() && s.volumes.is_empty());
    assert_eq!(s.resources, Resources::default());
    assert_eq!(s.health_check, None);
    s.validate().unwrap();
}

fn full_deployment() -> Deployment {
    Deployment {
        more_instances: Vec::new(),
        canary: None,
        id: DeploymentId::from("dep_1"),
        project: ProjectId::from("prj_demo"),
        service: ServiceId::from("svc_api"),
        state: DeploymentState::Failed {
            step: Step::HealthChecking,
            reason: "no answer on /healthz".into(),
        },
        version: 7,
        trigger: Trigger::Webhook {
            provider: "github".into(),
            reference: "refs/heads/main".into(),
        },
        source: full_service().source,
        revision: Some("0123456789abcdef0123456789abcdef01234567".into()),
        plan: Some(plan()),
        artifact: Some(Artifact {
            image: "wharf/api:dep_1".into(),
            digest: Some("sha256:00ff".into()),
            local_only: false,
        }),
        instance: Some(Instance {
            id: InstanceId::from("ins_abc"),
            endpoint: Endpoint {
                host: "::1".into(),
                port: 49153,
            },
            labels: BTreeMap::from([("wharf.deployment".into(), "dep_1".into())]),
        }),
        release: Some(ReleaseId::from("rel_3")),
        retry_of: None,
        created_at: Timestamp(1_700_000_000_000),
        updated_at: Timestamp(1_700_000_005_000),
    }
}

#[test]
fn deployment_serde_round_trip_all_fields() {
    let d = full_deployment();
    round_trip(&d);
    for trigger in [
        Trigger::Manual,
        Trigger::Cascade {
            from: ServiceId::from("svc_db"),
        },
        Trigger::Rollback {
            release: ReleaseId::from("rel_2"),
            run_release: false,
        },
        Trigger::Rollback {
            release: ReleaseId::from("rel_3"),
            run_release: true,
        },
    ] {
        let mut d = full_deployment();
        d.trigger = trigger;
        d.state = DeploymentState::Live;
        round_trip(&d);
    }
    // Optional fields left out are omitted and come back as None.
    let mut d = full_deployment();
    d.revision = None;
    d.plan = None;
    d.artifact = None;
    d.instance = None;
    d.release = None;
    let v = serde_json::to_value(&d).unwrap();
    for key in ["revision", "plan", "artifact", "instance", "release"] {
        assert!(v.get(key).is_none(), "{key} should be skipped: {v}");
    }
    round_trip(&d);
}

#[test]
fn endpoint_display_brackets_ipv6() {
    let v4 = Endpoint {
        host: "10.0.0.2".into(),
        port: 80,
    };
    let v6 = Endpoint {
        host: "::1".into(),
        port: 80,
    };
    assert_eq!(v4.to_string(), "10.0.0.2:80");
    assert_eq!(v6.to_string(), "[::1]:80");
}

/// An image source is a reference, never a path: the host runtime runs a release
/// folder as its image, so `/srv/.../release` would run another app's files.
#[test]
fn an_image_source_that_is_a_path_is_refused() {
    let project = wharf_core::ProjectId::random();
    for bad in [
        "/var/lib/wharf/builds/other",
        "./x",
        "../x",
        "~/x",
        "nginx latest",
    ] {
        let source = SourceSpec::Image { image: bad.into() };
        let svc = Service::new(&project, "web", source).unwrap();
        let err = svc.validate().unwrap_err();
        assert!(
            err.message().contains("not an image reference"),
            "{bad}: {err}"
        );
    }
    for good in [
        "nginx",
        "nginx:1.27",
        "ghcr.io/acme/shop@sha256:abc",
        "127.0.0.1:25000/x/y:1",
    ] {
        let source = SourceSpec::Image { image: good.into() };
        Service::new(&project, "web", source)
            .unwrap()
            .validate()
            .unwrap();
    }
}

/// Health-check settings are bounded: `interval = 0` busy-looped the engine and
/// `timeout = u64::MAX` ms overflowed its deadline.
#[test]
fn health_check_interval_and_timeout_are_bounded() {
    let mut svc = Service::new(
        &ProjectId::random(),
        "web",
        SourceSpec::Image {
            image: "x:1".into(),
        },
    )
    .unwrap();
    for (interval, timeout) in [
        (0, 1000),
        (1, 1000),
        (601_000, 1000),
        (1000, 0),
        (1000, u64::MAX),
    ] {
        let json = format!(
            r#"{{"probe": {{"kind": "tcp"}}, "interval": {interval}, "timeout": {timeout}}}"#
        );
        let h: HealthCheck = serde_json::from_str(&json).unwrap();
        svc.health_check = Some(h);
        assert_invalid(svc.validate(), &json);
    }
    svc.health_check = Some(HealthCheck {
        probe: Probe::Tcp,
        interval: HealthCheck::MIN_INTERVAL,
        timeout: HealthCheck::MAX_TIMEOUT,
    });
    svc.validate().unwrap();
}
