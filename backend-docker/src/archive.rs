//! Volume archives on Docker: a volume's contents read and replaced through a
//! short-lived helper container that mounts it, with the engine's archive API
//! (`GET`/`PUT /containers/{id}/archive`) carrying the tar stream. The helper runs
//! the local busybox image ([`RuntimeOptions::helper_image`](crate::RuntimeOptions)),
//! carries the label [`HELPER`] (never Wharf's instance labels, so recovery and
//! listing never take it for an app) and is removed when its work is done.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions,
    StartContainerOptions, UploadToContainerOptions, WaitContainerOptions,
};
use futures::{StreamExt, TryStreamExt};
use wharf_core::{label, ByteStream, Error, Labels, Result, VolumeRef, VOLUME_ARCHIVE_ROOT};

use crate::error::{is_not_found, map, BACKEND};
use crate::runtime::{volume_name, DockerRuntime};

/// The label every helper container carries (value: what it does).
pub const HELPER: &str = "wharf.docker.helper";

/// Where a helper mounts the volume it exports (its basename is the archive's root).
const EXPORT_MOUNT: &str = "/volume";
/// Where a helper mounts the volume it replaces the contents of.
const IMPORT_MOUNT: &str = "/target";
/// Where the archive is unpacked in the helper's own file system before it replaces
/// the volume's contents (so a failed upload never touches the volume).
const STAGING: &str = "/tmp";

/// Removes a helper container when dropped (the stream that reads it may end early).
struct Helper {
    rt: DockerRuntime,
    id: String,
}

impl Helper {
    /// Removes the container now (dropping it removes it in the background).
    async fn done(mut self) {
        let id = std::mem::take(&mut self.id);
        let _ = self.rt.remove(&id).await;
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let rt = self.rt.clone();
        let id = std::mem::take(&mut self.id);
        if id.is_empty() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = rt.remove(&id).await;
            });
        }
    }
}

impl DockerRuntime {
    /// The Docker volume of `volume`, NotFound when there is none.
    async fn existing_volume(&self, volume: &VolumeRef) -> Result<String> {
        self.find_volume(volume).await?.ok_or_else(|| {
            Error::not_found(format!(
                "project {} has no volume {} here",
                volume.project, volume.name
            ))
            .with_backend(BACKEND)
        })
    }

    /// Creates a stopped helper container mounting `bind` and running `cmd` if
    /// started.
    async fn helper(&self, purpose: &str, bind: String, cmd: Vec<String>) -> Result<Helper> {
        let image = self.options.helper_image.clone();
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(cmd),
            labels: Some(HashMap::from([(HELPER.to_owned(), purpose.to_owned())])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                binds: Some(vec![bind]),
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(None::<CreateContainerOptions>, body)
            .await
            .map_err(|e| match is_not_found(&e) {
                true => Error::unavailable(format!(
                    "the helper image {image} is missing (scripts/base-images builds it; \
                     RuntimeOptions::helper_image names another)"
                ))
                .with_backend(BACKEND),
                false => map(e, &format!("create a {purpose} helper container")),
            })?;
        Ok(Helper {
            rt: self.clone(),
            id: created.id,
        })
    }

    /// See [`wharf_core::Runtime::export_volume`].
    pub(crate) async fn export_archive(&self, volume: &VolumeRef) -> Result<ByteStream> {
        let name = self.existing_volume(volume).await?;
        let helper = self
            .helper(
                "export",
                format!("{name}:{EXPORT_MOUNT}:ro"),
                vec!["true".into()],
            )
            .await?;
        let opts = DownloadFromContainerOptions {
            path: EXPORT_MOUNT.into(),
        };
        let what = format!("read volume {name}");
        let chunks = self
            .docker
            .download_from_container(&helper.id, Some(opts))
            .map_err(move |e| map(e, &what));
        // The helper lives as long as the stream, and is removed as it ends.
        let stream = futures::stream::unfold(
            (chunks.boxed(), Some(helper)),
            |(mut chunks, mut helper)| async move {
                match chunks.next().await {
                    Some(item) => Some((item, (chunks, helper))),
                    None => {
                        if let Some(h) = helper.take() {
                            h.done().await;
                        }
                        None
                    }
                }
            },
        );
        Ok(stream.boxed())
    }

    /// See [`wharf_core::Runtime::import_volume`].
    pub(crate) async fn import_archive(&self, volume: &VolumeRef, tar: ByteStream) -> Result<()> {
        let name = match self.find_volume(volume).await? {
            Some(n) => n,
            None => {
                let name = volume_name(volume.scope.as_deref(), &volume.name);
                let mut labels = Labels::new();
                labels.insert(label::MANAGED.into(), "true".into());
                labels.insert(label::PROJECT.into(), volume.project.to_string());
                labels.insert(label::VOLUME.into(), volume.name.clone());
                if let Some(scope) = &volume.scope {
                    labels.insert(label::VOLUME_SCOPE.into(), scope.clone());
                }
                self.create_volume(&name, &labels).await?;
                name
            }
        };
        let running = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                filters: Some(HashMap::from([("volume".to_owned(), vec![name.clone()])])),
                ..Default::default()
            }))
            .await
            .map_err(|e| map(e, &format!("list the containers using volume {name}")))?;
        if !running.is_empty() {
            return Err(Error::conflict(format!(
                "volume {} is in use by a running container: stop the services that mount it first",
                volume.name
            ))
            .with_backend(BACKEND));
        }
        // Unpacked beside the volume first; only a complete upload replaces its
        // contents (dot files included, the folder itself kept).
        let script = format!(
            "set -e; test -d {STAGING}/{root}; cd {IMPORT_MOUNT}; \
             rm -rf -- * .[!.]* ..?*; cp -a {STAGING}/{root}/. {IMPORT_MOUNT}/",
            root = VOLUME_ARCHIVE_ROOT
        );
        let helper = self
            .helper(
                "import",
                format!("{name}:{IMPORT_MOUNT}"),
                vec!["sh".into(), "-c".into(), script],
            )
            .await?;
        let body = bollard::body_try_stream(tar.map_err(std::io::Error::other));
        let opts = UploadToContainerOptions {
            path: STAGING.into(),
            no_overwrite_dir_non_dir: Some("true".into()),
            ..Default::default()
        };
        self.docker
            .upload_to_container(&helper.id, Some(opts), body)
            .await
            .map_err(|e| map(e, &format!("unpack an archive for volume {name}")))?;
        self.docker
            .start_container(&helper.id, None::<StartContainerOptions>)
            .await
            .map_err(|e| map(e, &format!("start the import helper of volume {name}")))?;
        let waited = self
            .docker
            .wait_container(&helper.id, None::<WaitContainerOptions>)
            .next()
            .await;
        let code = match waited {
            Some(Ok(r)) => r.status_code,
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
            Some(Err(e)) => return Err(map(e, &format!("wait for the import into {name}"))),
            None => -1,
        };
        helper.done().await;
        if code != 0 {
            return Err(Error::internal(format!(
                "replacing the contents of volume {name} failed (helper exit code {code})"
            ))
            .with_backend(BACKEND));
        }
        tracing::info!(volume = %name, "replaced a volume's contents from an archive, as asked");
        Ok(())
    }
}
