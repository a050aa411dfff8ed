//! The host builder and host-process runtime against real processes: both conformance
//! kits, restarts after a crash, SIGTERM-then-SIGKILL stops, log files, and re-adoption
//! (or clean-up) across a control-plane restart. Needs `python3`; every test kills what
//! it started, checked by pid.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use wharf_core::conformance::{builder::BuildCase, runtime::RuntimeCase};
use wharf_core::process::{kill_recorded, HostBuilder, HostRuntime, HostRuntimeConfig};
use wharf_core::*;
use wharf_testkit::python_present;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python-app")
}

fn python_plan() -> BuildPlan {
    let mut plan = wharf_core::detect::detect(&fixture()).expect("detect python-app");
    plan.build = vec!["echo compiling && python3 -m py_compile app.py".into()];
    plan
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        })
        .unwrap_or(false)
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A host builder and a runtime configuration in a temporary folder. Dropped when the
/// test ends, pass or panic, it kills every process recorded in the state folder.
struct Setup {
    builder: HostBuilder,
    cfg: HostRuntimeConfig,
    dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        kill_recorded(&self.cfg.state_dir);
    }
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut cfg = HostRuntimeConfig::new(&state);
    cfg.restart_backoff = Duration::from_millis(500);
    Setup {
        builder: HostBuilder::new(dir.path().join("builds")),
        cfg,
        dir,
    }
}

/// Builds the fixture with `plan`.
async fn build(builder: &HostBuilder, plan: BuildPlan) -> Result<Artifact> {
    build_cancellable(builder, plan, CancellationToken::new()).await
}

/// Builds the fixture with `plan`, cancelled through `cancel`.
async fn build_cancellable(
    builder: &HostBuilder,
    plan: BuildPlan,
    cancel: CancellationToken,
) -> Result<Artifact> {
    builder
        .build(BuildRequest {
            source_dir: fixture(),
            plan,
            tag: "wharf/demo-web:test".into(),
            labels: Labels::new(),
            logs: LogSink::discard(),
            cancel,
        })
        .await
}

fn spec(image: &str, name: &str) -> InstanceSpec {
    let poll = Duration::from_millis(100);
    wharf_testkit::spec(name, image)
        .env("GREETING", "hi")
        .port(8000)
        .health(
            Probe::Http { path: "/".into() },
            poll,
            Duration::from_secs(20),
        )
        .build()
}

/// A fresh setup, the python-app fixture built in it, and a runtime on its state
/// folder; `None` (the test skips) without python3.
async fn built_with_runtime() -> Option<(Setup, Artifact, HostRuntime)> {
    if !python_present() {
        return None;
    }
    let s = setup();
    let art = build(&s.builder, python_plan()).await.unwrap();
    let rt = HostRuntime::open(s.cfg.clone()).await.unwrap();
    Some((s, art, rt))
}

/// [`built_with_runtime`], with an instance `name` of the build running `script`
/// through `sh -c` (instead of the plan's start command), healthy.
async fn running_script(name: &str, script: &str) -> Option<(Setup, HostRuntime, Instance)> {
    let (s, art, rt) = built_with_runtime().await?;
    let mut sp = spec(&art.image, name);
    sp.command = Some(vec!["sh".into(), "-c".into(), script.into()]);
    let inst = rt.start(&sp).await.unwrap();
    wait_healthy(&rt, &inst.id).await;
    Some((s, rt, inst))
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

#[tokio::test]
async fn builder_conformance() {
    if !python_present() {
        return;
    }
    let s = setup();
    let ok = BuildCase {
        source_dir: fixture(),
        plan: python_plan(),
        labels: Labels::new(),
    };
    let mut failing = ok.clone();
    failing.plan.build = vec!["echo about to fail >&2; exit 3".into()];
    wharf_core::conformance::builder::run_all(&s.builder, &ok, &failing).await;
}

#[tokio::test]
async fn build_streams_output_reuses_cache_and_refuses_dockerfiles() {
    if !python_present() {
        return;
    }
    let s = setup();
    let logs = wharf_testkit::KeptLogs::new();
    let art = s
        .builder
        .build(BuildRequest {
            source_dir: fixture(),
            plan: python_plan(),
            tag: "t".into(),
            labels: Labels::new(),
            logs: logs.sink(),
            cancel: CancellationToken::new(),
        })
        .await
        .unwrap();
    let texts = logs.texts();
    assert!(texts.iter().any(|t| t == "compiling"), "{texts:?}");
    let release = PathBuf::from(&art.image);
    assert!(release.join("app/app.py").is_file());
    assert!(release.join(wharf_core::process::MANIFEST).is_file());

    let again = build(&s.builder, python_plan()).await.unwrap();
    assert_eq!(
        again, art,
        "an unchanged rebuild must reuse the cached release"
    );

    // Prune keeps what it is told to keep, and only that.
    let mut other = python_plan();
    other.build = vec!["echo another build".into()];
    let other = build(&s.builder, other).await.unwrap();
    assert_ne!(other.image, art.image);
    let removed = s.builder.prune(std::slice::from_ref(&art)).await.unwrap();
    assert_eq!(removed, vec![PathBuf::from(&other.image)]);
    assert!(release.join("app/app.py").is_file());
    assert!(!PathBuf::from(&other.image).exists());

    let mut docker = python_plan();
    docker.kind = ProjectKind::Dockerfile;
    let err = build(&s.builder, docker).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
}

#[tokio::test]
async fn cancel_kills_the_running_build_command() {
    let s = setup();
    let pidfile = s.dir.path().join("build.pid");
    let mut plan = python_plan();
    plan.install = vec![format!("echo $$ > {}; exec sleep 60", pidfile.display())];
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    let pf = pidfile.clone();
    let canceller = tokio::spawn(async move {
        wait_until("the build command runs", || pf.exists()).await;
        c2.cancel();
    });
    let err = build_cancellable(&s.builder, plan, cancel)
        .await
        .unwrap_err();
    canceller.await.unwrap();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the cancelled build command is gone", || !pid_alive(pid)).await;
}

#[tokio::test]
async fn runtime_conformance() {
    let Some((_s, art, rt)) = built_with_runtime().await else {
        return;
    };
    let mut exits = spec(&art.image, "kit-exits");
    exits.command = Some(vec![
        "python3".into(),
        "-c".into(),
        "import sys; print('bye'); sys.exit(3)".into(),
    ]);
    exits.health_check.timeout = Duration::from_secs(10);
    let mut task = spec(&art.image, "kit-task");
    task.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "echo task-output; exit 4".into(),
    ]);
    task.run_once = true;
    let case = RuntimeCase {
        healthy: spec(&art.image, "kit-web"),
        exits_at_start: Some(exits),
        task: Some(task),
    };
    wharf_core::conformance::runtime::run_all(&rt, &case).await;
    assert!(
        rt.instance_ids().is_empty(),
        "the kit left instances behind"
    );
}

#[tokio::test]
async fn following_a_task_gets_what_it_wrote_just_before_it_exited() {
    let Some((_s, art, rt)) = built_with_runtime().await else {
        return;
    };
    let mut task = spec(&art.image, "late");
    // Written right before the exit, after the follower's first reads.
    task.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "sleep 0.5; echo first; printf last-without-newline; exit 0".into(),
    ]);
    task.run_once = true;
    let inst = rt.start(&task).await.unwrap();
    let follow = LogOptions {
        follow: true,
        tail: None,
    };
    let lines: Vec<String> = tokio::time::timeout(Duration::from_secs(20), async {
        rt.logs(&inst.id, follow)
            .await
            .unwrap()
            .map(|l| l.unwrap().text)
            .collect()
            .await
    })
    .await
    .expect("the follow stream ends when the task ends");
    assert_eq!(lines, ["first", "last-without-newline"]);
    rt.stop(&inst.id, Duration::ZERO).await.unwrap();
}

#[tokio::test]
async fn app_gets_env_port_and_logs_and_restarts_after_a_crash() {
    let script = "echo greeting=$GREETING port=$PORT; echo oops >&2; exec python3 app.py";
    let Some((_s, rt, inst)) = running_script("web", script).await else {
        return;
    };
    assert_eq!(inst.endpoint.host, "127.0.0.1");
    let lines: Vec<LogLine> = rt
        .logs(&inst.id, LogOptions::default())
        .await
        .unwrap()
        .map(|l| l.unwrap())
        .collect()
        .await;
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let port_line = format!("greeting=hi port={}", inst.endpoint.port);
    assert!(texts.contains(&port_line.as_str()), "{texts:?}");
    assert!(
        texts.contains(&"oops"),
        "stderr must be captured: {texts:?}"
    );
    assert!(
        lines.iter().any(|l| l.stream == LogStream::System),
        "{texts:?}"
    );

    // Follow sees new lines; the crash below writes one.
    let mut follow = rt.logs(&inst.id, LogOptions::follow_new()).await.unwrap();

    let pid = rt.pid(&inst.id).unwrap().expect("running");
    rustix_kill(pid);
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let l = follow.next().await.expect("follow ended").unwrap();
            if l.stream == LogStream::System {
                return l;
            }
        }
    })
    .await
    .expect("a followed line after the crash");
    assert!(next.text.contains("killed by signal 9"), "{}", next.text);
    wait_until("the crash is seen", || !pid_alive(pid)).await;
    for _ in 0..100 {
        if rt.restarts(&inst.id).unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rt.restarts(&inst.id).unwrap(), 1);
    wait_healthy(&rt, &inst.id).await;
    let new_pid = rt.pid(&inst.id).unwrap().expect("restarted");
    assert_ne!(new_pid, pid);
    // Same endpoint after the restart: the route stays right.
    assert_eq!(
        rt.list(&Labels::new()).await.unwrap()[0].endpoint,
        inst.endpoint
    );
    rt.stop(&inst.id, Duration::from_secs(5)).await.unwrap();
    assert!(!pid_alive(new_pid));
    // The stop ends the follower.
    let rest = tokio::time::timeout(Duration::from_secs(5), follow.count()).await;
    assert!(
        rest.is_ok(),
        "following the logs of a stopped instance must end"
    );
}

fn rustix_kill(pid: u32) {
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
}

#[tokio::test]
async fn stop_kills_an_app_that_ignores_sigterm_and_its_children() {
    // A shell that ignores SIGTERM, with a grandchild that does too.
    let script = "trap '' TERM; (trap '' TERM; sleep 60) & echo child=$!; exec python3 -c \"import signal, runpy; signal.signal(signal.SIGTERM, signal.SIG_IGN); runpy.run_path('app.py', run_name='__main__')\"";
    let Some((_s, rt, inst)) = running_script("stubborn", script).await else {
        return;
    };
    let pid = rt.pid(&inst.id).unwrap().unwrap();
    let log = std::fs::read_to_string(rt.log_path(&inst.id).unwrap()).unwrap();
    let child: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("child="))
        .expect("child pid line")
        .parse()
        .unwrap();
    assert!(pid_alive(child));
    rt.stop(&inst.id, Duration::from_millis(300)).await.unwrap();
    assert!(!pid_alive(pid), "the app survived stop");
    wait_until("the grandchild is killed with its group", || {
        !pid_alive(child)
    })
    .await;
    assert_eq!(
        rt.status(&inst.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn a_new_runtime_readopts_live_children_and_cleans_up_dead_ones() {
    let Some((s, art, rt)) = built_with_runtime().await else {
        return;
    };
    let keep = rt.start(&spec(&art.image, "keep")).await.unwrap();
    let lose = rt.start(&spec(&art.image, "lose")).await.unwrap();
    wait_healthy(&rt, &keep.id).await;
    wait_healthy(&rt, &lose.id).await;
    let keep_pid = rt.pid(&keep.id).unwrap().unwrap();
    let lose_pid = rt.pid(&lose.id).unwrap().unwrap();

    // One state folder, one runtime.
    let err = HostRuntime::open(s.cfg.clone()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");

    // The control plane goes away; its apps keep running.
    drop(rt);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(pid_alive(keep_pid) && pid_alive(lose_pid));
    // One app dies while nobody watches.
    rustix_kill(lose_pid);
    wait_until("the unwatched app is dead", || !pid_alive(lose_pid)).await;

    let rt = HostRuntime::open(s.cfg.clone()).await.unwrap();
    let listed = rt.list(&Labels::new()).await.unwrap();
    assert_eq!(
        listed,
        vec![keep.clone()],
        "only the live instance is re-adopted"
    );
    assert_eq!(rt.pid(&keep.id).unwrap(), Some(keep_pid));
    assert_eq!(
        rt.status(&lose.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    wait_healthy(&rt, &keep.id).await;
    let tail: Vec<_> = rt
        .logs(&keep.id, LogOptions::default())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        tail.iter().any(|l| {
            let l = l.as_ref().unwrap();
            l.stream == LogStream::System && l.text.contains("re-adopted")
        }),
        "{tail:?}"
    );

    // An adopted process that crashes is restarted too.
    rustix_kill(keep_pid);
    for _ in 0..200 {
        if rt.restarts(&keep.id).unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_healthy(&rt, &keep.id).await;
    let again = rt.pid(&keep.id).unwrap().unwrap();
    assert_ne!(again, keep_pid);
    rt.shutdown(Duration::from_secs(2)).await.unwrap();
    assert!(!pid_alive(again));
    assert!(rt.instance_ids().is_empty());
}

#[tokio::test]
async fn refuses_what_it_cannot_run() {
    let s = setup();
    let rt = HostRuntime::open(s.cfg.clone()).await.unwrap();
    let err = rt.start(&spec("nginx:1.27", "img")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let err = rt
        .start(&spec("/nonexistent/release", "img"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
}
