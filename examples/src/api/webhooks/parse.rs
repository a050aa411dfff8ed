//! What a GitHub or GitLab delivery asks for, in forge-neutral terms, and the
//! signature check of GitHub's deliveries.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::auth::{constant_time_eq, unhex};

/// The HMAC-SHA256 of `body` with `secret`: what GitHub signs a delivery with.
fn github_mac(secret: &[u8], body: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// The `X-Hub-Signature-256` header GitHub sends with `body` signed by `secret`
/// (`sha256=<hex>`): for clients and tests that send deliveries.
pub fn github_signature(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", crate::auth::hex(&github_mac(secret, body)))
}

/// Checks `X-Hub-Signature-256: sha256=<hex>` over `body`, in constant time.
pub fn github_signature_ok(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(given) = header.strip_prefix("sha256=").and_then(unhex) else {
        return false;
    };
    constant_time_eq(&github_mac(secret, body), &given)
}

/// A repository URL reduced to `host/owner/name` so the forms a forge sends
/// (https, ssh, `git@host:path`, with or without `.git`) compare equal.
pub fn normalize_repo(url: &str) -> String {
    let mut u = url.trim().to_ascii_lowercase();
    for scheme in ["https://", "http://", "ssh://", "git://", "file://"] {
        if let Some(rest) = u.strip_prefix(scheme) {
            u = rest.to_owned();
        }
    }
    if let Some((_, rest)) = u.split_once('@') {
        u = rest.to_owned();
    }
    if let Some((host, path)) = u.split_once(':') {
        if !path.starts_with('/') && !path.chars().all(|c| c.is_ascii_digit()) {
            u = format!("{host}/{path}");
        }
    }
    u.trim_end_matches('/').trim_end_matches(".git").to_owned()
}

/// What a delivery asks for, in forge-neutral terms.
#[derive(Debug)]
pub(super) enum Action {
    Push {
        repos: Vec<String>,
        branch: String,
        default_branch: Option<String>,
        sha: String,
        /// The branch's head before the push, when the forge says.
        before: Option<String>,
        /// Whether the forge says the push was forced.
        forced: bool,
    },
    Preview {
        repos: Vec<String>,
        base: String,
        /// The repository's default branch, when the forge says.
        default_branch: Option<String>,
        number: u64,
        /// Where the head branch lives (`None`: the forge does not say, e.g. a
        /// deleted fork; such a request can only be closed).
        head_url: Option<String>,
        head_branch: String,
        /// The head commit, when the forge says.
        head_sha: Option<String>,
        open: bool,
    },
    Ignore(String),
}

/// A full SHA-1 commit id, as forges send in a push (what the git fetcher takes as a
/// commit; a SHA-256 repository's pushes deploy the branch instead).
pub(super) fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

fn s(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// The repositories a delivery says it is about, normalized: GitHub's `repository`
/// and GitLab's `project` URLs. Read before the signature is checked, only to pick
/// whose secrets to try; an unparsable body names none.
pub(super) fn repos_named(body: &[u8]) -> Vec<String> {
    let Ok(p) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let github = ["clone_url", "ssh_url", "html_url", "git_url"]
        .iter()
        .filter_map(|k| s(&p["repository"][*k]));
    let gitlab = ["git_http_url", "git_ssh_url", "web_url"]
        .iter()
        .filter_map(|k| s(&p["project"][*k]));
    github.chain(gitlab).map(|u| normalize_repo(&u)).collect()
}

pub(super) fn github_action(event: &str, p: &Value) -> Action {
    let repo = &p["repository"];
    let repos: Vec<String> = ["clone_url", "ssh_url", "html_url", "git_url"]
        .iter()
        .filter_map(|k| s(&repo[*k]))
        .collect();
    match event {
        "push" => match p["ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("refs/heads/"))
        {
            Some(branch) if p["deleted"] != true => Action::Push {
                repos,
                branch: branch.to_owned(),
                default_branch: s(&repo["default_branch"]),
                sha: s(&p["after"]).unwrap_or_default(),
                before: s(&p["before"]),
                forced: p["forced"] == true,
            },
            _ => Action::Ignore("not a branch update".into()),
        },
        "pull_request" => {
            let pr = &p["pull_request"];
            let open = match p["action"].as_str().unwrap_or("") {
                "opened" | "reopened" | "synchronize" => true,
                "closed" => false,
                other => return Action::Ignore(format!("pull_request action {other}")),
            };
            Action::Preview {
                repos,
                base: s(&pr["base"]["ref"]).unwrap_or_default(),
                default_branch: s(&repo["default_branch"]),
                number: p["number"].as_u64().unwrap_or(0),
                // Never the base repository's URL in its stead: `head.repo` is null
                // when a fork was deleted, and its code is not the base's.
                head_url: s(&pr["head"]["repo"]["clone_url"]),
                head_branch: s(&pr["head"]["ref"]).unwrap_or_default(),
                head_sha: s(&pr["head"]["sha"]),
                open,
            }
        }
        other => Action::Ignore(format!("event {other}")),
    }
}

pub(super) fn gitlab_action(event: &str, p: &Value) -> Action {
    let proj = &p["project"];
    let repos: Vec<String> = ["git_http_url", "git_ssh_url", "web_url"]
        .iter()
        .filter_map(|k| s(&proj[*k]))
        .collect();
    match event {
        "Push Hook" => match p["ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("refs/heads/"))
        {
            Some(branch)
                if p["after"]
                    .as_str()
                    .is_some_and(|a| a.bytes().any(|b| b != b'0')) =>
            {
                Action::Push {
                    repos,
                    branch: branch.to_owned(),
                    default_branch: s(&proj["default_branch"]),
                    sha: s(&p["checkout_sha"])
                        .or_else(|| s(&p["after"]))
                        .unwrap_or_default(),
                    before: s(&p["before"]),
                    // GitLab does not say; `before` is the overwritten head then.
                    forced: false,
                }
            }
            _ => Action::Ignore("not a branch update".into()),
        },
        "Merge Request Hook" => {
            let mr = &p["object_attributes"];
            let open = match mr["action"].as_str().unwrap_or("") {
                "open" | "reopen" | "update" => true,
                "close" | "merge" => false,
                other => return Action::Ignore(format!("merge request action {other}")),
            };
            Action::Preview {
                repos,
                base: s(&mr["target_branch"]).unwrap_or_default(),
                default_branch: s(&proj["default_branch"]),
                number: mr["iid"].as_u64().unwrap_or(0),
                // The target project's URL only when the source is that project.
                head_url: s(&mr["source"]["git_http_url"]).or_else(|| {
                    let (from, to) = (&mr["source_project_id"], &mr["target_project_id"]);
                    (from.is_u64() && from == to)
                        .then(|| s(&proj["git_http_url"]))
                        .flatten()
                }),
                head_branch: s(&mr["source_branch"]).unwrap_or_default(),
                head_sha: s(&mr["last_commit"]["id"]),
                open,
            }
        }
        other => Action::Ignore(format!("event {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_urls_normalize_to_one_form() {
        for u in [
            "https://github.com/Acme/Shop.git",
            "git@github.com:acme/shop.git",
            "ssh://git@github.com/acme/shop",
            "https://github.com/acme/shop/",
        ] {
            assert_eq!(normalize_repo(u), "github.com/acme/shop", "{u}");
        }
        assert_ne!(
            normalize_repo("https://github.com/acme/shop"),
            normalize_repo("https://github.com/acme/shop2")
        );
    }

    #[test]
    fn github_signatures_check_the_whole_body() {
        // The example from GitHub's docs: secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(github_signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            sig
        ));
        assert!(!github_signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            sig
        ));
        assert!(!github_signature_ok(
            b"another secret",
            b"Hello, World!",
            sig
        ));
        assert!(!github_signature_ok(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            "sha1=00"
        ));
        assert_eq!(
            github_signature(b"It's a Secret to Everybody", b"Hello, World!"),
            sig
        );
    }
}
