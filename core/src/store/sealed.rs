//! [`SealedStore`]: a [`Store`] wrapper that encrypts secret env values at rest.

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::error::{Error, Result};
use crate::model::*;
use crate::traits::{CronRunFilter, DeploymentFilter, DynStore, Store};

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
    sealer: Sealer,
}

/// Seals single secrets the way [`SealedStore`] does, for records kept outside a
/// store (backup destinations' credentials, say). The owner and name given to
/// [`Sealer::seal`] must be given again to [`Sealer::open`].
///
/// ```
/// use wharf_core::{store::Sealer, Secret};
/// let s = Sealer::new(&[9u8; 32]);
/// let sealed = s.seal("p1", "s3", &Secret::new("key")).unwrap();
/// assert!(!sealed.expose().contains("key"));
/// assert_eq!(s.open("p1", "s3", sealed.clone()).unwrap().expose(), "key");
/// assert!(s.open("p2", "s3", sealed).is_err());
/// ```
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SealedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    /// A sealer with the 32-byte `key`.
    pub fn new(key: &[u8; 32]) -> Self {
        Sealer {
            cipher: ChaCha20Poly1305::new(&Key::from(*key)),
        }
    }

    /// Seals one secret, bound to its owner and name. Every secret is sealed,
    /// whatever it looks like: a value that merely starts like a sealed one is still
    /// the caller's plain text.
    pub fn seal(&self, owner: &str, name: &str, secret: &Secret) -> Result<Secret> {
        let nonce = random_nonce();
        let aad = format!("{owner}/{name}");
        let ct = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::internal("cannot seal a secret"))?;
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&ct);
        Ok(Secret::new(format!("{PREFIX}{}", crate::fetch::hex(&raw))))
    }

    /// Opens what [`Self::seal`] sealed; a value stored before sealing was on (no
    /// prefix) passes as it is.
    pub fn open(&self, owner: &str, name: &str, secret: Secret) -> Result<Secret> {
        let Some(hex) = secret.expose().strip_prefix(PREFIX) else {
            return Ok(secret);
        };
        let fail = || {
            Error::invalid(format!(
                "secret {name} of {owner} does not open with this key \
                 (wrong key, or the value was tampered with)"
            ))
        };
        let raw = unhex(hex).ok_or_else(fail)?;
        if raw.len() < 12 + 16 {
            return Err(fail());
        }
        let (nonce, ct) = raw.split_at(12);
        // split_at(12) above: exactly a nonce's length.
        let nonce = Nonce::from_slice(nonce);
        let aad = format!("{owner}/{name}");
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
        Ok(Secret::new(String::from_utf8(pt).map_err(|_| fail())?))
    }
}

impl SealedStore {
    /// Wraps `inner`, sealing with the 32-byte `key`.
    pub fn new(inner: DynStore, key: &[u8; 32]) -> Self {
        SealedStore {
            inner,
            sealer: Sealer::new(key),
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

    fn seal(&self, owner: &str, name: &str, secret: &Secret) -> Result<Secret> {
        self.sealer.seal(owner, name, secret)
    }

    fn open(&self, owner: &str, name: &str, secret: Secret) -> Result<Secret> {
        self.sealer.open(owner, name, secret)
    }

    fn seal_env(&self, owner: &str, env: &EnvVars) -> Result<EnvVars> {
        env.iter()
            .map(|(k, v)| {
                let v = match v {
                    EnvValue::Secret(s) => EnvValue::Secret(self.seal(owner, k, s)?),
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
                    EnvValue::Secret(s) => EnvValue::Secret(self.open(owner, &k, s)?),
                    other => other,
                };
                Ok((k, v))
            })
            .collect()
    }

    /// A git source with its URL's user part (`user:token@`) sealed: credentials are
    /// secrets too. Other sources pass as they are.
    fn seal_source(&self, owner: &str, source: &SourceSpec) -> Result<SourceSpec> {
        self.map_userinfo(source, |info| {
            Ok(self
                .seal(owner, "source", &Secret::new(info))?
                .expose()
                .to_owned())
        })
    }

    fn open_source(&self, owner: &str, source: SourceSpec) -> Result<SourceSpec> {
        self.map_userinfo(&source, |info| {
            Ok(self
                .open(owner, "source", Secret::new(info))?
                .expose()
                .to_owned())
        })
    }

    /// `source` with `f` applied to the user part of its git URL, if any.
    fn map_userinfo(
        &self,
        source: &SourceSpec,
        f: impl Fn(&str) -> Result<String>,
    ) -> Result<SourceSpec> {
        let SourceSpec::Git {
            url,
            reference,
            subdir,
        } = source
        else {
            return Ok(source.clone());
        };
        let Some((scheme, userinfo, rest)) = split_userinfo(url) else {
            return Ok(source.clone());
        };
        Ok(SourceSpec::Git {
            url: format!("{scheme}://{}@{rest}", f(userinfo)?),
            reference: reference.clone(),
            subdir: subdir.clone(),
        })
    }

    fn seal_deployment(&self, d: &Deployment) -> Result<Deployment> {
        let mut d = d.clone();
        d.source = self.seal_source(d.id.as_str(), &d.source)?;
        Ok(d)
    }

    fn open_deployment(&self, mut d: Deployment) -> Result<Deployment> {
        d.source = self.open_source(d.id.as_str(), d.source)?;
        Ok(d)
    }

    /// A project's sealable parts: its env, its preview env and its webhook secret.
    fn seal_project(&self, project: &Project) -> Result<Project> {
        let mut p = project.clone();
        let id = p.id.to_string();
        p.env = self.seal_env(&id, &p.env)?;
        p.previews.env = self.seal_env(&format!("{id}/previews"), &p.previews.env)?;
        if let Some(s) = &p.webhook_secret {
            p.webhook_secret = Some(self.seal(&id, "webhook_secret", s)?);
        }
        Ok(p)
    }

    /// Opens every record of a listing. One that does not open (a wrong key, a
    /// tampered value) is reported and left out, so one unreadable record never stops
    /// the listing of the others, another project's webhooks or the server's start;
    /// fetching it by id still fails with the reason.
    fn open_listed<T>(
        &self,
        records: Vec<T>,
        open: fn(&Self, T) -> Result<T>,
        id: fn(&T) -> String,
    ) -> Vec<T> {
        records
            .into_iter()
            .filter_map(|r| {
                let rid = id(&r);
                match open(self, r) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::error!(record = %rid, error = %e, "unreadable record left out of a listing");
                        None
                    }
                }
            })
            .collect()
    }

    fn open_project(&self, mut p: Project) -> Result<Project> {
        let id = p.id.to_string();
        p.env = self.open_env(&id, std::mem::take(&mut p.env))?;
        let previews = std::mem::take(&mut p.previews.env);
        p.previews.env = self.open_env(&format!("{id}/previews"), previews)?;
        if let Some(s) = p.webhook_secret.take() {
            p.webhook_secret = Some(self.open(&id, "webhook_secret", s)?);
        }
        Ok(p)
    }

    fn open_service(&self, mut s: Service) -> Result<Service> {
        s.env = self.open_env(s.id.as_str(), std::mem::take(&mut s.env))?;
        s.source = self.open_source(s.id.as_str(), s.source)?;
        Ok(s)
    }

    fn open_environment(&self, mut e: Environment) -> Result<Environment> {
        e.env = self.open_env(e.id.as_str(), std::mem::take(&mut e.env))?;
        Ok(e)
    }

    fn open_release(&self, mut r: Release) -> Result<Release> {
        if let Some(c) = r.config.as_mut() {
            c.env = self.open_env(r.id.as_str(), std::mem::take(&mut c.env))?;
        }
        Ok(r)
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
        self.inner.put_project(&self.seal_project(project)?).await
    }
    async fn project(&self, id: &ProjectId) -> Result<Project> {
        self.open_project(self.inner.project(id).await?)
    }
    async fn project_by_name(&self, name: &str) -> Result<Project> {
        self.open_project(self.inner.project_by_name(name).await?)
    }
    async fn projects(&self) -> Result<Vec<Project>> {
        let all = self.inner.projects().await?;
        Ok(self.open_listed(all, Self::open_project, |p| p.id.to_string()))
    }
    async fn delete_project(&self, id: &ProjectId) -> Result<()> {
        self.inner.delete_project(id).await
    }
    async fn put_environment(&self, env: &Environment) -> Result<()> {
        let mut e = env.clone();
        e.env = self.seal_env(e.id.as_str(), &e.env)?;
        self.inner.put_environment(&e).await
    }
    async fn environment(&self, id: &EnvironmentId) -> Result<Environment> {
        self.open_environment(self.inner.environment(id).await?)
    }
    async fn environment_by_name(&self, project: &ProjectId, name: &str) -> Result<Environment> {
        self.open_environment(self.inner.environment_by_name(project, name).await?)
    }
    async fn environments(&self, project: &ProjectId) -> Result<Vec<Environment>> {
        let all = self.inner.environments(project).await?;
        Ok(self.open_listed(all, Self::open_environment, |e| e.id.to_string()))
    }
    async fn delete_environment(&self, id: &EnvironmentId) -> Result<()> {
        self.inner.delete_environment(id).await
    }
    async fn put_service(&self, service: &Service) -> Result<()> {
        let mut s = service.clone();
        s.env = self.seal_env(s.id.as_str(), &s.env)?;
        s.source = self.seal_source(s.id.as_str(), &s.source)?;
        self.inner.put_service(&s).await
    }
    async fn service(&self, id: &ServiceId) -> Result<Service> {
        self.open_service(self.inner.service(id).await?)
    }
    async fn service_by_name(
        &self,
        project: &ProjectId,
        environment: Option<&EnvironmentId>,
        name: &str,
    ) -> Result<Service> {
        self.open_service(
            self.inner
                .service_by_name(project, environment, name)
                .await?,
        )
    }
    async fn services(&self, project: &ProjectId) -> Result<Vec<Service>> {
        let all = self.inner.services(project).await?;
        Ok(self.open_listed(all, Self::open_service, |s| s.id.to_string()))
    }
    async fn delete_service(&self, id: &ServiceId) -> Result<()> {
        self.inner.delete_service(id).await
    }
    async fn insert_deployment(&self, deployment: &Deployment) -> Result<()> {
        let d = self.seal_deployment(deployment)?;
        self.inner.insert_deployment(&d).await
    }
    async fn deployment(&self, id: &DeploymentId) -> Result<Deployment> {
        self.open_deployment(self.inner.deployment(id).await?)
    }
    async fn deployments(&self, filter: &DeploymentFilter) -> Result<Vec<Deployment>> {
        let all = self.inner.deployments(filter).await?;
        Ok(self.open_listed(all, Self::open_deployment, |d| d.id.to_string()))
    }
    async fn update_deployment(&self, deployment: &Deployment) -> Result<Deployment> {
        let d = self.seal_deployment(deployment)?;
        self.open_deployment(self.inner.update_deployment(&d).await?)
    }
    async fn insert_release(&self, release: &Release) -> Result<()> {
        let mut r = release.clone();
        if let Some(c) = r.config.as_mut() {
            c.env = self.seal_env(r.id.as_str(), &c.env)?;
        }
        self.inner.insert_release(&r).await
    }
    async fn release(&self, id: &ReleaseId) -> Result<Release> {
        self.open_release(self.inner.release(id).await?)
    }
    async fn releases(&self, service: &ServiceId) -> Result<Vec<Release>> {
        let all = self.inner.releases(service).await?;
        Ok(self.open_listed(all, Self::open_release, |r| r.id.to_string()))
    }
    async fn append_events(&self, events: Vec<Event>) -> Result<Vec<Event>> {
        self.inner.append_events(events).await
    }
    async fn events(&self, deployment: &DeploymentId, after: u64) -> Result<Vec<Event>> {
        self.inner.events(deployment, after).await
    }
    // Cron runs hold no env values: their output is kept as the app printed it.
    async fn insert_cron_run(&self, run: &CronRun) -> Result<()> {
        self.inner.insert_cron_run(run).await
    }
    async fn update_cron_run(&self, run: &CronRun) -> Result<()> {
        self.inner.update_cron_run(run).await
    }
    async fn cron_runs(&self, filter: &CronRunFilter) -> Result<Vec<CronRun>> {
        self.inner.cron_runs(filter).await
    }
    async fn prune_cron_runs(&self, service: &ServiceId, job: &str, keep: usize) -> Result<u64> {
        self.inner.prune_cron_runs(service, job, keep).await
    }
}
