//! The CLI's side: talks to a `wharf serve` over its HTTP API.
//!
//! [`Client`] sends requests and follows event streams, [`pack`] packs a folder for
//! upload (leaving out what `.gitignore` and `.wharfignore` say), [`Login`] is the stored login,
//! [`Progress`] the upload bar, [`Scope`] where services live.

mod http;
mod login;
mod pack;
mod progress;
mod scope;
mod sse;

pub use http::Client;
pub use login::{same_server, Login};
pub use pack::pack;
pub use progress::{bar, Progress};
pub use scope::{ensure, ensure_scope, Scope};

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
}
