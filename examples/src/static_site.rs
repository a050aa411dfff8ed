//! `wharf static-server DIR`: the static file server the host runtime runs for a
//! zero-config static site (detection plans busybox `httpd`, which a host may lack).
//! It serves `DIR` on `127.0.0.1:$PORT` for GET and HEAD: a folder's `index.html`,
//! the type from the extension, nothing outside `DIR` (no `..`, no symbolic link
//! leading out), no hidden file (`.env`, `.git/`; `.well-known/` is served), and no
//! listing of folders.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, Response, StatusCode};

/// Serves `root` on `addr` until the process ends.
pub async fn serve(root: PathBuf, addr: SocketAddr) -> std::io::Result<()> {
    let root = std::fs::canonicalize(&root)?;
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a folder", root.display()),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().fallback(move |req: Request<Body>| {
        let root = root.clone();
        async move { answer(&root, req.method(), req.uri().path()).await }
    });
    axum::serve(listener, app).await
}

/// The file `path` (a request's, percent-encoded) names under `root`, if it is one:
/// a folder stands for its `index.html`; anything that leaves `root` is none.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let mut file = root.to_path_buf();
    for part in Path::new(decoded.as_ref()).components() {
        match part {
            Component::RootDir | Component::CurDir => {}
            // Hidden files (`.env`, `.git/`) are never served; `.well-known/` is.
            Component::Normal(p) => {
                let hidden = p.to_str().is_none_or(|p| p.starts_with('.'));
                if hidden && p != ".well-known" {
                    return None;
                }
                file.push(p)
            }
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    // Symbolic links are followed only while they stay inside the root.
    let mut real = std::fs::canonicalize(&file).ok()?;
    if !real.starts_with(root) {
        return None;
    }
    if real.is_dir() {
        real = std::fs::canonicalize(real.join("index.html")).ok()?;
        if !real.starts_with(root) {
            return None;
        }
    }
    real.is_file().then_some(real)
}

/// The content type of a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

async fn answer(root: &Path, method: &Method, path: &str) -> Response<Body> {
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Body::from(text));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if method != Method::GET && method != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let (root_c, path_c) = (root.to_path_buf(), path.to_owned());
    let found = tokio::task::spawn_blocking(move || resolve(&root_c, &path_c))
        .await
        .ok()
        .flatten();
    let Some(file) = found else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let opened = match tokio::fs::File::open(&file).await {
        Ok(f) => f,
        Err(_) => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    let len = opened.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from_stream(tokio_util::io::ReaderStream::new(opened))
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&file)),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_root_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("index.html"), "home").unwrap();
        std::fs::write(root.join("docs/index.html"), "docs").unwrap();
        std::fs::write(root.join("a b.txt"), "spaced").unwrap();
        std::fs::write(root.join(".env"), "SECRET=1").unwrap();
        std::fs::create_dir_all(root.join(".well-known")).unwrap();
        std::fs::write(root.join(".well-known/security.txt"), "contact").unwrap();
        std::fs::write(tmp.path().join("secret"), "operator's").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("leak")).unwrap();
        std::os::unix::fs::symlink(root.join("a b.txt"), root.join("alias")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let got = |p: &str| resolve(&root, p).map(|f| std::fs::read_to_string(f).unwrap());
        assert_eq!(got("/").as_deref(), Some("home"));
        assert_eq!(got("/docs").as_deref(), Some("docs"));
        assert_eq!(got("/docs/").as_deref(), Some("docs"));
        assert_eq!(got("/a%20b.txt").as_deref(), Some("spaced"));
        assert_eq!(got("/alias").as_deref(), Some("spaced"));
        assert_eq!(got("/.well-known/security.txt").as_deref(), Some("contact"));
        for out in [
            "/../secret",
            "/%2e%2e/secret",
            "/docs/..%2f..%2fsecret",
            "/leak",
            "/missing.html",
            "/%ff",
            "/.env",
            "/%2eenv",
        ] {
            assert_eq!(got(out), None, "{out}");
        }
    }
}
