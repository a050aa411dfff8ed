//! Server-sent event streams: a deployment's events (followed to its end, resumed
//! if the stream drops) and a service's log lines.

use futures::StreamExt;
use wharf_core::{Deployment, DeploymentState, Event, EventKind};

use super::{CliError, Client};

impl Client {
    /// `GET path` as a server-sent event stream (resuming after `last_event_id`); an
    /// error status is the API's error.
    async fn open_stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<reqwest::Response, CliError> {
        let mut req = self.http.get(self.url(path)).bearer_auth(&self.token);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        if !resp.status().is_success() {
            return Err(Self::failure(resp).await);
        }
        Ok(resp)
    }

    /// Calls `each` with every frame of `resp`'s event stream until it ends or `each`
    /// returns `false`; a stream that breaks off is an error.
    async fn frames(
        &self,
        resp: reqwest::Response,
        mut each: impl FnMut(SseFrame) -> bool,
    ) -> Result<(), CliError> {
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("lost the stream from {}: {e}", self.base))?;
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(i) = buf.find("\n\n") {
                let text: String = buf.drain(..i + 2).collect();
                let mut frame = SseFrame::default();
                for line in text.lines() {
                    if let Some(id) = line.strip_prefix("id:") {
                        frame.id = Some(id.trim().to_owned());
                    } else if let Some(e) = line.strip_prefix("event:") {
                        frame.event = Some(e.trim().to_owned());
                    } else if let Some(d) = line.strip_prefix("data:") {
                        if !frame.data.is_empty() {
                            frame.data.push('\n');
                        }
                        frame.data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                if !each(frame) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Calls `each` with the `(event, data)` of every server-sent event of `GET path`
    /// until the stream ends; `each` returns `false` to stop early.
    pub async fn sse(
        &self,
        path: &str,
        mut each: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), CliError> {
        let resp = self.open_stream(path, None).await?;
        self.frames(resp, |frame| {
            let event = match frame.event.as_deref() {
                None => "message",
                Some("log") => "log",
                Some("error") => "error",
                Some(_) => "other",
            };
            frame.data.is_empty() || each(event, &frame.data)
        })
        .await
    }

    /// `POST path` with the JSON `body`, read as a server-sent event stream: calls
    /// `each` with the `(event, data)` of every event until the stream ends or `each`
    /// returns `false`. An error status is the API's error.
    pub async fn sse_post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        mut each: impl FnMut(&str, &str) -> bool,
    ) -> Result<(), CliError> {
        let resp = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        if !resp.status().is_success() {
            return Err(Self::failure(resp).await);
        }
        self.frames(resp, |frame| {
            let event = frame.event.as_deref().unwrap_or("message");
            frame.data.is_empty() || each(event, &frame.data)
        })
        .await
    }

    /// Follows a deployment's events, calling `each` for every one, until it ends;
    /// returns the last state the stream showed (else the deployment's state).
    pub async fn follow(
        &self,
        deployment: &str,
        mut each: impl FnMut(&Event),
    ) -> Result<DeploymentState, CliError> {
        let mut last_state = None;
        let mut last_id: Option<String> = None;
        let path = format!("/deployments/{deployment}/events");
        // Reconnect (resuming after the last event seen) if the stream drops early.
        for _ in 0..5 {
            let resp = self.open_stream(&path, last_id.as_deref()).await?;
            // A stream that breaks off is resumed below, unless the deployment ended.
            let _ = self
                .frames(resp, |frame| {
                    if let Some(id) = frame.id {
                        last_id = Some(id);
                    }
                    if let Ok(ev) = serde_json::from_str::<Event>(frame.data.trim()) {
                        if let EventKind::State { to, .. } = &ev.kind {
                            last_state = Some(to.clone());
                        }
                        each(&ev);
                    }
                    true
                })
                .await;
            let dep: Deployment = self.get(&format!("/deployments/{deployment}")).await?;
            if !dep.state.is_active() {
                return Ok(last_state.unwrap_or(dep.state));
            }
        }
        Err("lost the event stream five times".into())
    }
}

/// One server-sent event as read off the wire.
#[derive(Debug, Default)]
struct SseFrame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}
