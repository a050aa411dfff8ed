//! [`GitFetcher`]: shallow clones with the `git` program.
//!
//! Runs `git` through `tokio::process` (no libgit2). URLs, references and sub-folders
//! come from users, so they are validated, `--` always separates options from
//! positional arguments, prompts are disabled, the `ext::` transport is refused,
//! hooks and system config are off, and the child is killed if the fetch is dropped.
//! git runs with a cleared environment (no SSH agent, no home folder, no user or
//! system config): a project reaches only what its own URL and credentials reach.
//! Credentials in an http(s) URL are handed over through the environment to a
//! credential helper, never on the command line nor into `.git/config`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use super::{clear_dir, prepare_dest};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{redact_url, split_userinfo, GitRef, LogStream, SourceSpec};
use crate::traits::{Fetched, LogSink, SourceFetcher};

/// How many of git's last stderr lines are kept for error messages.
const TAIL_LINES: usize = 20;

/// Clones git repositories ([`SourceSpec::Git`]) with the `git` command-line program.
///
/// - Branches and tags: `git clone --depth 1 --branch <ref> --single-branch` (in full
///   when the server speaks git's "dumb" HTTP protocol, which has no shallow clones).
/// - [`GitRef::Default`]: a shallow clone of the remote's default branch.
/// - [`GitRef::Commit`] (4 to 40 hex digits): `git init` then `git fetch --depth 1` of
///   the full sha; if the server refuses (or the sha is abbreviated), a full fetch of
///   branches and tags, then `git checkout --detach`.
///
/// The revision is the full sha of the checked-out commit (`git rev-parse HEAD`). The
/// `.git` folder stays in the destination. With `subdir`, [`Fetched::dir`] is that
/// folder inside the checkout; it must exist and must not be (or go through) a symlink.
///
/// git's progress goes to the [`LogSink`] as [`LogStream::System`] lines. Errors: git
/// missing → [`ErrorKind::Unavailable`]; unknown branch, tag, commit or repository →
/// [`ErrorKind::NotFound`]; network failures → Unavailable; a bad URL, reference or
/// sub-folder → [`ErrorKind::InvalidInput`]; anything else → [`ErrorKind::Backend`]
/// with git's last lines of output.
#[derive(Debug, Clone)]
pub struct GitFetcher {
    program: PathBuf,
}

impl Default for GitFetcher {
    fn default() -> Self {
        GitFetcher {
            program: PathBuf::from("git"),
        }
    }
}

impl GitFetcher {
    /// A fetcher running `git` from the `PATH`.
    pub fn new() -> Self {
        Self::default()
    }
    /// A fetcher running this git program instead.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        GitFetcher {
            program: program.into(),
        }
    }
    /// The git program run.
    pub fn program(&self) -> &Path {
        &self.program
    }
}

#[async_trait]
impl SourceFetcher for GitFetcher {
    async fn fetch(&self, spec: &SourceSpec, dest: &Path, logs: &LogSink) -> Result<Fetched> {
        let SourceSpec::Git {
            url,
            reference,
            subdir,
        } = spec
        else {
            return Err(super::unsupported("git", spec));
        };
        validate_url(url)?;
        validate_ref(reference)?;
        let subdir = subdir.as_deref().map(validate_subdir).transpose()?;
        let dest_owned = dest.to_path_buf();
        tokio::task::spawn_blocking(move || prepare_dest(&dest_owned))
            .await
            .map_err(|e| Error::internal(format!("fetch task failed: {e}")))??;
        let (clean, credentials) = split_credentials(url);
        let git = Git {
            program: &self.program,
            logs,
            url: &clean,
            credentials: credentials.as_ref(),
            dest,
        };
        logs.send(
            LogStream::System,
            format!(
                "fetching {} from {}",
                describe_ref(reference),
                redact_url(url)
            ),
        );
        let result = git.fetch(reference, subdir.as_deref()).await;
        if result.is_err() {
            let dest_owned = dest.to_path_buf();
            let _ = tokio::task::spawn_blocking(move || clear_dir(&dest_owned)).await;
        }
        let fetched = result?;
        logs.send(
            LogStream::System,
            format!("checked out {}", fetched.revision),
        );
        Ok(fetched)
    }
}

/// One fetch's context.
struct Git<'a> {
    program: &'a Path,
    logs: &'a LogSink,
    /// The URL without credentials: what git's command line and `.git/config` see.
    url: &'a str,
    /// The credentials the URL carried, handed to git through its environment.
    credentials: Option<&'a Credentials>,
    /// The (empty) folder the checkout goes into.
    dest: &'a Path,
}

/// A user name and password (or token) taken out of an http(s) URL.
struct Credentials {
    host: String,
    username: String,
    password: String,
}

/// Splits `https://user:token@host/path` into the URL without its user part and the
/// credentials (percent-decoded), so that they never reach git's command line (seen
/// by every user in `ps`) nor the checkout's `.git/config`. Other URLs pass as they are
/// (`git@host:path` names an SSH user, not a secret).
fn split_credentials(url: &str) -> (String, Option<Credentials>) {
    let Some((scheme, userinfo, rest)) = split_userinfo(url)
        .filter(|(scheme, ..)| matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https"))
    else {
        return (url.to_owned(), None);
    };
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let credentials = Credentials {
        host: rest.split('/').next().unwrap_or("").to_owned(),
        username: decode(user),
        password: decode(pass),
    };
    (format!("{scheme}://{rest}"), Some(credentials))
}

/// The credential helper git runs (through `sh`) when a server asks: it answers with
/// the URL's credentials, read from the environment, and only for the URL's host.
const CREDENTIAL_HELPER: &str = r#"!f() { test "$1" = get || exit 0; h=; while IFS= read -r l; do case "$l" in host=*) h="${l#host=}";; esac; done; test "$h" = "$WHARF_GIT_HOST" || exit 0; printf 'username=%s\npassword=%s\n' "$WHARF_GIT_USERNAME" "$WHARF_GIT_PASSWORD"; }; f"#;

/// Variables of the server's environment git may see: what finding programs and
/// reaching the network need. Everything else (an SSH agent, `HOME` with its
/// credential helpers and `.netrc`, `GIT_*` settings) stays out, so a project clones
/// only what its own URL and credentials reach.
const PASSED_ENV: &[&str] = &[
    "PATH",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "no_proxy",
    "NO_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// What a successful git run printed.
struct Output {
    stdout: Vec<u8>,
}

/// Why a git run failed.
enum RunError {
    /// Could not run git, or failed reading its output.
    Spawn(Error),
    /// git exited with an error; its last stderr lines.
    Failed {
        code: Option<i32>,
        tail: Vec<String>,
    },
}

impl Git<'_> {
    async fn fetch(&self, reference: &GitRef, subdir: Option<&Path>) -> Result<Fetched> {
        match reference {
            GitRef::Default | GitRef::Branch(_) | GitRef::Tag(_) => {
                self.clone_branch(reference).await?
            }
            GitRef::Commit(sha) => {
                self.fetch_commit(&sha.to_ascii_lowercase(), reference)
                    .await?
            }
        }
        let dest = self.dest;
        let head = self
            .run(Some(dest), &["rev-parse", "--verify", "HEAD"])
            .await
            .map_err(|e| self.error(e, "rev-parse", reference))?;
        let revision = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        if !(revision.len() == 40 || revision.len() == 64)
            || !revision.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("git rev-parse HEAD printed {revision:?}, not a commit sha"),
            )
            .with_backend("git"));
        }
        let dir = match subdir {
            Some(subdir) => check_subdir(dest, subdir, &revision).await?,
            None => dest.to_path_buf(),
        };
        Ok(Fetched { dir, revision })
    }

    /// A shallow clone of a branch, a tag or the default branch (in full where the
    /// server cannot serve a shallow one).
    async fn clone_branch(&self, reference: &GitRef) -> Result<()> {
        let mut args: Vec<OsString> = vec![
            "clone".into(),
            "--depth".into(),
            "1".into(),
            "--single-branch".into(),
            "--no-local".into(),
            "--progress".into(),
        ];
        if let GitRef::Branch(name) | GitRef::Tag(name) = reference {
            args.push("--branch".into());
            args.push(name.into());
        }
        args.extend([
            "--".into(),
            self.url.into(),
            self.dest.as_os_str().to_owned(),
        ]);
        match self.run(None, &args).await {
            Ok(_) => Ok(()),
            // Servers on git's "dumb" HTTP protocol (a static file server) cannot serve
            // a shallow clone: clone the branch in full instead.
            Err(RunError::Failed { tail, .. })
                if tail.iter().any(|l| l.contains("does not support shallow")) =>
            {
                self.logs.send(
                    LogStream::System,
                    "the server cannot serve a shallow clone; cloning the branch in full",
                );
                clear_dir(self.dest);
                args.drain(1..3); // "--depth", "1"
                self.run(None, &args)
                    .await
                    .map(drop)
                    .map_err(|e| self.error(e, "clone", reference))
            }
            Err(e) => Err(self.error(e, "clone", reference)),
        }
    }

    /// `git init`, then fetch the commit (shallow if the server allows it) and check it out.
    async fn fetch_commit(&self, sha: &str, reference: &GitRef) -> Result<()> {
        let dest = self.dest;
        let dest_arg = dest.as_os_str();
        self.run(
            None,
            &[
                OsStr::new("init"),
                OsStr::new("--quiet"),
                OsStr::new("--"),
                dest_arg,
            ],
        )
        .await
        .map_err(|e| self.error(e, "init", reference))?;
        self.run(Some(dest), &["remote", "add", "origin", "--", self.url])
            .await
            .map_err(|e| self.error(e, "remote add", reference))?;
        let mut shallow_ok = false;
        if sha.len() == 40 {
            match self
                .run(Some(dest), &["fetch", "--depth", "1", "--progress", "--", "origin", sha])
                .await
            {
                Ok(_) => shallow_ok = true,
                // The server may refuse to serve a commit by sha; a network error or a
                // missing repository will fail the full fetch below just the same.
                Err(RunError::Failed { .. }) => self.logs.send(
                    LogStream::System,
                    "the server refused a shallow fetch of the commit; fetching all branches and tags",
                ),
                Err(e) => return Err(self.error(e, "fetch", reference)),
            }
        }
        if !shallow_ok {
            self.run(
                Some(dest),
                &[
                    "fetch",
                    "--progress",
                    "--",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
            )
            .await
            .map_err(|e| self.error(e, "fetch", reference))?;
        }
        let peeled = format!("{sha}^{{commit}}");
        let resolved = match self
            .run(Some(dest), &["rev-parse", "--verify", "--quiet", &peeled])
            .await
        {
            Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            Err(RunError::Failed { .. }) => {
                return Err(Error::not_found(format!(
                    "commit {sha} not found in {}",
                    redact_url(self.url)
                )))
            }
            Err(e) => return Err(self.error(e, "rev-parse", reference)),
        };
        self.run(
            Some(dest),
            &["checkout", "--quiet", "--detach", &resolved, "--"],
        )
        .await
        .map_err(|e| self.error(e, "checkout", reference))?;
        Ok(())
    }

    /// Runs git with `args` (in `cwd` if given), streaming its stderr to the logs.
    async fn run(
        &self,
        cwd: Option<&Path>,
        args: &[impl AsRef<OsStr>],
    ) -> std::result::Result<Output, RunError> {
        let mut cmd = Command::new(self.program);
        // Safety settings that apply whatever the global config says.
        cmd.args([
            "-c",
            "protocol.ext.allow=never",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "advice.detachedHead=false",
            "-c",
            "init.defaultBranch=main",
        ]);
        if let Some(cwd) = cwd {
            cmd.arg("-C").arg(cwd);
        }
        cmd.args(args)
            .env_clear()
            .envs(
                PASSED_ENV
                    .iter()
                    .filter_map(|k| Some((k, std::env::var_os(k)?))),
            )
            // No user or system configuration, no home folder to find any in.
            .env("HOME", "/nonexistent")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "")
            .env("SSH_ASKPASS", "")
            // No key or agent of the server's account for SSH either.
            .env(
                "GIT_SSH_COMMAND",
                "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none",
            )
            // English messages, which the error mapping reads.
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(c) = self.credentials {
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "credential.helper")
                .env("GIT_CONFIG_VALUE_0", CREDENTIAL_HELPER)
                .env("WHARF_GIT_HOST", &c.host)
                .env("WHARF_GIT_USERNAME", &c.username)
                .env("WHARF_GIT_PASSWORD", &c.password);
        }
        let mut child = cmd.spawn().map_err(|e| {
            RunError::Spawn(if e.kind() == std::io::ErrorKind::NotFound {
                Error::unavailable(format!(
                    "the git program {:?} was not found: install git to fetch git sources",
                    self.program
                ))
            } else {
                Error::unavailable(format!("cannot run {:?}: {e}", self.program))
            })
        })?;
        let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(RunError::Spawn(Error::internal(
                "git's output was not captured",
            )));
        };
        let read_stdout = async {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).await.map(|_| buf)
        };
        let read_stderr = async {
            let mut reader = BufReader::new(stderr);
            let mut tail = VecDeque::with_capacity(TAIL_LINES);
            let mut line = Vec::new();
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line).await? == 0 {
                    break;
                }
                // Progress updates are separated by '\r': keep the final state only.
                let last = line
                    .split(|&b| b == b'\r' || b == b'\n')
                    .rfind(|seg| !seg.iter().all(u8::is_ascii_whitespace));
                let Some(last) = last else { continue };
                let text = String::from_utf8_lossy(last).trim().to_owned();
                self.logs.send(LogStream::System, format!("git: {text}"));
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
            Ok::<_, std::io::Error>(tail)
        };
        let (stdout, tail) = tokio::join!(read_stdout, read_stderr);
        let status = child.wait().await;
        let io_err =
            |e: std::io::Error| RunError::Spawn(Error::from(e).context("cannot read git's output"));
        let status = status.map_err(io_err)?;
        let stdout = stdout.map_err(io_err)?;
        let tail = tail.map_err(io_err)?;
        if status.success() {
            Ok(Output { stdout })
        } else {
            Err(RunError::Failed {
                code: status.code(),
                tail: tail.into(),
            })
        }
    }

    /// Maps a failed run of `git <what>` to an [`Error`] by meaning.
    fn error(&self, err: RunError, what: &str, reference: &GitRef) -> Error {
        let (code, tail) = match err {
            RunError::Spawn(e) => return e,
            RunError::Failed { code, tail } => (code, tail),
        };
        let url = redact_url(self.url);
        let text = tail.join("\n").to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
        if has(&[
            "remote branch",
            "couldn't find remote ref",
            "unknown revision",
            "did not match any",
            "not a tree",
            "bad revision",
            "not a valid object name",
        ]) && !has(&[
            "repository not found",
            "does not appear to be a git repository",
        ]) {
            return Error::not_found(format!("{} not found in {url}", describe_ref(reference)));
        }
        if has(&[
            "repository not found",
            "does not appear to be a git repository",
            "does not exist",
            "returned error: 404",
            "not found",
        ]) {
            return Error::not_found(format!("repository {url} not found"));
        }
        let last = tail
            .iter()
            .rev()
            .take(5)
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if has(&[
            "authentication failed",
            "terminal prompts disabled",
            "could not read username",
            "could not read password",
            "permission denied",
            "returned error: 401",
            "returned error: 403",
        ]) {
            return Error::new(
                ErrorKind::Backend,
                format!("access to {url} was denied (credentials needed?): {last}"),
            )
            .with_backend("git");
        }
        if has(&[
            "could not resolve host",
            "temporary failure in name resolution",
            "connection refused",
            "connection timed out",
            "timed out",
            "network is unreachable",
            "connection reset",
            "early eof",
            "the remote end hung up unexpectedly",
            "unable to access",
            "ssl",
            "returned error: 5",
        ]) {
            return Error::unavailable(format!("cannot reach {url}: {last}")).with_backend("git");
        }
        let code = code.map_or_else(|| "a signal".to_owned(), |c| format!("code {c}"));
        Error::new(
            ErrorKind::Backend,
            format!("git {what} failed ({code}): {last}"),
        )
        .with_backend("git")
    }
}

/// "branch \"main\"", "tag \"v1\"", "commit abc123", "the default branch".
fn describe_ref(reference: &GitRef) -> String {
    match reference {
        GitRef::Default => "the default branch".to_owned(),
        GitRef::Branch(name) => format!("branch {name:?}"),
        GitRef::Tag(name) => format!("tag {name:?}"),
        GitRef::Commit(sha) => format!("commit {sha}"),
    }
}

fn validate_url(url: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "invalid git URL {:?}: {why}",
            redact_url(url)
        )))
    };
    if url.trim().is_empty() {
        return bad("it is empty");
    }
    if url.starts_with('-') {
        return bad("it must not start with '-'");
    }
    if url.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if url.to_ascii_lowercase().starts_with("ext::") {
        return bad("the ext:: transport runs commands and is not allowed");
    }
    Ok(())
}

fn validate_ref(reference: &GitRef) -> Result<()> {
    match reference {
        GitRef::Default => Ok(()),
        GitRef::Branch(name) | GitRef::Tag(name) => {
            let bad = |why: &str| {
                Err(Error::invalid(format!(
                    "invalid git reference {name:?}: {why}"
                )))
            };
            if name.is_empty() {
                return bad("it is empty");
            }
            if name.starts_with('-') {
                return bad("it must not start with '-'");
            }
            if name.contains("..")
                || name.contains("@{")
                || name.ends_with('/')
                || name.ends_with(".lock")
                || name.ends_with('.')
                || name.starts_with('/')
                || name
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
            {
                return bad("it is not a valid branch or tag name");
            }
            Ok(())
        }
        GitRef::Commit(sha) => {
            if (4..=40).contains(&sha.len()) && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "invalid commit {sha:?}: expected 4 to 40 hexadecimal digits"
                )))
            }
        }
    }
}

/// A sub-folder must be relative and must not contain `..`; `.` components are dropped.
fn validate_subdir(subdir: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for component in subdir.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(Error::invalid(format!(
                    "invalid subdir {:?}: '..' is not allowed",
                    subdir
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Error::invalid(format!(
                    "invalid subdir {:?}: it must be a relative path",
                    subdir
                )))
            }
        }
    }
    Ok(out)
}

/// `dest/subdir`, which must be a folder reached without any symlink.
async fn check_subdir(dest: &Path, subdir: &Path, revision: &str) -> Result<PathBuf> {
    let mut cur = dest.to_path_buf();
    for component in subdir.components() {
        cur.push(component);
        match tokio::fs::symlink_metadata(&cur).await {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Error::invalid(format!(
                    "subdir {:?} goes through a symlink in the repository",
                    subdir
                )))
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "subdir {:?} is not a folder in the repository",
                    subdir
                )))
            }
            Err(_) => {
                return Err(Error::not_found(format!(
                    "subdir {:?} does not exist in the repository at {revision}",
                    subdir
                )))
            }
        }
    }
    Ok(cur)
}
