//! `wharf backup now|ls|check|restore`: backups of a project's volumes and databases.

use serde::de::IgnoredAny;
use wharf_server::client::CliError;
use wharf_server::dto::{BackupCheck, BackupNow, BackupRestore, BackupView};

use super::args::BackupAction;

/// `wharf backup ...`.
pub(crate) async fn run(action: BackupAction) -> Result<i32, CliError> {
    match action {
        BackupAction::Now {
            volume,
            target,
            remote,
        } => {
            let scope = target.resolve()?;
            let body = BackupNow {
                volume,
                environment: scope.environment.clone(),
            };
            let b: BackupView = remote
                .client()?
                .send(
                    reqwest::Method::POST,
                    &format!("/projects/{}/backups", scope.project),
                    &body,
                )
                .await?;
            println!("{}", line(&b));
            if b.state == "succeeded" {
                Ok(0)
            } else {
                eprintln!(
                    "wharf: backup of volume {} failed: {}",
                    b.volume,
                    b.error.as_deref().unwrap_or("no reason given")
                );
                Ok(1)
            }
        }
        BackupAction::Check { id, target, remote } => {
            let scope = target.resolve()?;
            let path = format!("/projects/{}/backups/{id}/check", scope.project);
            let c: BackupCheck = remote
                .client()?
                .send(reqwest::Method::POST, &path, &serde_json::json!({}))
                .await?;
            println!(
                "restore check passed: backup {} of database {} restored into a scratch database ({} tables), dropped again",
                c.backup, c.database, c.tables
            );
            Ok(0)
        }
        BackupAction::Ls { target, remote } => {
            let scope = target.resolve()?;
            let all: Vec<BackupView> = remote
                .client()?
                .get(&format!("/projects/{}/backups", scope.project))
                .await?;
            if all.is_empty() {
                println!("{scope} has no backups");
            }
            for b in &all {
                println!("{}", line(b));
            }
            Ok(0)
        }
        BackupAction::Restore {
            id,
            confirm,
            into,
            restart,
            target,
            remote,
        } => {
            let scope = target.resolve()?;
            let path = format!("/projects/{}/backups/{id}/restore", scope.project);
            remote
                .client()?
                .send::<IgnoredAny>(
                    reqwest::Method::POST,
                    &path,
                    &BackupRestore {
                        confirm: confirm.clone(),
                        into,
                        restart,
                    },
                )
                .await?;
            println!("volume {confirm} of {scope} holds backup {id}");
            Ok(0)
        }
    }
}

/// `ID  VOLUME  STATE  AGE  SIZE  SHA256`, the error after a failed one.
fn line(b: &BackupView) -> String {
    let size = b
        .size_bytes
        .map_or_else(|| "-".to_owned(), |s| format!("{s} bytes"));
    let sha = b.sha256.as_deref().map_or("-", |s| &s[..s.len().min(12)]);
    let env = b
        .environment
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    let mut out = format!(
        "{}  {}{env}  {}  {}  {size}  {sha}",
        b.id,
        b.volume,
        b.state,
        age(b.age_seconds)
    );
    if let Some(e) = &b.error {
        out.push_str(&format!("  error: {e}"));
    }
    out
}

fn age(s: i64) -> String {
    match s {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}
