//! The CLI's side: talks to a `wharf serve` over its HTTP API.

use std::path::Path;

use futures::StreamExt;
use serde_json::{json, Value};

/// A failure to show the user.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

/// An error answer of the API: its status, stable code and message.
#[derive(Debug)]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: reqwest::StatusCode,
    /// The error's stable code (`conflict`, `not_found`...).
    pub code: String,
    /// What the server said.
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// Whether `e` is the API answering `status`.
pub fn is_status(e: &CliError, status: reqwest::StatusCode) -> bool {
    e.downcast_ref::<ApiFailure>()
        .is_some_and(|f| f.status == status)
}

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
            Err(Box::new(ApiFailure {
                status,
                code: body["error"]["code"].as_str().unwrap_or("error").to_owned(),
                message: body["error"]["message"].as_str().unwrap_or("").to_owned(),
            }))
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

    /// Uploads a `.tar.gz` as a new deployment of `service` in `scope`, reporting the
    /// bytes handed to the connection to `progress` (if any) as they go.
    pub async fn deploy_archive(
        &self,
        scope: &Scope,
        service: &str,
        archive: Vec<u8>,
        progress: Option<Progress>,
    ) -> Result<Value, CliError> {
        let len = archive.len();
        let body = match progress {
            None => reqwest::Body::from(archive),
            Some(mut p) => {
                let chunks: Vec<Vec<u8>> =
                    archive.chunks(UPLOAD_CHUNK).map(<[u8]>::to_vec).collect();
                let mut sent = 0u64;
                reqwest::Body::wrap_stream(futures::stream::iter(chunks.into_iter().map(
                    move |c| {
                        sent += c.len() as u64;
                        p.update(sent);
                        Ok::<_, std::io::Error>(c)
                    },
                )))
            }
        };
        let r = self
            .http
            .post(self.url(&format!("{}/deployments", scope.service(service))))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        Self::check(r).await
    }

    /// `GET path` as a server-sent event stream (resuming after `last_event_id`); an
    /// error status is the API's error.
    async fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, CliError> {
        let mut req = self.http.get(self.url(path)).bearer_auth(&self.token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        if !resp.status().is_success() {
            return Err(Self::check(resp).await.unwrap_err());
        }
        Ok(resp)
    }

    /// Calls `each` with every frame of `resp`'s event stream until it ends or `each`
    /// returns `false`; a stream that breaks off is an error.
    async fn frames(
        &self,
        resp: reqwest::Response,
        mut each: impl FnMut(SseFrame) -> bool,
    ) -> Result<(), CliError> {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("lost the stream from {}: {e}", self.base))?;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = buf.find("\n\n") {
                let text: String = buf.drain(..i + 2).collect();
                let mut frame = SseFrame::default();
                for line in text.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        frame.id = Some(id.trim().to_owned());
                    } else if let Some(e) = line.strip_prefix("event:") {
                        frame.event = Some(e.trim().to_owned());
                    } else if let Some(d) = line.strip_prefix("data:") {
                        if !frame.data.is_empty() {
                            frame.data.push('\n');
                        }
                        frame.data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                if !each(frame) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Calls `each` with the `(event, data)` of every server-sent event of `GET path`
    /// until the stream ends; `each` returns `false` to stop early.
    pub async fn sse(
        &self,
        path: &str,
        mut each: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), CliError> {
        let resp = self.open_stream(path, None).await?;
        self.frames(resp, |frame| {
            let event = match frame.event.as_deref() {
                None => "message",
                Some("log") => "log",
                Some("error") => "error",
                Some(_) => "other",
            };
            frame.data.is_empty() || each(event, &frame.data)
        })
        .await
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
        let path = format!("/deployments/{deployment}/events");
        // Reconnect (resuming after the last event seen) if the stream drops early.
        for _ in 0..5 {
            let resp = self.open_stream(&path, last_id.as_deref()).await?;
            // A stream that breaks off is resumed below, unless the deployment ended.
            let _ = self
                .frames(resp, |frame| {
                    if let Some(id) = frame.id {
                        last_id = Some(id);
                    }
                    if let Ok(ev) = serde_json::from_str::<Value>(frame.data.trim()) {
                        if ev["kind"]["kind"] == "state" {
                            last_state = ev["kind"]["to"]["state"].as_str().unwrap_or("").into();
                        }
                        each(&ev);
                    }
                    true
                })
                .await;
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

/// One server-sent event as read off the wire.
#[derive(Debug, Default)]
struct SseFrame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Upload chunk size: the progress bar moves once per chunk.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// A hand-drawn upload progress bar on stderr, redrawn in place (`\r`) whenever the
/// percentage changes. Only made when stderr is a terminal ([`Progress::on_tty`]):
/// logs and pipes get no control characters.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    shown: Option<u64>,
}

impl Progress {
    /// A bar for uploading `total` bytes of `label`, if stderr is a terminal.
    pub fn on_tty(label: &str, total: u64) -> Option<Progress> {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal().then(|| Progress {
            label: label.to_owned(),
            total,
            shown: None,
        })
    }

    /// Records that `sent` bytes are out, redrawing the bar if it moved.
    pub fn update(&mut self, sent: u64) {
        use std::io::Write;
        let pct = percent(sent, self.total);
        if self.shown == Some(pct) {
            return;
        }
        self.shown = Some(pct);
        let mut err = std::io::stderr().lock();
        // `\x1b[K` clears what a longer earlier draw left at the end of the line.
        let _ = write!(err, "\r{}\x1b[K", bar(&self.label, sent, self.total, 30));
        if sent >= self.total {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

fn percent(sent: u64, total: u64) -> u64 {
    // Nothing to send is all sent.
    (sent.min(total) * 100).checked_div(total).unwrap_or(100)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// One line of the bar: `label [#####.....]  50%  1.0 KiB / 2.0 KiB`.
pub fn bar(label: &str, sent: u64, total: u64, width: usize) -> String {
    let pct = percent(sent, total);
    let filled = (pct as usize * width) / 100;
    format!(
        "{label} [{}{}] {pct:>3}%  {} / {}",
        "#".repeat(filled),
        ".".repeat(width - filled),
        human(sent.min(total)),
        human(total)
    )
}

/// What `wharf login` keeps: the server and a token for it, in `login.toml` of the
/// user's config folder (`$XDG_CONFIG_HOME/wharf/`, else `~/.config/wharf/`), the
/// folder private to the user (0700) and the file too (0600).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The server's URL.
    pub server: String,
    /// The API token.
    pub token: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Login {
    /// The login file's path, from `XDG_CONFIG_HOME` (used only when absolute, as the
    /// XDG spec says) or `HOME`, looked up through `var`.
    pub fn path_from(var: impl Fn(&str) -> Option<String>) -> Result<std::path::PathBuf, CliError> {
        let set = |k: &str| var(k).filter(|v| !v.is_empty());
        let base = match set("XDG_CONFIG_HOME").map(std::path::PathBuf::from) {
            Some(p) if p.is_absolute() => p,
            _ => match set("HOME") {
                Some(home) => Path::new(&home).join(".config"),
                None => {
                    return Err("cannot find the config folder: set HOME or XDG_CONFIG_HOME".into())
                }
            },
        };
        Ok(base.join("wharf").join("login.toml"))
    }

    /// The login file's path for this process's environment.
    pub fn path() -> Result<std::path::PathBuf, CliError> {
        Login::path_from(|k| std::env::var(k).ok())
    }

    /// The stored login, `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<Login>, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display()).into()),
        };
        let login: Login = toml::from_str(&text).map_err(|e| {
            format!(
                "{} is not a login file ({e}); run `wharf logout` and log in again",
                path.display()
            )
        })?;
        Ok(Some(login))
    }

    /// Writes the login to `path`: the folder made private (0700), the file written
    /// with mode 0600 from its first byte, under a temporary name then renamed, so a
    /// reader never sees half a file.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = path.parent().ok_or("the login file has no folder")?;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} private: {e}", dir.display()))?;
        let tmp = dir.join(format!(".login.{}.tmp", std::process::id()));
        // A JSON string is a valid TOML basic string (same escapes), which spares the
        // toml crate's serializer feature for two lines.
        let text = format!(
            "server = {}\ntoken = {}\n",
            Value::from(self.server.as_str()),
            Value::from(self.token.as_str())
        );
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                // `mode` applies only to a new file: make sure of 0600 anyway.
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                f.write_all(text.as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("cannot write {}: {e}", path.display()).into());
        }
        Ok(())
    }

    /// Removes the login file; `false` if there was none.
    pub fn remove(path: &Path) -> Result<bool, CliError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("cannot remove {}: {e}", path.display()).into()),
        }
    }
}

/// Whether two server URLs name the same server (ignoring a trailing `/` and case).
pub fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
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

/// A service name from an image reference or a git URL: the last path segment,
/// without tag, digest or `.git`, lowercased, other characters than letters, digits
/// and `-` turned into `-`, starting with a letter and at most 63 characters
/// (`ghcr.io/acme/Shop_API:1.4` -> `shop-api`); `None` when nothing valid is left.
pub fn name_from_reference(reference: &str) -> Option<String> {
    let r = reference.trim_end_matches('/');
    // The last path segment (after `/`, else after the `:` of `git@host:path`).
    let last = match r.rsplit_once('/') {
        Some((_, tail)) => tail,
        None if r.contains('@') => r.rsplit(':').next().unwrap_or(r),
        None => r,
    };
    // An image digest (`name@sha256:...`), then a tag (`name:tag`).
    let last = last.split('@').next().unwrap_or(last);
    let last = last.split(':').next().unwrap_or(last);
    let last = last.strip_suffix(".git").unwrap_or(last);
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .skip_while(|c| !c.is_ascii_lowercase())
        .take(63)
        .collect();
    let name = name.trim_end_matches('-').to_owned();
    wharf_core::model::validate_name(&name).ok()?;
    Some(name)
}

/// Where services live: a project, or one of its standing environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The project's name.
    pub project: String,
    /// A standing environment of the project; `None` for the project's own services.
    pub environment: Option<String>,
}

impl Scope {
    /// The API path of the project or environment, e.g.
    /// `/projects/shop/environments/staging`.
    pub fn path(&self) -> String {
        match &self.environment {
            None => format!("/projects/{}", self.project),
            Some(e) => format!("/projects/{}/environments/{e}", self.project),
        }
    }

    /// The API path of its services.
    pub fn services(&self) -> String {
        format!("{}/services", self.path())
    }

    /// The API path of `service` in it.
    pub fn service(&self, service: &str) -> String {
        format!("{}/{service}", self.services())
    }

    /// `project/service`, or `project/environment/service`, for messages.
    pub fn label(&self, service: &str) -> String {
        match &self.environment {
            None => format!("{}/{service}", self.project),
            Some(e) => format!("{}/{e}/{service}", self.project),
        }
    }
}

impl std::fmt::Display for Scope {
    /// `project shop`, or `environment staging of project shop`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.environment {
            None => write!(f, "project {}", self.project),
            Some(e) => write!(f, "environment {e} of project {}", self.project),
        }
    }
}

/// Makes sure `scope` (its project, and its environment if any) exists, creating what
/// is missing if this token may.
pub async fn ensure_scope(c: &Client, scope: &Scope) -> Result<(), CliError> {
    let project = &scope.project;
    let project_path = format!("/projects/{project}");
    create_unless_found(c, &project_path, "/projects", json!({"name": project})).await?;
    if let Some(e) = &scope.environment {
        let list = format!("{project_path}/environments");
        create_unless_found(c, &scope.path(), &list, json!({"name": e})).await?;
    }
    Ok(())
}

/// Creates what `path` names by `POST collection body` unless `GET path` finds it. A
/// concurrent CLI (two deploys into a new project at once) may create it in between:
/// the 409 that answers ours is then no failure.
async fn create_unless_found(
    c: &Client,
    path: &str,
    collection: &str,
    body: Value,
) -> Result<(), CliError> {
    if c.get(path).await.is_ok() {
        return Ok(());
    }
    match c.send(reqwest::Method::POST, collection, &body).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, reqwest::StatusCode::CONFLICT) && c.get(path).await.is_ok() => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Makes sure `service` exists in `scope` (creating it, and the scope, if this token
/// may); a `port` is set on it.
pub async fn ensure(
    c: &Client,
    scope: &Scope,
    service: &str,
    port: Option<u16>,
) -> Result<(), CliError> {
    ensure_scope(c, scope).await?;
    let path = scope.service(service);
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
    fn service_names_from_images_and_git_urls() {
        let cases = [
            ("ghcr.io/acme/Shop_API:1.4", Some("shop-api")),
            ("nginx", Some("nginx")),
            ("nginx:1.27-alpine", Some("nginx")),
            ("localhost:5000/team/web@sha256:abcd", Some("web")),
            ("https://github.com/acme/shop.git", Some("shop")),
            ("git@github.com:acme/my.site.git", Some("my-site")),
            ("https://example.com/repo/", Some("repo")),
            ("git@example.com:repo.git", Some("repo")),
            ("___", None),
            // A digest only after the last `/`; `user@host` stays out of it.
            ("git@shared.example.com:acme/shop.git", Some("shop")),
            ("https://user@sharp.host/x/app.git", Some("app")),
            // Valid service names only: a letter first, 63 characters at most.
            ("acme/2048-game", Some("game")),
            ("acme/2048", None),
        ];
        for (reference, want) in cases {
            assert_eq!(
                name_from_reference(reference).as_deref(),
                want,
                "{reference}"
            );
        }
        let long = format!("acme/{}", "x".repeat(80));
        assert_eq!(name_from_reference(&long).map(|n| n.len()), Some(63));
    }

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
    fn progress_bar_fills_with_the_bytes_sent() {
        assert_eq!(
            bar("web", 0, 2048, 10),
            "web [..........]   0%  0 B / 2.0 KiB"
        );
        assert_eq!(
            bar("web", 1024, 2048, 10),
            "web [#####.....]  50%  1.0 KiB / 2.0 KiB"
        );
        assert_eq!(
            bar("web", 4096, 2048, 10),
            "web [##########] 100%  2.0 KiB / 2.0 KiB"
        );
        assert_eq!(bar("e", 0, 0, 4), "e [####] 100%  0 B / 0 B");
    }

    #[test]
    fn login_lives_in_the_xdg_config_folder_else_under_home() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let p = |pairs| Login::path_from(env(pairs)).map_err(|e| e.to_string());
        assert_eq!(
            p(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]).unwrap(),
            Path::new("/x/wharf/login.toml")
        );
        assert_eq!(
            p(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")]).unwrap(),
            Path::new("/h/.config/wharf/login.toml"),
            "a relative XDG_CONFIG_HOME is ignored"
        );
        assert_eq!(
            p(&[("HOME", "/h")]).unwrap(),
            Path::new("/h/.config/wharf/login.toml")
        );
        assert!(p(&[]).unwrap_err().contains("HOME"));
    }

    #[test]
    fn login_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cfg/wharf/login.toml");
        assert_eq!(Login::load(&path).unwrap(), None);
        let login = Login {
            server: "http://127.0.0.1:7070".into(),
            token: "t0ken-\"quoted\"-\\-t0ken".into(),
        };
        login.save(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(Login::load(&path).unwrap(), Some(login.clone()));
        assert!(
            !format!("{login:?}").contains("t0ken"),
            "Debug hides the token"
        );
        std::fs::write(&path, "nonsense").unwrap();
        let err = Login::load(&path).unwrap_err().to_string();
        assert!(err.contains("not a login file"), "{err}");
        assert!(Login::remove(&path).unwrap());
        assert!(!Login::remove(&path).unwrap());
        assert!(
            same_server("http://A:1/", "http://a:1") && !same_server("http://a:1", "http://a:2")
        );
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
