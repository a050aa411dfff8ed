//! App lifecycle on `wharf serve`'s embedded defaults (host processes, built-in
//! proxy): a `Procfile` release command that runs before the new release serves
//! (writing a marker its web process reads), a failing one that leaves the old
//! release serving, and `wharf run` returning the command's exit code.

mod common;

use common::Server;
use wharf_testkit::python_present;

/// A web process answering with the marker the release command left in the `data`
/// volume, and `migrate.py`, the release command, writing it (or failing when
/// `FAIL_RELEASE` is set).
fn write_app(dir: &std::path::Path, version: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let app = wharf_testkit::python_app(
        "",
        &format!(
            "p = os.path.join(os.environ['WHARF_VOLUME_DATA'], 'marker')\n\
             marker = open(p).read().strip() if os.path.exists(p) else 'no marker'\n\
             body = ('{version}|' + marker).encode()"
        ),
    );
    std::fs::write(dir.join("app.py"), app).unwrap();
    std::fs::write(
        dir.join("migrate.py"),
        format!(
            "import os, sys\n\
             print('migrating to {version}', flush=True)\n\
             if os.environ.get('FAIL_RELEASE'):\n\
             \x20   print('migration 7 failed: column exists', file=sys.stderr)\n\
             \x20   sys.exit(2)\n\
             p = os.path.join(os.environ['WHARF_VOLUME_DATA'], 'marker')\n\
             open(p, 'w').write('migrated for {version} in ' + os.environ['MODE'])\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("Procfile"),
        "web: python3 app.py\nrelease: python3 migrate.py\n",
    )
    .unwrap();
}

#[tokio::test]
async fn release_commands_and_one_off_runs_on_host_processes() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("shop");
    write_app(&root.join("web"), "v1");
    std::fs::write(
        root.join("wharf.toml"),
        r#"project = "shop"

[services.web]
path = "web"
env = { MODE = "prod" }
volumes = [{ name = "data", mount = "/data" }]
"#,
    )
    .unwrap();

    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    // The release command's output is part of the deployment's.
    assert!(out.contains("migrating to v1"), "{out}");
    let host = format!("web.shop.localhost:{}", server.proxy_port);
    assert_eq!(
        server.get(&host).await,
        (200, "v1|migrated for v1 in prod".into())
    );

    // A release command that fails: the deployment fails at releasing, v1 serves on.
    write_app(&root.join("web"), "v2");
    let (ok, out) = server.cli(&["env", "set", "FAIL_RELEASE=1", "-p", "shop", "-s", "web"]);
    assert!(ok, "{out}");
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(!ok, "the deploy should have failed:\n{out}");
    assert!(out.contains("migration 7 failed: column exists"), "{out}");
    assert!(out.contains("releasing"), "{out}");
    assert_eq!(
        server.get(&host).await,
        (200, "v1|migrated for v1 in prod".into())
    );

    // `wharf run`: the live release's env and volume, the command's exit code.
    let (ok, out) = server.cli(&[
        "run",
        "-p",
        "shop",
        "-s",
        "web",
        "--",
        "sh",
        "-c",
        "cat \"$WHARF_VOLUME_DATA/marker\"; echo \" MODE=$MODE\"; echo oops >&2; exit 5",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("migrated for v1 in prod MODE=prod"), "{out}");
    assert!(out.contains("oops"), "{out}");
    let code = std::process::Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["run", "-p", "shop", "-s", "web", "--", "sh", "-c", "exit 5"])
        .env("WHARF_SERVER", &server.api)
        .current_dir(tmp.path())
        .env_remove("WHARF_DATA_DIR")
        .output()
        .unwrap()
        .status
        .code();
    assert_eq!(code, Some(5));
    let (ok, out) = server.cli(&["run", "-p", "shop", "-s", "web", "--", "true"]);
    assert!(ok, "{out}");
    // Nothing of the runs is left running: only the web instance's folder.
    let instances = std::fs::read_dir(server.data.join("runtime"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_dir())
        .count();
    assert_eq!(instances, 1, "task instances were left behind");
    // A service with nothing live cannot run commands.
    let (ok, out) = server.cli(&["run", "-p", "shop", "-s", "nope", "--", "true"]);
    assert!(!ok, "{out}");
}
