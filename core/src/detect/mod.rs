//! Zero-config detection. TEMPORARY stub until merge.
#![allow(missing_docs)]
use crate::error::Result;
use crate::model::{BuildPlan, BuildSpec, ProjectKind};
use std::path::Path;
pub fn resolve_plan(spec: &BuildSpec, port: Option<u16>, _dir: &Path) -> Result<BuildPlan> {
    let mut p = match spec {
        BuildSpec::Plan(p) => p.clone(),
        _ => BuildPlan {
            kind: ProjectKind::Python,
            base_image: "python:3.12-slim".into(),
            install: vec![],
            build: vec![],
            start: vec!["python3".into(), "app.py".into()],
            port: 8000,
            dockerfile: None,
        },
    };
    if let Some(port) = port {
        p.port = port;
    }
    Ok(p)
}
