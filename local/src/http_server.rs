//! One small HTTP/1.1 server shape for everything this crate serves.
//!
//! The Runtime API emulator and the Function URL front both need the same thing: a hyper
//! server on `127.0.0.1`, on a port the kernel picks (so parallel tests never collide),
//! that stops with its owner. Dropping an [`HttpServer`] aborts its accept loop, and with
//! it every open connection (they live in the loop's `JoinSet`), so nothing outlives it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The response body every handler here produces: the whole body at once.
pub(crate) type Body = Full<Bytes>;

/// A running server; stops when dropped.
#[derive(Debug)]
pub(crate) struct HttpServer {
    addr: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl HttpServer {
    /// Binds `127.0.0.1:0` and serves every request with `handler(request, peer)`.
    pub(crate) async fn start<H, F>(handler: H) -> io::Result<Self>
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let accept_loop = tokio::spawn(accept_loop(listener, handler));
        Ok(Self { addr, accept_loop })
    }

    /// The address it listens on (always `127.0.0.1:<port>`).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let handler = handler.clone();
                    connections.spawn(async move {
                        let service = service_fn(move |request| {
                            let response = handler(request, peer);
                            async move { Ok::<_, Infallible>(response.await) }
                        });
                        if let Err(err) = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(%peer, error = %err, "connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A response with a status, a content type and a body.
pub(crate) fn respond(
    status: hyper::StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Why a request body could not be read.
#[derive(Debug)]
pub(crate) enum ReadBodyError {
    /// Longer than the limit.
    TooLarge,
    /// The connection failed mid-body.
    Broken(String),
}

/// Reads a whole request body, refusing more than `limit` bytes.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ReadBodyError> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};

    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ReadBodyError::TooLarge)
        }
        Err(err) => Err(ReadBodyError::Broken(err.to_string())),
    }
}
