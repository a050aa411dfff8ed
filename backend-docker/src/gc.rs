//! Garbage collection of what Wharf left on the engine.
//!
//! Only resources labelled `wharf.managed=true` are ever touched, and never one still
//! in use: running containers stay, images of retained releases (and of deployments
//! in progress) stay, images a container still uses stay (the engine refuses), networks
//! with containers stay. Named volumes are never removed: they hold data.

use std::collections::{BTreeSet, HashMap};

use bollard::query_parameters::{ListImagesOptions, ListNetworksOptions, RemoveImageOptions};
use wharf_core::traits::{DeploymentFilter, Store, StoreExt};
use wharf_core::{label, Result};

use crate::error::{is_conflict, is_not_found, map};
use crate::DockerRuntime;

/// What [`DockerRuntime::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Ids of the stopped containers removed.
    pub containers: Vec<String>,
    /// Image tags (or ids, for untagged images) removed.
    pub images: Vec<String>,
    /// Names of the networks removed.
    pub networks: Vec<String>,
}

fn managed_filter() -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{}=true", label::MANAGED)])])
}

impl DockerRuntime {
    /// Removes Wharf's leftovers: stopped (exited or dead) Wharf containers, Wharf
    /// images whose tag and id are not in `keep`, and Wharf networks no container uses.
    ///
    /// `keep` holds the image references (`name:tag` or `sha256:...` ids) that must
    /// stay: at least every image of a retained release and of a deployment in
    /// progress ([`retained_images`] collects them from a store). An image that is
    /// still in use by a container is left alone as well.
    pub async fn gc(&self, keep: &BTreeSet<String>) -> Result<GcReport> {
        let mut report = GcReport::default();

        let mut stopped = managed_filter();
        stopped.insert(
            "status".to_owned(),
            vec!["exited".to_owned(), "dead".to_owned()],
        );
        for c in self.containers(Some(stopped), "list containers").await? {
            let Some(id) = c.id else { continue };
            self.remove(&id).await?;
            report.containers.push(id);
        }

        // The ids of the images to keep, so a kept image is safe under any tag.
        let mut keep_ids = BTreeSet::new();
        for r in keep {
            match self.docker.inspect_image(r).await {
                Ok(img) => {
                    if let Some(id) = img.id {
                        keep_ids.insert(id);
                    }
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map(e, &format!("inspect image {r}"))),
            }
        }
        let opts = ListImagesOptions {
            all: false,
            filters: Some(managed_filter()),
            ..Default::default()
        };
        let images = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(|e| map(e, "list images"))?;
        for img in images {
            let kept = keep_ids.contains(&img.id)
                || keep.contains(&img.id)
                || img.repo_tags.iter().any(|t| keep.contains(t));
            if kept {
                continue;
            }
            // Engines list an untagged image's tags as `<none>:<none>`, which is no
            // reference: such an image goes by its id.
            let tags: Vec<String> = img
                .repo_tags
                .iter()
                .filter(|t| !t.starts_with("<none>"))
                .cloned()
                .collect();
            let refs = if tags.is_empty() {
                vec![img.id.clone()]
            } else {
                tags
            };
            for r in refs {
                let opts = RemoveImageOptions {
                    force: false,
                    noprune: false,
                    ..Default::default()
                };
                match self.docker.remove_image(&r, Some(opts), None).await {
                    Ok(_) => report.images.push(r),
                    // In use by a container, or gone meanwhile: leave it.
                    Err(e) if is_conflict(&e) || is_not_found(&e) => {}
                    Err(e) => return Err(map(e, &format!("remove image {r}"))),
                }
            }
        }

        let opts = ListNetworksOptions {
            filters: Some(managed_filter()),
        };
        let networks = self
            .docker
            .list_networks(Some(opts))
            .await
            .map_err(|e| map(e, "list networks"))?;
        // Not while a start is creating or joining a network.
        let _networks = crate::runtime::NETWORK_LOCK.lock().await;
        for n in networks {
            // By id: names are not unique to the engine (see `ensure_network`).
            let (Some(name), Some(id)) = (n.name, n.id) else {
                continue;
            };
            // Attached containers, stopped ones too (the engine's inspect shows only
            // running ones, and a stopped container could not start again).
            if self.containers_on(&id).await? > 0 {
                continue;
            }
            match self.docker.remove_network(&id).await {
                Ok(()) => report.networks.push(name),
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                // 403: it gained an endpoint since the inspect.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 403, ..
                }) => {}
                Err(e) => return Err(map(e, &format!("remove network {name}"))),
            }
        }
        Ok(report)
    }
}

/// The images garbage collection must keep: the artifacts of the newest `keep_last`
/// releases of every service (at least one), of the live deployment of every service,
/// and of every deployment still in progress (built but not released yet).
pub async fn retained_images(store: &dyn Store, keep_last: usize) -> Result<BTreeSet<String>> {
    let mut keep = BTreeSet::new();
    for project in store.projects().await? {
        for svc in store.services(&project.id).await? {
            for rel in store.releases(&svc.id).await?.iter().take(keep_last.max(1)) {
                keep.insert(rel.artifact.image.clone());
                if let Some(d) = &rel.artifact.digest {
                    keep.insert(d.clone());
                }
            }
            // After a rollback the live release may be older than the newest ones.
            if let Some(live) = store.live_deployment(&svc.id).await? {
                if let Some(a) = live.artifact {
                    keep.insert(a.image);
                }
            }
        }
    }
    let active = store
        .deployments(&DeploymentFilter {
            active_only: true,
            ..Default::default()
        })
        .await?;
    for d in active {
        if let Some(a) = d.artifact {
            keep.insert(a.image);
        }
    }
    Ok(keep)
}
