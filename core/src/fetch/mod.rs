//! Source fetchers. TEMPORARY stub until merge.
#![allow(missing_docs)]
use crate::error::{Error, Result};
use crate::model::SourceSpec;
use crate::traits::{Fetched, LogSink, SourceFetcher};
use std::path::Path;
#[derive(Debug, Default)]
pub struct Fetchers;
#[async_trait::async_trait]
impl SourceFetcher for Fetchers {
    async fn fetch(&self, spec: &SourceSpec, dest: &Path, _logs: &LogSink) -> Result<Fetched> {
        match spec {
            SourceSpec::Dir { path } => {
                for e in std::fs::read_dir(path)? {
                    let e = e?;
                    if e.file_type()?.is_file() {
                        std::fs::copy(e.path(), dest.join(e.file_name()))?;
                    }
                }
                Ok(Fetched { dir: dest.to_owned(), revision: "stub".into() })
            }
            _ => Err(Error::unsupported("stub")),
        }
    }
}
