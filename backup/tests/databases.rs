//! Dumps of managed databases ([`ExecSource::database`]) against the real images
//! `scripts/base-images` builds: a row written, the database dumped with its
//! generated credentials (the password in the exec's environment only), the table
//! dropped, the dump restored, the row back.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use wharf_backup::{BackupState, Backups, Destination, ExecSource, Settings, SourceKind};
use wharf_core::database::{self, Credentials, DatabaseSpec, DbEngine};
use wharf_core::store::Sealer;
use wharf_core::*;

/// The engine and the database images; skips (or fails under `WHARF_REQUIRE=docker`)
/// without them.
async fn docker() -> Option<DynRuntime> {
    let rt = match wharf_docker::DockerRuntime::connect().await {
        Ok(rt) => rt,
        Err(e) => {
            wharf_testkit::require("docker", Err(e.to_string()));
            return None;
        }
    };
    for e in [DbEngine::Postgres, DbEngine::Mysql] {
        let image = e.local_image();
        let ok = std::process::Command::new("docker")
            .args(["image", "inspect", &image])
            .output()
            .is_ok_and(|o| o.status.success());
        let why = Err(format!("{image} is missing: run scripts/base-images"));
        if !wharf_testkit::require("docker", if ok { Ok(()) } else { why }) {
            return None;
        }
    }
    Some(Arc::new(rt))
}

fn backups(rt: DynRuntime, dir: &Path) -> Backups {
    Backups::open(
        rt,
        Some(dir.join("backups.json")),
        dir.join("local"),
        dir.join("work"),
        Sealer::new(&[7u8; 32]),
    )
    .unwrap()
}

/// Runs `argv` in `id` with `env`, returning its output (panics on failure).
async fn run(rt: &DynRuntime, id: &InstanceId, argv: &[&str], env: &Env) -> String {
    let argv: Vec<String> = argv.iter().map(|s| (*s).to_owned()).collect();
    let mut out = rt.exec(id, &argv, env, None).await.expect("exec");
    let mut text = Vec::new();
    while let Some(chunk) = out.next().await {
        text.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("{argv:?}: {e}")));
    }
    String::from_utf8_lossy(&text).trim().to_owned()
}

type Env = std::collections::BTreeMap<String, String>;

/// Starts `engine`'s template as project `project`'s service `name`, healthy.
async fn start(
    rt: &DynRuntime,
    engine: DbEngine,
    project: &str,
    name: &str,
) -> (Service, Instance) {
    let spec = DatabaseSpec::new(engine, None).unwrap();
    let svc = database::service(
        &ProjectId(project.into()),
        name,
        spec,
        &database::local_images(),
    )
    .unwrap();
    let SourceSpec::Image { image } = &svc.source else {
        unreachable!()
    };
    let mut spec = wharf_testkit::spec(&format!("{project}-{name}"), image)
        .port(svc.port.unwrap())
        .label(label::PROJECT, project)
        .label("wharf.test", project)
        .build();
    spec.env = resolve_env([&svc.env]);
    spec.health_check = svc.health_check.clone().unwrap();
    let inst = rt.start(&spec).await.expect("start");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let st = rt.status(&inst.id).await.unwrap();
        if st == InstanceStatus::Healthy {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline && !matches!(st, InstanceStatus::Exited { .. }),
            "{engine}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (svc, inst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_mariadb_dumps_round_trip_through_a_backup() {
    let Some(rt) = docker().await else { return };
    let project = wharf_testkit::unique("dbdump");
    let dir = tempfile::tempdir().unwrap();
    let b = backups(rt.clone(), dir.path());
    b.set_settings(
        &project,
        Some(Settings {
            destination: Destination::Local,
            volumes: Default::default(),
        }),
    )
    .unwrap();
    for (engine, kind, client) in [
        (DbEngine::Postgres, SourceKind::PostgresDump, "psql"),
        (DbEngine::Mysql, SourceKind::MysqlDump, "mysql"),
    ] {
        let name = engine.as_str();
        let (svc, inst) = start(&rt, engine, &project, name).await;
        let creds = Credentials::of(&svc.env).unwrap();
        let cmds = creds.dump_commands(engine).unwrap();
        // The client the restore uses, with the SQL as an argument.
        let sql = |q: &str| -> Vec<String> {
            let mut argv = cmds.restore.clone();
            argv.push(if client == "psql" { "-tAc" } else { "-Ne" }.into());
            argv.push(q.into());
            argv
        };
        let exec_sql = |q: &'static str| {
            let argv = sql(q);
            let rt = rt.clone();
            let id = inst.id.clone();
            let env = cmds.env.clone();
            async move {
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                run(&rt, &id, &argv, &env).await
            }
        };
        exec_sql("CREATE TABLE notes (body TEXT)").await;
        exec_sql("INSERT INTO notes VALUES ('kept by the dump')").await;

        let source = ExecSource::database(rt.clone(), inst.id.clone(), &svc).unwrap();
        assert_eq!(source.kind, kind);
        assert!(!format!("{source:?}").contains(creds.password.expose()));
        let volume = VolumeRef {
            project: ProjectId(project.clone()),
            scope: None,
            name: name.into(),
        };
        let r = b.backup_with(&project, &volume, &source).await.unwrap();
        assert_eq!(r.state, BackupState::Succeeded, "{engine}: {:?}", r.error);
        assert!(r.key.ends_with(".sql.gz"), "{}", r.key);

        exec_sql("DROP TABLE notes").await;
        b.restore_with(&r.id, &volume, &source).await.unwrap();
        assert_eq!(
            exec_sql("SELECT body FROM notes").await,
            "kept by the dump",
            "{engine}"
        );
        rt.stop(&inst.id, Duration::ZERO).await.unwrap();
    }

    // Redis has no dump source: its volume is what to back up.
    let spec = DatabaseSpec::new(DbEngine::Redis, None).unwrap();
    let redis = database::service(
        &ProjectId(project.clone()),
        "cache",
        spec,
        &database::local_images(),
    )
    .unwrap();
    let e = ExecSource::database(rt.clone(), InstanceId("none".into()), &redis).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
}
