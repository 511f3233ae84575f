//! A forwarder to a real registry that misbehaves on blobs in one chosen way: it sends their
//! bodies slowly (16 KiB every 10 ms, so a test can act while a download is under way), breaks
//! the first one (or every one) off, stalls them, pads them, redirects them to the registry
//! itself, claims to hold every blob asked for by HEAD (with a wrong length, or with no digest
//! and length at all), holds them until the test releases them, or sends them without a length.
//! Or it misbehaves on the requests for one path: closes their connection unanswered, or answers
//! `429 Too Many Requests`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// How the forwarder treats blob requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Slow bodies.
    Slow,
    /// Slow bodies; the first GET breaks off after 64 KiB.
    CutFirst,
    /// Every GET breaks off after 64 KiB, at full speed.
    CutEvery,
    /// Every request whose path contains this has its connection closed, unanswered.
    CloseUnanswered(&'static str),
    /// Every request whose path contains this is answered `429 Too Many Requests`.
    TooManyRequests(&'static str),
    /// 64 KiB of the body, then nothing more (the connection stays open).
    Stall,
    /// The whole body at full speed plus 1 KiB of zeros, with a matching Content-Length.
    Pad,
    /// `307` to the same path on the backend.
    Redirect,
    /// Every blob HEAD answered 200 with the digest asked for and a 1-byte length, whether the
    /// backend holds the blob or not.
    AffirmHeads,
    /// Every blob HEAD answered 200 with neither a digest nor a length, whether the backend
    /// holds the blob or not.
    BareHeads,
    /// Every blob GET held (not forwarded) until the test releases its digest.
    Hold,
    /// Blob GET bodies forwarded whole but without `Content-Length` (chunked).
    Unsized,
}

/// The throttling forwarder; stopped when dropped.
pub struct Throttle {
    /// Where it listens.
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    gate: Arc<Gate>,
}

/// The blob GETs [`Throttle::start_holding_blobs`] holds, and what the test released.
#[derive(Default)]
struct Gate {
    /// Released digests; `None` once everything is.
    released: std::sync::Mutex<Option<Vec<String>>>,
    changed: tokio::sync::Notify,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Gate {
    fn opens_for(&self, path: &str) -> bool {
        self.released
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|released| released.iter().any(|digest| path.ends_with(digest)))
    }

    async fn pass(&self, path: &str) {
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        loop {
            let changed = self.changed.notified();
            if self.opens_for(path) {
                break;
            }
            changed.await;
        }
        self.waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Throttle {
    /// Forwards to `backend` (an `http://` URL).
    pub fn start(backend: String) -> Throttle {
        Throttle::launch(backend, Behaviour::Slow)
    }

    /// Like [`Throttle::start`], but the first blob answer breaks off after 64 KiB (the
    /// connection is reset mid-body); later ones are whole.
    pub fn start_cutting_first_blob(backend: String) -> Throttle {
        Throttle::launch(backend, Behaviour::CutFirst)
    }

    /// Like [`Throttle::start_cutting_first_blob`] for every blob GET, at full speed: a mirror
    /// that truncates every body.
    pub fn start_cutting_every_blob(backend: String) -> Throttle {
        Throttle::launch(backend, Behaviour::CutEvery)
    }

    /// Closes the connection of every request whose path contains `path_contains` without
    /// answering it; forwards the others.
    pub fn start_closing_unanswered(backend: String, path_contains: &'static str) -> Throttle {
        Throttle::launch(backend, Behaviour::CloseUnanswered(path_contains))
    }

    /// Answers every request whose path contains `path_contains` with `429 Too Many Requests`;
    /// forwards the others.
    pub fn start_refusing_with_429(backend: String, path_contains: &'static str) -> Throttle {
        Throttle::launch(backend, Behaviour::TooManyRequests(path_contains))
    }

    /// Sends the first 64 KiB of every blob, then stalls with the connection open.
    pub fn start_stalling_blobs(backend: String) -> Throttle {
        Throttle::launch(backend, Behaviour::Stall)
    }

    /// Sends every blob with 1 KiB of zeros appended (and announces that length).
    pub fn start_padding_blobs(backend: String) -> Throttle {
        Throttle::launch(backend, Behaviour::Pad)
    }

    /// Answers every blob GET with a `307` to the same path on `backend` itself.
    pub fn start_redirecting_blobs(backend: String) -> Throttle {
        Throttle::launch(backend, Behaviour::Redirect)
    }

    /// Answers every blob HEAD 200, announcing the digest asked for and a length of 1 byte,
    /// without asking the backend (a registry that claims to hold everything).
    pub fn start_affirming_blob_heads(backend: String) -> Throttle {
        Throttle::launch(backend, Behaviour::AffirmHeads)
    }

    /// Answers every blob HEAD 200 with neither `Docker-Content-Digest` nor `Content-Length`,
    /// without asking the backend.
    pub fn start_bare_blob_heads(backend: String) -> Throttle {
        Throttle::launch(backend, Behaviour::BareHeads)
    }

    /// Holds every blob GET until [`Throttle::release`] names its digest (or
    /// [`Throttle::release_all`]), then forwards it.
    pub fn start_holding_blobs(backend: String) -> Throttle {
        let throttle = Throttle::launch(backend, Behaviour::Hold);
        *throttle.gate.released.lock().unwrap() = Some(Vec::new());
        throttle
    }

    /// Forwards blob GETs without their `Content-Length`: the body is sent chunked.
    pub fn start_unsized_blobs(backend: String) -> Throttle {
        Throttle::launch(backend, Behaviour::Unsized)
    }

    /// How many blob GETs [`Throttle::start_holding_blobs`] holds now.
    pub fn held(&self) -> usize {
        self.gate.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Forwards the held GETs of `digest`, and those to come.
    pub fn release(&self, digest: &str) {
        if let Some(released) = self.gate.released.lock().unwrap().as_mut() {
            released.push(digest.to_owned());
        }
        self.gate.changed.notify_waiters();
    }

    /// Forwards every blob GET held, and those to come.
    pub fn release_all(&self) {
        *self.gate.released.lock().unwrap() = None;
        self.gate.changed.notify_waiters();
    }

    fn launch(backend: String, behaviour: Behaviour) -> Throttle {
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(
            behaviour == Behaviour::CutFirst,
        ));
        let (runtime, listener, addr) = super::hostile::loopback_server(2);
        let backend = Arc::new(backend);
        let gate = Arc::new(Gate::default());
        let gate_of_server = gate.clone();
        runtime.spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (backend, client, cut) = (backend.clone(), client.clone(), cut.clone());
                let gate = gate_of_server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        throttled(
                            backend.clone(),
                            client.clone(),
                            (cut.clone(), gate.clone()),
                            behaviour,
                            request,
                        )
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Throttle {
            addr,
            runtime: Some(runtime),
            gate,
        }
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// What [`Throttle::start_padding_blobs`] appends.
const PAD: u64 = 1024;

type ThrottledBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn throttled(
    backend: Arc<String>,
    client: reqwest::Client,
    (cut, gate): (Arc<std::sync::atomic::AtomicBool>, Arc<Gate>),
    behaviour: Behaviour,
    request: Request<Incoming>,
) -> Result<Response<ThrottledBody>, std::io::Error> {
    let path = request.uri().path();
    match behaviour {
        // A service error makes hyper close the connection without an answer.
        Behaviour::CloseUnanswered(marker) if path.contains(marker) => {
            return Err(std::io::Error::other("closed unanswered by the test"));
        }
        Behaviour::TooManyRequests(marker) if path.contains(marker) => {
            let response = Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header(http::header::RETRY_AFTER, "1")
                .body(http_body_util::Empty::new().map_err(|n| match n {}).boxed())
                .unwrap();
            return Ok(response);
        }
        _ => {}
    }
    let url = format!(
        "{backend}{}",
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
    let blob = request.uri().path().contains("/blobs/");
    if blob && behaviour == Behaviour::AffirmHeads && request.method() == http::Method::HEAD {
        let digest = request.uri().path().rsplit('/').next().unwrap_or_default();
        let response = Response::builder()
            .status(StatusCode::OK)
            .header("docker-content-digest", digest)
            .header(http::header::CONTENT_LENGTH, 1)
            .body(http_body_util::Empty::new().map_err(|n| match n {}).boxed())
            .unwrap();
        return Ok(response);
    }
    if blob && behaviour == Behaviour::BareHeads && request.method() == http::Method::HEAD {
        let response = Response::builder()
            .status(StatusCode::OK)
            .body(http_body_util::Empty::new().map_err(|n| match n {}).boxed())
            .unwrap();
        return Ok(response);
    }
    if blob && behaviour == Behaviour::Hold && request.method() == http::Method::GET {
        gate.pass(request.uri().path()).await;
    }
    if blob && behaviour == Behaviour::Redirect && request.method() == http::Method::GET {
        let response = Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(http::header::LOCATION, url)
            .body(http_body_util::Empty::new().map_err(|n| match n {}).boxed())
            .unwrap();
        return Ok(response);
    }
    let mut forward = client.request(request.method().clone(), url);
    if let Some(accept) = request.headers().get(http::header::ACCEPT) {
        forward = forward.header(http::header::ACCEPT, accept.clone());
    }
    let Ok(upstream) = forward.send().await else {
        let mut response =
            Response::new(http_body_util::Empty::new().map_err(|n| match n {}).boxed());
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        return Ok(response);
    };
    let mut builder = Response::builder().status(upstream.status());
    let pad = blob && behaviour == Behaviour::Pad && upstream.status() == StatusCode::OK;
    let unsized_body = blob && behaviour == Behaviour::Unsized;
    for name in ["content-type", "content-length", "docker-content-digest"] {
        if unsized_body && name == "content-length" {
            continue;
        }
        if let Some(value) = upstream.headers().get(name) {
            let value = match value.to_str().ok().and_then(|v| v.parse::<u64>().ok()) {
                Some(length) if pad && name == "content-length" => {
                    http::HeaderValue::from(length + PAD)
                }
                _ => value.clone(),
            };
            builder = builder.header(name, value);
        }
    }
    if pad && request.method() == http::Method::GET {
        let padding = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![0u8; PAD as usize])))
        });
        let body = upstream
            .bytes_stream()
            .map(|chunk| chunk.map(Frame::data).map_err(std::io::Error::other))
            .chain(padding);
        return Ok(builder.body(BodyExt::boxed(StreamBody::new(body))).unwrap());
    }
    if blob && behaviour == Behaviour::Stall && request.method() == http::Method::GET {
        let mut sent = 0usize;
        let body = upstream
            .bytes_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other))
            .take_while(move |chunk| {
                let more = sent < 64 * 1024;
                sent += chunk.as_ref().map_or(0, Bytes::len);
                std::future::ready(more)
            })
            .map(|chunk| chunk.map(Frame::data))
            .chain(futures_util::stream::pending());
        return Ok(builder.body(BodyExt::boxed(StreamBody::new(body))).unwrap());
    }
    let slow = blob && matches!(behaviour, Behaviour::Slow | Behaviour::CutFirst);
    let cut_this = blob
        && request.method() == http::Method::GET
        && (behaviour == Behaviour::CutEvery
            || (slow && cut.swap(false, std::sync::atomic::Ordering::SeqCst)));
    let mut sent = 0usize;
    let body = upstream
        .bytes_stream()
        .flat_map(|chunk| {
            let pieces: Vec<Result<Bytes, reqwest::Error>> = match chunk {
                Ok(chunk) => chunk
                    .chunks(16 * 1024)
                    .map(|c| Ok(Bytes::copy_from_slice(c)))
                    .collect(),
                Err(error) => vec![Err(error)],
            };
            futures_util::stream::iter(pieces)
        })
        .map(move |piece| {
            if let Ok(bytes) = &piece {
                sent += bytes.len();
                if cut_this && sent > 64 * 1024 {
                    return Err(std::io::Error::other("connection reset by the test"));
                }
            }
            piece.map_err(std::io::Error::other)
        })
        .then(move |piece| async move {
            if slow {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            piece.map(Frame::data)
        });
    Ok(builder.body(BodyExt::boxed(StreamBody::new(body))).unwrap())
}

impl Throttle {
    /// Its URL, for a `registries:` endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}
