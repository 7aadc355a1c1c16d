//! A Server-Sent Events client for the live-stream tests and the benchmark:
//! a real HTTP client (reqwest) reading `text/event-stream` as it arrives.

use anyhow::{Context, Result, bail};
use std::collections::VecDeque;
use std::time::Duration;

/// One event as the client dispatched it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The `id:` field of this event, if it had one.
    pub id: Option<u64>,
    /// The `event:` field (`message` when absent).
    pub event: String,
    pub data: serde_json::Value,
}

pub struct Stream {
    resp: reqwest::Response,
    buf: String,
    ready: VecDeque<Event>,
    /// Comment lines seen (keep-alives).
    pub comments: usize,
    /// The last `id:` seen: what a reconnecting EventSource sends.
    pub last_id: Option<u64>,
}

/// Opens `url` with `token` (bearer) and, when given, `Last-Event-ID`.
/// Returns the status and, for 200, the stream.
pub async fn open(
    url: &str,
    token: Option<&str>,
    last_id: Option<u64>,
) -> Result<(u16, Option<Stream>)> {
    let headers: Vec<(String, String)> = token
        .map(|t| vec![("authorization".to_string(), format!("Bearer {t}"))])
        .unwrap_or_default();
    open_with(url, &headers, last_id).await
}

/// [`open`] with any request headers (the agent's session cookie).
pub async fn open_with(
    url: &str,
    headers: &[(String, String)],
    last_id: Option<u64>,
) -> Result<(u16, Option<Stream>)> {
    let mut rb = reqwest::Client::new()
        .get(url)
        .header("accept", "text/event-stream");
    for (k, v) in headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    if let Some(id) = last_id {
        rb = rb.header("last-event-id", id.to_string());
    }
    let resp = rb.send().await.with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Ok((status, None));
    }
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    anyhow::ensure!(ct.starts_with("text/event-stream"), "content-type {ct:?}");
    Ok((
        status,
        Some(Stream {
            resp,
            buf: String::new(),
            ready: VecDeque::new(),
            comments: 0,
            last_id,
        }),
    ))
}

impl Stream {
    /// The next event, or None when none arrives within `wait`. Err when
    /// the stream ended or broke.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Event>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(Some(e));
            }
            let chunk = match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => return Ok(None),
                Ok(r) => r.context("the stream broke")?,
            };
            let Some(chunk) = chunk else {
                bail!("the stream ended");
            };
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
            self.parse()?;
        }
    }

    /// The events that arrive within `wait` (from now).
    pub async fn drain(&mut self, wait: Duration) -> Result<Vec<Event>> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(e) => out.push(e),
                None => return Ok(out),
            }
        }
    }

    /// The next event `pick` accepts within `wait` (others are skipped).
    pub async fn until(
        &mut self,
        wait: Duration,
        mut pick: impl FnMut(&Event) -> bool,
    ) -> Result<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await? {
                Some(e) if pick(&e) => return Ok(e),
                Some(_) => {}
                None => bail!("no such event within {wait:?}"),
            }
        }
    }

    fn parse(&mut self) -> Result<()> {
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, "message".to_string(), String::new());
            for line in block.lines() {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = Some(value.parse::<u64>().context("event id")?),
                    "event" => event = value.to_string(),
                    "data" => {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(value);
                    }
                    _ => {}
                }
            }
            if data.is_empty() {
                continue;
            }
            if id.is_some() {
                self.last_id = id;
            }
            let data = serde_json::from_str(&data).with_context(|| format!("data {data:?}"))?;
            self.ready.push_back(Event { id, event, data });
        }
        Ok(())
    }
}
