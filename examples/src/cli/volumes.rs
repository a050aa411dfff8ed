//! `wharf volumes ls|rm`: a project's volumes.

use serde::de::IgnoredAny;
use wharf_server::client::CliError;
use wharf_server::dto::{VolumeDelete, VolumeView};

use super::args::VolumesAction;

/// `wharf volumes ...`.
pub(crate) async fn run(action: VolumesAction) -> Result<i32, CliError> {
    match action {
        VolumesAction::Ls { target, remote } => {
            let scope = target.resolve()?;
            let all: Vec<VolumeView> = remote
                .client()?
                .get(&format!("/projects/{}/volumes", scope.project))
                .await?;
            let here: Vec<&VolumeView> = all
                .iter()
                .filter(|v| !v.orphaned && v.environment == scope.environment)
                .collect();
            if here.is_empty() {
                println!("{scope} has no volumes");
            }
            for v in here {
                println!("{}", line(v));
            }
            // Left by environments since deleted: never to be taken for the project's.
            for v in all
                .iter()
                .filter(|v| v.orphaned && scope.environment.is_none())
            {
                println!(
                    "{}  (left by a deleted environment: scope {}; wharf volumes rm {} --confirm {} --scope {})",
                    line(v),
                    v.scope.as_deref().unwrap_or("-"),
                    v.name,
                    v.name,
                    v.scope.as_deref().unwrap_or("-"),
                );
            }
            Ok(0)
        }
        VolumesAction::Rm {
            name,
            confirm,
            scope: left_in,
            target,
            remote,
        } => {
            if confirm != name {
                return Err(format!(
                    "--confirm must repeat the volume's name ({name}): deleting it deletes its data"
                )
                .into());
            }
            let scope = target.resolve()?;
            let mut path = format!("/projects/{}/volumes/{name}", scope.project);
            match (&scope.environment, &left_in) {
                (Some(e), _) => path.push_str(&format!("?environment={e}")),
                (None, Some(s)) => {
                    if !s
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
                    {
                        return Err(format!(
                            "--scope {s:?}: a scope as `wharf volumes ls` shows it"
                        )
                        .into());
                    }
                    path.push_str(&format!("?scope={s}"))
                }
                (None, None) => {}
            }
            remote
                .client()?
                .send::<IgnoredAny>(reqwest::Method::DELETE, &path, &VolumeDelete { confirm })
                .await?;
            println!("volume {name} of {scope} and its data are deleted");
            Ok(0)
        }
    }
}

/// `NAME  STATE  SIZE  MOUNTS`, e.g. `data  exists  10Gi  web:/data (live)`.
fn line(v: &VolumeView) -> String {
    let state = match v.exists {
        Some(true) => "exists",
        Some(false) => "not created yet",
        None => "unknown",
    };
    let size = match (v.size_bytes, &v.size) {
        (Some(b), _) => format!("{b} bytes"),
        (None, Some(asked)) => asked.clone(),
        (None, None) => "-".into(),
    };
    let mounts: Vec<String> = v
        .mounted_by
        .iter()
        .map(|m| {
            let live = if m.live { " (live)" } else { "" };
            format!("{}:{}{live}", m.service, m.path)
        })
        .collect();
    let mounts = if mounts.is_empty() {
        "not mounted".to_owned()
    } else {
        mounts.join(", ")
    };
    format!("{}  {state}  {size}  {mounts}", v.name)
}
