//! Where services live ([`Scope`]) and making sure a scope and a service exist
//! before deploying into them.

use serde::de::IgnoredAny;
use serde::Serialize;

use crate::dto::{EnvironmentInput, NewProject, ServiceInput};

use super::{is_status, CliError, Client};

/// Where services live: a project, or one of its standing environments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The project's name.
    pub project: String,
    /// A standing environment of the project; `None` for the project's own services.
    pub environment: Option<String>,
}

impl Scope {
    /// The API path of the project or environment, e.g.
    /// `/projects/shop/environments/staging`.
    pub fn path(&self) -> String {
        match &self.environment {
            None => format!("/projects/{}", self.project),
            Some(e) => format!("/projects/{}/environments/{e}", self.project),
        }
    }

    /// The API path of its services.
    pub fn services(&self) -> String {
        format!("{}/services", self.path())
    }

    /// The API path of `service` in it.
    pub fn service(&self, service: &str) -> String {
        format!("{}/{service}", self.services())
    }

    /// `project/service`, or `project/environment/service`, for messages.
    pub fn label(&self, service: &str) -> String {
        match &self.environment {
            None => format!("{}/{service}", self.project),
            Some(e) => format!("{}/{e}/{service}", self.project),
        }
    }
}

impl std::fmt::Display for Scope {
    /// `project shop`, or `environment staging of project shop`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.environment {
            None => write!(f, "project {}", self.project),
            Some(e) => write!(f, "environment {e} of project {}", self.project),
        }
    }
}

/// Makes sure `scope` (its project, and its environment if any) exists, creating what
/// is missing if this token may.
pub async fn ensure_scope(c: &Client, scope: &Scope) -> Result<(), CliError> {
    let project = &scope.project;
    let project_path = format!("/projects/{project}");
    let new_project = NewProject {
        name: project.clone(),
        env: Default::default(),
    };
    create_unless_found(c, &project_path, "/projects", &new_project).await?;
    if let Some(e) = &scope.environment {
        let list = format!("{project_path}/environments");
        let new_env = EnvironmentInput {
            name: Some(e.clone()),
            ..Default::default()
        };
        create_unless_found(c, &scope.path(), &list, &new_env).await?;
    }
    Ok(())
}

/// Creates what `path` names by `POST collection body` unless `GET path` finds it. A
/// concurrent CLI (two deploys into a new project at once) may create it in between:
/// the 409 that answers ours is then no failure.
async fn create_unless_found(
    c: &Client,
    path: &str,
    collection: &str,
    body: &impl Serialize,
) -> Result<(), CliError> {
    let found = || async { c.get::<IgnoredAny>(path).await.is_ok() };
    if found().await {
        return Ok(());
    }
    match c
        .send::<IgnoredAny>(reqwest::Method::POST, collection, body)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, reqwest::StatusCode::CONFLICT) && found().await => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes sure `service` exists in `scope` (creating it, and the scope, if this token
/// may); a `port` is set on it.
pub async fn ensure(
    c: &Client,
    scope: &Scope,
    service: &str,
    port: Option<u16>,
) -> Result<(), CliError> {
    ensure_scope(c, scope).await?;
    let path = scope.service(service);
    if c.get::<IgnoredAny>(&path).await.is_err() || port.is_some() {
        let body = ServiceInput {
            port,
            ..Default::default()
        };
        c.send::<IgnoredAny>(reqwest::Method::PUT, &path, &body)
            .await?;
    }
    Ok(())
}
