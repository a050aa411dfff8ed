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

/// Packs `dir` into a `.tar.gz` in memory, leaving out `.git` and the paths named in
/// a `.wharfignore` file (one name per line, matched against each path component).
pub fn pack(dir: &Path) -> Result<Vec<u8>, CliError> {
    let ignore: Vec<String> = std::fs::read_to_string(dir.join(".wharfignore"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().trim_end_matches('/').to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .chain([".git".to_owned()])
        .collect();
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
    ignore: &[String],
) -> Result<(), CliError> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if ignore.iter().any(|i| name.to_string_lossy() == i.as_str()) {
            continue;
        }
        let path = rel.join(&name);
        let ft = e.file_type()?;
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
