//! The HTTP side of `rlvr serve`: hyper connections on a small tokio runtime. A connection is a
//! task, so clients that trickle their bytes hold no thread; the head and the body each have a
//! read timeout, bodies a size cap checked before reading, connections a cap. Authorized
//! requests go to the routes on tokio's blocking pool, where they wait for the engine.

use super::routes::{self, HttpError, ServeState};
use super::Limits;
use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

struct Shared {
    state: Arc<ServeState>,
    api_key: Option<String>,
    limits: Limits,
}

/// Accepts connections on `listener` until the process ends.
pub fn serve(
    listener: std::net::TcpListener,
    state: Arc<ServeState>,
    api_key: Option<String>,
    limits: Limits,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rlvr-http")
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    listener.set_nonblocking(true)?;
    let shared = Arc::new(Shared {
        state,
        api_key,
        limits,
    });
    runtime.block_on(accept_loop(listener, shared))
}

async fn accept_loop(listener: std::net::TcpListener, shared: Arc<Shared>) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let open = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    loop {
        // At the cap, further clients wait in the kernel's accept queue.
        let permit = open.clone().acquire_owned().await?;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(|req| handle(shared.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(shared.limits.read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
            drop(permit);
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let answer = answer(&shared, req, method.clone(), path.clone()).await;
    Ok(respond(&method, &path, answer))
}

async fn answer(
    shared: &Shared,
    req: Request<Incoming>,
    method: Method,
    path: String,
) -> routes::Answer {
    // The health check stays open so orchestrators can probe without the key (as vLLM's).
    if !(path == "/health" && matches!(method, Method::GET | Method::HEAD)) {
        authorize(shared.api_key.as_deref(), req.headers().get(AUTHORIZATION))?;
    }
    let limit = shared.limits.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let read = Limited::new(req.into_body(), limit).collect();
    let body = match tokio::time::timeout(shared.limits.read_timeout, read).await {
        Err(_) => {
            return Err(HttpError::new(
                408,
                format!(
                    "the request body did not arrive within {} s",
                    shared.limits.read_timeout.as_secs_f64()
                ),
            ))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large(limit)),
        Ok(Err(e)) => return Err(HttpError::bad_request(format!("reading the body: {e}"))),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let body = String::from_utf8(body.to_vec())
        .map_err(|_| HttpError::bad_request("the request body is not UTF-8"))?;
    let state = shared.state.clone();
    // Routes block on the engine; the blocking pool keeps the connection tasks moving.
    tokio::task::spawn_blocking(move || routes::route(&state, &method, &path, &body))
        .await
        .unwrap_or_else(|_| Err(HttpError::internal("the request handler failed")))
}

fn too_large(limit: usize) -> HttpError {
    HttpError::new(
        413,
        format!("the request body is larger than {limit} bytes"),
    )
}

/// Checks `Authorization: Bearer <key>` in constant time when a key is set.
fn authorize(key: Option<&str>, header: Option<&HeaderValue>) -> Result<(), HttpError> {
    let Some(key) = key else { return Ok(()) };
    let sent = header
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(sent.as_bytes().ct_eq(key.as_bytes())) {
        Ok(())
    } else {
        Err(HttpError::new(401, "Unauthorized"))
    }
}

fn respond(method: &Method, path: &str, answer: routes::Answer) -> Response<Full<Bytes>> {
    let (status, value) = match answer {
        Ok(v) => (200, v),
        Err(e) => {
            if e.status >= 500 {
                tracing::error!("{method} {}: {}", path.escape_debug(), e.message);
            } else {
                tracing::warn!("{method} {}: {}", path.escape_debug(), e.message);
            }
            (e.status, routes::error_body(&e))
        }
    };
    let text = if value.is_null() {
        String::new()
    } else {
        value.to_string()
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_keys_are_checked_exactly() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(authorize(None, None).is_ok());
        assert!(authorize(Some("k1"), Some(&h("Bearer k1"))).is_ok());
        for bad in ["Bearer k2", "Bearer k1 ", "bearer k1", "k1", "Bearer "] {
            assert_eq!(
                authorize(Some("k1"), Some(&h(bad))).unwrap_err().status,
                401,
                "{bad}"
            );
        }
        assert_eq!(authorize(Some("k1"), None).unwrap_err().status, 401);
    }
}
