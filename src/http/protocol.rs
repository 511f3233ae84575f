//! Which HTTP version a connection speaks, decided before hyper serves it: from the first bytes
//! the client sent (plain text, looked at without taking them) or from the protocol negotiated
//! by ALPN (TLS); [`Builders`] holds hyper-util's builder for each answer.
//!
//! hyper-util's auto builder can find the version itself, but it reads the first 24 bytes into a
//! buffer of its own and hands them to hyper's HTTP/1.1 connection first. hyper's read buffer
//! (8 KiB) then grows to 16 KiB on the second read, and keeps that size, half of it copied and
//! so resident, for as long as the connection stays open: with 10,000 idle keep-alive
//! connections, 80 MiB of the server's memory. Told the version in advance, hyper reads the
//! request straight from the socket into its 8 KiB buffer, of which an idle connection has
//! touched only the pages its requests were read into. The auto builder stays for what cannot
//! be told in advance (a client that has sent part of the HTTP/2 preface so far, TLS without ALPN).
//!
//! HTTP/1.1 told in advance is served by hyper's own builder rather than hyper-util's: only it
//! bounds a request head by its parsed length (`max_header_size`); hyper-util's checks the read
//! buffer between reads, and a read into its spare room completes heads of nearly twice the
//! bound.

use hyper::server::conn::http1;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto::Builder;
use tokio::net::TcpStream;

/// The client connection preface of HTTP/2 (RFC 9113, section 3.4), sent first by a client
/// that speaks HTTP/2 with prior knowledge.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP version of a connection, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    Http1,
    Http2,
}

/// hyper-util's connection builder, configured once, for each way a version may be known.
pub(super) struct Builders {
    /// Finds the version itself (reads the start of the connection).
    auto: Builder<TokioExecutor>,
    http1: http1::Builder,
    http2: Builder<TokioExecutor>,
}

impl Builders {
    /// `builder` (with its HTTP/1.1 and HTTP/2 settings) for each way a version may be known,
    /// and `http1` (the same HTTP/1.1 settings) for HTTP/1.1 known in advance.
    pub(super) fn new(builder: Builder<TokioExecutor>, http1: http1::Builder) -> Builders {
        Builders {
            http1,
            http2: builder.clone().http2_only(),
            auto: builder,
        }
    }

    /// The builder for HTTP/1.1, known in advance.
    pub(super) fn http1(&self) -> &http1::Builder {
        &self.http1
    }

    /// The builder for HTTP/2 (`Some`), or the one that finds the version out (`None`).
    pub(super) fn get(&self, version: Option<Version>) -> &Builder<TokioExecutor> {
        match version {
            Some(Version::Http2) => &self.http2,
            _ => &self.auto,
        }
    }
}

/// The version a plain-text client speaks, from the first bytes it sent, left unread: HTTP/2
/// when they are the whole preface, HTTP/1.1 when they differ from it; `None` when they are only
/// the start of the preface so far, or the client closed without sending anything (then the auto
/// builder reads on and decides, as it would have without this).
///
/// Waits until the client has sent something.
pub(super) async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Version>> {
    let mut start = [0u8; PREFACE.len()];
    let read = stream.peek(&mut start).await?;
    Ok(from_start(&start[..read]))
}

/// The version that a connection starting with `start` speaks, if `start` tells.
fn from_start(start: &[u8]) -> Option<Version> {
    if start.is_empty() {
        None
    } else if !PREFACE.starts_with(start) {
        Some(Version::Http1)
    } else if start.len() == PREFACE.len() {
        Some(Version::Http2)
    } else {
        None
    }
}

/// The version a TLS client agreed to by ALPN, if it offered any of ours.
pub(super) fn negotiated(alpn: Option<&[u8]>) -> Option<Version> {
    match alpn? {
        b"h2" => Some(Version::Http2),
        b"http/1.1" => Some(Version::Http1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_line_is_http1_from_its_first_byte_that_differs_from_the_preface() {
        let seen = [
            from_start(b"GET /v2/ HTTP/1.1\r\n"),
            from_start(b"G"),
            from_start(b"POST /v2/"),
            from_start(b"PRI * HTTP/1.1\r\n"),
        ];
        assert_eq!(seen, [Some(Version::Http1); 4]);
    }

    #[test]
    fn the_whole_preface_is_http2_and_a_part_of_it_is_not_decided() {
        let seen = (
            from_start(PREFACE),
            from_start(&PREFACE[..1]),
            from_start(&PREFACE[..23]),
            from_start(b""),
        );
        assert_eq!(seen, (Some(Version::Http2), None, None, None));
    }

    #[test]
    fn alpn_names_the_version_and_no_alpn_leaves_it_open() {
        let seen = (
            negotiated(Some(b"h2")),
            negotiated(Some(b"http/1.1")),
            negotiated(Some(b"spdy/3")),
            negotiated(None),
        );
        assert_eq!(
            seen,
            (Some(Version::Http2), Some(Version::Http1), None, None)
        );
    }

    #[tokio::test]
    async fn sniffing_leaves_the_bytes_for_hyper_to_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(PREFACE).await.unwrap();
        let version = sniff(&server).await.unwrap();
        let mut read = [0u8; PREFACE.len()];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!((version, &read), (Some(Version::Http2), PREFACE));
    }
}
