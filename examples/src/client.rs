//! The CLI's side: talks to a `wharf serve` over its HTTP API.

use std::path::Path;

use futures::StreamExt;
use serde_json::{json, Value};

/// A failure to show the user.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// An API client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str, token: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    async fn check(resp: reqwest::Response) -> Result<Value, CliError> {
        let status = resp.status();
        let body: Value = if status == reqwest::StatusCode::NO_CONTENT {
            Value::Null
        } else {
            resp.json().await.unwrap_or(Value::Null)
        };
        if status.is_success() {
            Ok(body)
        } else {
            let code = body["error"]["code"].as_str().unwrap_or("error");
            let msg = body["error"]["message"].as_str().unwrap_or("");
            Err(format!("{status}: {code}: {msg}").into())
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        Self::check(r).await
    }

    /// `method path` with a JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, CliError> {
        let r = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        Self::check(r).await
    }

    /// Uploads a `.tar.gz` as a new deployment of `project/service`.
    pub async fn deploy_archive(
        &self,
        project: &str,
        service: &str,
        archive: Vec<u8>,
    ) -> Result<Value, CliError> {
        let r = self
            .http
            .post(self.url(&format!(
                "/projects/{project}/services/{service}/deployments"
            )))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .body(archive)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        Self::check(r).await
    }

    /// Follows a deployment's events, calling `each` for every one, until it ends;
    /// returns the last state's name.
    pub async fn follow(
        &self,
        deployment: &str,
        mut each: impl FnMut(&Value),
    ) -> Result<String, CliError> {
        let mut last_state = String::new();
        let mut last_id: Option<String> = None;
        // Reconnect (resuming after the last event seen) if the stream drops early.
        for _ in 0..5 {
            let mut req = self
                .http
                .get(self.url(&format!("/deployments/{deployment}/events")))
                .bearer_auth(&self.token);
            if let Some(id) = &last_id {
                req = req.header("Last-Event-ID", id);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
            if !resp.status().is_success() {
                return Err(Self::check(resp).await.unwrap_err());
            }
            let mut stream = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else { break };
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(i) = buf.find("\n\n") {
                    let frame: String = buf.drain(..i + 2).collect();
                    for line in frame.lines() {
                        if let Some(id) = line.strip_prefix("id:") {
                            last_id = Some(id.trim().to_owned());
                        } else if let Some(data) = line.strip_prefix("data:") {
                            if let Ok(ev) = serde_json::from_str::<Value>(data.trim()) {
                                if ev["kind"]["kind"] == "state" {
                                    last_state =
                                        ev["kind"]["to"]["state"].as_str().unwrap_or("").into();
                                }
                                each(&ev);
                            }
                        }
                    }
                }
            }
            let dep = self.get(&format!("/deployments/{deployment}")).await?;
            let state = dep["state"]["state"].as_str().unwrap_or("");
            if !matches!(
                state,
                "queued" | "fetching" | "building" | "starting" | "health_checking" | "routing"
            ) {
                return Ok(if last_state.is_empty() {
                    state.to_owned()
                } else {
                    last_state
                });
            }
        }
        Err("lost the event stream five times".into())
    }
}

/// The paths `wharf deploy` leaves out: `.git`, and the patterns of the folder's
/// `.gitignore` and `.wharfignore` (in that order; the last matching pattern wins, `!`
/// re-includes, a trailing `/` matches folders only, a pattern with a `/` before its
/// end is anchored at the folder, `*` and `?` match within one path segment).
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<IgnoreRule>,
}

#[derive(Debug)]
struct IgnoreRule {
    pattern: String,
    negated: bool,
    anchored: bool,
    dir_only: bool,
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && glob(p, &s[1..])),
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

impl Ignore {
    /// The rules for folder `dir`.
    pub fn load(dir: &Path) -> Ignore {
        let mut text = String::from(".git/\n");
        for f in [".gitignore", ".wharfignore"] {
            text.push_str(&std::fs::read_to_string(dir.join(f)).unwrap_or_default());
            text.push('\n');
        }
        Ignore::parse(&text)
    }

    /// Rules from gitignore-style text.
    pub fn parse(text: &str) -> Ignore {
        let rules = text
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negated, l) = match l.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, l),
                };
                let (dir_only, l) = match l.strip_suffix('/') {
                    Some(rest) => (true, rest),
                    None => (false, l),
                };
                let anchored = l.contains('/');
                IgnoreRule {
                    pattern: l.trim_start_matches('/').to_owned(),
                    negated,
                    anchored,
                    dir_only,
                }
            })
            .collect();
        Ignore { rules }
    }

    /// Whether `rel` (a path inside the folder) is left out.
    pub fn ignored(&self, rel: &Path, is_dir: bool) -> bool {
        let path = rel.to_string_lossy();
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let mut out = false;
        for r in &self.rules {
            if r.dir_only && !is_dir {
                continue;
            }
            let subject = if r.anchored { &path } else { &name };
            if glob(r.pattern.as_bytes(), subject.as_bytes()) {
                out = !r.negated;
            }
        }
        out
    }
}

/// Packs `dir` into a `.tar.gz` in memory, leaving out what [`Ignore`] says.
pub fn pack(dir: &Path) -> Result<Vec<u8>, CliError> {
    let ignore = Ignore::load(dir);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    add_dir(&mut tar, dir, Path::new(""), &ignore)?;
    Ok(tar.into_inner()?.finish()?)
}

fn add_dir<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    ignore: &Ignore,
) -> Result<(), CliError> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        let ft = e.file_type()?;
        if ignore.ignored(&path, ft.is_dir()) {
            continue;
        }
        if ft.is_dir() {
            tar.append_dir(&path, root.join(&path))?;
            add_dir(tar, root, &path, ignore)?;
        } else if ft.is_file() || ft.is_symlink() {
            tar.append_path_with_name(root.join(&path), &path)?;
        }
    }
    Ok(())
}

/// Makes sure `project` and `service` exist (creating them if this token may).
pub async fn ensure(
    c: &Client,
    project: &str,
    service: &str,
    port: Option<u16>,
) -> Result<(), CliError> {
    if c.get(&format!("/projects/{project}")).await.is_err() {
        c.send(
            reqwest::Method::POST,
            "/projects",
            &json!({"name": project}),
        )
        .await?;
    }
    let path = format!("/projects/{project}/services/{service}");
    if c.get(&path).await.is_err() || port.is_some() {
        let mut body = json!({});
        if let Some(p) = port {
            body["port"] = json!(p);
        }
        c.send(reqwest::Method::PUT, &path, &body).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitignore_rules_as_git_reads_them() {
        let ig = Ignore::parse(
            ".git/\nnode_modules/\n*.log\n/build\ndocs/*.tmp\n.env*\n!.env.example\n# comment\n",
        );
        let yes = |p: &str, d: bool| ig.ignored(Path::new(p), d);
        assert!(yes("node_modules", true));
        assert!(yes("web/node_modules", true));
        assert!(
            !yes("node_modules", false),
            "a file named like a dir-only rule stays"
        );
        assert!(yes("a.log", false) && yes("deep/x/b.log", false));
        assert!(
            yes("build", true) && !yes("src/build", true),
            "/build is anchored"
        );
        assert!(yes("docs/a.tmp", false) && !yes("docs/sub/a.tmp", false));
        assert!(yes(".env", false) && yes(".env.local", false));
        assert!(!yes(".env.example", false), "! re-includes");
        assert!(!yes("app.py", false));
    }

    #[test]
    fn pack_leaves_out_ignored_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "print(1)").unwrap();
        std::fs::write(dir.path().join("debug.log"), "x").unwrap();
        std::fs::create_dir_all(dir.path().join("node_modules/m")).unwrap();
        std::fs::write(dir.path().join("node_modules/m/i.js"), "x").unwrap();
        std::fs::write(dir.path().join(".gitignore"), "*.log\nnode_modules/\n").unwrap();
        std::fs::write(dir.path().join(".wharfignore"), "secret.txt\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "x").unwrap();
        let bytes = pack(dir.path()).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [".gitignore", ".wharfignore", "app.py"]);
    }
}
