//! `wharf domains add|verify|rm|ls`: a service's custom domains.

use serde::de::IgnoredAny;

use wharf_server::client::CliError;
use wharf_server::dto::{DomainAdded, DomainClaim, NewDomain, Proof};

use super::args::{DomainsAction, Remote, Target};

/// Prints what to publish in DNS to prove a claim.
fn print_proof(proof: &Proof) {
    println!(
        "  either CNAME {} -> {}",
        proof.cname.name, proof.cname.target
    );
    println!("  or TXT {} = \"{}\"", proof.txt.name, proof.txt.value);
}

/// `wharf domains ...`: 0 when done, 2 when a claimed domain waits for its DNS.
pub(crate) async fn run(action: DomainsAction) -> Result<i32, CliError> {
    let post = reqwest::Method::POST;
    match action {
        DomainsAction::Add {
            domain,
            target,
            remote,
        } => add(&domain, target, remote).await,
        DomainsAction::Verify {
            domain,
            target,
            remote,
        } => on_domain(post, &domain, "/verify", target, remote, "is routed to").await,
        DomainsAction::Rm {
            domain,
            target,
            remote,
        } => {
            let delete = reqwest::Method::DELETE;
            on_domain(delete, &domain, "", target, remote, "removed from").await
        }
        DomainsAction::Ls { target, remote } => ls(target, remote).await,
    }
}

/// `wharf domains verify|rm`: `method` on the domain's `tail` (path after it); then
/// says `<domain> <done> <service>`.
async fn on_domain(
    method: reqwest::Method,
    domain: &str,
    tail: &str,
    target: Target,
    remote: Remote,
    done: &str,
) -> Result<i32, CliError> {
    let (scope, service) = target.resolve()?;
    let path = format!("{}/domains/{domain}{tail}", scope.service(&service));
    remote
        .client()?
        .send::<IgnoredAny>(method, &path, &())
        .await?;
    println!("{domain} {done} {}", scope.label(&service));
    Ok(0)
}

/// `wharf domains add`: 0 if routed at once, else 2 and the records to publish.
async fn add(domain: &str, target: Target, remote: Remote) -> Result<i32, CliError> {
    let (scope, service) = target.resolve()?;
    let path = format!("{}/domains", scope.service(&service));
    let c = remote.client()?;
    let body = NewDomain {
        domain: domain.to_owned(),
    };
    let added: DomainAdded = c.send(reqwest::Method::POST, &path, &body).await?;
    let name = &added.claim.domain;
    if added.claim.verified {
        println!("{name} is routed to {}", scope.label(&service));
        return Ok(0);
    }
    println!(
        "{name} is claimed but not routed yet: {}",
        added
            .reason
            .as_deref()
            .unwrap_or("DNS does not show it points here")
    );
    println!("publish one of these records, then run `wharf domains verify {name}`:");
    print_proof(&added.claim.verify);
    Ok(2)
}

/// `wharf domains ls`.
async fn ls(target: Target, remote: Remote) -> Result<i32, CliError> {
    let (scope, service) = target.resolve()?;
    let path = format!("{}/domains", scope.service(&service));
    let list: Vec<DomainClaim> = remote.client()?.get(&path).await?;
    if list.is_empty() {
        println!("{} has no custom domains", scope.label(&service));
    }
    for claim in &list {
        let name = &claim.domain;
        if claim.verified {
            println!("{name}  routed");
        } else {
            println!("{name}  waiting for DNS:");
            print_proof(&claim.verify);
        }
    }
    Ok(0)
}
