//! The server loop: HTTP/1.1 and HTTP/2 (hyper-util's builders, told which by the `protocol`
//! module) on a TCP listener, in plain text or over TLS ([`ServerTls`]), each request answered
//! by the operator endpoint [`operator`](super::operator) routes it to, or else parsed by
//! [`route`](super::route) and answered by the [`Proxy`], with a graceful stop.
//!
//! What a client can hold is bounded (`limits`): connections (beyond the bound, new ones wait
//! in the kernel's listen backlog, which is how a server under load should push back), the
//! time a connection may go without a request in progress (from accept, see
//! [`connection`](super::connection)), and the size and number of request headers.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use super::LimitsConfig;
use super::coalesce::Coalesced;
use super::connection::{Activity, Deadlines, InProgress, Socket, Tracked, drive};
use super::operator::{self, Listener};
use super::protocol::{self, Builders, Version};
use super::{API_VERSION_HEADER, ServerTls};
use crate::proxy::Proxy;
use crate::warm::Warmer;

/// The number of request headers hyper accepts when not told otherwise
/// (`hyper::proto::h1::role::DEFAULT_MAX_HEADERS`).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// What one HTTP/2 stream buffers towards its client, at most, beyond the piece in hand.
const H2_SEND_BUFFER: usize = 64 * 1024;
/// What a client may send on one HTTP/2 stream before it is read: the protocol's default.
const H2_STREAM_WINDOW: u32 = 65_535;
/// What a client may send on one HTTP/2 connection before it is read.
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;

/// How long in-flight requests may take to finish once a stop is asked for.
const GRACE_PERIOD: Duration = Duration::from_secs(30);

/// Serves the registry API on `listener` until `shutdown` completes, then lets in-flight requests
/// finish (up to a grace period), within `limits` (connections, header time and size).
///
/// A connection has `limits.header_read_timeout` from accept to send its first request head
/// (protocol detection and TLS handshake included), and may stay that long without a request
/// in progress between requests: then it is asked to finish (HTTP/2: `GOAWAY`) and closed (see
/// the `connection` module). HTTP/2 connections are also pinged at that interval and
/// closed when a ping is not answered within it, so a vanished peer does not hold a stream.
///
/// With `tls`, every connection first completes a TLS handshake (a failed one is logged at
/// debug level and the connection dropped), and is then served as HTTP/2 or HTTP/1.1,
/// whichever the client speaks (the one it negotiated by ALPN). Handshakes still in progress when
/// the server stops are abandoned.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<Arc<ServerTls>>,
    limits: LimitsConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with_warm(listener, proxy, tls, limits, None, shutdown).await
}

/// [`serve`], also answering the warm-up admin API (`/warm/…`) of `warm` unless
/// `metrics_listen` serves it.
pub async fn serve_with_warm(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<Arc<ServerTls>>,
    limits: LimitsConfig,
    warm: Option<Arc<Warmer>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    let max_header = usize::try_from(limits.max_header_size.bytes()).unwrap_or(usize::MAX);
    let idle = limits.header_read_timeout;
    // A client that does not finish its request headers in time is disconnected (slowloris),
    // and one whose head outgrows the bound is answered 431 (exactly at the bound by `http1`,
    // see the `protocol` module).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_buf_size(max_header)
        .max_header_size(max_header);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .max_buf_size(max_header);
    // hyper's own bound is 100 headers on the stack; naming any bound, even that one, makes it
    // fill a vector of that many entries for every request head.
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
        http1.max_headers(limits.max_headers);
    }
    // What one HTTP/2 connection may make the server hold: its streams, what each stream
    // buffers towards the client (on top of the piece of body hyper holds, see
    // `connection::Tracked`), and what the client may send before anything reads it (request
    // bodies are refused unread, so a window of 1 MiB per stream would let every stream park
    // that much).
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(idle))
        .keep_alive_timeout(idle)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_send_buf_size(H2_SEND_BUFFER)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        // h2 refuses a list that reaches the bound; one more lets a list of exactly the bound in.
        .max_header_list_size(u32::try_from(max_header + 1).unwrap_or(u32::MAX));
    let builders = Arc::new(Builders::new(builder, http1));
    let max_connections = limits.max_connections;
    let connections = Arc::new(Semaphore::new(max_connections));
    let open = proxy.metrics().http.connections();
    let deadlines = Arc::new(Deadlines {
        idle,
        stall: limits.write_stall_timeout,
        stalled: proxy.metrics().http.connections_stalled(),
    });
    let local = listener.local_addr()?;
    // Dropped when the server stops: handshakes in progress end, connections are asked to finish.
    let (stop_connections, stopped) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the bound, accept nothing until a connection closes.
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Running out of file descriptors must not end the server.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let accepted_at = Instant::now();
                let _ = stream.set_nodelay(true);
                open.inc();
                let held = OpenConnection { _permit: permit, open: open.clone() };
                let proxy = proxy.clone();
                let warm = warm.clone();
                let activity = Activity::new(accepted_at);
                let builders = builders.clone();
                let deadlines = deadlines.clone();
                let tls = tls.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let _held = held;
                    // The TLS handshake, and the wait for the bytes that tell the HTTP version,
                    // fall within the idle timeout counted from accept.
                    let tls_on = tls.is_some();
                    let opening = tokio::time::timeout_at(accepted_at + idle, opened(stream, tls));
                    let (stream, version) = tokio::select! {
                        result = opening => match result {
                            Ok(Ok(opened)) => opened,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, tls = tls_on, %error, "connection failed before its first request (TLS handshake or first read)");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, tls = tls_on, "connection closed: no TLS handshake or no request within the idle timeout");
                                return;
                            }
                        },
                        _ = stopped.changed() => return,
                    };
                    // HTTP/2 hands bodies out in pieces (and so may a connection whose version
                    // hyper is still to find).
                    let http2 = version != Some(Version::Http1);
                    let service = {
                        let activity = activity.clone();
                        // Boxed: hyper keeps a slot for the request's future as long as the
                        // connection lives, idle or not; a box makes it a pointer.
                        service_fn(move |request| -> BoxFuture<'static, _> {
                            Box::pin(handle(
                                proxy.clone(),
                                warm.clone(),
                                request,
                                local,
                                peer,
                                activity.begin(),
                                http2,
                            ))
                        })
                    };
                    let fd = match &stream {
                        Either::Left(tcp) => tcp.as_raw_fd(),
                        Either::Right(tls) => tls.get_ref().0.as_raw_fd(),
                    };
                    let stream = Socket::new(stream, &activity);
                    // HTTP/2 multiplexes: the responses ready at once are worth one write.
                    let stream = Coalesced::new(stream, version == Some(Version::Http2));
                    let io = TokioIo::new(stream);
                    // Boxed: each layer that takes the connection by value (this task, `drive`,
                    // its pinned copy) would otherwise reserve room for all of it in the task.
                    // A macro: the two builders' connections share no trait to finish by.
                    macro_rules! served {
                        ($connection:expr) => {
                            drive(
                                Box::pin($connection),
                                |c| c.get_mut().as_mut().graceful_shutdown(),
                                || discard_unsent(fd),
                                &activity,
                                &deadlines,
                                stopped,
                            )
                            .await
                        };
                    }
                    let served: Result<(), Box<dyn std::error::Error + Send + Sync>> =
                        if version == Some(Version::Http1) {
                            served!(builders.http1().serve_connection(io, service)).map_err(Into::into)
                        } else {
                            served!(builders.get(version).serve_connection(io, service))
                        };
                    if let Err(error) = served {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    drop(stop_connections);
    // Every connection holds a permit until it closes: all of them back means all closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = connections.acquire_many(all) => {}
        () = tokio::time::sleep(GRACE_PERIOD) => {
            tracing::warn!("grace period over; closing the remaining connections");
        }
    }
    Ok(())
}

/// A connection's stream, after the TLS handshake with `tls`, and its HTTP version when the
/// client's first bytes (plain text, waited for) or ALPN (TLS) tell it.
async fn opened(
    stream: TcpStream,
    tls: Option<Arc<ServerTls>>,
) -> std::io::Result<(
    Either<TcpStream, Box<TlsStream<TcpStream>>>,
    Option<Version>,
)> {
    match tls {
        None => {
            let version = protocol::sniff(&stream).await?;
            Ok((Either::Left(stream), version))
        }
        // The TLS state (1.2 KiB) is boxed so that plain-text connections, which share the
        // stream type, do not carry room for it.
        Some(tls) => {
            let stream = Box::pin(tls.acceptor().accept(stream)).await?;
            let version = protocol::negotiated(stream.get_ref().1.alpn_protocol());
            Ok((Either::Right(Box::new(stream)), version))
        }
    }
}

/// Makes the close of the socket `fd` discard what it has not sent, with a reset: a client
/// that stopped reading would otherwise have the kernel keep up to its send buffer (megabytes)
/// for it until its retries give out, and never learn that the connection is gone.
fn discard_unsent(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the socket of a connection not yet dropped; the option is a `linger` of
    // the size given.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if set != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot reset a stalled connection; closing it");
    }
}

/// A connection's place under `limits.max_connections`, counted in the open-connections gauge.
struct OpenConnection {
    _permit: tokio::sync::OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

async fn handle(
    proxy: Arc<Proxy>,
    warm: Option<Arc<Warmer>>,
    request: Request<Incoming>,
    local: SocketAddr,
    peer: SocketAddr,
    in_progress: InProgress,
    http2: bool,
) -> Result<Response<Tracked>, Infallible> {
    if let Some(endpoint) = operator::route(
        Listener::Registry,
        request.uri().path(),
        &proxy,
        warm.as_ref(),
    ) {
        // Boxed, like the proxy's answers: a rare request must not grow every request's future.
        let response = Box::pin(operator::answer(
            Listener::Registry,
            endpoint,
            &proxy,
            request,
            local,
            peer,
        ))
        .await;
        return Ok(response.map(|body| Tracked::new(body, in_progress, http2)));
    }
    // Routing, serving and counting are the proxy's; this layer only speaks HTTP.
    let mut response = super::answer::respond(
        &proxy,
        super::answer::Incoming {
            method: request.method(),
            path: request.uri().path(),
            query: request.uri().query(),
            headers: request.headers(),
            carries_body: !request.body().is_end_stream(),
            peer: Some(peer.ip()),
        },
    )
    .await;
    response
        .headers_mut()
        .insert(API_VERSION_HEADER, HeaderValue::from_static("registry/2.0"));
    // The request stays in progress until its body is sent or dropped.
    Ok(response.map(|body| Tracked::new(body, in_progress, http2)))
}
