//! Managed databases end to end on the Docker engine: `wharf serve` with the local
//! database images (`database_images = local`), a PostgreSQL database created
//! through the API goes live once the Postgres protocol probe passes, and a python
//! app deployed by `wharf deploy` from a `wharf.toml` whose env holds
//! `${{ db.DATABASE_URL }}` receives the URL with the generated credentials and
//! reaches the database by name on the project network. The database has no public
//! route, and only the credentials command shows its password.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use wharf_testkit::{docker_cli_present, free_port, require, unique};

/// A python3 app on 0.0.0.0:`$PORT` answering `<DATABASE_URL>|<first byte>`, where the
/// byte is PostgreSQL's answer to an SSLRequest sent to the URL's host and port
/// (`N`: a PostgreSQL server that speaks no TLS).
fn postgres_client_app() -> String {
    wharf_testkit::python_app(
        "import socket, struct, urllib.parse",
        r#"url = os.environ["DATABASE_URL"]
u = urllib.parse.urlsplit(url)
with socket.create_connection((u.hostname, u.port), timeout=5) as s:
    s.sendall(struct.pack("!ii", 8, 80877103))
    answer = s.recv(1).decode()
body = f"{url}|{answer}".encode()"#,
    )
    .replace("\"127.0.0.1\"", "\"0.0.0.0\"")
}

/// The engine, the Debian base image and the PostgreSQL image: skips (or fails under
/// `WHARF_REQUIRE=docker`) without them.
fn ready() -> bool {
    if !docker_cli_present() {
        return false;
    }
    for image in [
        "wharf-local/debian-runtimes:bookworm",
        "wharf-local/postgres:15",
    ] {
        let ok = std::process::Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|o| o.status.success());
        if !require(
            "docker",
            if ok {
                Ok(())
            } else {
                Err(format!("{image} is missing: run scripts/base-images"))
            },
        ) {
            return false;
        }
    }
    true
}

/// `psql -tAc SQL` as the database's user inside `container`, the password passed in
/// the environment; its output.
fn psql(container: &str, password: &str, sql: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["exec", "-e", "PGPASSWORD", container])
        .args(["psql", "-h", "127.0.0.1", "-U", "db", "-d", "db", "-v"])
        .args(["ON_ERROR_STOP=1", "-tAc", sql])
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls deployment `id` until it ends; its final state's name.
async fn ended(server: &Server, id: &str) -> (String, Value) {
    for _ in 0..1200 {
        let (status, d) = server.read(&format!("/deployments/{id}")).await;
        assert_eq!(status, 200, "{d}");
        let state = d["state"]["state"].as_str().unwrap_or("").to_owned();
        if ["live", "failed", "cancelled", "skipped", "superseded"].contains(&state.as_str()) {
            return (state, d);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("deployment {id} did not end within 4 minutes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_database_goes_live_and_a_service_gets_its_url_by_reference() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        tmp.path(),
        free_port(),
        &[
            ("WHARF_RUNTIME", "docker"),
            ("WHARF_ROUTER", "builtin"),
            (
                "WHARF_BASE_IMAGES",
                "python=wharf-local/debian-runtimes:bookworm",
            ),
            ("WHARF_DATABASE_IMAGES", "local"),
        ],
    );
    server.wait_ready(tmp.path()).await;
    let project = unique("dbe2e");
    let (s, b) = server
        .call(reqwest::Method::POST, "/projects", json!({"name": project}))
        .await;
    assert_eq!(s, 201, "{b}");

    // The database, through the API: live once the Postgres probe answers.
    let (s, db) = server
        .call(
            reqwest::Method::POST,
            &format!("/projects/{project}/databases"),
            json!({"name": "db", "engine": "postgres"}),
        )
        .await;
    assert_eq!(s, 201, "{db}");
    assert_eq!(db["image"], "wharf-local/postgres:15");
    let (state, dep) = ended(&server, db["deployment"].as_str().unwrap()).await;
    assert_eq!(
        state,
        "live",
        "{dep}\n{}",
        std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default()
    );
    let (s, creds) = server
        .read(&format!("/projects/{project}/databases/db/credentials"))
        .await;
    assert_eq!(s, 200, "{creds}");
    let url = creds["url"].as_str().unwrap().to_owned();
    let password = creds["password"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("postgres://db:{password}@db:5432/db"));

    // A service referencing it, from a wharf.toml that declares the database too
    // (kept as it is: same credentials).
    let root = tmp.path().join(&project);
    std::fs::create_dir_all(root.join("api")).unwrap();
    std::fs::write(root.join("api").join("app.py"), postgres_client_app()).unwrap();
    std::fs::write(
        root.join("wharf.toml"),
        format!(
            r#"project = "{project}"

[services.api]
path = "api"
env = {{ DATABASE_URL = "${{{{ db.DATABASE_URL }}}}" }}

[databases.db]
engine = "postgres"
"#
        ),
    )
    .unwrap();
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    assert!(
        !out.contains(&password),
        "deploy output shows the password:\n{out}"
    );

    let port = server.proxy_port;
    let (status, body) = server.get(&format!("api.{project}.localhost:{port}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        format!("{url}|N"),
        "the app's DATABASE_URL and what answered there"
    );

    // No public route to the database.
    let (status, _) = server.get(&format!("db.{project}.localhost:{port}")).await;
    assert_eq!(status, 404);

    // The CLI: ls without the password, credentials with it.
    let (ok, out) = server.cli(&["db", "ls", "-p", &project]);
    assert!(
        ok && out.contains("db  postgres 15  live  private"),
        "{out}"
    );
    assert!(!out.contains(&password), "{out}");
    let (ok, out) = server.cli(&["db", "credentials", "db", "-p", &project]);
    assert!(
        ok && out.contains(&format!("password: {password}")),
        "{out}"
    );
    let (ok, out) = server.cli(&["db", "connect", "db", "-p", &project, "--print"]);
    assert!(
        ok && out.contains("psql -h 127.0.0.1 -p 5432 -U db -d db"),
        "{out}"
    );
    assert!(!out.contains(&password), "{out}");
    // connect logs in with the password from the environment (psql exits 2 when the
    // connection fails; with no input it exits 0 once logged in).
    let (ok, out) = server.cli(&["db", "connect", "db", "-p", &project]);
    assert!(ok, "wharf db connect failed:\n{out}");

    // A dump through `wharf db backup`, restored over a dropped table.
    let (s, b) = server
        .call(
            reqwest::Method::PUT,
            &format!("/projects/{project}/backups/settings"),
            json!({"destination": {"kind": "local"}}),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (_, status) = server
        .read(&format!("/projects/{project}/services/db/status"))
        .await;
    let container = status["instance"].as_str().unwrap().to_owned();
    let sql = |q: &str| psql(&container, &password, q);
    sql("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('in the dump')");
    let (ok, out) = server.cli(&["db", "backup", "db", "-p", &project]);
    assert!(ok, "wharf db backup failed:\n{out}");
    let id = out
        .split("wharf backup restore ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no backup id in {out}"))
        .to_owned();
    sql("DROP TABLE notes");
    let (ok, out) = server.cli(&["backup", "restore", &id, "--confirm", "db", "-p", &project]);
    assert!(ok, "wharf backup restore failed:\n{out}");
    assert_eq!(sql("SELECT body FROM notes"), "in the dump");
    let (_, list) = server.read(&format!("/projects/{project}/backups")).await;
    assert_eq!(list[0]["source"], "postgres_dump", "{list}");
    assert!(!list.to_string().contains(&password));

    // The server's log never shows it either.
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();
    assert!(!log.contains(&password), "serve.log shows the password");

    // A new password: set in the server, recorded, and cascaded to the service that
    // references it, whose DATABASE_URL then carries it; the old one no longer works.
    let (ok, out) = server.cli(&["db", "rotate", "db", "-p", &project]);
    assert!(ok, "wharf db rotate failed:\n{out}");
    assert!(
        out.contains("api: live") && out.contains("db: live"),
        "{out}"
    );
    let (_, creds) = server
        .read(&format!("/projects/{project}/databases/db/credentials"))
        .await;
    let rotated = creds["password"].as_str().unwrap().to_owned();
    assert_ne!(rotated, password);
    let new_url = creds["url"].as_str().unwrap().to_owned();
    assert_eq!(
        server.get(&format!("api.{project}.localhost:{port}")).await,
        (200, format!("{new_url}|N"))
    );
    let (_, status) = server
        .read(&format!("/projects/{project}/services/db/status"))
        .await;
    let container = status["instance"].as_str().unwrap().to_owned();
    let login = |pw: &str| {
        std::process::Command::new("docker")
            .args(["exec", "-e", "PGPASSWORD", &container])
            .args([
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "db",
                "-d",
                "db",
                "-tAc",
                "SELECT body FROM notes",
            ])
            .env("PGPASSWORD", pw)
            .output()
            .unwrap()
    };
    assert!(
        !login(&password).status.success(),
        "the old password still logs in"
    );
    let out = login(&rotated);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "in the dump");
    let log = std::fs::read_to_string(tmp.path().join("serve.log")).unwrap_or_default();
    assert!(!log.contains(&rotated), "serve.log shows the new password");

    let s = server
        .delete(&format!(
            "/projects/{project}?volumes=delete&confirm={project}"
        ))
        .await;
    assert_eq!(s, 204);
    let left = std::process::Command::new("docker")
        .args(["volume", "ls", "-q"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout).into_owned();
    assert!(!left.contains(&project), "volumes left: {left}");
}

/// MariaDB through the API and Redis through `wharf db create` on Docker: each goes
/// live on its protocol probe (the MySQL greeting, Redis `PING`), its credentials
/// name its engine's URL, and its data comes back from a backup through the API (a
/// MariaDB dump; Redis' volume, restored with the database restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_and_redis_databases_go_live_on_their_probes() {
    if !ready() {
        return;
    }
    for image in ["wharf-local/mariadb:10.11", "wharf-local/redis:7"] {
        let ok = std::process::Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|o| o.status.success());
        let why = Err(format!("{image} is missing: run scripts/base-images"));
        if !require("docker", if ok { Ok(()) } else { why }) {
            return;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        tmp.path(),
        free_port(),
        &[
            ("WHARF_RUNTIME", "docker"),
            ("WHARF_ROUTER", "builtin"),
            ("WHARF_DATABASE_IMAGES", "local"),
        ],
    );
    server.wait_ready(tmp.path()).await;
    let project = unique("dbmr");
    let (s, b) = server
        .call(reqwest::Method::POST, "/projects", json!({"name": project}))
        .await;
    assert_eq!(s, 201, "{b}");
    let mut creds = Vec::new();
    for (name, engine, scheme, port) in [
        ("shop", "mysql", "mysql", 3306),
        ("cache", "redis", "redis", 6379),
    ] {
        let deployment = if engine == "redis" {
            let (ok, out) = server.cli(&["db", "create", name, "--engine", engine, "-p", &project]);
            assert!(ok, "{out}");
            assert!(
                out.contains("other services connect with ${{ cache.REDIS_URL }}"),
                "{out}"
            );
            let (_, list) = server.read(&format!("/projects/{project}/databases")).await;
            let id = out
                .split_whitespace()
                .find(|w| w.starts_with("dep_"))
                .unwrap_or_else(|| panic!("no deployment id in {out} ({list})"));
            id.to_owned()
        } else {
            let (s, db) = server
                .call(
                    reqwest::Method::POST,
                    &format!("/projects/{project}/databases"),
                    json!({"name": name, "engine": engine}),
                )
                .await;
            assert_eq!(s, 201, "{db}");
            db["deployment"].as_str().unwrap().to_owned()
        };
        let (state, dep) = ended(&server, &deployment).await;
        assert_eq!(state, "live", "{engine}: {dep}");
        let (s, c) = server
            .read(&format!("/projects/{project}/databases/{name}/credentials"))
            .await;
        assert_eq!(s, 200, "{c}");
        let url = c["url"].as_str().unwrap();
        let user = c["user"].as_str().unwrap();
        let password = c["password"].as_str().unwrap();
        let database = c["database"].as_str().unwrap();
        assert_eq!(
            url,
            format!("{scheme}://{user}:{password}@{name}:{port}/{database}")
        );
        creds.push((name, engine, c.clone()));
    }

    // The backup cycle through the API: data written, backed up (a dump of MariaDB;
    // Redis' volume), changed, restored, read back.
    let (s, b) = server
        .call(
            reqwest::Method::PUT,
            &format!("/projects/{project}/backups/settings"),
            json!({"destination": {"kind": "local"}}),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    for (name, engine, c) in &creds {
        let (_, status) = server
            .read(&format!("/projects/{project}/services/{name}/status"))
            .await;
        let container = status["instance"].as_str().unwrap().to_owned();
        let password = c["password"].as_str().unwrap();
        let exec = |cmd: &[&str]| {
            let out = std::process::Command::new("docker")
                .args(["exec", "-e", "MYSQL_PWD", "-e", "REDISCLI_AUTH", &container])
                .args(cmd)
                .env("MYSQL_PWD", password)
                .env("REDISCLI_AUTH", password)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let (user, database) = (c["user"].as_str().unwrap(), c["database"].as_str().unwrap());
        let mysql = |sql: &str| exec(&["mariadb", "-u", user, "-N", "-D", database, "-e", sql]);
        let (backup, confirm, restart) = if *engine == "mysql" {
            mysql("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('in the dump')");
            let (s, b) = server
                .call(
                    reqwest::Method::POST,
                    &format!("/projects/{project}/databases/{name}/backups"),
                    json!({}),
                )
                .await;
            assert_eq!((s, b["state"].as_str()), (201, Some("succeeded")), "{b}");
            assert_eq!(b["source"], "mysql_dump", "{b}");
            let (s, c) = server
                .call(
                    reqwest::Method::POST,
                    &format!(
                        "/projects/{project}/backups/{}/check",
                        b["id"].as_str().unwrap()
                    ),
                    json!({}),
                )
                .await;
            assert_eq!((s, c["tables"].as_u64()), (200, Some(1)), "{c}");
            // The scratch database is gone again; the live one untouched.
            let dbs = exec(&["mariadb", "-N", "-e", "SHOW DATABASES"]);
            assert!(!dbs.contains("wharf_check_"), "{dbs}");
            assert_eq!(mysql("SELECT body FROM notes"), "in the dump");
            mysql("DROP TABLE notes");
            (b, name.to_string(), false)
        } else {
            exec(&["redis-cli", "SET", "note", "in the backup"]);
            exec(&["redis-cli", "SAVE"]);
            // Redis has no dump of its own: its volume is backed up.
            let (s, b) = server
                .call(
                    reqwest::Method::POST,
                    &format!("/projects/{project}/databases/{name}/backups"),
                    json!({}),
                )
                .await;
            assert_eq!(s, 501, "{b}");
            assert!(b.to_string().contains("back up its volume"), "{b}");
            let volume = format!("{name}-data");
            let (s, b) = server
                .call(
                    reqwest::Method::POST,
                    &format!("/projects/{project}/backups"),
                    json!({"volume": volume}),
                )
                .await;
            assert_eq!((s, b["state"].as_str()), (201, Some("succeeded")), "{b}");
            // A volume backup has no restore check.
            let (s, c) = server
                .call(
                    reqwest::Method::POST,
                    &format!(
                        "/projects/{project}/backups/{}/check",
                        b["id"].as_str().unwrap()
                    ),
                    json!({}),
                )
                .await;
            assert_eq!(s, 409, "{c}");
            exec(&["redis-cli", "SET", "note", "changed since"]);
            (b, volume, true)
        };
        let (s, b) = server
            .call(
                reqwest::Method::POST,
                &format!(
                    "/projects/{project}/backups/{}/restore",
                    backup["id"].as_str().unwrap()
                ),
                json!({"confirm": confirm, "restart": restart}),
            )
            .await;
        assert_eq!(s, 204, "{engine}: {b}");
        if *engine == "mysql" {
            assert_eq!(mysql("SELECT body FROM notes"), "in the dump");
        } else {
            // Restarted on its release: a new container, reading the restored volume.
            let (_, status) = server
                .read(&format!("/projects/{project}/services/{name}/status"))
                .await;
            let after = status["instance"].as_str().unwrap().to_owned();
            assert_ne!(after, container);
            let out = std::process::Command::new("docker")
                .args(["exec", "-e", "REDISCLI_AUTH", &after])
                .args(["redis-cli", "GET", "note"])
                .env("REDISCLI_AUTH", password)
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "in the backup");
        }
    }

    // Redis takes a new password too (CONFIG SET on redis-cli's stdin), and keeps it
    // when it starts again (its configuration is made from the recorded one).
    let (ok, out) = server.cli(&["db", "rotate", "cache", "-p", &project]);
    assert!(ok, "wharf db rotate cache failed:\n{out}");
    let (_, c) = server
        .read(&format!("/projects/{project}/databases/cache/credentials"))
        .await;
    let (_, status) = server
        .read(&format!("/projects/{project}/services/cache/status"))
        .await;
    let container = status["instance"].as_str().unwrap().to_owned();
    let ping = |pw: &str| {
        let out = std::process::Command::new("docker")
            .args([
                "exec",
                "-e",
                "REDISCLI_AUTH",
                &container,
                "redis-cli",
                "PING",
            ])
            .env("REDISCLI_AUTH", pw)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(ping(c["password"].as_str().unwrap()), "PONG");
    let old = creds.iter().find(|(n, _, _)| *n == "cache").unwrap().2["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(ping(&old), "PONG");
    let s = server
        .delete(&format!(
            "/projects/{project}?volumes=delete&confirm={project}"
        ))
        .await;
    assert_eq!(s, 204);
}

/// A web app that keeps notes in PostgreSQL through its own connection (`psql` with
/// the `PG*` variables from `DATABASE_URL`, the password never on a command line):
/// `/write?v=X` adds a note, `/` lists them (500 when the table is gone), `/drop`
/// drops the table, `/health` answers 200. Built from a Dockerfile on the local
/// PostgreSQL image, which has python3 and psql.
fn notes_app(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM wharf-local/postgres:15\nCOPY app.py /srv/app.py\nENTRYPOINT []\n\
         EXPOSE 8000\nCMD [\"python3\", \"/srv/app.py\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("app.py"),
        r#"import os, subprocess, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

u = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
PG = dict(os.environ, PGHOST=u.hostname, PGPORT=str(u.port),
          PGUSER=urllib.parse.unquote(u.username), PGPASSWORD=urllib.parse.unquote(u.password),
          PGDATABASE=u.path.lstrip("/"))

def sql(q):
    r = subprocess.run(["psql", "-v", "ON_ERROR_STOP=1", "-tAc", q], env=PG,
                       capture_output=True, text=True)
    return r.returncode, (r.stdout if r.returncode == 0 else r.stderr).strip()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.urlsplit(self.path)
        args = urllib.parse.parse_qs(q.query)
        if q.path == "/health":
            code, out = 0, "ok"
        elif q.path == "/write":
            v = args["v"][0].replace("'", "''")
            code, out = sql(f"CREATE TABLE IF NOT EXISTS notes (body TEXT); INSERT INTO notes VALUES ('{v}')")
        elif q.path == "/drop":
            code, out = sql("DROP TABLE notes")
        else:
            code, out = sql("SELECT coalesce(string_agg(body, ',' ORDER BY body), '') FROM notes")
        body = out.encode()
        self.send_response(200 if code == 0 else 500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
"#,
    )
    .unwrap();
}

/// Issue 17's "done when" on Docker: from one wharf.toml, a web app and a PostgreSQL
/// database with `DATABASE_URL = "${{ db.DATABASE_URL }}"`; the app writes a row
/// through its own connection; a redeploy and a rollback keep it; a dump goes to the
/// S3 server (moto); the table is dropped; a restore brings the row back, read
/// through the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_app_and_its_postgres_keep_data_through_redeploy_rollback_and_an_s3_restore() {
    if !ready() {
        return;
    }
    let s3 = wharf_testkit::s3_addr();
    if !require("s3", wharf_testkit::probe_s3(&s3).await) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{s3}");
    let mut server = Server::start_with(
        tmp.path(),
        free_port(),
        &[
            ("WHARF_RUNTIME", "docker"),
            ("WHARF_ROUTER", "builtin"),
            ("WHARF_DATABASE_IMAGES", "local"),
            ("WHARF_BACKUP_ENDPOINTS", endpoint.as_str()),
        ],
    );
    server.wait_ready(tmp.path()).await;
    let project = unique("done");
    let root = tmp.path().join(&project);
    notes_app(&root.join("web"));
    std::fs::write(
        root.join("wharf.toml"),
        format!(
            r#"project = "{project}"

[databases.db]
engine = "postgres"

[services.web]
path = "web"
port = 8000
health_path = "/health"
env = {{ DATABASE_URL = "${{{{ db.DATABASE_URL }}}}" }}
"#
        ),
    )
    .unwrap();
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    let host = format!("web.{project}.localhost:{}", server.proxy_port);
    let (status, body) = server.get_path(&host, "/write?v=kept").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get(&host).await, (200, "kept".into()));

    // A redeploy (the database is kept as it is) and a rollback keep the row.
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "second wharf deploy failed:\n{out}");
    assert_eq!(server.get(&host).await, (200, "kept".into()));
    let (ok, out) = server.cli(&["rollback", &project, "web", "--release", "1"]);
    assert!(ok, "wharf rollback failed:\n{out}");
    assert_eq!(server.get(&host).await, (200, "kept".into()));

    // A dump to the S3 server.
    let bucket = format!("wharf-{}", project.to_ascii_lowercase());
    wharf_testkit::s3_create_bucket(&s3, &bucket).await;
    let (s, b) = server
        .call(
            reqwest::Method::PUT,
            &format!("/projects/{project}/backups/settings"),
            json!({"destination": {"kind": "s3", "endpoint": endpoint, "bucket": bucket,
                "access_key_id": "testing", "secret_access_key": "testing-secret"}}),
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (ok, out) = server.cli(&["db", "backup", "db", "-p", &project]);
    assert!(ok, "wharf db backup failed:\n{out}");
    let id = out
        .split("wharf backup restore ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no backup id in {out}"))
        .to_owned();
    let (_, list) = server.read(&format!("/projects/{project}/backups")).await;
    assert_eq!(list[0]["state"], "succeeded", "{list}");
    assert_eq!(list[0]["source"], "postgres_dump", "{list}");
    // The restore check: into a scratch database beside the live one, which it
    // leaves alone.
    let (ok, out) = server.cli(&["backup", "check", &id, "-p", &project]);
    assert!(ok, "wharf backup check failed:\n{out}");
    assert!(
        out.contains("restore check passed") && out.contains("(1 tables)"),
        "{out}"
    );
    assert_eq!(server.get(&host).await, (200, "kept".into()));

    // The table is dropped; the restore brings the row back, read through the app.
    assert_eq!(server.get_path(&host, "/drop").await.0, 200);
    let (status, body) = server.get(&host).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("notes"), "{body}");
    let (ok, out) = server.cli(&["backup", "restore", &id, "--confirm", "db", "-p", &project]);
    assert!(ok, "wharf backup restore failed:\n{out}");
    assert_eq!(server.get(&host).await, (200, "kept".into()));

    let s = server
        .delete(&format!(
            "/projects/{project}?volumes=delete&confirm={project}"
        ))
        .await;
    assert_eq!(s, 204);
}
