//! Managed databases on the real engine: each engine's template (image from
//! `scripts/base-images`, env with generated credentials, data volume, protocol
//! probe) starts, the Docker runtime's health check reports it healthy through the
//! protocol probe ([`wharf_core::dbprobe`]), and the generated credentials log in with
//! the engine's own client inside the container (the password passed in the
//! environment, never on a command line).

mod common;

use std::time::Duration;

use common::*;
use wharf_core::database::{self, Credentials, DatabaseSpec, DbEngine};
use wharf_core::traits::Runtime;
use wharf_core::*;
use wharf_docker::DockerRuntime;

/// The engine answers and the database images exist; skips (or fails under
/// `WHARF_REQUIRE=docker`) otherwise.
async fn runtime() -> Option<DockerRuntime> {
    if !docker_ready().await {
        return None;
    }
    let mut missing = None;
    for e in DbEngine::ALL {
        let image = e.local_image();
        if docker_cli(&["image", "inspect", "--format", "{{.Id}}", &image])
            .await
            .trim()
            .is_empty()
        {
            missing = Some(format!(
                "the database image {image} is missing: run scripts/base-images"
            ));
        }
    }
    if !require("docker", missing.map_or(Ok(()), Err)) {
        return None;
    }
    Some(DockerRuntime::connect().await.expect("connect"))
}

/// The instance the engine would start for a database service made from the
/// template, on network `wharf-<run>` with its data volume.
fn instance_of(svc: &Service, run: &str) -> InstanceSpec {
    let SourceSpec::Image { image } = &svc.source else {
        panic!("a database runs an image")
    };
    let mut spec = wharf_testkit::spec(&format!("{}-{run}", svc.name), image)
        .port(svc.port.expect("a database has a port"))
        .labels(labels(run))
        .label(label::PROJECT, &format!("prj_{run}"))
        .build();
    spec.env = resolve_env([&svc.env]);
    spec.health_check = svc.health_check.clone().expect("a database has a probe");
    spec.volumes = svc.volumes.clone();
    spec.network = Some(format!("wharf-{run}"));
    spec.network_alias = Some(svc.name.clone());
    spec
}

async fn remove_volumes_and_networks(run: &str) {
    for v in docker_cli(&["volume", "ls", "-q"]).await.lines() {
        if v.contains(run) {
            docker_cli(&["volume", "rm", "-f", v]).await;
        }
    }
    for n in docker_cli(&["network", "ls", "-q", "--filter", &format!("name={run}")])
        .await
        .lines()
    {
        docker_cli(&["network", "rm", n]).await;
    }
}

/// `docker exec -e NAME=<value> container argv...` with the value from our own
/// environment (`-e NAME` alone), so it never appears on a command line.
async fn exec_with_secret(container: &str, name: &str, value: &str, argv: &[&str]) -> String {
    let out = tokio::process::Command::new("docker")
        .arg("exec")
        .args(["-e", name, container])
        .args(argv)
        .env(name, value)
        .output()
        .await
        .expect("docker exec");
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Starts `engine`'s template, waits for the runtime to call it healthy, and returns
/// the instance, its container name and its credentials.
async fn start_healthy(
    rt: &DockerRuntime,
    engine: DbEngine,
    name: &str,
    run: &str,
) -> (Instance, String, Credentials) {
    let spec = DatabaseSpec::new(engine, None).unwrap();
    let svc =
        database::service(&ProjectId::random(), name, spec, &database::local_images()).unwrap();
    let creds = Credentials::of(&svc.env).unwrap();
    let spec = instance_of(&svc, run);
    let inst = rt.start(&spec).await.expect("start");
    let st = wait_status(rt, &inst.id, Duration::from_secs(120), |s| {
        matches!(s, InstanceStatus::Healthy | InstanceStatus::Exited { .. })
    })
    .await;
    assert_eq!(
        st,
        InstanceStatus::Healthy,
        "{engine} logs: {:?}",
        log_texts(rt, &inst.id).await
    );
    let container = docker_cli(&["ps", "-q", "--filter", &format!("name={}", spec.name)])
        .await
        .trim()
        .to_owned();
    assert!(!container.is_empty(), "container {} not found", spec.name);
    (inst, container, creds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_template_is_healthy_and_its_credentials_log_in() {
    let Some(rt) = runtime().await else { return };
    let run = unique("dbpg");
    let (inst, container, creds) = start_healthy(&rt, DbEngine::Postgres, "pg", &run).await;
    // The probe, straight, on the published loopback port.
    wharf_core::dbprobe::postgres("127.0.0.1", inst.endpoint.port)
        .await
        .unwrap();
    let who = exec_with_secret(
        &container,
        "PGPASSWORD",
        creds.password.expose(),
        &[
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            &creds.user,
            "-d",
            &creds.database,
            "-tAc",
            "select current_user || '/' || current_database()",
        ],
    )
    .await;
    cleanup(&rt, &run).await;
    remove_volumes_and_networks(&run).await;
    assert_eq!(who, format!("{}/{}", creds.user, creds.database));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_template_is_healthy_and_its_credentials_log_in() {
    let Some(rt) = runtime().await else { return };
    let run = unique("dbmy");
    let (inst, container, creds) = start_healthy(&rt, DbEngine::Mysql, "my", &run).await;
    wharf_core::dbprobe::mysql("127.0.0.1", inst.endpoint.port)
        .await
        .unwrap();
    let who = exec_with_secret(
        &container,
        "MYSQL_PWD",
        creds.password.expose(),
        &[
            "mariadb",
            "-h",
            "127.0.0.1",
            "-u",
            &creds.user,
            &creds.database,
            "-NBe",
            "select concat(current_user(), '/', database())",
        ],
    )
    .await;
    cleanup(&rt, &run).await;
    remove_volumes_and_networks(&run).await;
    assert_eq!(who, format!("{}@%/{}", creds.user, creds.database));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_template_is_healthy_and_asks_for_its_password() {
    let Some(rt) = runtime().await else { return };
    let run = unique("dbrd");
    let (inst, container, creds) = start_healthy(&rt, DbEngine::Redis, "rd", &run).await;
    wharf_core::dbprobe::redis("127.0.0.1", inst.endpoint.port)
        .await
        .unwrap();
    let set = exec_with_secret(
        &container,
        "REDISCLI_AUTH",
        creds.password.expose(),
        &["redis-cli", "SET", "k", "v"],
    )
    .await;
    // Without the password it is refused.
    let anon = docker_cli(&["exec", &container, "redis-cli", "GET", "k"]).await;
    cleanup(&rt, &run).await;
    remove_volumes_and_networks(&run).await;
    assert_eq!(set, "OK");
    assert!(anon.contains("NOAUTH"), "{anon}");
}
