//! A hand-driven uplink client for tests that play a gateway (or an impostor).

use anyhow::Result;
use qi_proto::v1::uplink_client::UplinkClient;
use qi_proto::v1::{EdgeMessage, Hello, Reading, ReadingBatch, edge_message, hub_message};
use std::path::Path;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How to reach the hub: URL, optional TLS (CA, client identity), optional bearer token.
#[derive(Clone)]
pub struct Client {
    url: String,
    tls: Option<ClientTlsConfig>,
    token: Option<String>,
}

impl Client {
    pub fn plain(url: &str) -> Client {
        Client {
            url: url.to_string(),
            tls: None,
            token: None,
        }
    }

    pub fn tls(url: &str, ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Client> {
        let mut t = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            t = t.identity(Identity::from_pem(
                std::fs::read(cert)?,
                std::fs::read(key)?,
            ));
        }
        Ok(Client {
            url: url.to_string(),
            tls: Some(t),
            token: None,
        })
    }

    /// The name to expect in the hub's certificate (default `localhost`).
    pub fn with_domain(mut self, domain: &str) -> Client {
        self.tls = self.tls.map(|t| t.domain_name(domain));
        self
    }

    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_string());
        self
    }
}

/// Opens a stream, sends `msgs`, and returns what the hub answered (until it
/// closed or erred). A failure to connect at all is returned as an error status.
pub async fn exchange(
    c: &Client,
    msgs: Vec<EdgeMessage>,
) -> Result<(Vec<hub_message::Kind>, Option<tonic::Status>)> {
    let mut endpoint =
        Endpoint::from_shared(c.url.clone())?.connect_timeout(Duration::from_secs(5));
    if let Some(t) = &c.tls {
        endpoint = endpoint.tls_config(t.clone())?;
    }
    let channel = match endpoint.connect().await {
        Ok(ch) => ch,
        Err(e) => {
            return Ok((
                vec![],
                Some(tonic::Status::unavailable(format!("connect: {e:?}"))),
            ));
        }
    };
    let token = c.token.clone();
    let mut client = UplinkClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(t) = &token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    });
    let (tx, rx) = mpsc::channel(msgs.len() + 1);
    let expected = msgs.len();
    for m in msgs {
        tx.send(m).await?;
    }
    let mut inbound = match client.stream(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return Ok((vec![], Some(s))),
    };
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), inbound.message()).await? {
            Ok(Some(m)) => {
                got.extend(m.kind);
                if got.len() == expected {
                    break;
                }
            }
            Ok(None) => break,
            Err(s) => return Ok((got, Some(s))),
        }
    }
    drop(tx);
    Ok((got, None))
}

pub fn reading(seq: u64, value: f64) -> Reading {
    Reading {
        seq,
        device_id: "meter-x".into(),
        metric: "voltage_l1".into(),
        timestamp_us: 1_790_000_000_000_000 + seq as i64 * 1000,
        value,
        unit: "V".into(),
        quality: 1,
        ..Default::default()
    }
}

pub fn batch(readings: Vec<Reading>) -> EdgeMessage {
    EdgeMessage {
        kind: Some(edge_message::Kind::Batch(ReadingBatch {
            readings,
            events: vec![],
            run_events: vec![],
            traceparent: String::new(),
        })),
    }
}

pub fn hello(gw: &str) -> EdgeMessage {
    EdgeMessage {
        kind: Some(edge_message::Kind::Hello(Hello {
            gateway_id: gw.into(),
            agent_version: "test".into(),
            devices: vec![],
            benches: vec![],
            accepts_calibrations: false,
            accepts_run_verdicts: false,
        })),
    }
}

/// A plain (no TLS) uplink stream as gateway `gateway`, its Hello sent:
/// the sender for the batches (room for `capacity` ahead) and the hub's
/// answers. For the load generators, which stream as fast as acks allow.
pub async fn open_stream(
    url: &str,
    gateway: &str,
    agent_version: &str,
    capacity: usize,
    connect_timeout: Duration,
) -> Result<(
    mpsc::Sender<EdgeMessage>,
    tonic::Streaming<qi_proto::v1::HubMessage>,
)> {
    let channel = Endpoint::from_shared(url.to_string())?
        .connect_timeout(connect_timeout)
        .connect()
        .await?;
    let mut client = UplinkClient::new(channel);
    let (tx, rx) = mpsc::channel(capacity);
    tx.send(EdgeMessage {
        kind: Some(edge_message::Kind::Hello(Hello {
            gateway_id: gateway.into(),
            agent_version: agent_version.into(),
            ..Default::default()
        })),
    })
    .await?;
    let inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, inbound))
}
