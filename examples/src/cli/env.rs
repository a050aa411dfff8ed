//! `wharf env set|unset|list`: a service's env vars.

use wharf_server::client::CliError;
use wharf_server::dto::{EnvChanges, EnvInput, EnvShown, EnvView, ServiceView};

use super::args::{EnvAction, Remote, Target};

/// What `env list` shows instead of a secret's value.
const MASK: &str = "********";

/// Prints env vars as `KEY=value`, secrets masked.
fn print_env(env: &EnvView) {
    if env.is_empty() {
        println!("(no env vars)");
    }
    for (k, v) in env {
        match v {
            EnvShown::Plain(plain) => println!("{k}={plain}"),
            EnvShown::Secret { .. } => println!("{k}={MASK} (secret)"),
        }
    }
}

/// `wharf env set|unset|list`.
pub(crate) async fn run(action: EnvAction) -> Result<i32, CliError> {
    match action {
        EnvAction::Set {
            pairs,
            secret,
            target,
            remote,
        } => set(&pairs, secret, target, remote).await,
        EnvAction::Unset {
            keys,
            target,
            remote,
        } => unset(&keys, target, remote).await,
        EnvAction::List { target, remote } => {
            let (scope, service) = target.resolve()?;
            let svc: ServiceView = remote.client()?.get(&scope.service(&service)).await?;
            print_env(&svc.env);
            Ok(0)
        }
    }
}

/// `wharf env set KEY=VALUE...`.
async fn set(
    pairs: &[String],
    secret: bool,
    target: Target,
    remote: Remote,
) -> Result<i32, CliError> {
    let mut body = EnvChanges::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("expected KEY=VALUE, got {p:?}"))?;
        let v = if secret {
            EnvInput::Secret {
                secret: v.to_owned(),
            }
        } else {
            EnvInput::Plain(v.to_owned())
        };
        body.insert(k.to_owned(), v);
    }
    let (scope, service) = target.resolve()?;
    let env: EnvView = remote
        .client()?
        .send(
            reqwest::Method::PUT,
            &format!("{}/env", scope.service(&service)),
            &body,
        )
        .await?;
    print_env(&env);
    eprintln!(
        "set on {}; applied on its next deployment",
        scope.label(&service)
    );
    Ok(0)
}

/// `wharf env unset KEY...`: refuses, removing nothing, if one of the keys is not set.
async fn unset(keys: &[String], target: Target, remote: Remote) -> Result<i32, CliError> {
    let (scope, service) = target.resolve()?;
    let c = remote.client()?;
    let path = scope.service(&service);
    let svc: ServiceView = c.get(&path).await?;
    let missing: Vec<&str> = keys
        .iter()
        .filter(|k| !svc.env.contains_key(k.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} has no env var {}; nothing removed",
            scope.label(&service),
            missing.join(", ")
        )
        .into());
    }
    let body: EnvChanges = keys
        .iter()
        .map(|k| (k.clone(), EnvInput::Remove(())))
        .collect();
    let env: EnvView = c
        .send(reqwest::Method::PUT, &format!("{path}/env"), &body)
        .await?;
    print_env(&env);
    eprintln!(
        "removed from {}; applied on its next deployment",
        scope.label(&service)
    );
    Ok(0)
}
