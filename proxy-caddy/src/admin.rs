//! A thin client of Caddy's admin API (`/config/...` and `/id/...`), mapping its
//! answers to Wharf errors.

use std::time::Duration;

use serde_json::Value;
use wharf_core::{Error, ErrorKind, Result};

#[derive(Debug)]
pub(crate) struct Admin {
    base: String,
    http: reqwest::Client,
}

fn unreachable(base: &str, e: reqwest::Error) -> Error {
    let err = if e.is_timeout() {
        Error::timeout(format!("caddy admin API at {base} timed out"))
    } else {
        Error::unavailable(format!("caddy admin API at {base} unreachable"))
    };
    err.with_backend("caddy").with_source(e)
}

impl Admin {
    pub(crate) fn new(base: &str) -> Result<Self> {
        // No idle connections kept: Caddy closes admin connections when it reloads its
        // config, and a request sent on such a connection fails half-way (seen in CI as
        // hyper's IncompleteMessage). A fresh loopback connection per call costs little,
        // and a non-idempotent append is never sent twice.
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(0)
            .no_proxy();
        // `unix:///path/admin.sock`: the admin API on a unix socket (Caddy's
        // `unix//path` listen address), which only who may open the file reaches.
        let (builder, base) = match base.strip_prefix("unix://") {
            Some(path) => (builder.unix_socket(path), "http://localhost"),
            None => (builder, base),
        };
        // No silent fallback: a default client would talk to another address.
        let http = builder.build().map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("no HTTP client for Caddy's admin API at {base}: {e}"),
            )
            .with_backend("caddy")
        })?;
        Ok(Admin {
            base: base.to_owned(),
            http,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, String)> {
        let url = format!("{}/{}", self.base, path);
        let request = || {
            let req = self.http.request(method.clone(), &url);
            match body {
                Some(b) => req.json(b),
                None => req,
            }
        };
        // Caddy restarts its admin endpoint while it loads a config, and a request
        // caught by the restart is closed unanswered (hyper's IncompleteMessage, seen
        // in CI). Requests that change nothing, or change by replacing or deleting a
        // value by path, are safe to send once more; POST/PUT (append, insert) are not.
        let idempotent = matches!(
            method,
            reqwest::Method::GET | reqwest::Method::PATCH | reqwest::Method::DELETE
        );
        let resp = match request().send().await {
            Err(e) if idempotent && (e.is_request() || e.is_connect()) => {
                tracing::debug!(error = %e, "caddy admin API closed the request unanswered; sending it again");
                tokio::time::sleep(Duration::from_millis(100)).await;
                request().send().await
            }
            other => other,
        }
        .map_err(|e| unreachable(&self.base, e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| unreachable(&self.base, e))?;
        Ok((status, text))
    }

    fn fail(method: &str, path: &str, status: u16, text: &str) -> Error {
        let msg = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.trim().to_owned());
        let kind = match status {
            404 => ErrorKind::NotFound,
            400 => ErrorKind::InvalidInput,
            _ => ErrorKind::Backend,
        };
        Error::new(
            kind,
            format!("caddy admin API: {method} /{path} answered {status}: {msg}"),
        )
        .with_backend("caddy")
        .with_retryable(status == 503)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<String> {
        let (status, text) = self.send(method.clone(), path, body).await?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(Self::fail(method.as_str(), path, status, &text))
        }
    }

    fn parse(text: &str) -> Result<Value> {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(text).map_err(|e| {
            Error::internal("caddy admin API answered invalid JSON")
                .with_backend("caddy")
                .with_source(e)
        })
    }

    /// The config at `path` (below `/config/`); `Null` when absent.
    pub(crate) async fn get(&self, path: &str) -> Result<Value> {
        Self::parse(
            &self
                .call(reqwest::Method::GET, &format!("config/{path}"), None)
                .await?,
        )
    }

    /// The object with this `@id`, or `None`.
    pub(crate) async fn get_id(&self, id: &str) -> Result<Option<Value>> {
        let path = format!("id/{id}");
        let (status, text) = self.send(reqwest::Method::GET, &path, None).await?;
        match status {
            200..=299 => Ok(Some(Self::parse(&text)?)),
            404 => Ok(None),
            _ => Err(Self::fail("GET", &path, status, &text)),
        }
    }

    /// POST: sets or replaces an object, appends to an array.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<()> {
        self.call(reqwest::Method::POST, &format!("config/{path}"), Some(body))
            .await
            .map(drop)
    }

    /// PUT: creates an object, inserts into an array at the index.
    pub(crate) async fn put(&self, path: &str, body: &Value) -> Result<()> {
        self.call(reqwest::Method::PUT, &format!("config/{path}"), Some(body))
            .await
            .map(drop)
    }

    /// Replaces the object with this `@id`.
    pub(crate) async fn patch_id(&self, id: &str, body: &Value) -> Result<()> {
        self.call(reqwest::Method::PATCH, &format!("id/{id}"), Some(body))
            .await
            .map(drop)
    }

    /// Deletes the object with this `@id`; an absent one is fine.
    pub(crate) async fn delete_id(&self, id: &str) -> Result<()> {
        let path = format!("id/{id}");
        let (status, text) = self.send(reqwest::Method::DELETE, &path, None).await?;
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(Self::fail("DELETE", &path, status, &text)),
        }
    }

    /// Sets `value` at `segments` only if nothing is there, creating missing parents
    /// as objects. Never replaces anything that exists. Another writer creating the
    /// same thing at the same time is fine.
    pub(crate) async fn ensure(&self, segments: &[&str], value: Value) -> Result<()> {
        let nest = |from: usize, value: Value| {
            segments[from..]
                .iter()
                .rev()
                .fold(value, |inner, seg| serde_json::json!({ *seg: inner }))
        };
        if self.get("").await?.is_null() {
            return self.post("", &nest(0, value)).await;
        }
        // Walk down from the top (Caddy refuses to traverse through a missing key).
        for depth in 1..=segments.len() {
            let path = segments[..depth].join("/");
            if self.get(&path).await?.is_null() {
                let body = nest(depth, value);
                return match self.put(&path, &body).await {
                    Err(e) if !self.get(&path).await?.is_null() => {
                        tracing::debug!(error = %e, path, "caddy: created concurrently");
                        Ok(())
                    }
                    other => other,
                };
            }
        }
        Ok(())
    }
}
