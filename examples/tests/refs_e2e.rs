//! References between services end to end: `wharf serve` on host processes and the
//! built-in proxy, `wharf deploy` of a `wharf.toml` whose `api` references `db`
//! (`${{ db.HOST }}`, `${{ db.PORT }}`, `${{ db.URL }}`, a variable, then a secret),
//! and the running app shows what it received.

mod common;

use common::*;
use wharf_testkit::{python_app, python_present, write_hello_app};

/// A python3 app answering `<db's answer>|DB_GREETING|DB_URL|DB_TOKEN`, where db's
/// answer is what `UPSTREAM` (db's address, by reference) answered.
fn referencing_app() -> String {
    let setup = "import urllib.request";
    let get = r#"with urllib.request.urlopen(os.environ["UPSTREAM"], timeout=5) as r:
    upstream = r.read().decode().strip()
e = os.environ
body = "|".join([upstream, e["DB_GREETING"], e["DB_URL"], e.get("DB_TOKEN", "-")]).encode()"#;
    python_app(setup, get)
}

/// The whole event stream of a finished deployment, as its server-sent events.
async fn sse_text(server: &Server, deployment: &str) -> String {
    let token = std::fs::read_to_string(server.data.join("admin-token")).unwrap();
    reqwest::Client::new()
        .get(format!("{}/v1/deployments/{deployment}/events", server.api))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_manifest_service_gets_the_values_it_references_and_secrets_stay_hidden() {
    if !python_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("refs");
    write_hello_app(&root.join("db"), "127.0.0.1", "db");
    std::fs::create_dir_all(root.join("api")).unwrap();
    std::fs::write(root.join("api").join("app.py"), referencing_app()).unwrap();
    // No depends_on: the references alone order db first.
    std::fs::write(
        root.join("wharf.toml"),
        r#"project = "refs"

[services.api]
path = "api"
env = { UPSTREAM = "http://${{ db.HOST }}:${{db.PORT}}/", DB_GREETING = "${{ db.GREETING }} from db", DB_URL = "${{ db.URL }}" }

[services.db]
path = "db"
env = { GREETING = "hi" }
"#,
    )
    .unwrap();

    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    let waves: Vec<&str> = out.lines().filter(|l| l.starts_with("==> wave")).collect();
    assert_eq!(waves, ["==> wave 1: db", "==> wave 2: api"], "{out}");

    let port = server.proxy_port;
    let api_host = format!("api.refs.localhost:{port}");
    let db_url = format!("http://db.refs.localhost:{port}");
    assert_eq!(
        server.get(&api_host).await,
        (200, format!("hello from db|hi from db|{db_url}|-"))
    );

    // A secret of db, referenced by api: the app gets it, nothing shows it.
    let (ok, out) = server.cli(&[
        "env",
        "set",
        "TOKEN=tok-s3cret",
        "--secret",
        "-p",
        "refs",
        "-s",
        "db",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = server.cli(&[
        "env",
        "set",
        "DB_TOKEN=${{ db.TOKEN }}",
        "-p",
        "refs",
        "-s",
        "api",
    ]);
    assert!(ok, "{out}");
    let (ok, deploy_out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "second deploy failed:\n{deploy_out}");
    assert_eq!(
        server.get(&api_host).await,
        (200, format!("hello from db|hi from db|{db_url}|tok-s3cret"))
    );
    assert!(!deploy_out.contains("tok-s3cret"), "{deploy_out}");
    let (status, api) = server.read("/projects/refs/services/api").await;
    assert_eq!(status, 200);
    // Responses show the template, not the value.
    assert_eq!(api["env"]["DB_TOKEN"], "${{ db.TOKEN }}", "{api}");
    let (_, releases) = server.read("/projects/refs/services/api/releases").await;
    assert!(!releases.to_string().contains("tok-s3cret"), "{releases}");
    let (_, deployments) = server.read("/projects/refs/services/api/deployments").await;
    let deployments = deployments.as_array().expect("a list");
    assert_eq!(deployments.len(), 2, "{deployments:?}");
    for d in deployments {
        let events = sse_text(&server, d["id"].as_str().unwrap()).await;
        assert!(events.contains(r#""to":{"state":"live"}"#), "{events}");
        assert!(!events.contains("tok-s3cret"), "{events}");
    }

    // An unknown variable is refused when saved, naming it; nothing is stored.
    let (ok, out) = server.cli(&["env", "set", "X=${{ db.NOPE }}", "-p", "refs", "-s", "api"]);
    assert!(
        !ok && out.contains("unknown variable NOPE of service db"),
        "{out}"
    );
    let (_, api) = server.read("/projects/refs/services/api").await;
    assert!(api["env"].get("X").is_none(), "{api}");
}

/// On Docker, `${{ db.HOST }}:${{ db.PORT }}` is db's name on the project network and
/// its port inside (the published loopback port would not be reachable from a
/// container), and `${{ db.URL }}` is the URL the API gives db.
#[tokio::test]
async fn on_docker_a_reference_reaches_the_other_container_by_name() {
    let Some(caddy) = docker_and_caddy().await else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start_on_docker(tmp.path(), &caddy, &[]);
    server.wait_ready(tmp.path()).await;
    let project = wharf_testkit::unique("refs");
    let root = tmp.path().join(&project);
    write_hello_app(&root.join("db"), "0.0.0.0", "db");
    std::fs::create_dir_all(root.join("api")).unwrap();
    std::fs::write(
        root.join("api").join("app.py"),
        referencing_app().replace("127.0.0.1", "0.0.0.0"),
    )
    .unwrap();
    std::fs::write(
        root.join("wharf.toml"),
        format!(
            r#"project = "{project}"

[services.api]
path = "api"
env = {{ UPSTREAM = "http://${{{{ db.HOST }}}}:${{{{ db.PORT }}}}/", DB_GREETING = "${{{{ db.GREETING }}}}", DB_URL = "${{{{ db.URL }}}}" }}

[services.db]
path = "db"
env = {{ GREETING = "hey" }}
"#
        ),
    )
    .unwrap();

    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "wharf deploy on Docker failed:\n{out}");
    let (_, db) = server
        .read(&format!("/projects/{project}/services/db"))
        .await;
    let db_url = db["url"].as_str().expect("db has a URL").to_owned();
    assert_eq!(
        server.get(&format!("api.{project}.localhost")).await,
        (200, format!("hello from db|hey|{db_url}|-"))
    );
    assert_eq!(server.delete(&format!("/projects/{project}")).await, 204);
}
