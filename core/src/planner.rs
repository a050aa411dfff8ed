//! Dependency ordering of a project's services (petgraph). TEMPORARY stub until merge.
#![allow(missing_docs, unreachable_pub)]
use crate::error::Result;
use crate::model::{Service, ServiceId};
use std::collections::BTreeMap;
#[derive(Debug)]
pub struct DependencyGraph {
    deps: BTreeMap<String, Vec<String>>,
    ids: BTreeMap<String, ServiceId>,
}
impl DependencyGraph {
    pub fn new<'a>(services: impl IntoIterator<Item = &'a Service>) -> Result<Self> {
        let mut deps = BTreeMap::new();
        let mut ids = BTreeMap::new();
        for s in services {
            deps.insert(s.name.clone(), s.depends_on.clone());
            ids.insert(s.name.clone(), s.id.clone());
        }
        Ok(Self { deps, ids })
    }
    pub fn id(&self, name: &str) -> Option<&ServiceId> {
        self.ids.get(name)
    }
    pub fn waves(&self) -> Vec<Vec<String>> {
        vec![self.deps.keys().cloned().collect()]
    }
    pub fn cascade(&self, changed: &str) -> Result<Vec<Vec<String>>> {
        let v: Vec<String> = self
            .deps
            .iter()
            .filter(|(_, d)| d.iter().any(|x| x == changed))
            .map(|(n, _)| n.clone())
            .collect();
        Ok(if v.is_empty() { vec![] } else { vec![v] })
    }
    pub fn dependencies(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.deps.get(name).cloned().unwrap_or_default())
    }
}
