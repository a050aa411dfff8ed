//! The dashboard in a real browser: `wharf serve` (host-process runtime, built-in
//! proxy) with a python3 app deployed twice, then headless Chromium driven through
//! chromedriver's W3C WebDriver HTTP API. The test signs in, reads the project, the
//! service's live status and its deployment history from the DOM, clicks Rollback on
//! the first release, and checks through the API, through the proxy and on the page
//! that the first version serves again. A screenshot is kept at
//! `<target>/test-artifacts/dashboard.png`.

mod common;

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::Server;
use serde_json::{json, Value};
use wharf_testkit::{command_runs, free_port, hello_app, python_present, require};

/// The flags the project runs Chromium with in tests (see ENVIRONMENT.md).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1360,1000",
];

/// How long any one thing may take to show up before the test gives up on it.
const PATIENCE: Duration = Duration::from_secs(90);

fn components_present() -> bool {
    if !python_present() {
        return false;
    }
    let runs = |program| command_runs(program, &["--version"], "scripts/setup-chromium");
    let browser = runs("chromium").and_then(|()| runs("chromedriver"));
    require("chromium", browser)
}

/// Waits until `probe` yields a value, or panics after [`PATIENCE`] saying what it
/// waited for and what it saw last.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("gave up waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The operator token `wharf serve` wrote into its data folder.
fn operator_token(server: &Server) -> String {
    std::fs::read_to_string(server.data.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A GET of the API with the operator token.
async fn api_get(server: &Server, path: &str) -> Value {
    let r = reqwest::Client::new()
        .get(format!("{}/v1{path}", server.api))
        .bearer_auth(operator_token(server))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "GET {path}: {}", r.status());
    r.json().await.unwrap()
}

/// chromedriver on a free loopback port, in a process group of its own so that the
/// browser it starts goes down with it.
struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    session: Option<String>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The W3C WebDriver key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Driver {
    async fn start(log: &Path) -> Driver {
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            session: None,
        };
        eventually("chromedriver to be ready", || {
            let req = driver.http.get(format!("{}/status", driver.url)).send();
            async move {
                let v: Value = req
                    .await
                    .map_err(|e| e.to_string())?
                    .json()
                    .await
                    .map_err(|e| e.to_string())?;
                if v["value"]["ready"] == true {
                    Ok(())
                } else {
                    Err(v.to_string())
                }
            }
        })
        .await;
        driver
    }

    /// One WebDriver command: its `value`, or the WebDriver error as `Err`.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = match &self.session {
            Some(s) => format!("{}/session/{s}{path}", self.url),
            None => format!("{}{path}", self.url),
        };
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.map_err(|e| e.to_string())?;
        let ok = r.status().is_success();
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["value"]["error"].as_str().unwrap_or("?"),
                v["value"]["message"].as_str().unwrap_or("?")
            ))
        }
    }

    async fn new_session(&mut self, profile: &Path) {
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": args}
        }}});
        let v = self
            .send(reqwest::Method::POST, "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"));
        self.session = Some(v["sessionId"].as_str().unwrap().to_owned());
    }

    async fn end_session(&mut self) {
        if self.session.is_some() {
            let _ = self.send(reqwest::Method::DELETE, "", None).await;
            self.session = None;
        }
    }

    async fn go(&self, url: &str) {
        self.send(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .unwrap();
    }

    /// Runs `script` in the page with `args`; returns its result.
    async fn script(&self, script: &str, args: Value) -> Result<Value, String> {
        self.send(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// The text of the first element matching `css` (`None` when there is none).
    async fn text(&self, css: &str) -> Result<Option<String>, String> {
        let v = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                json!([css]),
            )
            .await?;
        Ok(v.as_str().map(str::to_owned))
    }

    /// How many elements match `css`.
    async fn count(&self, css: &str) -> Result<u64, String> {
        let v = self
            .script(
                "return document.querySelectorAll(arguments[0]).length;",
                json!([css]),
            )
            .await?;
        Ok(v.as_u64().unwrap_or(0))
    }

    async fn find(&self, css: &str) -> Result<String, String> {
        let v = self
            .send(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        v[ELEMENT]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no element reference in {v}"))
    }

    /// Clicks the element matching `css` like a user (the browser checks it is shown
    /// and not covered).
    async fn click(&self, css: &str) -> Result<(), String> {
        let id = self.find(css).await?;
        self.send(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await.unwrap();
        self.send(
            reqwest::Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await
        .unwrap();
        self.send(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .unwrap();
    }

    /// Waits until the element matching `css` shows text containing `needle`.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        eventually(&format!("{css:?} to show {needle:?}"), || async {
            match self.text(css).await? {
                Some(t) if t.contains(needle) => Ok(t),
                other => Err(format!("{other:?}")),
            }
        })
        .await
    }

    /// Saves a screenshot as `<target>/test-artifacts/<name>` and prints its path.
    async fn keep_screenshot(&self, name: &str) {
        let png = self.screenshot().await;
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, &png).unwrap();
        println!("dashboard screenshot: {}", path.display());
    }

    async fn screenshot(&self) -> Vec<u8> {
        let v = self
            .send(reqwest::Method::GET, "/screenshot", None)
            .await
            .unwrap();
        base64_decode(v.as_str().expect("screenshot is a base64 string"))
    }
}

/// Standard base64 (with padding), as WebDriver encodes screenshots.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// `<target dir>/test-artifacts`, where CI keeps what tests leave for people to look at.
fn artifacts_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| workspace.join(t))
        .unwrap_or_else(|| workspace.join("target"));
    target.join("test-artifacts")
}

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8h"), b"hello!");
    assert_eq!(base64_decode("aGk="), b"hi");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}

#[tokio::test]
async fn dashboard_shows_history_and_rolls_back_in_headless_chromium() {
    if !components_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("shop").join("web");
    std::fs::create_dir_all(&app).unwrap();
    // The app says hello on its output, for the dashboard's app log viewer.
    std::fs::write(
        app.join("app.py"),
        format!("print('web app booting', flush=True)\n{}", hello_app()),
    )
    .unwrap();

    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    let host = format!("web.shop.localhost:{}", server.proxy_port);
    for version in ["v1", "v2"] {
        std::fs::write(app.join("version.txt"), format!("{version}\n")).unwrap();
        let (ok, out) = server.cli(&["deploy", app.to_str().unwrap()]);
        assert!(ok, "wharf deploy of {version} failed:\n{out}");
        assert_eq!(
            server.get(&host).await,
            (200, format!("hello from {version}\n"))
        );
    }
    let releases = api_get(&server, "/projects/shop/services/web/releases").await;
    let first = releases
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["number"] == 1)
        .expect("release #1")
        .clone();

    let mut driver = Driver::start(&tmp.path().join("chromedriver.log")).await;
    let profile = tmp.path().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    driver.new_session(&profile).await;
    driver.go(&format!("{}/", server.api)).await;
    assert_eq!(
        driver.text("h1").await.unwrap().as_deref(),
        Some("Wharf"),
        "the dashboard page did not load"
    );

    // A wrong token is refused with the API's own message, on the page.
    driver.type_into("#token", "not-a-token").await;
    driver.click("#login button").await.unwrap();
    let error = driver.wait_text("#error", "unknown token").await;
    assert!(error.contains("unauthorized"), "{error}");

    // The operator's token signs in; the project and its service appear.
    let token = operator_token(&server);
    driver.type_into("#token", &token).await;
    driver.click("#login button").await.unwrap();
    let card = r#"[data-service="shop/web"]"#;
    driver
        .wait_text(r#"[data-project="shop"] > h2"#, "shop")
        .await;
    driver.wait_text(&format!("{card} h3"), "web").await;
    assert_eq!(driver.text("#error").await.unwrap().as_deref(), Some(""));

    // Live status: live on release #2, and the URL through the proxy.
    driver.wait_text(&format!("{card} .status"), "live").await;
    driver
        .wait_text(&format!("{card} .status-detail"), "release #2")
        .await;
    driver
        .wait_text(&format!("{card} .status-detail"), "healthy")
        .await;
    driver
        .wait_text(&format!("{card} .url"), &format!("http://{host}"))
        .await;

    let deployments = format!("{card} table.deployments tr[data-deployment]");
    // Both deployments are in the history, the newest live and the first superseded.
    assert_eq!(driver.count(&deployments).await.unwrap(), 2);
    let history = driver
        .text(&format!("{card} table.deployments tbody"))
        .await
        .unwrap()
        .unwrap();
    let rows: Vec<&str> = history.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(rows.len() >= 2, "{history}");
    assert!(rows[0].contains("live"), "{history}");
    assert!(rows[1].contains("superseded"), "{history}");
    assert!(history.contains("upload"), "{history}");

    // The event viewer follows the latest deployment: its steps up to live.
    driver.wait_text("#log", "routing \u{2192} live").await;
    assert!(driver
        .text("#log")
        .await
        .unwrap()
        .unwrap()
        .contains("building"));

    // Rollback on release #1 asks once more, then rolls back.
    let release1 = format!("{card} table.releases tr[data-release=\"1\"] button.rollback");
    driver.click(&release1).await.unwrap();
    driver.wait_text(&release1, "Confirm rollback to #1").await;
    driver.click(&release1).await.unwrap();

    // The API: a rollback deployment of release #1 goes live ...
    let live = eventually("the rollback to go live", || async {
        let s = api_get(&server, "/projects/shop/services/web").await;
        let Some(id) = s["live_deployment"].as_str() else {
            return Err(s.to_string());
        };
        let d = api_get(&server, &format!("/deployments/{id}")).await;
        if d["trigger"]["kind"] == "rollback" && d["state"]["state"] == "live" {
            Ok(d)
        } else {
            Err(d.to_string())
        }
    })
    .await;
    assert_eq!(live["trigger"]["release"], first["id"], "{live}");
    // ... the proxy serves v1 again ...
    assert_eq!(server.get(&host).await, (200, "hello from v1\n".into()));
    // ... and the page says so.
    driver
        .wait_text(&format!("{card} .status-detail"), "rollback to #1")
        .await;
    driver.wait_text(&format!("{card} .status"), "live").await;
    driver
        .wait_text(
            &format!("{card} table.releases tr.is-live"),
            "#3 (rollback to #1)",
        )
        .await;
    driver
        .wait_text(
            &format!("{card} table.deployments tbody tr"),
            "rollback to #1",
        )
        .await;
    driver.wait_text("#notice", "back to release #1").await;
    driver.wait_text("#logfor", "rollback to #1").await;
    driver.wait_text("#log", "routing \u{2192} live").await;
    assert_eq!(driver.count(&deployments).await.unwrap(), 3);

    // The token never went into a URL.
    let href = driver
        .script("return location.href;", json!([]))
        .await
        .unwrap();
    assert!(!href.as_str().unwrap().contains(&token), "{href}");

    driver.keep_screenshot("dashboard.png").await;

    // Redeploy (asks once more too) builds the current source, v2, as release #4.
    let redeploy = format!("{card} button.redeploy");
    driver.click(&redeploy).await.unwrap();
    driver.wait_text(&redeploy, "Confirm redeploy").await;
    driver.click(&redeploy).await.unwrap();
    driver
        .wait_text(&format!("{card} .status-detail"), "release #4")
        .await;
    assert_eq!(server.get(&host).await, (200, "hello from v2\n".into()));
    driver.wait_text("#logfor", "redeploy").await;
    driver.wait_text("#log", "routing \u{2192} live").await;

    // A deploy started elsewhere (the CLI) shows up while it runs: v3 takes six
    // seconds to answer (longer than the idle poll), and meanwhile the page says so
    // and that #4 still serves.
    std::fs::write(app.join("version.txt"), "v3\n").unwrap();
    // v3 also dies with exit code 3 once `stop` exists (and at once if it already does),
    // so that the test can end it the way an app ends: on its own, and for good. The
    // folder is readable by every uid, as the app may run as its project's own user.
    let stop_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(stop_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let stop = stop_dir.path().join("stop");
    std::fs::write(
        app.join("app.py"),
        format!(
            "import os, sys, threading, time\n\
             STOP = {stop:?}\n\
             if os.path.exists(STOP): sys.exit(3)\n\
             def watch():\n    \
                 while not os.path.exists(STOP): time.sleep(0.2)\n    \
                 os._exit(3)\n\
             threading.Thread(target=watch, daemon=True).start()\n\
             time.sleep(6)\nprint('web app booting', flush=True)\n{}",
            hello_app()
        ),
    )
    .unwrap();
    let deploy = std::thread::spawn({
        let api = server.api.clone();
        let dir = tmp.path().to_owned();
        let app = app.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_wharf"))
                .arg("deploy")
                .arg(&app)
                .env("WHARF_SERVER", api)
                .current_dir(dir)
                .env_remove("WHARF_DATA_DIR")
                .output()
                .unwrap()
        }
    });
    driver
        .wait_text(&format!("{card} .status"), "deploying")
        .await;
    driver
        .wait_text(
            &format!("{card} .status-detail"),
            "health checking \u{b7} upload",
        )
        .await;
    driver
        .wait_text(
            &format!("{card} .status-detail"),
            "release #4 serves meanwhile",
        )
        .await;
    let out = tokio::task::spawn_blocking(move || deploy.join().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    driver
        .wait_text(&format!("{card} .status-detail"), "release #5")
        .await;
    assert_eq!(server.get(&host).await, (200, "hello from v3\n".into()));

    // Data shows as text, never as markup: a service (in a staging environment) whose
    // git URL holds HTML (a loopback URL nothing listens on, so it fails at once).
    let evil = "http://127.0.0.1:9/<img src=x id=injected>.git";
    let admin = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Value| {
        admin
            .request(method, format!("{}/v1{path}", server.api))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = call(reqwest::Method::POST, "/projects", json!({"name": "lab"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = call(
        reqwest::Method::POST,
        "/projects/lab/environments",
        json!({"name": "staging"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = call(
        reqwest::Method::PUT,
        "/projects/lab/environments/staging/services/odd",
        json!({"source": {"git": {"url": evil}}, "port": 8080}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = call(
        reqwest::Method::POST,
        "/projects/lab/environments/staging/services/odd/deployments",
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    // It lives in an environment: the card says which, and reads its paths.
    let odd = r#"[data-service="lab/staging/odd"]"#;
    driver.wait_text(&format!("{odd} .status"), "failed").await;
    driver.wait_text(&format!("{odd} .env"), "staging").await;
    driver
        .wait_text(
            &format!("{odd} table.deployments"),
            "<img src=x id=injected>",
        )
        .await;
    assert_eq!(driver.count("#injected, #projects img").await.unwrap(), 0);
    // The failure's events.
    driver.click(&format!("{odd} button.events")).await.unwrap();
    driver.wait_text("#log", "failed").await;

    // The live app's own output.
    driver
        .click(&format!("{card} button.app-logs"))
        .await
        .unwrap();
    driver.wait_text("#logfor", "app output").await;
    driver.wait_text("#log", "web app booting").await;

    // The live status is the runtime's: when the app dies, the page says so unasked.
    std::fs::write(&stop, "").unwrap();
    driver.wait_text(&format!("{card} .status"), "down").await;
    driver
        .wait_text(
            &format!("{card} .status-detail"),
            "instance exited (code 3)",
        )
        .await;
    // Both kinds of trouble, as the operator sees them.
    driver.keep_screenshot("dashboard-failure.png").await;

    driver.end_session().await;
}

/// Issue 17's dashboard part on the host runtime: a project's volume with who mounts
/// it and its last backup; Back up now; Restore (two clicks) under the live app, which
/// the server stops and starts again, and the app reads the backed-up data.
#[tokio::test]
async fn dashboard_backs_up_and_restores_a_volume_in_headless_chromium() {
    if !components_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("vault");
    std::fs::create_dir_all(root.join("notes")).unwrap();
    std::fs::write(
        root.join("wharf.toml"),
        "project = \"vault\"\n[services.notes]\npath = \"notes\"\n\
         volumes = [{ name = \"data\", mount = \"/data\" }]\n",
    )
    .unwrap();
    // The app keeps one note in its volume: GET shows it, GET /?write=X replaces it.
    std::fs::write(
        root.join("notes").join("app.py"),
        wharf_testkit::python_app(
            "from urllib.parse import urlparse, parse_qs\n\
             NOTE = os.path.join(os.environ[\"WHARF_VOLUME_DATA\"], \"note\")\n\
             if not os.path.exists(NOTE): open(NOTE, \"w\").write(\"first\")",
            "q = parse_qs(urlparse(self.path).query)\n\
             if \"write\" in q: open(NOTE, \"w\").write(q[\"write\"][0])\n\
             body = open(NOTE).read().encode()",
        ),
    )
    .unwrap();
    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    let host = format!("notes.vault.localhost:{}", server.proxy_port);
    assert_eq!(server.get(&host).await, (200, "first".into()));
    let token = operator_token(&server);
    let r = reqwest::Client::new()
        .put(format!("{}/v1/projects/vault/backups/settings", server.api))
        .bearer_auth(&token)
        .json(&json!({"destination": {"kind": "local"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let mut driver = Driver::start(&tmp.path().join("chromedriver.log")).await;
    let profile = tmp.path().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    driver.new_session(&profile).await;
    driver.go(&format!("{}/", server.api)).await;
    driver.type_into("#token", &token).await;
    driver.click("#login button").await.unwrap();
    let row = r#"[data-data="vault"] tr[data-volume="data"]"#;
    driver.wait_text(row, "notes:/data").await;
    driver
        .wait_text(&format!("{row} .last-backup"), "never")
        .await;

    // Back up now: the row says it succeeded.
    driver
        .click(&format!("{row} button.backup-now"))
        .await
        .unwrap();
    driver
        .wait_text(&format!("{row} .last-backup"), "succeeded")
        .await;
    driver.wait_text("#notice", "succeeded").await;

    // A volume of the same name in an environment since deleted: its backup is
    // offered on its own row only, never on the project's volume (both show no
    // environment; the scope tells them apart).
    let own = api_get(&server, "/projects/vault/backups").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, out) = server.cli(&["deploy", root.to_str().unwrap(), "-e", "staging"]);
    assert!(ok, "wharf deploy -e staging failed:\n{out}");
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/v1/projects/vault/backups", server.api))
        .bearer_auth(&token)
        .json(&json!({"volume": "data", "environment": "staging"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let staged: Value = r.json().await.unwrap();
    assert_eq!(staged["state"], "succeeded", "{staged}");
    let r = http
        .delete(format!(
            "{}/v1/projects/vault/environments/staging",
            server.api
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let orphan = r#"[data-data="vault"] tr[data-volume="wharf-vault_staging/data"]"#;
    driver.wait_text(orphan, "environment deleted").await;
    for (row, id) in [
        (row, own.as_str()),
        (orphan, staged["id"].as_str().unwrap()),
    ] {
        let offered = format!("{row} button.restore[data-backup=\"{id}\"]");
        eventually(&format!("{offered} to be there"), || async {
            match driver.count(&offered).await? {
                1 => Ok(()),
                n => Err(format!("{n} such buttons")),
            }
        })
        .await;
    }

    // The app changes its data; Restore asks once more, naming what it restarts.
    assert_eq!(
        server.get_path(&host, "/?write=second").await,
        (200, "second".into())
    );
    let restore = format!("{row} button.restore");
    driver.click(&restore).await.unwrap();
    driver.wait_text(&restore, "(restarts notes)").await;
    driver.click(&restore).await.unwrap();
    driver.wait_text("#notice", "holds the backup").await;
    assert_eq!(driver.text("#error").await.unwrap().as_deref(), Some(""));
    // The button is ready again (a card that did not change is not redrawn).
    driver.wait_text(&restore, "Restore").await;
    // Stopped, restored and started again: the app reads the backed-up note.
    assert_eq!(server.get(&host).await, (200, "first".into()));
    driver
        .wait_text(r#"[data-service="vault/notes"] .status"#, "live")
        .await;
    driver.keep_screenshot("dashboard-data.png").await;
    driver.end_session().await;
}

/// The Data card's databases on Docker: a PostgreSQL database with its engine and
/// reference, Back up now (a dump), and Restore (two clicks) bringing a dropped table
/// back.
#[tokio::test]
async fn dashboard_dumps_and_restores_a_database_in_headless_chromium() {
    if !components_present() {
        return;
    }
    let image_ok = std::process::Command::new("docker")
        .args(["image", "inspect", "wharf-local/postgres:15"])
        .output()
        .is_ok_and(|o| o.status.success());
    let why = Err("Docker with wharf-local/postgres:15 (scripts/base-images)".to_owned());
    if !require("docker", if image_ok { Ok(()) } else { why }) {
        return;
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
    let project = wharf_testkit::unique("dashdb");
    let token = operator_token(&server);
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        http.post(format!("{}/v1{path}", server.api))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = post("/projects".into(), json!({"name": project}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = post(
        format!("/projects/{project}/databases"),
        json!({"name": "db", "engine": "postgres"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = http
        .put(format!(
            "{}/v1/projects/{project}/backups/settings",
            server.api
        ))
        .bearer_auth(&token)
        .json(&json!({"destination": {"kind": "local"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let container = eventually("the database to be live", || async {
        let s = api_get(&server, &format!("/projects/{project}/services/db/status")).await;
        match (s["status"]["kind"].as_str(), s["instance"].as_str()) {
            (Some("healthy"), Some(id)) => Ok(id.to_owned()),
            _ => Err(s.to_string()),
        }
    })
    .await;
    let creds = api_get(
        &server,
        &format!("/projects/{project}/databases/db/credentials"),
    )
    .await;
    let password = creds["password"].as_str().unwrap().to_owned();
    let psql = |sql: &str| {
        let out = Command::new("docker")
            .args(["exec", "-e", "PGPASSWORD", &container])
            .args(["psql", "-h", "127.0.0.1", "-U", "db", "-d", "db", "-v"])
            .args(["ON_ERROR_STOP=1", "-tAc", sql])
            .env("PGPASSWORD", &password)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        )
    };
    assert!(psql("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('kept')").0);

    let mut driver = Driver::start(&tmp.path().join("chromedriver.log")).await;
    let profile = tmp.path().join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    driver.new_session(&profile).await;
    driver.go(&format!("{}/", server.api)).await;
    driver.type_into("#token", &token).await;
    driver.click("#login button").await.unwrap();
    let row = format!(r#"[data-data="{project}"] tr[data-database="db"]"#);
    driver.wait_text(&row, "postgres 15").await;
    driver.wait_text(&row, "${{ db.DATABASE_URL }}").await;
    // Not routed: its card links no URL.
    let card = format!(r#"[data-service="{project}/db"]"#);
    driver.wait_text(&format!("{card} .status"), "live").await;
    assert_eq!(driver.count(&format!("{card} .url")).await.unwrap(), 0);
    driver
        .wait_text(&format!("{row} .last-backup"), "never")
        .await;
    driver
        .click(&format!("{row} button.backup-now"))
        .await
        .unwrap();
    driver
        .wait_text(&format!("{row} .last-backup"), "succeeded")
        .await;

    assert!(psql("DROP TABLE notes").0);
    let restore = format!("{row} button.restore");
    driver.click(&restore).await.unwrap();
    driver.wait_text(&restore, "Confirm restore of db").await;
    driver.click(&restore).await.unwrap();
    driver.wait_text("#notice", "holds the dump").await;
    assert_eq!(driver.text("#error").await.unwrap().as_deref(), Some(""));
    assert_eq!(psql("SELECT body FROM notes"), (true, "kept".to_owned()));
    driver.keep_screenshot("dashboard-database.png").await;
    driver.end_session().await;
    let r = http
        .delete(format!(
            "{}/v1/projects/{project}?volumes=delete&confirm={project}",
            server.api
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

/// The page, script and style come from the binary with a policy that allows no
/// inline script, and the API they call still wants a token.
#[tokio::test]
async fn assets_are_served_with_a_content_security_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    let http = reqwest::Client::new();
    for (path, kind, needle) in [
        ("/", "text/html", "dashboard.js"),
        ("/dashboard.js", "text/javascript", "Authorization"),
        ("/dashboard.css", "text/css", "#log"),
    ] {
        let r = http
            .get(format!("{}{path}", server.api))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert!(r.text().await.unwrap().contains(needle), "{path}");
    }
    let r = http
        .get(format!("{}/v1/projects", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
