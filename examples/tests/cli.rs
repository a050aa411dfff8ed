//! The `wharf` CLI as a user runs it: the real binary against a real `wharf serve`
//! (host-process runtime, built-in proxy), with a private HOME so `wharf login` writes
//! where it would on a workstation. The CLI runs in a folder without `./wharf-data`,
//! so no command can fall back on the operator token file by accident.

mod common;

use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Server;
use wharf_testkit::{bare_clone, git, python_app, python_present, StaticServer};

/// Prints a line at start and one per request, flushed, so the runtime's log file
/// (and `wharf logs`) sees each at once.
fn logging_app() -> String {
    python_app(
        // An escape sequence first (it would retitle the terminal): shown, not acted on.
        r#"print("\x1b]0;owned\x07app started", flush=True)"#,
        r#"print(f"request {self.path}", flush=True)
body = b"ok\n""#,
    )
}

/// A `wharf serve` in `root/srv` and a user whose HOME is `root/home`, `root` a new
/// temporary folder. The server and every app process it started die with the value,
/// then the folder goes.
struct World {
    root: PathBuf,
    /// Kept for its Drop: the server and its apps die with the world.
    _server: Server,
    api: String,
    proxy_port: u16,
    /// Dropped last: removes `root`.
    _tmp: tempfile::TempDir,
}

/// What a CLI run left: success, stdout, stderr.
struct Run {
    ok: bool,
    out: String,
    err: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok: {}\n--- stdout\n{}--- stderr\n{}",
            self.ok, self.out, self.err
        )
    }
}

impl World {
    /// A new world, or `None` (the test skips, saying why) without python3, which
    /// the sample apps need.
    async fn start() -> Option<World> {
        if !python_present() {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let srv = root.join("srv");
        std::fs::create_dir_all(&srv).unwrap();
        std::fs::create_dir_all(root.join("home")).unwrap();
        let mut server = Server::start(&srv);
        server.wait_ready(&srv).await;
        Some(World {
            root,
            api: server.api.clone(),
            proxy_port: server.proxy_port,
            _server: server,
            _tmp: tmp,
        })
    }

    /// [`World::start`], with the user logged in as the operator (no
    /// `XDG_CONFIG_HOME`: the login goes to `~/.config/wharf/login.toml`).
    async fn logged_in() -> Option<World> {
        let w = World::start().await?;
        let r = w.cli(&["login", "--server", &w.api, "--token", &w.admin_token()]);
        assert!(r.ok, "{r}");
        Some(w)
    }

    fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.root.join("srv/wharf-data/admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `wharf ARGS` in folder `dir` as the user: HOME set, no WHARF_* variables but
    /// those in `env`, `stdin` written to its standard input.
    fn command(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
        cmd.args(args)
            .current_dir(dir)
            .env("HOME", self.home())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("WHARF_SERVER")
            .env_remove("WHARF_TOKEN")
            .env_remove("WHARF_DATA_DIR")
            .envs(env.iter().copied());
        cmd
    }

    fn cli_in(&self, dir: &Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
        let mut child = self
            .command(dir, args, env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            out: String::from_utf8_lossy(&out.stdout).into_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `wharf ARGS` in the user's work folder (no `./wharf-data` there).
    fn cli(&self, args: &[&str]) -> Run {
        let work = self.root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        self.cli_in(&work, args, &[], "")
    }

    /// Writes the sample app to `root/work/<project>/<service>`.
    fn app(&self, project: &str, service: &str) -> PathBuf {
        let dir = self.root.join("work").join(project).join(service);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("app.py"), logging_app()).unwrap();
        dir
    }

    async fn get(&self, host: &str, path: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.proxy_port))
            .header("host", host)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn login_stores_a_private_file_that_later_commands_use() {
    let Some(w) = World::start().await else {
        return;
    };
    let xdg = w.home().join("xdg");
    let xdg_env = [("XDG_CONFIG_HOME", xdg.to_str().unwrap())];
    let work = w.root.as_path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let file = xdg.join("wharf/login.toml");

    // Without a login or any token, commands say what to do.
    let r = w.cli_in(&work, &["ls", "--server", &w.api], &xdg_env, "");
    assert!(!r.ok && r.err.contains("wharf login"), "{r}");

    // A token the server does not know is refused, and nothing is stored.
    let bad = "not-a-real-token-0123456789";
    let r = w.cli_in(
        &work,
        &["login", "--server", &w.api, "--token", bad],
        &xdg_env,
        "",
    );
    assert!(!r.ok && r.err.contains("refused the token"), "{r}");
    assert!(!file.exists());
    // So is a server URL that is not one, a server that does not answer, and an
    // empty token.
    let r = w.cli_in(&work, &["login", "--server", "ftp://x"], &xdg_env, "t");
    assert!(!r.ok && r.err.contains("http://"), "{r}");
    let r = w.cli_in(
        &work,
        &["login", "--server", "http://127.0.0.1:9", "--token", bad],
        &xdg_env,
        "",
    );
    assert!(!r.ok && r.err.contains("does not answer"), "{r}");
    let r = w.cli_in(&work, &["login", "--server", &w.api], &xdg_env, "\n");
    assert!(!r.ok && r.err.contains("no token"), "{r}");

    // The operator token, read from stdin, is checked and stored privately.
    let token = w.admin_token();
    let r = w.cli_in(
        &work,
        &["login", "--server", &w.api],
        &xdg_env,
        &format!("{token}\n"),
    );
    assert!(r.ok && r.out.contains("logged in"), "{r}");
    assert_eq!(mode(&file), 0o600, "the login file is the user's alone");
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&w.api) && text.contains(&token), "{text}");
    assert!(!r.out.contains(&token) && !r.err.contains(&token), "{r}");

    // Later commands use the stored server and token: no flag, no WHARF_* variable.
    let app = w.app("shop", "web");
    let r = w.cli_in(&work, &["deploy", app.to_str().unwrap()], &xdg_env, "");
    assert!(r.ok, "deploy with the stored login failed:\n{r}");
    let r = w.cli_in(&work, &["ls"], &xdg_env, "");
    assert!(
        r.ok && r.out.contains("shop") && r.out.contains("web"),
        "{r}"
    );

    // The stored token is only ever sent to the server it was stored for.
    let r = w.cli_in(
        &work,
        &["ls", "--server", "http://127.0.0.1:9"],
        &xdg_env,
        "",
    );
    assert!(!r.ok && r.err.contains("no token"), "{r}");
    // Flags beat the login file.
    let r = w.cli_in(&work, &["ls", "--token", bad], &xdg_env, "");
    assert!(!r.ok && r.err.contains("unauthorized"), "{r}");

    // Logout forgets it.
    let r = w.cli_in(&work, &["logout"], &xdg_env, "");
    assert!(r.ok && !file.exists(), "{r}");
    let r = w.cli_in(&work, &["ls", "--server", &w.api], &xdg_env, "");
    assert!(!r.ok && r.err.contains("no token"), "{r}");
}

#[tokio::test]
async fn env_status_services_and_logs_of_a_live_service() {
    let Some(w) = World::logged_in().await else {
        return;
    };
    assert_eq!(mode(&w.home().join(".config/wharf/login.toml")), 0o600);

    let app = w.app("shop", "web");
    let deployed = w.cli(&["deploy", app.to_str().unwrap()]);
    assert!(deployed.ok, "deploy failed:\n{deployed}");
    let url = format!("http://web.shop.localhost:{}", w.proxy_port);
    assert!(deployed.out.trim_end().ends_with(&url), "{deployed}");

    // In the app's folder, project and service default to shop / web, as for deploy.
    let here = |args: &[&str]| w.cli_in(&app, args, &[], "");

    // env: set, secret, unset, list.
    let r = here(&["env", "set", "MODE=prod", "GREETING=hello world"]);
    assert!(r.ok && r.out.contains("MODE=prod"), "{r}");
    let r = here(&["env", "set", "--secret", "API_KEY=hunter2-secret"]);
    assert!(r.ok && !r.out.contains("hunter2"), "{r}");
    let r = here(&["env", "unset", "MODE"]);
    assert!(r.ok, "{r}");
    let r = here(&["env", "list"]);
    assert!(r.ok, "{r}");
    assert_eq!(
        r.out.lines().collect::<Vec<_>>(),
        ["API_KEY=******** (secret)", "GREETING=hello world"],
        "{r}"
    );
    assert!(!r.out.contains("hunter2") && !r.err.contains("hunter2"));
    // Bad input: a pair without '=', a key that is not set, a key the API refuses.
    let r = here(&["env", "set", "NOEQUALS"]);
    assert!(!r.ok && r.err.contains("KEY=VALUE"), "{r}");
    let r = here(&["env", "unset", "MODE", "GREETING"]);
    assert!(!r.ok && r.err.contains("no env var MODE"), "{r}");
    let r = here(&["env", "list"]);
    assert!(
        r.out.contains("GREETING"),
        "a refused unset removes nothing:\n{r}"
    );
    let r = here(&["env", "set", "1BAD=x"]);
    assert!(!r.ok && r.err.contains("invalid_input"), "{r}");

    // status and services show the live service, with explicit flags too.
    let r = here(&["status"]);
    assert!(r.ok, "{r}");
    let row = r.out.lines().find(|l| l.starts_with("web ")).unwrap_or("");
    assert!(
        row.contains("v1") && row.contains("live") && row.contains(&url),
        "{r}"
    );
    let r = w.cli(&["services", "--project", "shop"]);
    assert!(r.ok, "{r}");
    let row = r.out.lines().find(|l| l.starts_with("web ")).unwrap_or("");
    assert!(row.contains("yes") && row.contains(&url), "{r}");
    let r = w.cli(&["status", "--project", "nothing"]);
    assert!(!r.ok && r.err.contains("no project nothing"), "{r}");

    // logs: the app's own output.
    let r = here(&["logs"]);
    assert!(r.ok && r.out.contains("app started"), "{r}");
    assert!(
        !r.out.contains('\u{1b}') && r.out.contains("\\x1b]0;owned\\x07"),
        "{r}"
    );
    let r = w.cli(&["logs", "--project", "shop", "--service", "nope"]);
    assert!(!r.ok && r.err.contains("no service nope"), "{r}");
    // A deployment's events stay available by id.
    let id = deployed
        .out
        .lines()
        .find_map(|l| l.strip_prefix("deployment "))
        .unwrap_or_else(|| panic!("no deployment id in:\n{deployed}"));
    let r = w.cli(&["logs", "--deployment", id]);
    assert!(r.ok && r.out.contains("==> live"), "{r}");

    // logs -f shows a line the app prints after the command started.
    let mut follow = w
        .command(&app, &["logs", "-f", "--tail", "0"], &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let marker = format!("/marker-{}", uuid::Uuid::new_v4().simple());
    let host = format!("web.shop.localhost:{}", w.proxy_port);
    let mut seen = Vec::new();
    let mut found = false;
    // Requests until the follower shows the marker: it may attach after the first.
    'wait: for _ in 0..60 {
        assert_eq!(w.get(&host, &marker).await, 200);
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if line.contains(&marker) {
                        found = true;
                        break 'wait;
                    }
                    seen.push(line);
                }
                Err(_) => break,
            }
        }
        if let Ok(Some(status)) = follow.try_wait() {
            panic!("wharf logs -f exited {status}; it printed {seen:?}");
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        found,
        "wharf logs -f never showed {marker}; it printed {seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("app started")),
        "--tail 0 shows only new lines: {seen:?}"
    );
}

#[tokio::test]
async fn every_service_command_reaches_a_standing_environment_with_environment() {
    let Some(w) = World::logged_in().await else {
        return;
    };
    let app = w.app("shop", "web");
    let here = |args: &[&str]| w.cli_in(&app, args, &[], "");

    // The project's own service, then the same folder into environment staging
    // (created by the deploy), each on its own hostname.
    let r = here(&["deploy"]);
    assert!(r.ok, "{r}");
    let r = here(&["deploy", "--environment", "staging"]);
    assert!(r.ok, "deploy into staging failed:\n{r}");
    let staging = format!("web.staging.shop.localhost:{}", w.proxy_port);
    assert!(
        r.out.trim_end().ends_with(&format!("http://{staging}")),
        "{r}"
    );
    assert_eq!(w.get(&staging, "/").await, 200);

    // env: set in staging only.
    let r = here(&["env", "set", "-e", "staging", "MODE=staging"]);
    assert!(r.ok && r.err.contains("shop/staging/web"), "{r}");
    let r = here(&["env", "list", "-e", "staging"]);
    assert_eq!(r.out.trim(), "MODE=staging", "{r}");
    let r = here(&["env", "list"]);
    assert_eq!(
        r.out.trim(),
        "(no env vars)",
        "the project's web is apart:\n{r}"
    );

    // status, services and ls name the environment and its service.
    let r = here(&["status", "-e", "staging"]);
    assert!(
        r.ok && r.out.starts_with("environment staging of project shop"),
        "{r}"
    );
    let row = r.out.lines().find(|l| l.starts_with("web ")).unwrap_or("");
    assert!(row.contains("v1") && row.contains(&staging), "{r}");
    let r = w.cli(&["services", "-p", "shop", "-e", "staging"]);
    let row = r.out.lines().find(|l| l.starts_with("web ")).unwrap_or("");
    assert!(row.contains("yes") && row.contains(&staging), "{r}");
    let r = w.cli(&["ls"]);
    let lines: Vec<&str> = r.out.lines().map(str::trim_start).collect();
    let at = lines
        .iter()
        .position(|l| *l == "environment staging (standing)")
        .unwrap_or_else(|| panic!("no environment in ls:\n{r}"));
    assert!(
        lines[at + 1].starts_with("web ") && lines[at + 1].contains(&staging),
        "{r}"
    );

    // logs and a redeploy + rollback there, and domains under the environment's path.
    let r = here(&["logs", "-e", "staging"]);
    assert!(r.ok && r.out.contains("app started"), "{r}");
    let r = here(&["deploy", "-e", "staging"]);
    assert!(r.ok, "{r}");
    let r = here(&["rollback", "-e", "staging"]);
    assert!(r.ok && r.out.contains("==> live"), "{r}");
    let r = here(&["domains", "ls", "-e", "staging"]);
    assert!(
        r.ok && r.out.contains("shop/staging/web has no custom domains"),
        "{r}"
    );

    // A wharf.toml deployed into an environment leaves its custom domains to the
    // project's own services.
    let stack = w.root.join("work/stack");
    std::fs::create_dir_all(stack.join("web")).unwrap();
    std::fs::write(stack.join("web/app.py"), logging_app()).unwrap();
    std::fs::write(
        stack.join("wharf.toml"),
        "project = \"shop\"\n[services.web]\npath = \"web\"\ndomains = [\"www.shop.test\"]\n",
    )
    .unwrap();
    let r = w.cli(&["deploy", stack.to_str().unwrap(), "-e", "qa"]);
    assert!(
        r.ok && r.err.contains("stay with the project's own service"),
        "{r}"
    );
    let r = w.cli(&["domains", "ls", "-p", "shop", "-e", "qa", "-s", "web"]);
    assert!(r.out.contains("shop/qa/web has no custom domains"), "{r}");

    // An environment that does not exist is an error, not the project's service.
    let r = here(&["status", "-e", "nope"]);
    assert!(!r.ok && r.err.contains("nope"), "{r}");
    let r = here(&["env", "list", "-e", "nope"]);
    assert!(!r.ok && r.err.contains("nope"), "{r}");
}

#[tokio::test]
async fn deploy_from_a_git_repository_by_url_and_ref() {
    let Some(w) = World::logged_in().await else {
        return;
    };
    // A repository with the app at tag v1, served over git's dumb HTTP protocol.
    let src = w.root.as_path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.py"), logging_app()).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    git(&src, &["add", "."]);
    git(&src, &["commit", "-q", "-m", "v1"]);
    git(&src, &["tag", "v1"]);
    let srv = w.root.as_path().join("git");
    std::fs::create_dir_all(&srv).unwrap();
    let bare = srv.join("Shop_Site.git");
    bare_clone(&src, &bare);
    let http = StaticServer::start(&srv).expect("python3 serves the repositories");
    let url = format!("{}/Shop_Site.git", http.base());

    // The service is named after the repository; the last line is its URL.
    let r = w.cli(&["deploy", "--git", &url, "--ref", "v1", "-p", "shop"]);
    assert!(r.ok, "deploy --git failed:\n{r}");
    let host = format!("shop-site.shop.localhost:{}", w.proxy_port);
    assert!(r.out.trim_end().ends_with(&format!("http://{host}")), "{r}");
    assert_eq!(w.get(&host, "/").await, 200);
    let r = w.cli(&["status", "-p", "shop"]);
    assert!(
        r.out
            .lines()
            .any(|l| l.starts_with("shop-site ") && l.contains("live")),
        "{r}"
    );

    // What cannot work is refused before anything is sent.
    let r = w.cli(&["deploy", "--git", &url]);
    assert!(!r.ok && r.err.contains("needs --project"), "{r}");
    let r = w.cli(&["deploy", "--ref", "v1", "-p", "shop"]);
    assert!(!r.ok && r.err.contains("--git"), "--ref alone: {r}");
    let r = w.cli(&["deploy", "--image", "nginx:1", "--git", &url, "-p", "shop"]);
    assert!(!r.ok && r.err.contains("cannot be used with"), "{r}");
    // A ref the repository does not have fails the deployment, and says so.
    let r = w.cli(&["deploy", "--git", &url, "--ref", "nope", "-p", "shop"]);
    assert!(!r.ok && r.err.contains("deployment ended failed"), "{r}");
}

#[tokio::test]
async fn concurrent_first_deploys_into_a_new_project_all_succeed() {
    let Some(w) = World::logged_in().await else {
        return;
    };
    // Four services of a project that does not exist yet, deployed at once (as a CI
    // matrix would): each CLI finds the project (and environment) missing and
    // creates it; the ones that lose the race must go on, not fail.
    let work = w.root.join("work");
    let children: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|name| {
            let app = w.app("race", name);
            w.command(&work, &["deploy", app.to_str().unwrap(), "-e", "qa"], &[])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let r = w.cli(&["services", "-p", "race", "-e", "qa"]);
    assert_eq!(
        r.out
            .lines()
            .skip(1)
            .filter(|l| l.contains(" yes "))
            .count(),
        4,
        "{r}"
    );
}
