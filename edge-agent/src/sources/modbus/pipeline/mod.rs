//! A pipelined Modbus TCP bus: one connection to an address, up to
//! `max_in_flight` requests outstanding at once, each answer matched to its
//! request by MBAP transaction id (then checked for unit id, function and
//! size before it is handed over).
//!
//! Chosen instead of the serial [`super::bus::Bus`] only for a Modbus TCP
//! address whose every device's profile sets `modbus.max_in_flight > 1`. The
//! pollers of the devices behind the address share it without a lock; each
//! still sends one request at a time, so the window fills with requests of
//! different devices.
//!
//! Trust rules: an answer is delivered only to the request whose transaction
//! id, unit id and function it carries, with the size that request asked for.
//! Any other frame (unknown id, mismatch, short or garbage) drops the
//! connection and fails every request in flight: once a device has answered
//! something we cannot match, none of its other answers on that stream can be
//! matched with certainty. The only frame dropped quietly is a late answer
//! to a request that already timed out.

mod inflight;
pub mod mbap;

use super::bus::{ConnectError, tcp_connect};
use inflight::{InFlight, Lookup};
use mbap::{Answer, FrameError, HEADER_LEN, Request};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, Semaphore, oneshot};
use tokio::task::JoinHandle;

/// Why a pipelined request failed.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("connection dropped: {0}")]
    Closed(String),
    #[error("bad answer: {0}")]
    Frame(FrameError),
}

type Reply = Result<Answer, PipeError>;

struct Metrics {
    requests: metrics::Counter,
    in_flight: metrics::Gauge,
    endpoint: String,
}

impl Metrics {
    fn bad_frame(&self, e: &FrameError) {
        metrics::counter!(crate::metric_names::EDGE_MODBUS_PIPELINE_BAD_FRAMES_TOTAL,
            "endpoint" => self.endpoint.clone(), "reason" => e.reason())
        .increment(1);
    }
}

pub struct PipelinedBus {
    addr: String,
    endpoint: String,
    window: Semaphore,
    max_in_flight: u8,
    conn: Mutex<Option<Arc<Conn>>>,
    m: Arc<Metrics>,
}

/// What the connection's reader and its callers share.
struct Shared {
    in_flight: StdMutex<InFlight<Pending>>,
    dead: AtomicBool,
    /// Frames received so far: a timeout with none since its request went
    /// out means the connection, not one device, is silent.
    frames: AtomicU64,
}

struct Pending {
    unit: u8,
    request: Request,
    reply: oneshot::Sender<Reply>,
}

struct Conn {
    writer: Mutex<OwnedWriteHalf>,
    shared: Arc<Shared>,
    reader: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Shared {
    /// Marks the connection dead and fails every request in flight.
    fn kill(&self, why: &str) {
        if self.dead.swap(true, Ordering::SeqCst) {
            return;
        }
        let drained = match self.in_flight.lock() {
            Ok(mut f) => f.drain(),
            Err(p) => p.into_inner().drain(),
        };
        for p in drained {
            let _ = p.reply.send(Err(PipeError::Closed(why.to_string())));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight<Pending>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes a request's entry if its caller gives up (timeout, poller stopped).
struct Forget<'a> {
    shared: &'a Shared,
    tid: u16,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.lock().expire(self.tid);
    }
}

impl PipelinedBus {
    pub fn new(addr: String, max_in_flight: u8) -> PipelinedBus {
        let endpoint = format!("tcp://{addr}");
        PipelinedBus {
            m: Arc::new(Metrics {
                requests: metrics::counter!(crate::metric_names::EDGE_MODBUS_PIPELINE_REQUESTS_TOTAL, "endpoint" => endpoint.clone()),
                in_flight: metrics::gauge!(crate::metric_names::EDGE_MODBUS_PIPELINE_IN_FLIGHT, "endpoint" => endpoint.clone()),
                endpoint: endpoint.clone(),
            }),
            addr,
            endpoint,
            window: Semaphore::new(usize::from(max_in_flight.max(1))),
            max_in_flight: max_in_flight.max(1),
            conn: Mutex::new(None),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The live connection, opening one if there is none or the last one died.
    async fn connection(&self, timeout: Duration) -> Result<Arc<Conn>, ConnectError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.shared.dead.load(Ordering::SeqCst)
        {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let stream = tokio::time::timeout(timeout, tcp_connect(&self.addr))
            .await
            .map_err(|_| ConnectError::Timeout(self.endpoint.clone(), timeout))??;
        let (rd, wr) = stream.into_split();
        let shared = Arc::new(Shared {
            in_flight: StdMutex::new(InFlight::new()),
            dead: AtomicBool::new(false),
            frames: AtomicU64::new(0),
        });
        let reader = tokio::spawn(read_answers(rd, Arc::clone(&shared), Arc::clone(&self.m)));
        let conn = Arc::new(Conn {
            writer: Mutex::new(wr),
            shared,
            reader,
        });
        tracing::info!(endpoint = %self.endpoint, max_in_flight = self.max_in_flight, "bus connected (pipelined)");
        *slot = Some(Arc::clone(&conn));
        Ok(conn)
    }

    /// Sends one request to `unit` and waits up to `timeout` for its answer
    /// (the wait for a free slot in the window and the connect are not counted).
    pub async fn call(&self, unit: u8, request: Request, timeout: Duration) -> Reply {
        let _slot = self
            .window
            .acquire()
            .await
            .map_err(|_| PipeError::Closed("bus closed".into()))?;
        self.m.in_flight.increment(1.0);
        let res = self.call_in_window(unit, request, timeout).await;
        self.m.in_flight.decrement(1.0);
        res
    }

    async fn call_in_window(&self, unit: u8, request: Request, timeout: Duration) -> Reply {
        let conn = self.connection(timeout).await?;
        let shared = &conn.shared;
        let (tx, rx) = oneshot::channel();
        let frame_of = |tid| request.frame(tid, unit);
        let (tid, frame) = {
            let mut f = shared.lock();
            let tid = f.insert_with(|_| Pending {
                unit,
                request: request.clone(),
                reply: tx,
            });
            (tid, frame_of(tid))
        };
        let forget = Forget { shared, tid };
        let frames_before = shared.frames.load(Ordering::SeqCst);
        self.m.requests.increment(1);
        let mut sent = Sent::Waiting;
        let res = tokio::time::timeout(timeout, async {
            {
                let mut w = conn.writer.lock().await;
                sent = Sent::Writing;
                if let Err(e) = w.write_all(&frame).await {
                    let why = format!("write: {e}");
                    shared.kill(&why);
                    return Err(PipeError::Closed(why));
                }
            }
            sent = Sent::Written;
            rx.await
                .unwrap_or_else(|_| Err(PipeError::Closed("connection closed".into())))
        })
        .await;
        drop(forget);
        match res {
            Ok(r) => r,
            Err(_) => {
                // A half-written frame corrupts the stream; a connection that has
                // said nothing at all for the whole wait is dead, not one device slow.
                match sent {
                    Sent::Writing => shared.kill("a request could not be written in time"),
                    Sent::Written if shared.frames.load(Ordering::SeqCst) == frames_before => {
                        shared.kill("no frame received within a request's timeout")
                    }
                    _ => {}
                }
                Err(PipeError::Timeout(timeout))
            }
        }
    }
}

/// How far a request got before its timeout.
#[derive(Clone, Copy)]
enum Sent {
    /// Behind another caller's write: nothing of it is on the wire.
    Waiting,
    Writing,
    Written,
}

/// The connection's reader: matches each answer to its request, or kills the
/// connection at the first frame it cannot match.
async fn read_answers(mut rd: OwnedReadHalf, shared: Arc<Shared>, m: Arc<Metrics>) {
    let why = loop {
        let mut h = [0u8; HEADER_LEN];
        if let Err(e) = rd.read_exact(&mut h).await {
            break format!("read: {e}");
        }
        let header = match mbap::parse_header(&h) {
            Ok(h) => h,
            Err(e) => {
                m.bad_frame(&e);
                break e.to_string();
            }
        };
        let mut pdu = vec![0u8; header.pdu_len];
        if let Err(e) = rd.read_exact(&mut pdu).await {
            break format!("read: {e}");
        }
        shared.frames.fetch_add(1, Ordering::SeqCst);
        let pending = match shared.lock().take(header.tid) {
            Lookup::Found(p) => p,
            Lookup::Late => {
                metrics::counter!(crate::metric_names::EDGE_MODBUS_PIPELINE_BAD_FRAMES_TOTAL,
                    "endpoint" => m.endpoint.clone(), "reason" => "late")
                .increment(1);
                continue;
            }
            Lookup::Unknown => {
                let e = FrameError::UnknownTransaction(header.tid);
                m.bad_frame(&e);
                break e.to_string();
            }
        };
        let checked = if header.unit == pending.unit {
            pending.request.answer(&pdu)
        } else {
            Err(FrameError::Unit {
                want: pending.unit,
                got: header.unit,
            })
        };
        match checked {
            Ok(a) => {
                let _ = pending.reply.send(Ok(a));
            }
            Err(e) => {
                m.bad_frame(&e);
                let why = e.to_string();
                let _ = pending.reply.send(Err(PipeError::Frame(e)));
                break why;
            }
        }
    };
    if !shared.dead.load(Ordering::SeqCst) {
        tracing::warn!(endpoint = %m.endpoint, reason = %why, "pipelined connection dropped");
    }
    shared.kill(&why);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Reads `n` read-register requests, then answers them in reverse order
    /// (each register's value is its address), with `tid_shift` added to the
    /// transaction ids.
    async fn server(n: usize, tid_shift: u16) -> std::io::Result<String> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?.to_string();
        tokio::spawn(async move {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut reqs = Vec::new();
            for _ in 0..n {
                let mut f = [0u8; 12];
                if s.read_exact(&mut f).await.is_err() {
                    return;
                }
                reqs.push(f);
            }
            for f in reqs.into_iter().rev() {
                let tid = u16::from_be_bytes([f[0], f[1]]).wrapping_add(tid_shift);
                let (start, count) = (
                    u16::from_be_bytes([f[8], f[9]]),
                    u16::from_be_bytes([f[10], f[11]]),
                );
                let mut out = tid.to_be_bytes().to_vec();
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&(3 + 2 * count).to_be_bytes());
                out.extend_from_slice(&[f[6], f[7], (2 * count) as u8]);
                for a in start..start + count {
                    out.extend_from_slice(&a.to_be_bytes());
                }
                let _ = s.write_all(&out).await;
            }
            // Hold the socket open: the client decides when it is done.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        Ok(addr)
    }

    fn read(start: u16) -> Request {
        Request::Read {
            function: 3,
            start,
            count: 2,
        }
    }

    #[tokio::test]
    async fn answers_out_of_order_reach_their_own_requests() {
        let addr = server(4, 0).await.unwrap();
        let bus = PipelinedBus::new(addr, 4);
        let t = Duration::from_secs(10);
        let (a, b, c, d) = tokio::join!(
            bus.call(1, read(100), t),
            bus.call(2, read(200), t),
            bus.call(3, read(300), t),
            bus.call(4, read(400), t),
        );
        assert_eq!(a.unwrap(), Answer::Registers(vec![100, 101]));
        assert_eq!(b.unwrap(), Answer::Registers(vec![200, 201]));
        assert_eq!(c.unwrap(), Answer::Registers(vec![300, 301]));
        assert_eq!(d.unwrap(), Answer::Registers(vec![400, 401]));
    }

    #[tokio::test]
    async fn an_unknown_transaction_id_fails_every_request_in_flight() {
        let addr = server(2, 1000).await.unwrap();
        let bus = PipelinedBus::new(addr, 2);
        let t = Duration::from_secs(10);
        let (a, b) = tokio::join!(bus.call(1, read(10), t), bus.call(1, read(20), t));
        for r in [a, b] {
            match r {
                Err(PipeError::Closed(why)) => assert!(why.contains("transaction id"), "{why}"),
                other => panic!("delivered: {other:?}"),
            }
        }
    }
}
