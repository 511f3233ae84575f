//! A minimal HTTP/1.1 client over `std::net::TcpStream`: one request per connection
//! (`Connection: close`), bodies framed by `Content-Length`, chunked encoding or end of stream.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Read and write timeout of one request.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// The `User-Agent` sent unless the caller gives one.
const USER_AGENT: &str = "mirrorgate-tests";

/// A response: status, headers in order (names as sent), and the decoded body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// `GET` with the given extra headers; panics on a connection or framing error.
pub fn http_get(addr: &str, path_and_query: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request("GET", addr, path_and_query, headers, &[])
}

/// Any method, with extra headers and a body (sent with `Content-Length` when non-empty or when
/// the method is `PUT`/`POST`/`PATCH`); panics on a connection or framing error.
pub fn http_request(
    method: &str,
    addr: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_http_request(method, addr, path_and_query, headers, body)
        .unwrap_or_else(|e| panic!("HTTP {method} http://{addr}{path_and_query} failed: {e}"))
}

/// Like [`http_request`], but returns connection errors, resets and truncated bodies (fewer
/// bytes than `Content-Length`, an unfinished chunked body) as `Err`.
pub fn try_http_request(
    method: &str,
    addr: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;

    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut request = format!("{method} {path_and_query} HTTP/1.1\r\n");
    if !has("host") {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("user-agent") {
        request.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    if !has("connection") {
        request.push_str("Connection: close\r\n");
    }
    let needs_length = !body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH");
    if needs_length && !has("content-length") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;

    // With `Connection: close` the server ends the stream after the response: read it all, then
    // frame the body. A reset after a complete response head still yields what arrived.
    let mut raw = Vec::new();
    let read_error = stream.read_to_end(&mut raw).err();
    let parsed = parse_response(&raw, method == "HEAD");
    match (parsed, read_error) {
        (Ok(response), _) => Ok(response),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(e),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn truncated(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, message)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_response(raw: &[u8], head_request: bool) -> io::Result<HttpResponse> {
    let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| {
        truncated(format!(
            "no complete response head in {} bytes: {:?}",
            raw.len(),
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        ))
    })?;
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|e| invalid(format!("response head is not UTF-8: {e}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || status.len() != 3 {
        return Err(invalid(format!("bad status line {status_line:?}")));
    }
    let status: u16 = status
        .parse()
        .map_err(|_| invalid(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| invalid(format!("bad header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut response = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };

    let rest = &raw[head_end + 4..];
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(response);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    if chunked {
        response.body = decode_chunked(rest)?;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid(format!("bad Content-Length {length:?}")))?;
        if rest.len() < length {
            return Err(truncated(format!(
                "body truncated: got {} of {length} bytes (status {status})",
                rest.len()
            )));
        }
        response.body = rest[..length].to_vec();
    } else {
        response.body = rest.to_vec();
    }
    Ok(response)
}

fn decode_chunked(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n")
            .ok_or_else(|| truncated("chunked body ends inside a chunk size line".to_owned()))?;
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| invalid("chunk size line is not UTF-8".to_owned()))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("bad chunk size line {line:?}")))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailers (ignored) end with an empty line; a missing end is tolerated.
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(truncated(format!(
                "chunked body truncated: chunk of {size} bytes, {} left (body so far {} bytes)",
                rest.len(),
                body.len()
            )));
        }
        body.extend_from_slice(&rest[..size]);
        if &rest[size..size + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF".to_owned()));
        }
        rest = &rest[size + 2..];
    }
}
