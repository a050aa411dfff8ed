//! The `wharf` binary end to end on the embedded defaults: `wharf serve` with the
//! host-process runtime and the built-in proxy, `wharf deploy` of a python3 app, HTTP
//! 200 through the proxy at `<service>.<project>.localhost`, then a redeploy and a
//! rollback served by the same hostname.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use wharf_testkit::{
    curl_https, free_port, python_app, python_present, require, unique, write_hello_app,
};

#[tokio::test]
async fn serve_then_deploy_a_python_app_answers_through_the_builtin_proxy() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("shop").join("web");
    write_hello_app(&app, "127.0.0.1", "v1");

    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;

    // Project and service default to the folder names: shop / web.
    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    let host = format!("web.shop.localhost:{}", server.proxy_port);
    assert!(out.contains(&format!("live at http://{host}")), "{out}");
    assert_eq!(server.get(&host).await, (200, "hello from v1\n".into()));

    // Unknown hosts get the proxy's 404.
    assert_eq!(server.get("nothing.shop.localhost").await.0, 404);

    // A redeploy switches the same hostname to the new release.
    std::fs::write(app.join("version.txt"), "v2\n").unwrap();
    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "second deploy failed:\n{out}");
    assert_eq!(server.get(&host).await, (200, "hello from v2\n".into()));

    // Rollback brings v1 back without a rebuild.
    let (ok, out) = server.cli(&["rollback", "shop", "web"]);
    assert!(ok, "rollback failed:\n{out}");
    assert_eq!(server.get(&host).await, (200, "hello from v1\n".into()));

    let (ok, out) = server.cli(&["ls"]);
    assert!(ok && out.contains("web") && out.contains(&host), "{out}");
}

/// `wharf deploy` of the manifest in `root` (`what`, for the failure message): it
/// succeeds, deploying db, then api, then web.
fn deploy_in_three_waves(server: &Server, root: &Path, what: &str) {
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "{what} failed:\n{out}");
    let waves: Vec<&str> = out.lines().filter(|l| l.starts_with("==> wave")).collect();
    assert_eq!(
        waves,
        ["==> wave 1: db", "==> wave 2: api", "==> wave 3: web"],
        "{out}"
    );
}

#[tokio::test]
async fn a_manifest_deploys_three_services_in_dependency_order() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("stack");
    for name in ["db", "api", "web"] {
        let dir = root.join(name);
        write_hello_app(&dir, "127.0.0.1", name);
    }
    std::fs::write(
        root.join("wharf.toml"),
        r#"project = "stack"

[services.web]
path = "web"
depends_on = ["api"]
health_path = "/"

[services.api]
path = "api"
depends_on = ["db"]
env = { MODE = "prod" }

[services.db]
path = "db"
"#,
    )
    .unwrap();

    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    deploy_in_three_waves(&server, &root, "manifest deploy");
    for name in ["db", "api", "web"] {
        let host = format!("{name}.stack.localhost:{}", server.proxy_port);
        assert_eq!(
            server.get(&host).await,
            (200, format!("hello from {name}\n")),
            "{name}"
        );
    }

    // A cycle is refused before anything is uploaded.
    std::fs::write(
        root.join("wharf.toml"),
        "[services.a]\ndepends_on = [\"b\"]\n[services.b]\ndepends_on = [\"a\"]\n",
    )
    .unwrap();
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(!ok && out.contains("cycle"), "{out}");
}

/// A ready `wharf serve` on Docker and the shared Caddy, in a folder of its own, and a
/// project name of its own, so parallel or earlier runs never collide.
///
/// The server is stopped before its folder is removed: it is the first field, and the
/// tests name it last when they take the struct apart (bindings drop last first).
struct OnDocker {
    server: Server,
    tmp: tempfile::TempDir,
    caddy: SharedCaddy,
    project: String,
}

impl OnDocker {
    /// `None` (the test skips) without Docker and Caddy.
    async fn start(project_prefix: &str) -> Option<OnDocker> {
        let caddy = docker_and_caddy().await?;
        let tmp = tempfile::tempdir().unwrap();
        let mut server = Server::start_on_docker(tmp.path(), &caddy, &[]);
        server.wait_ready(tmp.path()).await;
        let project = unique(project_prefix);
        Some(OnDocker {
            server,
            tmp,
            caddy,
            project,
        })
    }
}

#[tokio::test]
async fn docker_and_caddy_serve_redeploy_under_load_and_roll_back() {
    let Some(d) = OnDocker::start("e2e").await else {
        return;
    };
    let app = d.tmp.path().join(&d.project).join("web");
    write_hello_app(&app, "0.0.0.0", "v1");
    let log = std::fs::read_to_string(d.tmp.path().join("serve.log")).unwrap();
    assert!(
        log.contains("runtime: Docker") && log.contains("router: Caddy"),
        "{log}"
    );

    let (ok, out) = d.server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "deploy on Docker + Caddy failed:\n{out}");
    let host = format!("web.{}.localhost", d.project);
    assert_eq!(d.server.get(&host).await, (200, "hello from v1\n".into()));

    // Redeploy under a steady load through Caddy: no request may fail.
    std::fs::write(app.join("version.txt"), "v2\n").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(steady_load(d.caddy.http_port, host.clone(), stop.clone()));
    let (ok, out) = tokio::task::spawn_blocking({
        let app = app.clone();
        let api = d.server.api.clone();
        let dir = d.tmp.path().to_owned();
        move || {
            let out = Command::new(env!("CARGO_BIN_EXE_wharf"))
                .args(["deploy", app.to_str().unwrap()])
                .env("WHARF_SERVER", api)
                .current_dir(dir)
                .env_remove("WHARF_DATA_DIR")
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let Load {
        sent,
        failed,
        resent,
        bodies,
    } = load.await.unwrap();
    eprintln!(
        "redeploy on Docker + Caddy under load: {sent} requests, {failed} failed, {resent} resent"
    );
    assert!(ok, "redeploy failed:\n{out}");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed during the redeploy"
    );
    assert!(
        bodies.contains("hello from v2\n"),
        "never served v2: {bodies:?}"
    );
    assert_eq!(d.server.get(&host).await, (200, "hello from v2\n".into()));

    // Rollback serves v1 again, from its image (no build).
    let (ok, out) = d.server.cli(&["rollback", &d.project, "web"]);
    assert!(ok, "rollback failed:\n{out}");
    assert_eq!(d.server.get(&host).await, (200, "hello from v1\n".into()));

    // Deleting the project removes its containers and its route.
    delete_leaving_no_containers(&d.server, &d.project).await;
    assert_eq!(d.server.get(&host).await.0, 404);
}

/// Deletes `project` through the API and checks no container of it is left.
async fn delete_leaving_no_containers(server: &Server, project: &str) {
    assert_eq!(server.delete(&format!("/projects/{project}")).await, 204);
    let left = docker(&["ps", "-aq", "--filter", &format!("name={project}-")]);
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(left.is_empty(), "containers left: {left}");
}

/// Runs the docker CLI (with the classic builder, which builds from the local
/// `wharf-local/` images without looking them up in a registry).
fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap()
}

/// The Caddy program (see [`wharf_testkit::caddy_bin`]), when `caddy version` runs.
fn caddy_bin() -> Option<PathBuf> {
    let bin = wharf_testkit::caddy_bin();
    let probe = wharf_testkit::command_runs(
        &bin.display().to_string(),
        &["version"],
        "scripts/setup-proxies",
    );
    require("caddy", probe).then_some(bin)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn caddy_pid(data: &Path) -> u32 {
    std::fs::read_to_string(data.join("caddy/caddy.pid"))
        .expect("the managed Caddy's pid file")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn serve_starts_its_own_caddy_with_on_demand_https_and_stops_it() {
    if !python_present() {
        return;
    }
    let Some(bin) = caddy_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("shop").join("web");
    write_hello_app(&app, "127.0.0.1", "v1");
    let https_port = free_port();
    let https_listen = format!("127.0.0.1:{https_port}");
    let settings = [
        ("WHARF_RUNTIME", "process"),
        ("WHARF_CADDY_BIN", bin.to_str().unwrap()),
        ("WHARF_HTTPS_LISTEN", https_listen.as_str()),
        ("WHARF_TLS", "on_demand"),
        ("WHARF_TLS_ISSUER", "internal"),
    ];
    let http_port = free_port();
    let mut server = Server::start_with(tmp.path(), http_port, &settings);
    server.wait_ready(tmp.path()).await;
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap();
    assert!(log.contains("caddy: started"), "{log}");
    let first_caddy = caddy_pid(&server.data);
    // Its admin API is a unix socket only the server's account opens, not a loopback
    // port every app on the machine could reconfigure Caddy through.
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let socket = server.data.join("caddy/admin.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o077,
        0,
        "{:o}",
        meta.permissions().mode()
    );
    assert!(
        log.contains(&format!("admin API unix://{}", socket.display())),
        "{log}"
    );

    let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
    assert!(ok, "deploy failed:\n{out}");
    assert!(
        out.contains(&format!("https://web.shop.localhost:{https_port}")),
        "{out}"
    );
    let root = server
        .data
        .join("caddy/data/pki/authorities/local/root.crt");
    // Caddy asks wharf before issuing: a routed host gets a certificate...
    assert_eq!(
        curl_https(&root, "web.shop.localhost", https_port).await,
        Ok("hello from v1\n".into())
    );
    // ...an unrouted one does not.
    let refused = curl_https(&root, "nothing.shop.localhost", https_port).await;
    assert!(refused.is_err(), "{refused:?}");

    // A wharf serve killed outright leaves its Caddy behind; the next start stops
    // that one, starts its own and routes the live app again.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    assert!(alive(first_caddy), "the orphan Caddy should still run");
    let mut server = Server::start_with(tmp.path(), http_port, &settings);
    server.wait_ready(tmp.path()).await;
    let second_caddy = caddy_pid(&server.data);
    assert_ne!(first_caddy, second_caddy);
    assert!(!alive(first_caddy), "the orphan Caddy was not stopped");
    assert_eq!(
        curl_https(&root, "web.shop.localhost", https_port).await,
        Ok("hello from v1\n".into())
    );

    // SIGTERM stops wharf and its Caddy.
    let pid = server.child.id();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "wharf serve exited {status}");
    for _ in 0..100 {
        if !alive(second_caddy) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(second_caddy), "wharf left its Caddy running");
}

/// A python3 app that answers `<name>+` followed by what its upstream (another
/// service, reached by name on the project's network) answered.
fn caller() -> String {
    let setup = r#"import urllib.request
NAME = open("name.txt").read().strip()
UPSTREAM = open("upstream.txt").read().strip()"#;
    let get = r#"port = os.environ["PORT"]
with urllib.request.urlopen(f"http://{UPSTREAM}:{port}/", timeout=5) as r:
    body = (NAME + "+" + r.read().decode()).encode()"#;
    python_app(setup, get).replace("127.0.0.1", "0.0.0.0")
}

#[tokio::test]
async fn docker_and_caddy_bring_up_a_manifest_whose_services_call_each_other() {
    let Some(d) = OnDocker::start("stack").await else {
        return;
    };
    let root = d.tmp.path().join(&d.project);
    let db = root.join("db");
    write_hello_app(&db, "0.0.0.0", "db");
    for (name, upstream) in [("api", "db"), ("web", "api")] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("app.py"), caller()).unwrap();
        std::fs::write(dir.join("name.txt"), name).unwrap();
        std::fs::write(dir.join("upstream.txt"), upstream).unwrap();
    }
    std::fs::write(
        root.join("wharf.toml"),
        format!(
            r#"project = "{}"

[services.web]
path = "web"
depends_on = ["api"]

[services.api]
path = "api"
depends_on = ["db"]

[services.db]
path = "db"
"#,
            d.project
        ),
    )
    .unwrap();

    deploy_in_three_waves(&d.server, &root, "manifest deploy on Docker + Caddy");
    // web reaches api, and api reaches db, by their service names.
    assert_eq!(
        d.server.get(&format!("web.{}.localhost", d.project)).await,
        (200, "web+api+hello from db\n".into())
    );

    delete_leaving_no_containers(&d.server, &d.project).await;
}

#[tokio::test]
async fn wharf_deploy_image_runs_a_prebuilt_image_through_caddy() {
    let Some(d) = OnDocker::start("img").await else {
        return;
    };
    // A prebuilt image, as a CI pipeline would push: busybox httpd serving a page.
    let ctx = d.tmp.path().join("image");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM wharf-local/busybox:1\nRUN mkdir -p /site && echo hello from the image > /site/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/site\"]\n",
    )
    .unwrap();
    let tag = unique("wharf-e2e/greeter:");
    let built = docker(&["build", "-q", "-t", &tag, ctx.to_str().unwrap()]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let (ok, out) = d.server.cli(&[
        "deploy", "--image", &tag, "-p", &d.project, "--port", "8080",
    ]);
    assert!(ok, "deploy --image failed:\n{out}");
    let host = format!("greeter.{}.localhost", d.project);
    let last = out.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("live at http://{host}:")),
        "{out}"
    );
    assert_eq!(
        d.server.get(&host).await,
        (200, "hello from the image\n".into())
    );

    delete_leaving_no_containers(&d.server, &d.project).await;
    let _ = docker(&["rmi", "-f", &tag]);
}
