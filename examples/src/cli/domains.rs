//! `wharf domains add|verify|rm|ls`: a service's custom domains.

use serde_json::{json, Value};

use wharf_server::client::CliError;

use super::args::{DomainsAction, Remote, Target};

/// Prints what to publish in DNS to prove `claim` (an entry of the domains API).
fn print_proof(claim: &Value) {
    let v = &claim["verify"];
    println!(
        "  either CNAME {} -> {}",
        v["cname"]["name"].as_str().unwrap_or("?"),
        v["cname"]["target"].as_str().unwrap_or("?")
    );
    println!(
        "  or TXT {} = \"{}\"",
        v["txt"]["name"].as_str().unwrap_or("?"),
        v["txt"]["value"].as_str().unwrap_or("?")
    );
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
        } => {
            let (scope, service) = target.resolve()?;
            let path = format!("{}/domains/{domain}/verify", scope.service(&service));
            remote.client()?.send(post, &path, &json!(null)).await?;
            println!("{domain} is routed to {}", scope.label(&service));
            Ok(0)
        }
        DomainsAction::Rm {
            domain,
            target,
            remote,
        } => {
            let (scope, service) = target.resolve()?;
            let path = format!("{}/domains/{domain}", scope.service(&service));
            remote
                .client()?
                .send(reqwest::Method::DELETE, &path, &json!(null))
                .await?;
            println!("{domain} removed from {}", scope.label(&service));
            Ok(0)
        }
        DomainsAction::Ls { target, remote } => ls(target, remote).await,
    }
}

/// `wharf domains add`: 0 if routed at once, else 2 and the records to publish.
async fn add(domain: &str, target: Target, remote: Remote) -> Result<i32, CliError> {
    let (scope, service) = target.resolve()?;
    let path = format!("{}/domains", scope.service(&service));
    let c = remote.client()?;
    let claim = c
        .send(reqwest::Method::POST, &path, &json!({"domain": domain}))
        .await?;
    let name = claim["domain"].as_str().unwrap_or(domain);
    if claim["verified"] == true {
        println!("{name} is routed to {}", scope.label(&service));
        return Ok(0);
    }
    println!(
        "{name} is claimed but not routed yet: {}",
        claim["reason"]
            .as_str()
            .unwrap_or("DNS does not show it points here")
    );
    println!("publish one of these records, then run `wharf domains verify {name}`:");
    print_proof(&claim);
    Ok(2)
}

/// `wharf domains ls`.
async fn ls(target: Target, remote: Remote) -> Result<i32, CliError> {
    let (scope, service) = target.resolve()?;
    let path = format!("{}/domains", scope.service(&service));
    let list = remote.client()?.get(&path).await?;
    let list = list.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("{} has no custom domains", scope.label(&service));
    }
    for claim in &list {
        let name = claim["domain"].as_str().unwrap_or("?");
        if claim["verified"] == true {
            println!("{name}  routed");
        } else {
            println!("{name}  waiting for DNS:");
            print_proof(claim);
        }
    }
    Ok(0)
}
