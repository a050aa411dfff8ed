//! [`ImageMap`]: production base image names to the images an operator really has.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Maps production base image names (`node:20-slim`, `python:3.12-slim`...) to the
/// images an operator really has (a local mirror, an air-gapped build, a test image).
///
/// [`ImageMap::resolve`] looks for an exact match first (`node:20-slim`), then for a
/// mapping of the repository name without tag or digest (`node` covers `node:18-slim`
/// and `node@sha256:...`). Docker Hub's implicit prefixes (`docker.io/`,
/// `docker.io/library/`, `library/`) are ignored when matching repositories. Names
/// without a mapping are returned unchanged.
///
/// Serialised as a plain JSON object `{"from": "to", ...}`.
///
/// ```
/// use wharf_core::detect::ImageMap;
///
/// let map = ImageMap::parse("node:20-slim=local/node20, python=local/debian:bookworm").unwrap();
/// assert_eq!(map.resolve("node:20-slim"), "local/node20");
/// assert_eq!(map.resolve("python:3.11-slim"), "local/debian:bookworm");
/// assert_eq!(map.resolve("node:18-slim"), "node:18-slim");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ImageMap {
    entries: BTreeMap<String, String>,
}

impl ImageMap {
    /// An empty map: every image resolves to itself.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a mapping from `from` (an image `name:tag`, or a repository
    /// name alone to cover all its tags) to `to`.
    pub fn with(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        self.insert(from, to);
        self
    }

    /// Adds (or replaces) a mapping, in place.
    pub fn insert(&mut self, from: impl Into<String>, to: impl Into<String>) {
        self.entries.insert(from.into(), to.into());
    }

    /// Whether the map has no mappings.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The mappings, sorted by source name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The image to use for `image`: an exact mapping, else a mapping of its
    /// repository name (tag and digest stripped), else `image` unchanged.
    pub fn resolve(&self, image: &str) -> String {
        if let Some(to) = self.entries.get(image) {
            return to.clone();
        }
        let repo = normalize_repository(repository(image));
        // A key that is a bare repository (no tag or digest) covers every tag of it.
        self.entries
            .iter()
            .find(|(from, _)| {
                repository(from) == from.as_str() && normalize_repository(from) == repo
            })
            .map(|(_, to)| to.clone())
            .unwrap_or_else(|| image.to_owned())
    }

    /// Parses `from=to` pairs separated by commas, e.g.
    /// `node:20-slim=wharf/debian:bookworm,python=wharf/debian:bookworm`.
    /// Spaces around pairs are ignored, as are empty pairs (a trailing comma).
    ///
    /// Fails with [`crate::ErrorKind::InvalidInput`] on a pair without exactly one
    /// `=`, with an empty side, or with spaces inside an image name.
    pub fn parse(s: &str) -> Result<ImageMap> {
        let mut map = ImageMap::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |why: &str| {
                Err(Error::invalid(format!(
                    "invalid image mapping {pair:?}: {why} (expected from=to, e.g. node:20-slim=wharf/debian:bookworm)"
                )))
            };
            let Some((from, to)) = pair.split_once('=') else {
                return bad("missing '='");
            };
            if to.contains('=') {
                return bad("more than one '='");
            }
            let (from, to) = (from.trim(), to.trim());
            if from.is_empty() || to.is_empty() {
                return bad("an image name is empty");
            }
            if from
                .chars()
                .chain(to.chars())
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return bad("image names cannot hold spaces or control characters");
            }
            map.insert(from, to);
        }
        Ok(map)
    }
}

impl FromStr for ImageMap {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ImageMap::parse(s)
    }
}

impl fmt::Display for ImageMap {
    /// The `from=to,...` form [`ImageMap::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (from, to)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{from}={to}")?;
        }
        Ok(())
    }
}

/// The repository part of an image reference: without `@digest` and without `:tag`
/// (a `:` before the last `/` is a registry port, not a tag).
fn repository(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(name, _)| name);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// Drops Docker Hub's implicit prefixes so `docker.io/library/node` matches `node`.
fn normalize_repository(repo: &str) -> &str {
    let repo = repo.strip_prefix("docker.io/").unwrap_or(repo);
    repo.strip_prefix("library/").unwrap_or(repo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_strips_tag_and_digest_but_not_port() {
        assert_eq!(repository("node:20-slim"), "node");
        assert_eq!(repository("node@sha256:abc"), "node");
        assert_eq!(repository("localhost:5000/node"), "localhost:5000/node");
        assert_eq!(repository("localhost:5000/node:20"), "localhost:5000/node");
        assert_eq!(normalize_repository("docker.io/library/node"), "node");
    }
}
