//! DockerRuntime against the real engine: the conformance kit, HTTP on the published
//! loopback port, env, networks by service name, volumes, limits, logs and errors.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use wharf_core::conformance::runtime::{run_all, RuntimeCase};
use wharf_core::traits::{LogOptions, Runtime};
use wharf_core::*;
use wharf_docker::{DockerRuntime, RestartPolicy, RuntimeOptions};

async fn runtime() -> Option<DockerRuntime> {
    if !docker_ready().await {
        return None;
    }
    Some(DockerRuntime::connect().await.expect("connect"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kit() {
    let Some(rt) = runtime().await else { return };
    let run = unique("kit");
    let healthy = busybox_site("kit-web", "hello", &run);
    let mut exits = busybox_site("kit-exits", "", &run);
    exits.command = sh("echo bye; exit 3");
    let mut task = busybox_site("kit-task", "", &run);
    task.command = sh("echo task-output; exit 4");
    task.run_once = true;
    run_all(
        &rt,
        &RuntimeCase {
            healthy,
            exits_at_start: Some(exits),
            task: Some(task),
        },
    )
    .await;
    cleanup(&rt, &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http_on_a_loopback_ephemeral_port_with_env_and_limits() {
    let Some(rt) = runtime().await else { return };
    let run = unique("http");
    let mut spec = busybox_site(&format!("http-{run}"), "", &run);
    spec.command = sh("mkdir -p /www && echo \"greeting=$GREETING\" > /www/index.html && exec httpd -f -p 8080 -h /www");
    spec.env.insert("GREETING".into(), "hi from env".into());
    spec.resources = Resources {
        memory_mb: Some(64),
        cpu_millis: Some(500),
    };
    let inst = rt.start(&spec).await.expect("start");
    assert_eq!(inst.endpoint.host, "127.0.0.1");
    assert_ne!(inst.endpoint.port, 0);
    let (code, body) = get_when_healthy(&rt, &inst, Duration::from_secs(30)).await;
    assert_eq!(code, 200);
    assert_eq!(body.trim(), "greeting=hi from env");

    // Published on loopback only, and the limits are on the container.
    let ports = docker_cli(&["port", inst.id.as_str()]).await;
    assert!(
        ports.contains(&format!("127.0.0.1:{}", inst.endpoint.port)),
        "{ports}"
    );
    let limits = docker_cli(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}}",
        inst.id.as_str(),
    ])
    .await;
    assert_eq!(limits.trim(), "67108864 500000000 unless-stopped");

    rt.stop(&inst.id, Duration::from_secs(5))
        .await
        .expect("stop");
    cleanup(&rt, &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_each_other_by_name_on_the_project_network() {
    let Some(rt) = runtime().await else { return };
    let run = unique("net");
    let network = format!("wharf-test-{run}");
    let mut db = busybox_site(&format!("db-{run}"), "i am the db", &run);
    db.network = Some(network.clone());
    db.network_alias = Some("db".into());
    let db_inst = rt.start(&db).await.expect("start db");
    let st = wait_status(&rt, &db_inst.id, Duration::from_secs(30), |s| {
        *s == InstanceStatus::Healthy
    })
    .await;
    assert_eq!(st, InstanceStatus::Healthy);

    let waits_for_db = "until wget -qO- http://db:8080/; do sleep 0.2; done; exec sleep 600";
    let mut web = busybox_sh(&format!("web-{run}"), waits_for_db, &run);
    web.network = Some(network.clone());
    web.network_alias = Some("web".into());
    let web_inst = rt.start(&web).await.expect("start web");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while tokio::time::Instant::now() < deadline {
        seen = log_texts(&rt, &web_inst.id).await;
        if seen.iter().any(|l| l.contains("i am the db")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen.iter().any(|l| l.contains("i am the db")),
        "web never reached db by name: {seen:?}"
    );
    let labels = docker_cli(&[
        "network",
        "inspect",
        "--format",
        "{{index .Labels \"wharf.managed\"}}",
        &network,
    ])
    .await;
    assert_eq!(labels.trim(), "true", "the project network is labelled");

    rt.stop(&web_inst.id, Duration::ZERO).await.expect("stop");
    rt.stop(&db_inst.id, Duration::ZERO).await.expect("stop");
    docker_cli(&["network", "rm", &network]).await;
}

/// The networks named exactly `name`, from the docker CLI.
async fn networks_named(name: &str) -> Vec<String> {
    docker_cli(&[
        "network",
        "ls",
        "--filter",
        &format!("name={name}"),
        "--format",
        "{{.ID}} {{.Name}}",
    ])
    .await
    .lines()
    .filter_map(|l| l.split_once(' '))
    .filter(|(_, n)| *n == name)
    .map(|(id, _)| id.to_owned())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_on_a_new_network_make_one_network() {
    let Some(rt) = runtime().await else { return };
    let run = unique("netrace");
    let network = format!("wharf-test-{run}");
    let starts = (0..6).map(|i| {
        let mut spec = busybox_site(&format!("s{i}-{run}"), "hi", &run);
        spec.network = Some(network.clone());
        spec.network_alias = Some(format!("s{i}"));
        let rt = rt.clone();
        async move { rt.start(&spec).await }
    });
    let results = futures::future::join_all(starts).await;
    let nets = networks_named(&network).await;
    cleanup(&rt, &run).await;
    for n in &nets {
        docker_cli(&["network", "rm", n]).await;
    }
    for r in results {
        r.expect("every concurrent start on the new network succeeds");
    }
    assert_eq!(nets.len(), 1, "one network named {network}: {nets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_heals_duplicate_networks_of_one_name() {
    let Some(rt) = runtime().await else { return };
    let run = unique("netdup");
    let network = format!("wharf-test-{run}");
    // Three networks of one name, made through the API as a concurrent create does it
    // (the docker CLI asks the engine to check for duplicates first).
    let docker = bollard::Docker::connect_with_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    for _ in 0..3 {
        let req = bollard::models::NetworkCreateRequest {
            name: network.clone(),
            ..Default::default()
        };
        let _ = docker.create_network(req).await;
    }
    let mut dups = networks_named(&network).await;
    if dups.len() != 3 {
        println!("skipped: this engine refuses duplicate network names (Docker 25+)");
        for n in dups {
            docker_cli(&["network", "rm", &n]).await;
        }
        return;
    }
    // Containers already run on two of them: two on the one with the largest id, one
    // on the middle one. The busiest is kept, the unused one removed, the other stays
    // (in use); the name stays ambiguous, so the new container must join by id.
    dups.sort();
    let in_use = dups[2].clone();
    let olds = [
        (format!("old1-{run}"), dups[2].clone()),
        (format!("old2-{run}"), dups[2].clone()),
        (format!("old3-{run}"), dups[1].clone()),
    ];
    for (name, net) in &olds {
        // Through the API with the endpoint's network id: the docker CLI, like any
        // start by name, fails on this engine ("ambiguous").
        let endpoint = bollard::models::EndpointSettings {
            network_id: Some(net.clone()),
            ..Default::default()
        };
        let body = bollard::models::ContainerCreateBody {
            image: Some("wharf-local/busybox:1".into()),
            cmd: Some(vec!["sleep".into(), "600".into()]),
            host_config: Some(bollard::models::HostConfig {
                network_mode: Some(net.clone()),
                ..Default::default()
            }),
            networking_config: Some(bollard::models::NetworkingConfig {
                endpoints_config: Some(std::collections::HashMap::from([(net.clone(), endpoint)])),
            }),
            ..Default::default()
        };
        let opts = bollard::query_parameters::CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        let made = docker.create_container(Some(opts), body).await.unwrap();
        docker.start_container(&made.id, None).await.unwrap();
    }
    let mut spec = busybox_site(&format!("web-{run}"), "hi", &run);
    spec.network = Some(network.clone());
    spec.network_alias = Some("web".into());
    let started = rt.start(&spec).await;
    let nets = networks_named(&network).await;
    let joined = match &started {
        Ok(inst) => {
            docker_cli(&[
                "inspect",
                "--format",
                "{{range .NetworkSettings.Networks}}{{.NetworkID}}{{end}}",
                inst.id.as_str(),
            ])
            .await
        }
        Err(_) => String::new(),
    };
    cleanup(&rt, &run).await;
    for (name, _) in &olds {
        docker_cli(&["rm", "-f", name]).await;
    }
    for n in &nets {
        docker_cli(&["network", "rm", n]).await;
    }
    started.expect("start on a name three networks share");
    assert!(
        joined.trim().starts_with(&in_use),
        "joined {joined:?}, not the busiest network {in_use}"
    );
    let mut left = nets.clone();
    left.sort();
    assert_eq!(
        left,
        [dups[1].clone(), dups[2].clone()],
        "only the unused duplicate is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_volumes_outlive_instances() {
    let Some(rt) = runtime().await else { return };
    let run = unique("vol");
    let network = format!("wharf-test-{run}");
    let writes = format!("echo kept-{run} > /data/file && exec sleep 600");
    let mut writer = busybox_sh(&format!("writer-{run}"), &writes, &run);
    writer.network = Some(network.clone());
    writer.volumes = vec![VolumeMount::new("data", "/data")];
    let w = rt.start(&writer).await.expect("start writer");
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.stop(&w.id, Duration::ZERO).await.expect("stop");

    let mut reader = writer.clone();
    reader.name = format!("reader-{run}");
    reader.command = sh("cat /data/file; exec sleep 600");
    let r = rt.start(&reader).await.expect("start reader");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut lines = Vec::new();
    while tokio::time::Instant::now() < deadline && lines.is_empty() {
        lines = log_texts(&rt, &r.id).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines, [format!("kept-{run}")]);
    rt.stop(&r.id, Duration::ZERO).await.expect("stop");
    docker_cli(&["volume", "rm", &format!("{network}.data")]).await;
    docker_cli(&["network", "rm", &network]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_new_lines() {
    let Some(rt) = runtime().await else { return };
    let run = unique("logs");
    let ticks = "i=0; while true; do i=$((i+1)); echo tick $i; echo err $i >&2; sleep 0.1; done";
    let spec = busybox_sh(&format!("ticker-{run}"), ticks, &run);
    let inst = rt.start(&spec).await.expect("start");
    let stream = rt
        .logs(
            &inst.id,
            LogOptions {
                follow: true,
                tail: Some(0),
            },
        )
        .await
        .expect("logs");
    // Following: lines keep coming after the call (tail 0 skipped the old ones).
    let got: Vec<LogLine> = tokio::time::timeout(
        Duration::from_secs(20),
        stream.take(10).map(|l| l.expect("line")).collect(),
    )
    .await
    .expect("10 followed lines");
    assert_eq!(got.len(), 10);
    assert!(got
        .iter()
        .any(|l| l.stream == LogStream::Stdout && l.text.starts_with("tick ")));
    assert!(got
        .iter()
        .any(|l| l.stream == LogStream::Stderr && l.text.starts_with("err ")));
    rt.stop(&inst.id, Duration::ZERO).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_waits_for_a_graceful_exit() {
    let Some(rt) = runtime().await else { return };
    let rt = rt.with_options(RuntimeOptions::default().restart_policy(RestartPolicy::No));
    let run = unique("grace");
    // Traps SIGTERM and exits 0 after saying so.
    let traps_term =
        "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done";
    let spec = busybox_sh(&format!("graceful-{run}"), traps_term, &run);
    let inst = rt.start(&spec).await.expect("start");
    wait_status(&rt, &inst.id, Duration::from_secs(10), |s| {
        *s == InstanceStatus::Healthy
    })
    .await;
    // Follow the logs while stopping: the TERM handler's line shows up.
    let stream = rt
        .logs(
            &inst.id,
            LogOptions {
                follow: true,
                tail: None,
            },
        )
        .await
        .expect("logs");
    let collect = tokio::spawn(async move {
        stream
            .filter_map(|l| async move { l.ok().map(|l| l.text) })
            .collect::<Vec<_>>()
            .await
    });
    rt.stop(&inst.id, Duration::from_secs(10))
        .await
        .expect("stop");
    let lines = tokio::time::timeout(Duration::from_secs(10), collect)
        .await
        .expect("the log stream ends when the container goes")
        .expect("join");
    assert!(lines.iter().any(|l| l == "got TERM"), "{lines:?}");
    assert_eq!(
        rt.status(&inst.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_mapped_to_core_kinds() {
    let Some(rt) = runtime().await else { return };
    let run = unique("err");

    // A missing image.
    let mut spec = busybox_site(&format!("noimage-{run}"), "", &run);
    spec.image = format!("wharf-test/does-not-exist:{run}");
    let err = rt.start(&spec).await.expect_err("missing image");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.message().contains("is not on this Docker engine"),
        "{err}"
    );

    // A name already taken.
    let spec = busybox_site(&format!("dup-{run}"), "x", &run);
    let first = rt.start(&spec).await.expect("start");
    let err = rt.start(&spec).await.expect_err("duplicate name");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    rt.stop(&first.id, Duration::ZERO).await.expect("stop");

    // A host port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().unwrap().port();
    let fixed = rt
        .clone()
        .with_options(RuntimeOptions::default().host_port(Some(port)));
    let spec = busybox_site(&format!("port-{run}"), "x", &run);
    let err = fixed.start(&spec).await.expect_err("port taken");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.message().contains("host port is taken"), "{err}");
    assert!(
        rt.list(&labels(&run)).await.expect("list").is_empty(),
        "a container that could not start is removed"
    );
    drop(taken);

    // An app that exits at start: Exited with its code; its output is in the logs.
    let opts = RuntimeOptions::default().restart_policy(RestartPolicy::No);
    let no_restart = rt.clone().with_options(opts);
    let mut spec = busybox_site(&format!("exits-{run}"), "", &run);
    spec.command = sh("echo cannot open config >&2; exit 4");
    let inst = no_restart.start(&spec).await.expect("start");
    let st = wait_status(&no_restart, &inst.id, Duration::from_secs(20), |s| {
        matches!(s, InstanceStatus::Exited { .. })
    })
    .await;
    assert_eq!(
        st,
        InstanceStatus::Exited {
            code: Some(4),
            reason: "exited with code 4".into()
        }
    );
    let lines = log_lines(&no_restart, &inst.id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.stream == LogStream::Stderr && l.text == "cannot open config"),
        "{lines:?}"
    );
    no_restart
        .stop(&inst.id, Duration::ZERO)
        .await
        .expect("stop");

    // OOM-killed: over its memory limit.
    let mut spec = busybox_site(&format!("oom-{run}"), "", &run);
    spec.resources.memory_mb = Some(16);
    spec.command = sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived");
    let inst = no_restart.start(&spec).await.expect("start");
    let st = wait_status(&no_restart, &inst.id, Duration::from_secs(30), |s| {
        matches!(s, InstanceStatus::Exited { .. })
    })
    .await;
    match &st {
        InstanceStatus::Exited { reason, .. } => {
            assert!(reason.starts_with("OOM-killed"), "{st:?}")
        }
        other => panic!("expected an OOM kill, got {other:?}"),
    }
    no_restart
        .stop(&inst.id, Duration::ZERO)
        .await
        .expect("stop");

    // Bad input never reaches the engine.
    let mut spec = busybox_site("bad/name", "", &run);
    assert_eq!(
        rt.start(&spec).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    spec.name = format!("badport-{run}");
    spec.port = 0;
    assert_eq!(
        rt.start(&spec).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    cleanup(&rt, &run).await;
}

#[tokio::test]
async fn an_unreachable_daemon_is_unavailable_and_retryable() {
    // Needs no engine: this is what every call says when there is none.
    // A socket file nobody listens on (its listener is gone): connections are refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
    let docker =
        bollard::Docker::connect_with_unix(sock.to_str().unwrap(), 5, bollard::API_DEFAULT_VERSION)
            .expect("client");
    let rt = DockerRuntime::with_client(docker, RuntimeOptions::default());
    let err = rt
        .status(&InstanceId("whatever".into()))
        .await
        .expect_err("no daemon");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    let err = rt.list(&Labels::new()).await.expect_err("no daemon");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

async fn collect(s: ByteStream) -> (Vec<u8>, Option<Error>) {
    let mut out = Vec::new();
    let mut s = s;
    while let Some(item) = s.next().await {
        match item {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// `Runtime::exec`, as database dumps and restores use it: stdout streamed (binary
/// and bigger than one frame), stdin fed and closed, env passed beside the command,
/// and a failure carrying its exit code and the end of its stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_streams_stdout_feeds_stdin_and_reports_failures() {
    let Some(rt) = runtime().await else { return };
    let run = unique("exec");
    let spec = busybox_sh(&format!("exec-{run}"), "exec sleep 600", &run);
    let inst = rt.start(&spec).await.expect("start");
    let cmd = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let env: std::collections::BTreeMap<String, String> =
        [("SECRET".to_owned(), "s3cr3t".to_owned())].into();

    // 3 MiB of every byte value through stdin and back: nothing lost or changed, and
    // the command ends because its stdin was closed.
    let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<bytes::Bytes>> = data
        .chunks(100_000)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let out = rt
        .exec(
            &inst.id,
            &cmd("cat"),
            &env,
            Some(futures::stream::iter(chunks).boxed()),
        )
        .await
        .expect("exec cat");
    let (got, err) = collect(out).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got.len(), data.len());
    assert!(got == data, "cat changed the bytes");

    // The environment reaches the command; the command line does not hold it.
    let (got, err) = collect(
        rt.exec(&inst.id, &cmd("printf %s \"$SECRET\""), &env, None)
            .await
            .unwrap(),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, b"s3cr3t");

    // A failing command: what it printed arrives, then an error with code and stderr.
    let (got, err) = collect(
        rt.exec(
            &inst.id,
            &cmd("echo partial; echo 'no such table' >&2; exit 7"),
            &env,
            None,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(got, b"partial\n");
    let e = err.expect("a failure");
    assert!(
        e.to_string().contains("code 7") && e.to_string().contains("no such table"),
        "{e}"
    );

    // Only a container Wharf made, by its full id: not an id prefix, not another
    // container on the engine, not a variable smuggled in by a key with `=`.
    let prefix = InstanceId(inst.id.as_str()[..12].to_owned());
    let e = rt
        .exec(&prefix, &cmd("true"), &env, None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let foreign = docker_cli(&["run", "-d", "--rm", BUSYBOX, "sleep", "60"]).await;
    let foreign = InstanceId(foreign.trim().to_owned());
    let e = rt
        .exec(&foreign, &cmd("true"), &env, None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    docker_cli(&["rm", "-f", foreign.as_str()]).await;
    let sneaky: std::collections::BTreeMap<String, String> =
        [("A=B PATH".to_owned(), "x".to_owned())].into();
    let e = rt
        .exec(&inst.id, &cmd("true"), &sneaky, None)
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    rt.stop(&inst.id, Duration::ZERO).await.expect("stop");
    cleanup(&rt, &run).await;
}
