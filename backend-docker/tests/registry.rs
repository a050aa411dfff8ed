//! DockerBuilder's registry push against a real registry: Debian's docker-registry on
//! 127.0.0.1:25000 (`scripts/setup-registry`; `WHARF_REGISTRY` overrides the address),
//! and for the credentials test a second one the test starts itself with htpasswd
//! auth. The registry's own HTTP API confirms what was pushed.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use wharf_core::detect::detect;
use wharf_core::traits::{BuildRequest, Builder, LogSink, Runtime};
use wharf_core::*;
use wharf_docker::{DockerBuilder, DockerRuntime, RegistryPush};
use wharf_testkit::{probe_registry, registry_addr};

/// The manifest media types a registry may answer with (Docker schema 2, OCI).
const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// The builder for these tests, or `None` (skipped) without an engine or registry.
async fn ready() -> Option<DockerBuilder> {
    if !docker_ready().await {
        return None;
    }
    if !require("registry", probe_registry(&registry_addr()).await) {
        return None;
    }
    Some(DockerBuilder::connect(images()).await.expect("connect"))
}

/// A busybox static site whose page is `body` (so every run has its own content).
fn site(dir: &Path, body: &str) -> BuildPlan {
    std::fs::write(dir.join("index.html"), body).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM busybox:1\nCOPY index.html /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    detect(dir).unwrap()
}

/// A build request for `tag`, and the texts of the lines its build logs.
fn request(dir: &Path, tag: &str, run: &str) -> (BuildRequest, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let req = BuildRequest {
        source_dir: dir.to_owned(),
        plan: site(dir, &format!("<p>{run}</p>\n")),
        tag: tag.to_owned(),
        labels: labels(run),
        logs: LogSink::from_fn(move |line| l.lock().unwrap().push(line.text)),
        cancel: CancellationToken::new(),
    };
    (req, lines)
}

/// Removes the local tags a test made (the registry keeps what was pushed).
async fn untag(run: &str) {
    let tags = docker_cli(&[
        "images",
        "--filter",
        &format!("label={TEST_LABEL}={run}"),
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ])
    .await;
    for t in tags.lines().filter(|t| !t.contains("<none>")) {
        docker_cli(&["rmi", t]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_build_is_in_the_registry_under_exactly_its_digest() {
    let Some(b) = ready().await else { return };
    let addr = registry_addr();
    let b = b.push_to(
        RegistryPush::new(addr.clone())
            .unwrap()
            .prefix("wharf-test")
            .unwrap(),
    );
    let run = unique("push");
    let dir = tempfile::tempdir().unwrap();
    let (req, lines) = request(dir.path(), &format!("wharf/{run}-web:dep_{run}"), &run);
    let art = b.build(req).await.expect("build and push");

    // The artifact is the pushed image by digest, pullable from elsewhere.
    let repo = format!("{addr}/wharf-test/{run}-web");
    let digest = wharf_testkit::digest_of(&art.image, &repo);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert!(!art.local_only);
    assert!(art.digest.as_deref().unwrap().starts_with("sha256:"));
    let lines = lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.starts_with("push: ")),
        "push progress goes to the build log: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == &format!("pushed {}", art.image)),
        "{lines:?}"
    );

    // The registry's own API has a manifest under exactly that digest: it answers
    // with that Docker-Content-Digest, and the bytes hash to it.
    let path = format!("/v2/wharf-test/{run}-web/manifests/{digest}");
    let a = wharf_testkit::http_get(&addr, &path, &[("Accept", MANIFEST_ACCEPT)])
        .await
        .expect("GET manifest");
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.headers.get("docker-content-digest"), Some(&digest));
    let hashed = format!("sha256:{:x}", Sha256::digest(&a.body));
    assert_eq!(hashed, digest);
    let manifest: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    // And under the release's tag, the same manifest.
    let a = wharf_testkit::http_get(
        &addr,
        &format!("/v2/wharf-test/{run}-web/manifests/dep_{run}"),
        &[("Accept", MANIFEST_ACCEPT)],
    )
    .await
    .expect("GET manifest by tag");
    assert_eq!(a.headers.get("docker-content-digest"), Some(&digest));

    // The local engine runs the artifact by its digest reference too.
    let rt = DockerRuntime::connect().await.expect("connect");
    let mut spec = busybox_site(&format!("reg-{run}"), "", &run);
    spec.image = art.image.clone();
    spec.command = None;
    let inst = rt.start(&spec).await.expect("start the pushed image");
    let (code, body) = get_when_healthy(&rt, &inst, Duration::from_secs(30)).await;
    assert_eq!(
        (code, body.as_str()),
        (200, format!("<p>{run}</p>\n").as_str())
    );
    rt.stop(&inst.id, Duration::ZERO).await.expect("stop");
    untag(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_push_the_artifact_is_the_local_tag_marked_local_only() {
    let Some(b) = ready().await else { return };
    let run = unique("local");
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("wharf/{run}-web:dep_{run}");
    let (req, _) = request(dir.path(), &tag, &run);
    let art = b.build(req).await.expect("build");
    assert_eq!(art.image, tag);
    assert!(art.local_only);
    untag(&run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_an_unreachable_registry_is_unavailable_and_retryable() {
    let Some(b) = ready().await else { return };
    // A loopback port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let b = b.push_to(RegistryPush::new(format!("127.0.0.1:{port}")).unwrap());
    let run = unique("down");
    let dir = tempfile::tempdir().unwrap();
    let (req, _) = request(dir.path(), &format!("wharf/{run}-web:dep_{run}"), &run);
    let err = b.build(req).await.expect_err("nothing to push to");
    eprintln!("{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert!(err.message().contains("cannot be reached"), "{err}");
    untag(&run).await;
}

/// A registry of the test's own with htpasswd auth (user `wharf`, password
/// `wharf-test-pw`; the bcrypt hash below was made once with Python's `crypt`).
struct AuthRegistry {
    addr: String,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

async fn auth_registry() -> AuthRegistry {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    std::fs::write(
        dir.path().join("htpasswd"),
        "wharf:$2b$05$Rwc01imJ0PUE9k/xn9E9..dYpV0ZHfegcCyydDeC1GMa19/vk6lC6\n",
    )
    .unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}\n\
         http:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: wharf-test\n    path: {pw}\n",
        root = dir.path().join("data").display(),
        pw = dir.path().join("htpasswd").display(),
    );
    std::fs::write(dir.path().join("config.yml"), config).unwrap();
    let child = tokio::process::Command::new("docker-registry")
        .arg("serve")
        .arg(dir.path().join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start docker-registry (scripts/setup-registry installs it)");
    for _ in 0..200 {
        if let Ok(a) = wharf_testkit::http_get(&addr, "/v2/", &[]).await {
            assert_eq!(a.status, 401, "an auth registry asks for credentials");
            return AuthRegistry {
                addr,
                _child: child,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the auth registry did not answer on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_a_clear_error_and_good_ones_push() {
    let Some(b) = ready().await else { return };
    let reg = auth_registry().await;
    let run = unique("auth");
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("wharf/{run}-web:dep_{run}");

    let (req, lines) = request(dir.path(), &tag, &run);
    let wrong = b.clone().push_to(
        RegistryPush::new(reg.addr.clone())
            .unwrap()
            .credentials("wharf", Secret::new("not-the-password")),
    );
    let err = wrong.build(req).await.expect_err("refused");
    eprintln!("{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        !err.is_retryable(),
        "the same credentials will be refused again: {err}"
    );
    assert!(err.message().contains("credentials"), "{err}");
    let logged = lines.lock().unwrap().clone();
    assert!(
        !logged.iter().any(|l| l.contains("not-the-password"))
            && !err.to_string().contains("not-the-password"),
        "the password is never logged"
    );

    let (req, _) = request(dir.path(), &tag, &run);
    let right = b.push_to(
        RegistryPush::new(reg.addr.clone())
            .unwrap()
            .credentials("wharf", Secret::new("wharf-test-pw")),
    );
    let art = right.build(req).await.expect("push with good credentials");
    assert!(
        art.image
            .starts_with(&format!("{}/{run}-web@sha256:", reg.addr)),
        "{}",
        art.image
    );
    untag(&run).await;
}
