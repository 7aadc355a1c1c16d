//! Bytes on the gRPC wire, counted below TLS and HTTP/2: what a gateway's
//! link actually carried (`hub_grpc_wire_bytes_received_total`), to set
//! against the batches' protobuf size before compression
//! (`hub_grpc_message_bytes_received_total`, counted by ingest).

use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

pub struct Counted {
    inner: TcpStream,
    received: metrics::Counter,
    sent: metrics::Counter,
}

impl Counted {
    pub fn new(inner: TcpStream) -> Counted {
        Counted {
            inner,
            received: metrics::counter!(crate::metric_names::HUB_GRPC_WIRE_BYTES_RECEIVED_TOTAL),
            sent: metrics::counter!(crate::metric_names::HUB_GRPC_WIRE_BYTES_SENT_TOTAL),
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.received
                .increment((buf.filled().len() - before) as u64);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.sent.increment(n as u64);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for Counted {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}
