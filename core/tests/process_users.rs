//! What host-process apps can reach: their records hold no secret in clear, and with
//! [`ProjectUsers`] each project's builds and apps run as a uid of their own that
//! reaches neither another project's files and processes nor the control plane's.
//! Needs `python3`; the per-project test needs root (`WHARF_REQUIRE=root` in CI).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_core::process::{
    kill_recorded, HostBuilder, HostRuntime, HostRuntimeConfig, ProjectUsers,
};
use wharf_core::*;
use wharf_testkit::{python_present, root_present};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python-app")
}

/// Kills every process recorded in the state folder when the test ends.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        kill_recorded(&self.0);
    }
}

fn labels_of(project: &str) -> Labels {
    Labels::from([(label::PROJECT.to_owned(), project.to_owned())])
}

async fn build(builder: &HostBuilder, project: &str, build: &[&str]) -> Result<Artifact> {
    let mut plan = detect::detect(&fixture()).unwrap();
    plan.build = build.iter().map(|s| s.to_string()).collect();
    builder
        .build(BuildRequest {
            source_dir: fixture(),
            plan,
            tag: format!("wharf/{project}-web:test"),
            labels: labels_of(project),
            logs: LogSink::discard(),
            cancel: CancellationToken::new(),
        })
        .await
}

fn spec(image: &str, project: &str, env: &[(&str, &str)]) -> InstanceSpec {
    let mut b = wharf_testkit::spec("web", image)
        .port(8000)
        .health(
            Probe::Http { path: "/".into() },
            Duration::from_millis(100),
            Duration::from_secs(20),
        )
        .label(label::PROJECT, project);
    for (k, v) in env {
        b = b.env(k, v);
    }
    b.build()
}

async fn wait_healthy(rt: &HostRuntime, id: &InstanceId) {
    for _ in 0..200 {
        if rt.status(id).await.unwrap() == InstanceStatus::Healthy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("instance {id} never became healthy");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn environ_of(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap()).into_owned()
}

#[tokio::test]
async fn instance_records_hold_the_env_sealed_and_restarts_still_get_it() {
    if !python_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _cleanup = Cleanup(state.clone());
    let builder = HostBuilder::new(dir.path().join("builds"));
    let art = build(&builder, "shop", &[]).await.unwrap();
    let mut cfg = HostRuntimeConfig::new(&state);
    cfg.restart_backoff = Duration::from_millis(300);
    cfg.seal_key = Some(HostRuntimeConfig::derive_seal_key(&[9u8; 32]));
    let secret = format!("s3cret-{}", std::process::id());
    let rt = HostRuntime::open(cfg.clone()).await.unwrap();
    let inst = rt
        .start(&spec(&art.image, "shop", &[("DATABASE_URL", &secret)]))
        .await
        .unwrap();
    wait_healthy(&rt, &inst.id).await;
    let pid = rt.pid(&inst.id).unwrap().unwrap();
    assert!(environ_of(pid).contains(&secret), "the app gets its env");

    let leaks = |why: &str| {
        for f in files_under(&state) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&secret),
                "{why}: {} holds the secret in clear",
                f.display()
            );
        }
    };
    leaks("after the start");

    // A control-plane restart re-adopts the app; when it then crashes, the restart
    // gets its env back from the sealed record.
    drop(rt);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rt = HostRuntime::open(cfg.clone()).await.unwrap();
    assert_eq!(rt.instance_ids(), vec![inst.id.clone()]);
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    for _ in 0..200 {
        if rt.restarts(&inst.id).unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_healthy(&rt, &inst.id).await;
    let again = rt.pid(&inst.id).unwrap().unwrap();
    assert_ne!(again, pid);
    assert!(
        environ_of(again).contains(&secret),
        "the restart gets its env"
    );
    leaks("after the restart");

    // Under another key the record does not open: it is not adopted.
    drop(rt);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut other = cfg.clone();
    other.seal_key = Some(HostRuntimeConfig::derive_seal_key(&[8u8; 32]));
    let rt = HostRuntime::open(other).await.unwrap();
    assert!(rt.instance_ids().is_empty());
}

/// An app that reports, in its log, which of `paths` it can read, then serves.
fn probing(paths: &[PathBuf]) -> Vec<String> {
    let list: Vec<String> = paths.iter().map(|p| format!("'{}'", p.display())).collect();
    let script = format!(
        "for f in {}; do if cat \"$f\" >/dev/null 2>&1; then echo \"READ $f\"; \
         else echo \"DENIED $f\"; fi; done; exec python3 app.py",
        list.join(" ")
    );
    vec!["sh".into(), "-c".into(), script]
}

fn uid_of(pid: u32) -> (u32, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (uid, field("Groups:"))
}

#[tokio::test]
async fn each_project_builds_and_runs_as_its_own_user() {
    if !python_present() || !root_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The folders above the builds must be enterable by the projects' users.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o711)).unwrap();
    let operator_secret = data.join("admin-token");
    std::fs::write(&operator_secret, "operator").unwrap();
    std::fs::set_permissions(&operator_secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let first = 1_600_000_000 + (std::process::id() % 1000) * 100;
    let users = Arc::new(ProjectUsers::open(data.join("uids.json"), first, 100).unwrap());
    let state = data.join("runtime");
    let _cleanup = Cleanup(state.clone());
    let builder = HostBuilder::new(data.join("builds")).users(users.clone());
    let mut cfg = HostRuntimeConfig::new(&state);
    cfg.users = Some(users.clone());
    let rt = HostRuntime::open(cfg).await.unwrap();

    // Builds run as the project's uid, in a folder of its own.
    let a = build(&builder, "proj-a", &["id -u > built-by"])
        .await
        .unwrap();
    let b = build(&builder, "proj-b", &["id -u > built-by"])
        .await
        .unwrap();
    let (uid_a, uid_b) = (
        users.uid_of("proj-a").unwrap(),
        users.uid_of("proj-b").unwrap(),
    );
    assert_ne!(uid_a, uid_b);
    assert_ne!(
        a.image, b.image,
        "the same source gets a folder per project"
    );
    for (art, uid) in [(&a, uid_a), (&b, uid_b)] {
        let by = std::fs::read_to_string(Path::new(&art.image).join("app/built-by")).unwrap();
        assert_eq!(by.trim(), uid.to_string());
    }
    // Allocations are kept: a reopened map gives the same uids.
    let again = ProjectUsers::open(data.join("uids.json"), first, 100).unwrap();
    assert_eq!(again.uid_of("proj-b").unwrap(), uid_b);
    // Another range would hand out uids already taken: refused.
    let err = ProjectUsers::open(data.join("uids.json"), first - 1, 100).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");

    let b_inst = rt
        .start(&spec(&b.image, "proj-b", &[("B_SECRET", "b-only")]))
        .await
        .unwrap();
    wait_healthy(&rt, &b_inst.id).await;
    let b_pid = rt.pid(&b_inst.id).unwrap().unwrap();
    assert_eq!(uid_of(b_pid), (uid_b, String::new()), "uid and no groups");

    let own = Path::new(&a.image).join("app/app.py");
    let foreign = vec![
        Path::new(&b.image).join("app/app.py"),
        PathBuf::from(format!("/proc/{b_pid}/environ")),
        operator_secret.clone(),
        data.join("uids.json"),
        state.join(".seal-key"),
        state.join(b_inst.id.as_str()).join("instance.json"),
        rt.log_path(&b_inst.id).unwrap(),
    ];
    for f in &foreign {
        assert!(
            f.exists(),
            "{} exists (a DENIED must mean denied)",
            f.display()
        );
    }
    let mut sp = spec(&a.image, "proj-a", &[]);
    let mut paths = vec![own.clone()];
    paths.extend(foreign.iter().cloned());
    sp.command = Some(probing(&paths));
    sp.volumes = vec![VolumeMount {
        name: "data".into(),
        path: "/data".into(),
        size: None,
    }];
    let a_inst = rt.start(&sp).await.unwrap();
    wait_healthy(&rt, &a_inst.id).await;
    // Its volume is a folder only its uid enters.
    let volume = state
        .with_file_name("volumes")
        .join("proj-a")
        .join("_.data");
    let meta = std::fs::metadata(&volume).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid_a, 0o700));
    let a_pid = rt.pid(&a_inst.id).unwrap().unwrap();
    assert_eq!(uid_of(a_pid).0, uid_a);
    let log = std::fs::read_to_string(rt.log_path(&a_inst.id).unwrap()).unwrap();
    assert!(log.contains(&format!("READ {}", own.display())), "{log}");
    for f in &foreign {
        assert!(
            log.contains(&format!("DENIED {}", f.display())),
            "project A's app must not read {}:\n{log}",
            f.display()
        );
    }

    // A release of another project, or one built without users, is refused.
    let plain = HostBuilder::new(data.join("plain-builds"));
    let shared = build(&plain, "proj-a", &[]).await.unwrap();
    for image in [&b.image, &shared.image] {
        let err = rt.start(&spec(image, "proj-a", &[])).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(err.message().contains("not a release folder"), "{err}");
    }

    // An app left running as the control plane's account (started before each
    // project had its own user) does not go on after a restart of the runtime.
    let mut cfg = HostRuntimeConfig::new(&state);
    cfg.users = Some(users.clone());
    drop(rt);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let plain_rt = HostRuntime::open(HostRuntimeConfig::new(&state))
        .await
        .unwrap();
    let legacy = plain_rt
        .start(&spec(&shared.image, "proj-a", &[]))
        .await
        .unwrap();
    wait_healthy(&plain_rt, &legacy.id).await;
    let legacy_pid = plain_rt.pid(&legacy.id).unwrap().unwrap();
    assert_eq!(uid_of(legacy_pid).0, 0);
    drop(plain_rt);
    // The runtime's tasks see it go within a moment (as in process.rs).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rt = HostRuntime::open(cfg).await.unwrap();
    assert!(!rt.instance_ids().contains(&legacy.id));
    for _ in 0..100 {
        if !Path::new(&format!("/proc/{legacy_pid}")).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state_of = std::fs::read_to_string(format!("/proc/{legacy_pid}/stat")).unwrap_or_default();
    assert!(
        state_of.is_empty() || state_of.contains(") Z"),
        "the old app still runs: {state_of}"
    );
    assert_eq!(rt.instance_ids().len(), 2, "projects' own apps are kept");

    rt.shutdown(Duration::from_secs(2)).await.unwrap();
}

// Several workers: a start blocked on the FIFO would hold one, and the timeout says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_is_a_fifo_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let release = dir.path().join("0123456789abcdef01234567");
    std::fs::create_dir(&release).unwrap();
    let fifo = release.join(wharf_core::process::MANIFEST);
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let rt = HostRuntime::open(HostRuntimeConfig::new(dir.path().join("state")))
        .await
        .unwrap();
    let sp = spec(release.to_str().unwrap(), "shop", &[]);
    let start = rt.start(&sp);
    let err = tokio::time::timeout(Duration::from_secs(10), start)
        .await
        .expect("start waited on a FIFO")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
}

#[tokio::test]
async fn a_release_never_holds_a_set_uid_program() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("app.py"), "print('hi')\n").unwrap();
    let tool = src.join("tool");
    std::fs::write(&tool, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o6755)).unwrap();
    let mut plan = detect::detect(&src).unwrap();
    plan.install.clear();
    let art = HostBuilder::new(dir.path().join("builds"))
        .build(BuildRequest {
            source_dir: src,
            plan,
            tag: "wharf/shop-web:test".into(),
            labels: labels_of("shop"),
            logs: LogSink::discard(),
            cancel: CancellationToken::new(),
        })
        .await
        .unwrap();
    let copied = Path::new(&art.image).join("app/tool");
    let mode = std::fs::metadata(&copied).unwrap().permissions().mode();
    assert_eq!(mode & 0o7000, 0, "mode {mode:o}");
    assert_eq!(mode & 0o100, 0o100, "still executable: mode {mode:o}");
}
