//! `wharf previews ls|forks|approve` and `wharf webhooks secret`.

use wharf_core::ForkPreviews;
use wharf_server::client::CliError;
use wharf_server::dto::{
    ApproveRequest, HookDeployment, PreviewsInput, PreviewsView, WebhookSecretView,
};

use super::args::{PreviewsAction, WebhooksAction};

/// `wharf previews ...`.
pub(crate) async fn run(action: PreviewsAction) -> Result<i32, CliError> {
    match action {
        PreviewsAction::Ls { target, remote } => {
            let scope = target.resolve()?;
            let v: PreviewsView = remote
                .client()?
                .get(&format!("/projects/{}/previews", scope.project))
                .await?;
            print(&v);
        }
        PreviewsAction::Forks {
            policy,
            target,
            remote,
        } => {
            let scope = target.resolve()?;
            let forks = match policy.as_str() {
                "approve" => ForkPreviews::Approve,
                "off" => ForkPreviews::Off,
                _ => ForkPreviews::WithoutSecrets,
            };
            let body = PreviewsInput {
                forks: Some(forks),
                ..Default::default()
            };
            let path = format!("/projects/{}/previews", scope.project);
            let v: PreviewsView = remote
                .client()?
                .send(reqwest::Method::PUT, &path, &body)
                .await?;
            print(&v);
        }
        PreviewsAction::Approve {
            number,
            commit,
            target,
            remote,
        } => {
            let scope = target.resolve()?;
            let path = format!("/projects/{}/previews/{number}/approve", scope.project);
            let body = ApproveRequest { commit };
            let started: Vec<HookDeployment> = remote
                .client()?
                .send(reqwest::Method::POST, &path, &body)
                .await?;
            for d in started {
                let id = d.deployment.as_ref().map_or("-", |d| d.as_str());
                println!("{}: deployment {id}", d.service);
            }
        }
    }
    Ok(0)
}

fn print(v: &PreviewsView) {
    let forks = match v.forks {
        ForkPreviews::WithoutSecrets => "deployed without secrets",
        ForkPreviews::Approve => "held for an owner's approval",
        ForkPreviews::Off => "not deployed",
    };
    println!("previews of forks: {forks}");
    for p in &v.previews {
        let from = match &p.fork {
            None => String::new(),
            Some(f) => {
                let waiting = f
                    .awaiting
                    .as_deref()
                    .map_or(String::new(), |c| format!(", commit {c} awaits approval"));
                format!(" from fork {}{waiting}", f.repository)
            }
        };
        println!(
            "pr-{} ({}){from}: {}",
            p.number,
            p.branch,
            p.services.join(", ")
        );
    }
}

/// `wharf webhooks secret`: prints the new secret once, on stdout alone, so it can
/// be piped into a forge's settings without landing in a log.
pub(crate) async fn webhooks(action: WebhooksAction) -> Result<i32, CliError> {
    let WebhooksAction::Secret { target, remote } = action;
    let scope = target.resolve()?;
    let path = format!("/projects/{}/webhook-secret", scope.project);
    let v: WebhookSecretView = remote
        .client()?
        .send(reqwest::Method::POST, &path, &())
        .await?;
    eprintln!(
        "new webhook secret for project {} (the old one no longer works); deliveries go to {}",
        scope.project,
        v.paths.join(" and ")
    );
    println!("{}", v.secret);
    Ok(0)
}
