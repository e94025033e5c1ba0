//! A scriptable fake model server: an axum app on `127.0.0.1:0`, on a runtime of its own so
//! tests can drive the real binary with a blocking `std::process::Command` (the support
//! `Test` builder) without starving it.
//!
//! The script is a list of replies by request number (the last one repeats), or a function
//! of the request number (`Fake::with`, for thousands of requests). A reply can
//! wait before its head, send its body (any bytes) in pieces with pauses between them, cut
//! the connection after some of them, or go on with a repeated piece up to a huge size,
//! produced as it is sent (a response of a gigabyte costs the fake no memory). Every request is recorded (method, path, headers, body and
//! arrival time), and the server counts how many it was serving at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

/// One scripted response.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    /// Wait before sending the response head.
    head_delay: Duration,
    /// Body pieces, each sent after its pause.
    chunks: Vec<(Duration, Bytes)>,
    /// After the pieces, this piece again and again until the body has this many bytes.
    filler: Option<(Bytes, u64)>,
    /// After the pieces, break the connection instead of ending the body.
    cut: bool,
}

impl Reply {
    /// A response with this status, content type and body, sent in one piece.
    pub(crate) fn raw(status: u16, content_type: &str, body: impl Into<String>) -> Reply {
        Reply::bytes(status, content_type, body.into().into_bytes())
    }

    /// A response with this status, content type and body, exactly these bytes.
    pub(crate) fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            head_delay: Duration::ZERO,
            chunks: vec![(Duration::ZERO, Bytes::from(body))],
            filler: None,
            cut: false,
        }
    }

    /// Sends the body in pieces of `size` bytes (split anywhere, even inside a UTF-8
    /// character or a line ending), as a network may deliver it.
    pub(crate) fn split_every(mut self, size: usize) -> Reply {
        let whole: Vec<u8> = self
            .chunks
            .iter()
            .flat_map(|(_, piece)| piece.iter().copied())
            .collect();
        self.chunks = whole
            .chunks(size.max(1))
            .map(|piece| (Duration::ZERO, Bytes::copy_from_slice(piece)))
            .collect();
        self
    }

    /// After the body's pieces, sends `piece` again and again until the body is `total`
    /// bytes long, without ever holding it in memory.
    pub(crate) fn then_repeat(mut self, piece: &str, total: u64) -> Reply {
        // Sent in blocks of about 64 KiB (whole repetitions), so a huge body is quick.
        let times = (64 * 1024 / piece.len().max(1)).max(1);
        self.filler = Some((Bytes::from(piece.repeat(times)), total));
        self
    }

    /// 200 with a JSON body.
    pub(crate) fn json(body: Value) -> Reply {
        Reply::status_json(200, body)
    }

    /// A JSON body with any status.
    pub(crate) fn status_json(status: u16, body: Value) -> Reply {
        Reply::raw(status, "application/json", body.to_string())
    }

    /// 200 with a streamed body: one piece per item, `pause` before each but the first.
    pub(crate) fn stream(content_type: &str, pieces: Vec<String>, pause: Duration) -> Reply {
        let chunks = pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| (if i == 0 { Duration::ZERO } else { pause }, Bytes::from(p)))
            .collect();
        Reply {
            status: 200,
            headers: vec![("content-type".into(), content_type.into())],
            head_delay: Duration::ZERO,
            chunks,
            filler: None,
            cut: false,
        }
    }

    /// Server-sent events, one piece per event (each already framed, ending in a blank line).
    pub(crate) fn sse(events: Vec<String>) -> Reply {
        Reply::stream("text/event-stream", events, Duration::from_millis(5))
    }

    /// Newline-delimited JSON, one piece per line.
    pub(crate) fn ndjson(lines: Vec<Value>) -> Reply {
        let pieces = lines.into_iter().map(|l| format!("{l}\n")).collect();
        Reply::stream("application/x-ndjson", pieces, Duration::from_millis(5))
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Reply {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    /// Waits this long before the response head (the first byte).
    pub(crate) fn delay(mut self, delay: Duration) -> Reply {
        self.head_delay = delay;
        self
    }

    /// Sends only the first `n` pieces, then breaks the connection mid-body.
    pub(crate) fn cut_after(mut self, n: usize) -> Reply {
        self.chunks.truncate(n);
        self.cut = true;
        self
    }

    /// Sends only the first `n` pieces and ends the body normally (a stream that stops
    /// early without an error on the wire).
    pub(crate) fn end_after(mut self, n: usize) -> Reply {
        self.chunks.truncate(n);
        self
    }

    /// Waits `pause` before the piece at `index` (a stall in the middle of a stream).
    pub(crate) fn pause_before(mut self, index: usize, pause: Duration) -> Reply {
        self.chunks[index].0 = pause;
        self
    }
}

/// A request as the fake received it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    /// Path and query, e.g. `/v1/chat/completions`.
    pub(crate) path: String,
    /// Header names are lowercase.
    pub(crate) headers: BTreeMap<String, String>,
    /// The body as text.
    pub(crate) raw: String,
    /// The body parsed as JSON (`Null` if it is not JSON).
    pub(crate) body: Value,
    /// When it arrived, since the server started.
    pub(crate) at: Duration,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// The reply to request number `n` (0-based).
type Script = Box<dyn Fn(usize) -> Reply + Send + Sync>;

struct Shared {
    script: Script,
    started: Instant,
    requests: Mutex<Vec<Recorded>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts a request as in flight until its response is complete, broken or dropped.
struct InFlight(Arc<Shared>);

impl InFlight {
    fn new(shared: &Arc<Shared>) -> InFlight {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(Arc::clone(shared))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running fake server. Dropping it stops the server.
pub(crate) struct Fake {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Fake {
    /// Starts a server answering request `i` with `script[i]` (the last reply repeats).
    pub(crate) fn start(script: Vec<Reply>) -> Fake {
        assert!(!script.is_empty(), "a fake needs at least one reply");
        Fake::with(move |n| script[n.min(script.len() - 1)].clone())
    }

    /// Starts a server answering request `n` (0-based, in order of arrival) with
    /// `reply(n)`.
    pub(crate) fn with(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Fake {
        let script: Script = Box::new(reply);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("start the fake's runtime");
        let shared = Arc::new(Shared {
            script,
            started: Instant::now(),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the fake");
        let addr = listener.local_addr().expect("the fake's address");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// A fake that answers every request with `reply`.
    pub(crate) fn always(reply: Reply) -> Fake {
        Fake::start(vec![reply])
    }

    /// `http://127.0.0.1:PORT`
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`
    pub(crate) fn host_port(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("not poisoned").clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.shared.requests.lock().expect("not poisoned").len()
    }

    /// The only request; fails unless exactly one was made.
    #[track_caller]
    pub(crate) fn single(&self) -> Recorded {
        let requests = self.requests();
        assert_eq!(
            requests.len(),
            1,
            "expected exactly one request, got {}: {requests:#?}",
            requests.len()
        );
        requests.into_iter().next().expect("one request")
    }

    /// Most requests served at the same time.
    pub(crate) fn peak_in_flight(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Time between the arrival of request `a` and request `b` (by request number).
    #[track_caller]
    pub(crate) fn gap(&self, a: usize, b: usize) -> Duration {
        let requests = self.requests();
        assert!(
            requests.len() > a.max(b),
            "expected more than {} requests, got {}",
            a.max(b),
            requests.len()
        );
        requests[b].at.saturating_sub(requests[a].at)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let guard = InFlight::new(&shared);
    let at = shared.started.elapsed();
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let reply = {
        let mut requests = shared.requests.lock().expect("not poisoned");
        let n = requests.len();
        requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_string(), |p| p.to_string()),
            headers,
            body: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
            at,
        });
        (shared.script)(n)
    };
    if !reply.head_delay.is_zero() {
        tokio::time::sleep(reply.head_delay).await;
    }
    // The body is produced by a task that owns the in-flight guard, so the request counts
    // until its last byte is sent (or the client goes away).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let chunks = reply.chunks.clone();
    let filler = reply.filler.clone();
    let cut = reply.cut;
    tokio::spawn(async move {
        let _guard = guard;
        let mut sent = 0u64;
        for (pause, piece) in chunks {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            sent += piece.len() as u64;
            if tx.send(Ok(piece)).await.is_err() {
                return;
            }
        }
        if let Some((piece, total)) = filler {
            while sent < total {
                let n = (total - sent).min(piece.len() as u64) as usize;
                sent += n as u64;
                if tx.send(Ok(piece.slice(..n))).await.is_err() {
                    return;
                }
            }
        }
        if cut {
            // Let the last piece reach the client before the connection breaks.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let _ = tx
                .send(Err(std::io::Error::other("the fake cuts the stream")))
                .await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("a valid status");
    for (name, value) in &reply.headers {
        response.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            HeaderValue::from_str(value).expect("a valid header value"),
        );
    }
    response
}
