//! Custom domains: a domain is routed to a service only once its owner has shown,
//! in DNS, that it points here. Either
//! - `<domain>` is a CNAME for the service's generated hostname, or
//! - `_wharf-challenge.<domain>` has a TXT record `wharf-verify=<token>`, with the
//!   token Wharf gave for this domain and service (the way for apex domains, which
//!   cannot be CNAMEs).
//!
//! Claims (domain → service, token, verified or not) live in
//! `data_dir/domains.json`. A domain is claimed by one service at a time. DNS stays
//! the authority: when the owner repoints a proven domain with a CNAME at another
//! service's hostname, that service's claim takes it over (and the first service is
//! unrouted from it). Names under `.localhost` never leave the machine, so they need
//! no proof.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wharf_core::{Project, Service};

use crate::api::{project_for, service_in, ApiError, ApiResult, App, JsonBody, SvcPath};
use crate::auth::{Principal, Role};
use crate::dns::{self, Record, RecordType};

/// The prefix of the TXT record name that proves a domain.
pub const CHALLENGE_PREFIX: &str = "_wharf-challenge.";

/// One domain's claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claim {
    /// The service id it is for.
    pub service: String,
    /// The value the TXT record must hold after `wharf-verify=`.
    pub token: String,
    /// Whether DNS has shown the domain points here (then it is routed).
    pub verified: bool,
}

impl Claim {
    /// What the owner must publish, as JSON for the API.
    pub fn instructions(&self, domain: &str, generated_host: &str) -> Value {
        json!({
            "cname": {"name": domain, "target": generated_host},
            "txt": {"name": format!("{CHALLENGE_PREFIX}{domain}"), "value": format!("wharf-verify={}", self.token)},
        })
    }
}

/// How domains are checked.
#[derive(Debug, Clone)]
pub enum Check {
    /// Ask this DNS server.
    Dns(SocketAddr),
    /// Take every domain as proven (an operator's choice, for a closed setup).
    Off,
    /// No DNS server is known: domains stay unproven, saying so.
    Unavailable,
}

/// The claims, kept in a file.
#[derive(Debug)]
pub struct Domains {
    path: PathBuf,
    check: Check,
    claims: Mutex<BTreeMap<String, Claim>>,
}

/// Why a domain cannot be claimed or is not proven yet.
#[derive(Debug)]
pub enum DomainError {
    /// Another service holds it.
    Taken,
    /// DNS does not show it points here; why.
    Unproven(String),
    /// Reading or writing the claims failed.
    Io(std::io::Error),
}

impl Domains {
    /// Loads `data_dir/domains.json` (none if absent).
    pub fn load(data_dir: &Path, check: Check) -> std::io::Result<Domains> {
        let path = data_dir.join("domains.json");
        let claims = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Domains {
            path,
            check,
            claims: Mutex::new(claims),
        })
    }

    fn save(&self, claims: &BTreeMap<String, Claim>) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(claims)?)?;
        std::fs::rename(&tmp, &self.path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Claim>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The claim on `domain`, if any.
    pub fn get(&self, domain: &str) -> Option<Claim> {
        self.lock().get(domain).cloned()
    }

    /// Every claim of `service`, by domain.
    pub fn of_service(&self, service: &str) -> Vec<(String, Claim)> {
        self.lock()
            .iter()
            .filter(|(_, c)| c.service == service)
            .map(|(d, c)| (d.clone(), c.clone()))
            .collect()
    }

    /// Claims `domain` (canonical form) for `service`: returns the existing claim if
    /// it is this service's, a new unproven one otherwise. Taken only if another
    /// service holds a *proven* claim: an unproven one is replaced, so nobody can
    /// block a domain they cannot prove.
    pub fn claim(&self, domain: &str, service: &str) -> Result<Claim, DomainError> {
        self.claim_as(domain, service, false)
    }

    /// Records `domain` as proven for `service` without a DNS check: for domains a
    /// service was routed with before claims existed.
    pub fn adopt(&self, domain: &str, service: &str) -> Result<Claim, DomainError> {
        self.claim_as(domain, service, true)
    }

    fn claim_as(&self, domain: &str, service: &str, proven: bool) -> Result<Claim, DomainError> {
        let mut g = self.lock();
        match g.get(domain) {
            Some(c) if c.service == service => return Ok(c.clone()),
            Some(c) if c.verified => return Err(DomainError::Taken),
            _ => {}
        }
        let c = Claim {
            service: service.to_owned(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            verified: proven || matches!(self.check, Check::Off) || domain.ends_with(".localhost"),
        };
        g.insert(domain.to_owned(), c.clone());
        self.save(&g).map_err(DomainError::Io)?;
        Ok(c)
    }

    /// Whether another service than `service` holds a proven claim on `domain`.
    pub fn taken(&self, domain: &str, service: &str) -> bool {
        self.get(domain)
            .is_some_and(|c| c.service != service && c.verified)
    }

    /// Whether `domain` is now a CNAME for `generated_host` (a DNS answer, with no
    /// claim involved). `false` when no DNS server is known, or checks are off.
    pub async fn cname_is(&self, domain: &str, generated_host: &str) -> Result<bool, DomainError> {
        let Check::Dns(server) = self.check else {
            return Ok(false);
        };
        Ok(cnames(server, domain, generated_host).await?.1)
    }

    /// Moves `domain`'s claim from service `from` to `to`, proven (DNS showed it points
    /// at `to`), if `from` still holds it.
    pub fn transfer(&self, domain: &str, from: &str, to: &str) -> Result<Claim, DomainError> {
        let mut g = self.lock();
        if g.get(domain).is_none_or(|c| c.service != from) {
            return Err(DomainError::Unproven(format!(
                "{domain}'s claim changed during the check"
            )));
        }
        let c = Claim {
            service: to.to_owned(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            verified: true,
        };
        g.insert(domain.to_owned(), c.clone());
        self.save(&g).map_err(DomainError::Io)?;
        Ok(c)
    }

    /// Checks `domain`'s DNS for the proof; marks the claim verified when found.
    pub async fn verify(&self, domain: &str, generated_host: &str) -> Result<Claim, DomainError> {
        let claim = self
            .get(domain)
            .ok_or_else(|| DomainError::Unproven(format!("{domain} is not claimed")))?;
        if claim.verified {
            return Ok(claim);
        }
        let server = match self.check {
            Check::Dns(server) => server,
            Check::Off => return self.mark(domain, &claim),
            Check::Unavailable => {
                return Err(DomainError::Unproven(
                    "no DNS server to check the domain with: the operator must set dns_server"
                        .into(),
                ))
            }
        };
        let (cnames, points_here) = cnames(server, domain, generated_host).await?;
        if points_here {
            return self.mark(domain, &claim);
        }
        let challenge = format!("{CHALLENGE_PREFIX}{domain}");
        let txts = dns::lookup(server, &challenge, RecordType::Txt)
            .await
            .map_err(lookup_failed)?;
        let want = format!("wharf-verify={}", claim.token);
        if txts
            .iter()
            .any(|r| matches!(r, Record::Txt(t) if t.trim() == want))
        {
            return self.mark(domain, &claim);
        }
        let seen = match cnames.first() {
            Some(Record::Cname(t)) => format!("{domain} is a CNAME for {t}"),
            _ => format!("{domain} has no CNAME"),
        };
        Err(DomainError::Unproven(format!(
            "{seen}, and {challenge} has no TXT record {want:?}: point {domain} at \
             {generated_host} with a CNAME, or publish that TXT record, then verify again"
        )))
    }

    /// Marks `checked` proven, if it is still the claim on `domain` (the DNS check
    /// took time: the claim may have been released or replaced meanwhile).
    fn mark(&self, domain: &str, checked: &Claim) -> Result<Claim, DomainError> {
        let mut g = self.lock();
        let c = g
            .get_mut(domain)
            .filter(|c| c.service == checked.service && c.token == checked.token)
            .ok_or_else(|| {
                DomainError::Unproven(format!("{domain}'s claim changed during the check"))
            })?;
        c.verified = true;
        let c = c.clone();
        self.save(&g).map_err(DomainError::Io)?;
        Ok(c)
    }

    /// Drops the claim on `domain` if `service` holds it; returns whether it did.
    pub fn release(&self, domain: &str, service: &str) -> std::io::Result<bool> {
        let mut g = self.lock();
        if g.get(domain).is_some_and(|c| c.service == service) {
            g.remove(domain);
            self.save(&g)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Drops every claim of `service` (it is being deleted).
    pub fn release_service(&self, service: &str) -> std::io::Result<()> {
        let mut g = self.lock();
        let before = g.len();
        g.retain(|_, c| c.service != service);
        if g.len() != before {
            self.save(&g)?;
        }
        Ok(())
    }
}

fn lookup_failed(e: dns::DnsError) -> DomainError {
    DomainError::Unproven(format!("DNS lookup failed: {e}"))
}

/// `domain`'s CNAME records as `server` answers, and whether one names `host`.
async fn cnames(
    server: SocketAddr,
    domain: &str,
    host: &str,
) -> Result<(Vec<Record>, bool), DomainError> {
    let records = dns::lookup(server, domain, RecordType::Cname)
        .await
        .map_err(lookup_failed)?;
    let names_host = records
        .iter()
        .any(|r| matches!(r, Record::Cname(t) if t == host));
    Ok((records, names_host))
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::Taken => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "this domain is claimed by another service; if its DNS now points at this \
                 service, claim it with POST .../domains (`wharf domains add`) to move it",
            ),
            DomainError::Unproven(why) => {
                ApiError::new(StatusCode::CONFLICT, "domain_unverified", why)
            }
            DomainError::Io(e) => ApiError::from(wharf_core::Error::from(e)),
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::from(wharf_core::Error::from(e))
    }
}

/// A service's claims for the API: domain, verified, and what to publish in DNS.
pub(crate) fn claims_json(app: &App, s: &Service, generated_host: &str) -> Value {
    app.domains
        .of_service(s.id.as_str())
        .into_iter()
        .map(|(d, c)| {
            json!({
                "domain": d,
                "verified": c.verified,
                "verify": c.instructions(&d, generated_host),
            })
        })
        .collect()
}

/// A domain as given by a user: canonical form, not under the base domain (those
/// names are generated per service), and not the bare base domain either.
fn canonical(app: &App, domain: &str) -> ApiResult<String> {
    let d = wharf_core::normalize_hostname(domain)?;
    let base = &app.engine.config().base_domain;
    if d == *base || d.ends_with(&format!(".{base}")) {
        return Err(ApiError::bad(format!(
            "{d} is under the base domain {base}, whose names Wharf generates for services; \
             use a domain of your own"
        )));
    }
    Ok(d)
}

/// Whether DNS proves the claim on `domain` (marking it verified).
/// A missing proof is `Ok(Err(why))`; a failure to check is an error.
/// `host` is the service's generated hostname, the CNAME target that proves it.
async fn check(app: &App, domain: &str, host: &str) -> ApiResult<Result<(), String>> {
    match app.domains.verify(domain, host).await {
        Ok(_) => Ok(Ok(())),
        Err(DomainError::Unproven(why)) => Ok(Err(why)),
        Err(e) => Err(e.into()),
    }
}

/// Stores `s.domains` as the service's domains and applies its route again when they
/// changed. The rest of the service is read afresh: a DNS check takes seconds, and a
/// change made meanwhile (env vars, say) must not be overwritten by a stale copy. For
/// the same reason a domain whose claim another service holds now (it took the domain
/// over meanwhile) is left out.
async fn save_routed(app: &App, s: &mut Service, before: &[String]) -> ApiResult<()> {
    let id = s.id.as_str();
    s.domains
        .retain(|d| app.domains.get(d).is_none_or(|c| c.service == id));
    if s.domains != before {
        let mut fresh = app.store.service(&s.id).await?;
        fresh.domains = std::mem::take(&mut s.domains);
        app.store.put_service(&fresh).await?;
        app.engine.refresh_route(&fresh.id).await?;
        *s = fresh;
    }
    Ok(())
}

/// Routes the proven `domain` with the service, if it is not yet.
async fn route(app: &App, s: &mut Service, domain: &str) -> ApiResult<()> {
    if !s.domains.iter().any(|d| d == domain) {
        let before = s.domains.clone();
        s.domains.push(domain.to_owned());
        save_routed(app, s, &before).await?;
    }
    Ok(())
}

/// Canonical forms of `wanted`, refused before anything changes if one is invalid or
/// proven by another service.
pub(crate) fn precheck(app: &App, service: &str, wanted: &[String]) -> ApiResult<Vec<String>> {
    let wanted: Vec<String> = wanted
        .iter()
        .map(|d| canonical(app, d))
        .collect::<ApiResult<_>>()?;
    if wanted.iter().any(|d| app.domains.taken(d, service)) {
        return Err(DomainError::Taken.into());
    }
    Ok(wanted)
}

/// Makes `wanted` the service's custom domains: each is claimed (a domain another
/// service holds is refused before anything changes), proven ones are routed at
/// once, the others wait for [`verify_again`]; domains left out are released and
/// unrouted.
///
/// `wanted` comes from [`precheck`]. A domain the service was already routed with
/// before claims existed is adopted as proven.
pub(crate) async fn set(
    app: &App,
    p: &Project,
    s: &mut Service,
    wanted: &[String],
) -> ApiResult<()> {
    let before = s.domains.clone();
    for d in &before {
        if wanted.contains(d) && app.domains.get(d).is_none() {
            app.domains.adopt(d, s.id.as_str())?;
        }
    }
    for (d, _) in app.domains.of_service(s.id.as_str()) {
        if !wanted.contains(&d) {
            app.domains.release(&d, s.id.as_str())?;
        }
    }
    s.domains.retain(|d| wanted.contains(d));
    let host = app.engine.hostname(p, s).await?;
    for d in wanted {
        app.domains.claim(d, s.id.as_str())?;
        if check(app, d, &host).await?.is_ok() && !s.domains.contains(d) {
            s.domains.push(d.clone());
        }
    }
    save_routed(app, s, &before).await
}

/// Body of `POST .../domains`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DomainInput {
    domain: String,
}

/// `GET /v1/projects/{p}/services/{s}/domains`.
pub(crate) async fn list(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    UrlPath(key): UrlPath<SvcPath>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &key.project, Role::Viewer).await?;
    let s = service_in(&app, &p, &key).await?;
    let host = app.engine.hostname(&p, &s).await?;
    Ok(Json(claims_json(&app, &s, &host)))
}

/// `POST /v1/projects/{p}/services/{s}/domains`: claims a domain; 201 when DNS
/// already proves it (it is routed), 202 with what to publish otherwise.
pub(crate) async fn add(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    UrlPath(key): UrlPath<SvcPath>,
    JsonBody(body): JsonBody<DomainInput>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let p = project_for(&app, &who, &key.project, Role::Owner).await?;
    let mut s = service_in(&app, &p, &key).await?;
    let d = canonical(&app, &body.domain)?;
    let host = app.engine.hostname(&p, &s).await?;
    let claim = match app.domains.claim(&d, s.id.as_str()) {
        Err(DomainError::Taken) => take_over(&app, &mut s, &d, &host).await?,
        other => other?,
    };
    let proof = check(&app, &d, &host).await?;
    if proof.is_ok() {
        route(&app, &mut s, &d).await?;
    }
    let status = match proof {
        Ok(()) => StatusCode::CREATED,
        Err(_) => StatusCode::ACCEPTED,
    };
    Ok((
        status,
        Json(json!({
            "domain": d,
            "verified": proof.is_ok(),
            "verify": claim.instructions(&d, &host),
            "reason": proof.err(),
        })),
    ))
}

/// Another service holds a proven claim on `domain`. DNS decides: if `domain` is now
/// a CNAME for `host` (service `s`'s generated hostname), its owner has pointed it
/// here, so the claim moves to `s`, `s` is routed with it, and then the other service
/// is unrouted from it (in that order, so the domain never answers 404 in between).
/// Otherwise 409, saying how to move it.
async fn take_over(app: &App, s: &mut Service, domain: &str, host: &str) -> ApiResult<Claim> {
    let refused = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "{domain} is claimed by another service; to move it \
                 here, make {domain} a CNAME for {host} and claim it again"
            ),
        )
    };
    let Some(held) = app.domains.get(domain) else {
        // Released meanwhile: an ordinary claim.
        return Ok(app.domains.claim(domain, s.id.as_str())?);
    };
    if held.service == s.id.as_str() {
        // Claimed by this service meanwhile.
        return Ok(held);
    }
    if !app.domains.cname_is(domain, host).await? {
        return Err(refused());
    }
    let claim = match app.domains.transfer(domain, &held.service, s.id.as_str()) {
        // The claim changed hands during the DNS check.
        Err(DomainError::Unproven(_)) => return Err(refused()),
        other => other?,
    };
    tracing::info!(domain, from = %held.service, to = %s.id, "custom domain moved: DNS now points it at the new service");
    route(app, s, domain).await?;
    let old = wharf_core::ServiceId(held.service);
    match app.store.service(&old).await {
        Ok(mut old) => {
            let before = old.domains.clone();
            old.domains.retain(|d| d != domain);
            save_routed(app, &mut old, &before).await?;
        }
        Err(e) if e.kind() == wharf_core::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(claim)
}

/// `POST /v1/projects/{p}/services/{s}/domains/{domain}/verify`: checks DNS again;
/// 200 once proven (and routed), 409 `domain_unverified` with what was found.
pub(crate) async fn verify_again(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    UrlPath(key): UrlPath<SvcPath>,
) -> ApiResult<Json<Value>> {
    let p = project_for(&app, &who, &key.project, Role::Owner).await?;
    let mut s = service_in(&app, &p, &key).await?;
    let d = canonical(&app, key.domain.as_deref().unwrap_or_default())?;
    match app.domains.get(&d) {
        Some(c) if c.service == s.id.as_str() => {}
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("service {} has not claimed {d}", s.name),
            ))
        }
    }
    let host = app.engine.hostname(&p, &s).await?;
    if let Err(why) = check(&app, &d, &host).await? {
        return Err(DomainError::Unproven(why).into());
    }
    route(&app, &mut s, &d).await?;
    Ok(Json(json!({"domain": d, "verified": true})))
}

/// `DELETE /v1/projects/{p}/services/{s}/domains/{domain}`: unroutes and releases it.
pub(crate) async fn remove(
    State(app): State<App>,
    Extension(who): Extension<Principal>,
    UrlPath(key): UrlPath<SvcPath>,
) -> ApiResult<StatusCode> {
    let p = project_for(&app, &who, &key.project, Role::Owner).await?;
    let mut s = service_in(&app, &p, &key).await?;
    let d = wharf_core::normalize_hostname(key.domain.as_deref().unwrap_or_default())?;
    // A domain routed before claims existed has none: removing it is still allowed.
    if !app.domains.release(&d, s.id.as_str())? && !s.domains.contains(&d) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("service {} has not claimed {d}", s.name),
        ));
    }
    let before = s.domains.clone();
    s.domains.retain(|x| x != &d);
    save_routed(&app, &mut s, &before).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_is_claimed_once_and_kept_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let check = Check::Dns("127.0.0.1:9".parse().unwrap());
        let d = Domains::load(dir.path(), check.clone()).unwrap();
        let a = d.claim("shop.example.com", "svc_a").unwrap();
        assert!(!a.verified);
        assert_eq!(d.claim("shop.example.com", "svc_a").unwrap(), a);
        // A proven claim is the service's alone.
        let proven = d.adopt("shop.example.com", "svc_a").unwrap();
        assert_eq!(
            proven, a,
            "adopting an existing claim of the service keeps it"
        );
        d.mark("shop.example.com", &a).unwrap();
        assert!(d.taken("shop.example.com", "svc_b"));
        assert!(!d.taken("shop.example.com", "svc_a"));
        assert!(matches!(
            d.claim("shop.example.com", "svc_b"),
            Err(DomainError::Taken)
        ));
        // An unproven one blocks nobody: another service takes it over.
        let c = d.claim("pending.example.com", "svc_a").unwrap();
        let taken_over = d.claim("pending.example.com", "svc_b").unwrap();
        assert_eq!(taken_over.service, "svc_b");
        assert_ne!(taken_over.token, c.token);
        // A check that ends after the claim changed hands marks nothing.
        assert!(d.mark("pending.example.com", &c).is_err());
        // Loopback-only names need no proof.
        assert!(d.claim("dev.localhost", "svc_b").unwrap().verified);
        let again = Domains::load(dir.path(), check).unwrap();
        assert!(again.get("shop.example.com").unwrap().verified);
        assert!(!again.release("shop.example.com", "svc_b").unwrap());
        again.release_service("svc_a").unwrap();
        assert_eq!(again.get("shop.example.com"), None);
        assert!(again.get("dev.localhost").is_some());
        assert_eq!(again.get("pending.example.com"), Some(taken_over));
        // A transfer (DNS now names the other service) moves only the claim it saw.
        assert!(again
            .transfer("pending.example.com", "svc_a", "svc_c")
            .is_err());
        let moved = again
            .transfer("pending.example.com", "svc_b", "svc_c")
            .unwrap();
        assert_eq!((moved.service.as_str(), moved.verified), ("svc_c", true));
        assert!(again.taken("pending.example.com", "svc_b"));
    }
}
