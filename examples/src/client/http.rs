//! The API client: requests with the token, answers read into the API's wire types
//! ([`crate::dto`]), error answers as [`ApiFailure`], and the archive upload of
//! `wharf deploy`.

use serde::de::DeserializeOwned;
use serde::Serialize;
use wharf_core::Deployment;

use crate::dto::ErrorBody;

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

    /// The API's error answer `resp` as an [`ApiFailure`] (code `error` when its body
    /// is not the API's error shape, e.g. from a proxy in front of the server).
    pub(super) async fn failure(resp: reqwest::Response) -> CliError {
        let status = resp.status();
        let (code, message) = match resp.json::<ErrorBody>().await {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => ("error".to_owned(), String::new()),
        };
        Box::new(ApiFailure {
            status,
            code,
            message,
        })
    }

    /// The answer `resp` read as a `T`, or the API's error. An empty body (`204 No
    /// Content`) reads as JSON `null`, which `()` and `Option`s accept.
    async fn check<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, CliError> {
        if !resp.status().is_success() {
            return Err(Self::failure(resp).await);
        }
        let url = resp.url().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("lost the answer of {url}: {e}"))?;
        let read = if body.is_empty() {
            T::deserialize(serde_json::Value::Null)
        } else {
            serde_json::from_slice(&body)
        };
        read.map_err(|e| format!("unreadable answer from {url}: {e}").into())
    }

    /// `GET path`, its answer read as a `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        Self::check(r).await
    }

    /// `method path` with `body` as JSON, the answer read as a `T`
    /// ([`IgnoredAny`](serde::de::IgnoredAny) when only success matters).
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, CliError> {
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
        canary: Option<u8>,
    ) -> Result<Deployment, CliError> {
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
            .query(&[("canary", canary)])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::is_status;
    use crate::dto::Health;
    use axum::http::StatusCode;
    use serde::de::IgnoredAny;

    /// A server answering the shapes a client meets: the API's error, an empty
    /// success, a success that is not JSON, and a proxy's error page.
    async fn server() -> Client {
        let app = axum::Router::new()
            .route(
                "/v1/taken",
                axum::routing::get(|| async {
                    let body = r#"{"error":{"code":"conflict","message":"taken"}}"#;
                    (StatusCode::CONFLICT, body)
                }),
            )
            .route(
                "/v1/gone",
                axum::routing::delete(|| async { StatusCode::NO_CONTENT }),
            )
            .route("/v1/html", axum::routing::get(|| async { "<html>" }))
            .route(
                "/v1/proxy",
                axum::routing::get(|| async { (StatusCode::BAD_GATEWAY, "Bad Gateway") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Client::new(&format!("http://{addr}/"), "t")
    }

    #[tokio::test]
    async fn answers_are_read_as_types_and_errors_as_api_failures() {
        let c = server().await;
        let e = c.get::<IgnoredAny>("/taken").await.unwrap_err();
        assert!(is_status(&e, reqwest::StatusCode::CONFLICT), "{e}");
        assert_eq!(e.to_string(), "409 Conflict: conflict: taken");
        c.send::<()>(reqwest::Method::DELETE, "/gone", &())
            .await
            .expect("204 reads as ()");
        let e = c.get::<Health>("/html").await.unwrap_err().to_string();
        assert!(
            e.contains("unreadable answer from") && e.contains("/v1/html"),
            "{e}"
        );
        let e = c.get::<Health>("/proxy").await.unwrap_err();
        assert_eq!(e.to_string(), "502 Bad Gateway: error: ");
        let e = c.get::<Health>("/nothing").await.unwrap_err();
        assert!(is_status(&e, reqwest::StatusCode::NOT_FOUND), "{e}");
    }
}
