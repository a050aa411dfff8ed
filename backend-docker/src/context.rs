//! The build context: the source folder as a tar stream, made while it is sent.
//!
//! The folder is walked on a blocking thread that writes the tar into a small
//! bounded channel; the engine API request reads from the other end. Nothing is
//! written to disk and at most a few chunks are held in memory. Dropping the stream
//! (a cancelled build) stops the walk.
//!
//! What goes in: every file, folder and symbolic link under the folder (links are kept
//! as links, never followed), in a stable (sorted) order, except `.git` and what the
//! project's `.dockerignore` excludes. The Dockerfile Wharf builds from is added as
//! [`DOCKERFILE`], and `.dockerignore` is extended so the engine drops both from the
//! context after reading them: they never reach the image through `COPY . /app`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::stream::Stream;
use tokio::sync::mpsc;

/// The name of the Dockerfile Wharf adds to the context.
pub(crate) const DOCKERFILE: &str = ".wharf.Dockerfile";

/// Size of the chunks sent to the engine.
const CHUNK: usize = 64 * 1024;

/// `.dockerignore` rules, as Docker reads them (a practical subset: `*`, `?`, `**`,
/// leading `!` for exceptions, a leading `/` and trailing `/` ignored; a pattern that
/// matches a folder excludes everything in it).
#[derive(Debug, Clone, Default)]
pub(crate) struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    /// Parses the text of a `.dockerignore`.
    pub(crate) fn parse(text: &str) -> Self {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| {
                let (negate, pat) = match l.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, l),
                };
                let segments: Vec<String> = pat
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_owned)
                    .collect();
                (!segments.is_empty()).then_some((negate, segments))
            })
            .collect();
        Ignore { rules }
    }

    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(negate, _)| *negate)
    }

    /// Whether the path (relative, `/`-separated segments) is excluded: the last rule
    /// matching it or one of its parent folders decides.
    pub(crate) fn excluded(&self, path: &[&str]) -> bool {
        let mut out = false;
        for (negate, pat) in &self.rules {
            let hit = (1..=path.len()).any(|n| match_path(pat, &path[..n]));
            if hit {
                out = !negate;
            }
        }
        out
    }
}

fn match_path(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_path(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, path_rest)) => match_segment(first, seg) && match_path(rest, path_rest),
            None => false,
        },
    }
}

/// Glob match of one path segment: `*` any run of characters, `?` one character.
fn match_segment(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A `Write` that cuts what it is given into chunks and sends them down a channel,
/// blocking while the channel is full.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the build was abandoned"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Extra files put at the root of the context (name, content).
pub(crate) type Extra = Vec<(String, Vec<u8>)>;

/// Streams `dir` as a tar, with `dockerfile` added as [`DOCKERFILE`] and
/// `.dockerignore` extended to drop it. With `dir` `None`, the context holds only the
/// Dockerfile.
pub(crate) fn stream(
    dir: Option<PathBuf>,
    dockerfile: String,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        if let Err(e) = write_tar(dir.as_deref(), &dockerfile, tx) {
            // The receiver may be gone (cancelled): then nobody needs the error.
            let _ = err_tx.blocking_send(Err(e));
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

fn write_tar(
    dir: Option<&Path>,
    dockerfile: &str,
    tx: mpsc::Sender<io::Result<Bytes>>,
) -> io::Result<()> {
    let writer = ChannelWriter {
        tx,
        buf: Vec::with_capacity(CHUNK),
    };
    let mut tar = tar::Builder::new(writer);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let mut ignore_text = String::new();
    if let Some(dir) = dir {
        let meta = std::fs::metadata(dir)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a folder", dir.display()),
            ));
        }
        ignore_text = read_ignore_file(&dir.join(".dockerignore"))?;
        let ignore = Ignore::parse(&ignore_text);
        let mut rel = Vec::new();
        walk(&mut tar, dir, &mut rel, &ignore)?;
    }
    let extra: Extra = vec![
        (DOCKERFILE.to_owned(), dockerfile.as_bytes().to_vec()),
        (
            ".dockerignore".to_owned(),
            format!("{ignore_text}\n{DOCKERFILE}\n.dockerignore\n").into_bytes(),
        ),
    ];
    for (name, data) in extra {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &name, data.as_slice())?;
    }
    let mut writer = tar.into_inner()?;
    writer.flush()
}

fn walk<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    rel: &mut Vec<String>,
    ignore: &Ignore,
) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if rel.is_empty() && (name == ".git" || name == DOCKERFILE || name == ".dockerignore") {
            continue;
        }
        rel.push(name);
        let parts: Vec<&str> = rel.iter().map(String::as_str).collect();
        let excluded = ignore.excluded(&parts);
        let file_type = entry.file_type()?;
        let path = entry.path();
        let rel_path = rel.join("/");
        if file_type.is_dir() {
            if !excluded {
                tar.append_dir(&rel_path, &path)?;
            }
            // An excluded folder is skipped whole, unless an exception rule may bring
            // something in it back.
            if !excluded || ignore.has_exceptions() {
                walk(tar, &path, rel, ignore)?;
            }
        } else if !excluded && (file_type.is_file() || file_type.is_symlink()) {
            tar.append_path_with_name(&path, &rel_path)?;
        }
        rel.pop();
    }
    Ok(())
}

/// Rewrites the base images of a Dockerfile's `FROM` lines through `map` (stage
/// names, `scratch` and images given by build arguments are left alone).
pub(crate) fn map_from_lines(dockerfile: &str, map: impl Fn(&str) -> String) -> String {
    let mut stages: Vec<String> = Vec::new();
    let mut out = String::with_capacity(dockerfile.len());
    for line in dockerfile.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let is_from = trimmed.len() > 5
            && trimmed[..4].eq_ignore_ascii_case("FROM")
            && trimmed[4..].starts_with([' ', '\t']);
        if !is_from {
            out.push_str(line);
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let body = trimmed.trim_end_matches(['\n', '\r']);
        let ending = &trimmed[body.len()..];
        let mut words: Vec<String> = body.split_whitespace().map(str::to_owned).collect();
        if let Some(i) = words.iter().skip(1).position(|w| !w.starts_with("--")) {
            let i = i + 1;
            let image = words[i].clone();
            let keep = image == "scratch"
                || image.contains('$')
                || stages.iter().any(|s| s.eq_ignore_ascii_case(&image));
            if !keep {
                words[i] = map(&image);
            }
            if let (Some(as_kw), Some(name)) = (words.get(i + 1), words.get(i + 2)) {
                if as_kw.eq_ignore_ascii_case("AS") {
                    stages.push(name.clone());
                }
            }
        }
        out.push_str(indent);
        out.push_str(&words.join(" "));
        out.push_str(ending);
    }
    out
}

/// The text of the context's `.dockerignore` (empty if there is none). A symlink is
/// refused, not followed: it could name any file the server can read.
fn read_ignore_file(path: &Path) -> io::Result<String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            ".dockerignore is a symlink; it must be a plain file",
        )),
        Ok(_) => std::fs::read_to_string(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn ignore_rules() {
        let ig = Ignore::parse("# c\nnode_modules\n*.log\n/build/\n**/*.tmp\n!keep.log\n");
        assert!(ig.excluded(&["node_modules"]));
        assert!(ig.excluded(&["node_modules", "x", "y.js"]));
        assert!(ig.excluded(&["a.log"]));
        assert!(!ig.excluded(&["keep.log"]));
        assert!(
            !ig.excluded(&["src", "a.log"]),
            "*.log matches the root only"
        );
        assert!(ig.excluded(&["build", "out.js"]));
        assert!(ig.excluded(&["a", "b", "c.tmp"]));
        assert!(!ig.excluded(&["src", "main.py"]));
        assert!(match_segment("a*b?c", "axxbyc"));
        assert!(!match_segment("a*b?c", "axxbc"));
    }

    #[test]
    fn from_lines_are_mapped_but_not_stages() {
        let df = "FROM node:20-slim AS build\nRUN x\nfrom --platform=linux/amd64 python:3.12 as py\nFROM build\nFROM scratch\nFROM $BASE\n";
        let out = map_from_lines(df, |i| format!("local/{i}"));
        assert_eq!(
            out,
            "FROM local/node:20-slim AS build\nRUN x\nfrom --platform=linux/amd64 local/python:3.12 as py\nFROM build\nFROM scratch\nFROM $BASE\n"
        );
    }

    #[tokio::test]
    async fn streams_a_sorted_tar_without_ignored_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("app.py"), "print(1)\n").unwrap();
        std::fs::write(d.join(".dockerignore"), "secret.txt\n").unwrap();
        std::fs::write(d.join("secret.txt"), "x").unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join(".git/HEAD"), "ref").unwrap();
        std::fs::create_dir_all(d.join("lib")).unwrap();
        std::fs::write(d.join("lib/b.py"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        let chunks: Vec<_> = stream(Some(d.to_owned()), "FROM x\n".into())
            .collect()
            .await;
        let bytes: Vec<u8> = chunks
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut names = Vec::new();
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if name == "link" {
                assert_eq!(e.header().entry_type(), tar::EntryType::Symlink);
            }
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "app.py",
                "lib",
                "lib/b.py",
                "link",
                DOCKERFILE,
                ".dockerignore"
            ]
        );
    }

    /// A `.dockerignore` that is a symlink would have the server read (and send to the
    /// daemon) whatever file it names: the server's secret key, say.
    #[tokio::test]
    async fn a_dockerignore_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("app");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(dir.path().join("secret-key"), "TOP-SECRET\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret-key"), d.join(".dockerignore")).unwrap();
        let items: Vec<_> = stream(Some(d), "FROM x\n".into()).collect().await;
        let err = items
            .iter()
            .find_map(|i| i.as_ref().err())
            .expect("the symlink was followed");
        assert!(err.to_string().contains("symlink"), "{err}");
        let sent: Vec<u8> = items
            .into_iter()
            .filter_map(Result::ok)
            .flat_map(|c| c.to_vec())
            .collect();
        assert!(!String::from_utf8_lossy(&sent).contains("TOP-SECRET"));
    }

    #[tokio::test]
    async fn a_missing_folder_is_an_error_in_the_stream() {
        let items: Vec<_> = stream(Some("/nonexistent/wharf".into()), String::new())
            .collect()
            .await;
        assert!(items.iter().any(|i| i.is_err()));
    }
}
