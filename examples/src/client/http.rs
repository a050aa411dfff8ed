//! The API client: requests with the token, JSON answers, error answers as
//! [`ApiFailure`], and the archive upload of `wharf deploy`.

use serde_json::Value;

use super::progress::{Progress, UPLOAD_CHUNK};
use super::{ApiFailure, CliError, Scope};

/// An API client.
#[derive(Debug, Clone)]
pub struct Client {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) token: String,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str, token: &str) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base)
    }

    pub(super) async fn check(resp: reqwest::Response) -> Result<Value, CliError> {
        let status = resp.status();
        let body: Value = if status == reqwest::StatusCode::NO_CONTENT {
            Value::Null
        } else {
            resp.json().await.unwrap_or(Value::Null)
        };
        if status.is_success() {
            Ok(body)
        } else {
            Err(Box::new(ApiFailure {
                status,
                code: body["error"]["code"].as_str().unwrap_or("error").to_owned(),
                message: body["error"]["message"].as_str().unwrap_or("").to_owned(),
            }))
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        Self::check(r).await
    }

    /// `method path` with a JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> Result<Value, CliError> {
        let r = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        Self::check(r).await
    }

    /// Uploads a `.tar.gz` as a new deployment of `service` in `scope`, reporting the
    /// bytes handed to the connection to `progress` (if any) as they go.
    pub async fn deploy_archive(
        &self,
        scope: &Scope,
        service: &str,
        archive: Vec<u8>,
        progress: Option<Progress>,
    ) -> Result<Value, CliError> {
        let len = archive.len();
        let body = match progress {
            None => reqwest::Body::from(archive),
            Some(mut p) => {
                let chunks: Vec<Vec<u8>> =
                    archive.chunks(UPLOAD_CHUNK).map(<[u8]>::to_vec).collect();
                let mut sent = 0u64;
                reqwest::Body::wrap_stream(futures::stream::iter(chunks.into_iter().map(
                    move |c| {
                        sent += c.len() as u64;
                        p.update(sent);
                        Ok::<_, std::io::Error>(c)
                    },
                )))
            }
        };
        let r = self
            .http
            .post(self.url(&format!("{}/deployments", scope.service(service))))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        Self::check(r).await
    }
}
