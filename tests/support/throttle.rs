//! A forwarder to a real registry that sends blob bodies slowly (16 KiB every 10 ms), so a test
//! can act while a download is under way.

use std::convert::Infallible;
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

/// The throttling forwarder; stopped when dropped.
pub struct Throttle {
    /// Where it listens.
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Throttle {
    /// Forwards to `backend` (an `http://` URL).
    pub fn start(backend: String) -> Throttle {
        Throttle::launch(backend, false)
    }

    /// Like [`Throttle::start`], but the first blob answer breaks off after 64 KiB (the
    /// connection is reset mid-body); later ones are whole.
    pub fn start_cutting_first_blob(backend: String) -> Throttle {
        Throttle::launch(backend, true)
    }

    fn launch(backend: String, cut_first_blob: bool) -> Throttle {
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(cut_first_blob));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = Arc::new(backend);
        runtime.spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (backend, client, cut) = (backend.clone(), client.clone(), cut.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        throttled(backend.clone(), client.clone(), cut.clone(), request)
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

type ThrottledBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

async fn throttled(
    backend: Arc<String>,
    client: reqwest::Client,
    cut: Arc<std::sync::atomic::AtomicBool>,
    request: Request<Incoming>,
) -> Result<Response<ThrottledBody>, Infallible> {
    let url = format!(
        "{backend}{}",
        request.uri().path_and_query().map_or("/", |p| p.as_str())
    );
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
    for name in ["content-type", "content-length", "docker-content-digest"] {
        if let Some(value) = upstream.headers().get(name) {
            builder = builder.header(name, value.clone());
        }
    }
    let slow = request.uri().path().contains("/blobs/");
    let cut_this = slow
        && request.method() == http::Method::GET
        && cut.swap(false, std::sync::atomic::Ordering::SeqCst);
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
