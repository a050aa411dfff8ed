//! [`SealedStore`]: a [`Store`] wrapper that encrypts secret env values at rest.

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::error::{Error, Result};
use crate::model::*;
use crate::traits::{DeploymentFilter, DynStore, Store};

/// The prefix of a sealed value: `wharf-sealed:v1:` + hex(nonce ‖ ciphertext ‖ tag).
const PREFIX: &str = "wharf-sealed:v1:";

/// Wraps any store so that every [`EnvValue::Secret`] is sealed with
/// ChaCha20-Poly1305 before it reaches the inner store and opened on the way out.
/// The associated data binds each ciphertext to its owner and variable name, so a
/// sealed value copied to another variable or service does not open. Plain values and
/// everything else pass through unchanged.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use wharf_core::{store::{MemoryStore, SealedStore}, *};
/// let inner = Arc::new(MemoryStore::new());
/// let store = SealedStore::new(inner.clone(), &[7u8; 32]);
/// let mut p = Project::new("shop").unwrap();
/// p.env.insert("TOKEN".into(), EnvValue::Secret(Secret::new("hunter2")));
/// store.put_project(&p).await.unwrap();
/// // The inner store holds ciphertext; the wrapper gives the value back.
/// let raw = inner.project(&p.id).await.unwrap();
/// assert_ne!(raw.env["TOKEN"].expose(), "hunter2");
/// assert_eq!(store.project(&p.id).await.unwrap().env["TOKEN"].expose(), "hunter2");
/// # });
/// ```
#[derive(Clone)]
pub struct SealedStore {
    inner: DynStore,
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl SealedStore {
    /// Wraps `inner`, sealing with the 32-byte `key`.
    pub fn new(inner: DynStore, key: &[u8; 32]) -> Self {
        SealedStore {
            inner,
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
        }
    }

    /// Parses a key given as 64 hex characters.
    pub fn parse_key(hex: &str) -> Result<[u8; 32]> {
        let hex = hex.trim();
        let bad = || Error::invalid("a secret key is 64 hex characters (32 bytes)");
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(key)
    }

    fn seal_env(&self, owner: &str, env: &EnvVars) -> Result<EnvVars> {
        env.iter()
            .map(|(k, v)| {
                let v = match v {
                    EnvValue::Secret(s) if !s.expose().starts_with(PREFIX) => {
                        let nonce = random_nonce();
                        let aad = format!("{owner}/{k}");
                        let ct = self
                            .cipher
                            .encrypt(
                                &Nonce::from(nonce),
                                Payload {
                                    msg: s.expose().as_bytes(),
                                    aad: aad.as_bytes(),
                                },
                            )
                            .map_err(|_| Error::internal("cannot seal a secret"))?;
                        let mut raw = nonce.to_vec();
                        raw.extend_from_slice(&ct);
                        EnvValue::Secret(Secret::new(format!(
                            "{PREFIX}{}",
                            crate::fetch::hex(&raw)
                        )))
                    }
                    other => other.clone(),
                };
                Ok((k.clone(), v))
            })
            .collect()
    }

    fn open_env(&self, owner: &str, env: EnvVars) -> Result<EnvVars> {
        env.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    EnvValue::Secret(s) if s.expose().starts_with(PREFIX) => {
                        let fail = || {
                            Error::invalid(format!(
                                "secret {k} of {owner} does not open with this key \
                                 (wrong key, or the value was tampered with)"
                            ))
                        };
                        let raw = unhex(&s.expose()[PREFIX.len()..]).ok_or_else(fail)?;
                        if raw.len() < 12 + 16 {
                            return Err(fail());
                        }
                        let (nonce, ct) = raw.split_at(12);
                        // split_at(12) above: exactly a nonce's length.
                        let nonce = Nonce::from_slice(nonce);
                        let aad = format!("{owner}/{k}");
                        let pt = self
                            .cipher
                            .decrypt(
                                nonce,
                                Payload {
                                    msg: ct,
                                    aad: aad.as_bytes(),
                                },
                            )
                            .map_err(|_| fail())?;
                        EnvValue::Secret(Secret::new(String::from_utf8(pt).map_err(|_| fail())?))
                    }
                    other => other,
                };
                Ok((k, v))
            })
            .collect()
    }

    /// A copy of `record` with its secrets sealed.
    fn seal<T: WithEnv>(&self, record: &T) -> Result<T> {
        let mut r = record.clone();
        if let (owner, Some(env)) = r.owner_and_env() {
            *env = self.seal_env(owner, env)?;
        }
        Ok(r)
    }

    /// `record` with its secrets opened.
    fn open<T: WithEnv>(&self, mut record: T) -> Result<T> {
        if let (owner, Some(env)) = record.owner_and_env() {
            *env = self.open_env(owner, std::mem::take(env))?;
        }
        Ok(record)
    }

    fn open_all<T: WithEnv>(&self, records: Vec<T>) -> Result<Vec<T>> {
        records.into_iter().map(|r| self.open(r)).collect()
    }
}

/// A record whose env variables are sealed: the owner id each ciphertext is bound to,
/// and the variables (a release has them only when it kept its configuration).
trait WithEnv: Clone {
    fn owner_and_env(&mut self) -> (&str, Option<&mut EnvVars>);
}

impl WithEnv for Project {
    fn owner_and_env(&mut self) -> (&str, Option<&mut EnvVars>) {
        (self.id.as_str(), Some(&mut self.env))
    }
}

impl WithEnv for Environment {
    fn owner_and_env(&mut self) -> (&str, Option<&mut EnvVars>) {
        (self.id.as_str(), Some(&mut self.env))
    }
}

impl WithEnv for Service {
    fn owner_and_env(&mut self) -> (&str, Option<&mut EnvVars>) {
        (self.id.as_str(), Some(&mut self.env))
    }
}

impl WithEnv for Release {
    fn owner_and_env(&mut self) -> (&str, Option<&mut EnvVars>) {
        (self.id.as_str(), self.config.as_mut().map(|c| &mut c.env))
    }
}

/// 96 random bits from the OS generator (through `uuid`, already a dependency): the
/// first six bytes of a v4 UUID are wholly random, so two UUIDs give a full nonce.
/// Random 96-bit nonces are safe for far more secrets than a control plane stores.
fn random_nonce() -> [u8; 12] {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let mut n = [0u8; 12];
    n[..6].copy_from_slice(&a.as_bytes()[..6]);
    n[6..].copy_from_slice(&b.as_bytes()[..6]);
    n
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Store for SealedStore {
    async fn put_project(&self, project: &Project) -> Result<()> {
        self.inner.put_project(&self.seal(project)?).await
    }
    async fn project(&self, id: &ProjectId) -> Result<Project> {
        self.open(self.inner.project(id).await?)
    }
    async fn project_by_name(&self, name: &str) -> Result<Project> {
        self.open(self.inner.project_by_name(name).await?)
    }
    async fn projects(&self) -> Result<Vec<Project>> {
        self.open_all(self.inner.projects().await?)
    }
    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        self.inner.delete_project(id).await
    }
    async fn put_environment(&self, env: &Environment) -> Result<()> {
        self.inner.put_environment(&self.seal(env)?).await
    }
    async fn environment(&self, id: &EnvironmentId) -> Result<Environment> {
        self.open(self.inner.environment(id).await?)
    }
    async fn environment_by_name(&self, project: &ProjectId, name: &str) -> Result<Environment> {
        self.open(self.inner.environment_by_name(project, name).await?)
    }
    async fn environments(&self, project: &ProjectId) -> Result<Vec<Environment>> {
        self.open_all(self.inner.environments(project).await?)
    }
    async fn delete_environment(&self, id: &EnvironmentId) -> Result<()> {
        self.inner.delete_environment(id).await
    }
    async fn put_service(&self, service: &Service) -> Result<()> {
        self.inner.put_service(&self.seal(service)?).await
    }
    async fn service(&self, id: &ServiceId) -> Result<Service> {
        self.open(self.inner.service(id).await?)
    }
    async fn service_by_name(
        &self,
        project: &ProjectId,
        environment: Option<&EnvironmentId>,
        name: &str,
    ) -> Result<Service> {
        let service = self
            .inner
            .service_by_name(project, environment, name)
            .await?;
        self.open(service)
    }
    async fn services(&self, project: &ProjectId) -> Result<Vec<Service>> {
        self.open_all(self.inner.services(project).await?)
    }
    async fn delete_service(&self, id: &ServiceId) -> Result<()> {
        self.inner.delete_service(id).await
    }
    async fn insert_deployment(&self, deployment: &Deployment) -> Result<()> {
        self.inner.insert_deployment(deployment).await
    }
    async fn deployment(&self, id: &DeploymentId) -> Result<Deployment> {
        self.inner.deployment(id).await
    }
    async fn deployments(&self, filter: &DeploymentFilter) -> Result<Vec<Deployment>> {
        self.inner.deployments(filter).await
    }
    async fn update_deployment(&self, deployment: &Deployment) -> Result<Deployment> {
        self.inner.update_deployment(deployment).await
    }
    async fn insert_release(&self, release: &Release) -> Result<()> {
        self.inner.insert_release(&self.seal(release)?).await
    }
    async fn release(&self, id: &ReleaseId) -> Result<Release> {
        self.open(self.inner.release(id).await?)
    }
    async fn releases(&self, service: &ServiceId) -> Result<Vec<Release>> {
        self.open_all(self.inner.releases(service).await?)
    }
    async fn append_events(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        self.inner.append_events(events).await
    }
    async fn events(&self, deployment: &DeploymentId, after: u64) -> Result<Vec<Event>> {
        self.inner.events(deployment, after).await
    }
}
