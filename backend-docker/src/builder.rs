//! [`DockerBuilder`]: images built by the engine from fetched source and a plan.

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use bollard::models::BuildInfo;
use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use wharf_core::detect::{render_dockerfile, ImageMap};
use wharf_core::traits::{BuildRequest, Builder, LogSink};
use wharf_core::{label, Artifact, Error, ErrorKind, Labels, LogStream, ProjectKind, Result};

use crate::context;
use crate::error::{is_not_found, map, next_unless_cancelled, BACKEND};
use crate::push::RegistryPush;

/// How many of the last build lines go into a failure's message.
const FAILURE_LINES: usize = 15;

/// A [`Builder`] on the Docker engine's build API (the classic builder, which every
/// engine has).
///
/// - The source folder is sent as a tar stream made while it is sent (see the
///   `.dockerignore` note below); nothing is copied to disk first.
/// - Zero-config plans are rendered with [`render_dockerfile`]; a project's own
///   Dockerfile is used as it is, except that the base images of its `FROM` lines go
///   through the same [`ImageMap`], so `FROM node:20-slim` builds where only a local
///   image stands in for it.
/// - Build output goes line by line to the request's [`LogSink`] as
///   [`LogStream::Build`] lines; a cancelled request drops the connection, which makes
///   the engine stop the build, and returns `Cancelled`.
/// - One build call makes the image, its labels (`wharf.managed`, `wharf.project`,
///   `wharf.service`, `wharf.release`...: the classic builder adds them as a last,
///   metadata-only step) and its per-release tag: the artifact's `image`. The image
///   below the label step is the content: an unchanged rebuild gets it back from the
///   layer cache with the same id, which is the artifact's `digest`. It is the
///   labelled image's parent, so removing the labelled image removes it too unless
///   another release shares it.
/// - The project's `.dockerignore` is honoured (`*`, `?`, `**`, `!` exceptions) and
///   `.git` is never sent.
/// - With [`DockerBuilder::push_to`], each build is also pushed to a registry and the
///   artifact's image is the reference by manifest digest there
///   (`host/repo@sha256:...`, see [`RegistryPush`]), which a runtime on other machines
///   can pull. Without it, the artifact is the local tag, marked
///   [`Artifact::local_only`].
#[derive(Debug, Clone)]
pub struct DockerBuilder {
    docker: Docker,
    images: ImageMap,
    push: Option<RegistryPush>,
}

impl DockerBuilder {
    /// Connects to the local engine (as [`crate::DockerRuntime::connect`] does) and
    /// builds with `images` mapping production base images to local ones.
    pub async fn connect(images: ImageMap) -> Result<Self> {
        Ok(Self::with_client(crate::runtime::connect().await?, images))
    }

    /// A builder on an existing bollard client (call `negotiate_version` on it first).
    pub fn with_client(docker: Docker, images: ImageMap) -> Self {
        DockerBuilder {
            docker,
            images,
            push: None,
        }
    }

    /// Pushes every image built to a registry (off by default): the artifact is then
    /// the pushed image by digest, which a cluster can pull.
    pub fn push_to(mut self, push: RegistryPush) -> Self {
        self.push = Some(push);
        self
    }

    /// The registry push in use, if any.
    pub fn push(&self) -> Option<&RegistryPush> {
        self.push.as_ref()
    }

    /// The image map in use.
    pub fn images(&self) -> &ImageMap {
        &self.images
    }

    /// The Dockerfile to build `req` with, and the base image it starts from (for the
    /// error message when it is missing).
    fn dockerfile(&self, req: &BuildRequest) -> Result<(String, Option<String>)> {
        if req.plan.kind != ProjectKind::Dockerfile {
            let text = render_dockerfile(&req.plan, &self.images)?;
            return Ok((text, Some(self.images.resolve(&req.plan.base_image))));
        }
        let rel = req.plan.dockerfile.as_deref().unwrap_or("Dockerfile");
        let path = std::path::Path::new(rel);
        let inside = path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || rel.is_empty() {
            return Err(Error::invalid(format!(
                "Dockerfile path {rel:?} must be a relative path inside the source"
            )));
        }
        let full = req.source_dir.join(path);
        let text = std::fs::read_to_string(&full)
            .map_err(|e| Error::from(e).context(format!("read {}", full.display())))?;
        let mapped = context::map_from_lines(&text, |image| self.images.resolve(image));
        let base =
            (!req.plan.base_image.is_empty()).then(|| self.images.resolve(&req.plan.base_image));
        Ok((mapped, base))
    }

    /// Runs one build; returns the id of the image built.
    async fn run_build(
        &self,
        options: BuildImageOptions,
        context: Option<std::path::PathBuf>,
        dockerfile: String,
        logs: &LogSink,
        cancel: &tokio_util::sync::CancellationToken,
        recent: &mut VecDeque<String>,
    ) -> Result<String> {
        let body = bollard::body_try_stream(context::stream(context, dockerfile));
        let mut stream = self.docker.build_image(options, None, Some(body));
        let mut image_id = None;
        let send = |text: &str, recent: &mut VecDeque<String>| {
            for line in text.split('\n') {
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() {
                    continue;
                }
                logs.send(LogStream::Build, line);
                if recent.len() == FAILURE_LINES {
                    recent.pop_front();
                }
                recent.push_back(line.to_owned());
            }
        };
        loop {
            let item = next_unless_cancelled(&mut stream, cancel, logs, "build").await?;
            let info: BuildInfo = match item {
                None => break,
                Some(Ok(info)) => info,
                Some(Err(e)) => {
                    let err = map(e, "build");
                    // The engine refusing the build (bad Dockerfile, bad context) is a
                    // failed build; an unreachable engine stays Unavailable.
                    return Err(match err.kind() {
                        ErrorKind::Unavailable | ErrorKind::Timeout => err,
                        _ => Error::build_failed(err.message().to_owned())
                            .with_backend(BACKEND)
                            .with_source(err),
                    });
                }
            };
            if let Some(text) = &info.stream {
                send(text, recent);
            }
            if let Some(status) = &info.status {
                // Pull progress of a base image: one line per layer step is plenty.
                if info.progress_detail.is_none() {
                    send(status, recent);
                }
            }
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_else(|| "unknown error".into());
                return Err(Error::build_failed(message).with_backend(BACKEND));
            }
            if let Some(id) = info.aux.and_then(|aux| aux.id) {
                image_id = Some(id);
            }
        }
        image_id.ok_or_else(|| {
            Error::build_failed("the engine finished the build without naming the image")
                .with_backend(BACKEND)
        })
    }

    /// Adds a hint when the base image of a failed build is not on the engine.
    async fn explain(&self, err: Error, base: Option<&str>, recent: &VecDeque<String>) -> Error {
        if err.kind() != ErrorKind::BuildFailed {
            return err;
        }
        let mut message = err.message().to_owned();
        if let Some(base) = base {
            if let Err(e) = self.docker.inspect_image(base).await {
                if is_not_found(&e) {
                    message.push_str(&format!(
                        "; the base image {base} is not on this engine and could not be pulled: build or import it, or map the plan's base image to a local one (ImageMap)"
                    ));
                }
            }
        }
        if !recent.is_empty() {
            message.push_str("; last build lines:\n");
            message.push_str(&Vec::from(recent.clone()).join("\n"));
        }
        Error::build_failed(message).with_backend(BACKEND)
    }
}

impl DockerBuilder {
    /// The content of the image `built`: the image before its `label_steps` label
    /// steps, which an unchanged rebuild gets back from the layer cache whatever its
    /// labels; `built` itself when the engine does not name it.
    async fn content_of(&self, built: &str, label_steps: usize) -> Result<String> {
        // The image's history, newest first: the entry below the label steps is
        // named when the engine built it here ("<missing>" otherwise).
        let history = self
            .docker
            .image_history(built)
            .await
            .map_err(|e| map(e, &format!("read the history of built image {built}")))?;
        Ok(history
            .get(label_steps)
            .map(|h| h.id.clone())
            .filter(|id| id.starts_with("sha256:"))
            .unwrap_or_else(|| built.to_owned()))
    }
}

/// The one `LABEL` instruction appended to `dockerfile` that puts `labels` on the
/// image: keys and values double-quoted, with `\`, `"` and `$` escaped (no variable
/// is expanded in them). None where it cannot be written safely: a Dockerfile that
/// changes its escape character (`# escape=`) or ends in a line continuation, or a
/// label holding a line break.
fn label_step(dockerfile: &str, labels: &Labels) -> Option<String> {
    // Parser directives come first, before any other line, comment or not.
    let directive = dockerfile
        .lines()
        .take_while(|l| l.trim_start().starts_with('#'))
        .any(|l| {
            let l = l.trim_start_matches('#').trim().to_ascii_lowercase();
            l.replace(' ', "").starts_with("escape=")
        });
    if directive || dockerfile.trim_end().ends_with('\\') {
        return None;
    }
    let quote = |s: &str| -> Option<String> {
        if s.contains(['\n', '\r']) {
            return None;
        }
        let escaped = s
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$");
        Some(format!("\"{escaped}\""))
    };
    let mut step = String::from("LABEL");
    for (k, v) in labels {
        step.push_str(&format!(" {}={}", quote(k)?, quote(v)?));
    }
    Some(step)
}

fn labels_map(labels: &Labels) -> HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[async_trait]
impl Builder for DockerBuilder {
    async fn build(&self, req: BuildRequest) -> Result<Artifact> {
        if req.cancel.is_cancelled() {
            return Err(Error::cancelled(
                "the build was cancelled before it started",
            ));
        }
        if req.tag.is_empty() || req.tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(format!("{:?} is not an image tag", req.tag)));
        }
        let (dockerfile, base) = self.dockerfile(&req)?;

        // One build: the content, then the release's labels in one LABEL step on
        // top of it, and its tag. Where that step cannot be written safely, the
        // engine adds them (one step per label).
        let mut labels = req.labels.clone();
        labels.insert(label::MANAGED.into(), "true".into());
        let (dockerfile, label_steps, option_labels) = match label_step(&dockerfile, &labels) {
            Some(step) => (format!("{dockerfile}\n{step}\n"), 1, None),
            None => (dockerfile, labels.len(), Some(labels_map(&labels))),
        };
        let options = BuildImageOptions {
            dockerfile: context::DOCKERFILE.into(),
            t: Some(req.tag.clone()),
            rm: true,
            forcerm: true,
            labels: option_labels,
            ..Default::default()
        };
        let mut recent = VecDeque::new();
        let built = match self
            .run_build(
                options,
                Some(req.source_dir.clone()),
                dockerfile,
                &req.logs,
                &req.cancel,
                &mut recent,
            )
            .await
        {
            Ok(id) => id,
            Err(e) => return Err(self.explain(e, base.as_deref(), &recent).await),
        };
        let content = self.content_of(&built, label_steps).await?;
        req.logs
            .send(LogStream::System, format!("built {} ({content})", req.tag));
        let Some(push) = &self.push else {
            return Ok(Artifact {
                image: req.tag,
                digest: Some(content),
                local_only: true,
            });
        };
        let image = push
            .push(&self.docker, &req.tag, &req.logs, &req.cancel)
            .await?;
        Ok(Artifact {
            image,
            digest: Some(content),
            local_only: false,
        })
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn one_label_step_quotes_and_escapes_every_value() {
        let l = labels(&[
            ("wharf.project", "prj_1"),
            ("odd", r#"a "quoted" $HOME \ path"#),
        ]);
        assert_eq!(
            label_step("FROM scratch\n", &l).unwrap(),
            r#"LABEL "odd"="a \"quoted\" \$HOME \\ path" "wharf.project"="prj_1""#
        );
    }

    #[test]
    fn the_engine_adds_labels_where_a_step_would_be_unsafe() {
        let l = labels(&[("wharf.project", "prj_1")]);
        // Another escape character, a trailing continuation, a line break.
        assert!(label_step("# escape=`\nFROM scratch\n", &l).is_none());
        assert!(label_step("#Escape = `\nFROM scratch\n", &l).is_none());
        assert!(label_step("FROM scratch\nRUN true \\\n", &l).is_none());
        let broken = labels(&[("k", "two\nlines")]);
        assert!(label_step("FROM scratch\n", &broken).is_none());
        // A comment that is no directive is fine.
        assert!(label_step("# build me\nFROM scratch\n", &l).is_some());
    }
}
