//! A hostile registry: an in-process HTTP server on a free loopback port whose every answer the
//! test writes, for what a real registry never sends (a manifest under a wrong `Content-Type`, a
//! tag list that is not one), each an [`HttpResponse`]. `GET /v2/` answers 200 `{}` unless the
//! test answers it; what the test does not answer is a 404.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::http::HttpResponse;

/// The answers a [`Hostile`] registry is given are responses, as a client would read them.
impl HttpResponse {
    /// 200 with `body` as `content_type` (its `Content-Length` is added when sent).
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// The same response with one more header.
    pub fn with_header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

type Answer =
    dyn Fn(&Method, &str, Option<&str>, &http::HeaderMap) -> Option<HttpResponse> + Send + Sync;

/// The hostile registry; stopped when dropped.
pub struct Hostile {
    /// Where it listens.
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Hostile {
    /// Answers each request with `answer(method, path)`. A `HEAD` gets the
    /// headers of the `GET` answer without its body.
    pub fn start(
        answer: impl Fn(&Method, &str) -> Option<HttpResponse> + Send + Sync + 'static,
    ) -> Hostile {
        Hostile::start_with_request(move |method, path, _, _| answer(method, path))
    }

    /// Answers each request with `answer(method, path, query, headers)`, for answers that
    /// depend on the query (pages, filters) or the headers (`Accept`).
    pub fn start_with_request(
        answer: impl Fn(&Method, &str, Option<&str>, &http::HeaderMap) -> Option<HttpResponse>
        + Send
        + Sync
        + 'static,
    ) -> Hostile {
        let (runtime, listener, addr) = loopback_server(1);
        let answer: Arc<Answer> = Arc::new(answer);
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    std::future::ready(Ok::<_, Infallible>(respond(&*answer, &request)))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Hostile {
            addr,
            runtime: Some(runtime),
        }
    }

    /// Its URL, for a `registries:` endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn respond(answer: &Answer, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let method = if request.method() == Method::HEAD {
        Method::GET
    } else {
        request.method().clone()
    };
    let canned = answer(&method, path, request.uri().query(), request.headers())
        .or_else(|| (path == "/v2/").then(|| HttpResponse::ok("application/json", "{}")))
        .unwrap_or(HttpResponse {
            status: 404,
            headers: Vec::new(),
            body: Vec::new(),
        });
    let length = canned.body.len();
    let body = if request.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(canned.body)
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(canned.status).expect("status");
    let headers = response.headers_mut();
    for (name, value) in &canned.headers {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(length),
    );
    response
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A runtime of its own with `workers` threads, for an in-process test server, and a listener on
/// a free loopback port with its address. The server stops when the runtime is dropped.
pub fn loopback_server(
    workers: usize,
) -> (tokio::runtime::Runtime, tokio::net::TcpListener, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    (runtime, listener, addr)
}
