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

mod claims;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use wharf_core::{Project, Service};

pub use claims::{Check, Claim, DomainError, Domains, CHALLENGE_PREFIX};

use super::extract::{role, ServiceCtx};
use super::{ApiError, ApiResult, App, JsonBody};
use crate::dto::{DomainAdded, DomainClaim, DomainVerified, NewDomain};

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

/// A service's claims for the API: domain, verified, and what to publish in DNS.
pub(crate) fn claims(app: &App, s: &Service, generated_host: &str) -> Vec<DomainClaim> {
    app.domains
        .of_service(s.id.as_str())
        .into_iter()
        .map(|(d, c)| DomainClaim {
            verify: c.instructions(&d, generated_host),
            verified: c.verified,
            domain: d,
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

/// `GET /v1/projects/{p}/services/{s}/domains`.
#[utoipa::path(get, path = "/domains", operation_id = "list_domains", tag = "domains",
    params(super::openapi::ServiceParams), security(("bearer" = ["viewer"])),
    responses((status = 200, description = "Custom domains of the service, each with verified and the DNS records that prove it", body = Vec<crate::dto::DomainClaim>)))]
pub(crate) async fn list(
    State(app): State<App>,
    ctx: ServiceCtx<role::Viewer>,
) -> ApiResult<Json<Vec<DomainClaim>>> {
    let host = app.engine.hostname(&ctx.project, &ctx.service).await?;
    Ok(Json(claims(&app, &ctx.service, &host)))
}

/// `POST /v1/projects/{p}/services/{s}/domains`: claims a domain; 201 when DNS
/// already proves it (it is routed), 202 with what to publish otherwise.
#[utoipa::path(post, path = "/domains", operation_id = "add_domain", tag = "domains",
    params(super::openapi::ServiceParams), request_body = crate::dto::NewDomain, security(("bearer" = ["owner"])),
    responses((status = 201, description = "Proven by DNS and routed", body = crate::dto::DomainAdded), (status = 202, description = "Claimed; publish one of the records, then verify", body = crate::dto::DomainAdded)))]
pub(crate) async fn add(
    State(app): State<App>,
    ctx: ServiceCtx<role::Owner>,
    JsonBody(body): JsonBody<NewDomain>,
) -> ApiResult<(StatusCode, Json<DomainAdded>)> {
    let mut s = ctx.service;
    let d = canonical(&app, &body.domain)?;
    let host = app.engine.hostname(&ctx.project, &s).await?;
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
    let added = DomainAdded {
        claim: DomainClaim {
            verify: claim.instructions(&d, &host),
            verified: proof.is_ok(),
            domain: d,
        },
        reason: proof.err(),
    };
    Ok((status, Json(added)))
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
#[utoipa::path(post, path = "/domains/{domain}/verify", operation_id = "verify_domain", tag = "domains",
    params(super::openapi::DomainParams), security(("bearer" = ["owner"])),
    responses((status = 200, description = "Proven and routed (else 409 domain_unverified saying what was found)", body = crate::dto::DomainVerified)))]
pub(crate) async fn verify_again(
    State(app): State<App>,
    ctx: ServiceCtx<role::Owner>,
) -> ApiResult<Json<DomainVerified>> {
    let (p, mut s) = (ctx.project, ctx.service);
    let d = canonical(&app, ctx.domain.as_deref().unwrap_or_default())?;
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
    Ok(Json(DomainVerified {
        domain: d,
        verified: true,
    }))
}

/// `DELETE /v1/projects/{p}/services/{s}/domains/{domain}`: unroutes and releases it.
#[utoipa::path(delete, path = "/domains/{domain}", operation_id = "remove_domain", tag = "domains",
    params(super::openapi::DomainParams), security(("bearer" = ["owner"])),
    responses((status = 204, description = "Unrouted and released")))]
pub(crate) async fn remove(
    State(app): State<App>,
    ctx: ServiceCtx<role::Owner>,
) -> ApiResult<StatusCode> {
    let mut s = ctx.service;
    let d = wharf_core::normalize_hostname(ctx.domain.as_deref().unwrap_or_default())?;
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
