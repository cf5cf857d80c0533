//! Zipkin's v2 HTTP API over a [`Store`], with axum on tokio.
//!
//! axum (on hyper) because the collector is a tokio program already: the
//! server shares its runtime, gets typed routing, a body-size limit and
//! graceful shutdown without hand-written HTTP plumbing; database calls run
//! on tokio's blocking pool so a slow query never stalls the reactor.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::model::Span;

use super::cors::AllowedOrigins;
use super::db::now_us;
use super::query::{parse_annotation_query, QueryRequest, DEFAULT_LIMIT, DEFAULT_LOOKBACK_MS};
use super::span_ext::normalize_trace_id;
use super::{Store, StoreError};

/// Largest accepted `POST /api/v2/spans` body: 16 MiB (larger → 413).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// How the query server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Browser origins allowed to read the API (CORS), any by default.
    pub allowed_origins: AllowedOrigins,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            retention_interval: Duration::from_secs(60),
            allowed_origins: AllowedOrigins::Any,
        }
    }
}

impl ServerConfig {
    /// The defaults, with the allowed origins taken from
    /// `QUERY_ALLOWED_ORIGINS` as Zipkin's server does (any when unset).
    pub fn from_env() -> Self {
        ServerConfig {
            allowed_origins: AllowedOrigins::from_env(),
            ..ServerConfig::default()
        }
    }
}

/// A running query server; dropping it leaves the server running until
/// the runtime stops, [`ServerHandle::shutdown`] stops it cleanly.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    retention: JoinHandle<()>,
}

impl ServerHandle {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes in-flight requests, stops retention.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.server).await;
        self.retention.abort();
    }
}

/// Binds `addr` (Zipkin's default is 127.0.0.1:9411) on the current tokio
/// runtime and serves the query API over `store`, running retention every
/// minute and allowing the browser origins of `QUERY_ALLOWED_ORIGINS` (any
/// when unset), as Zipkin does.
pub async fn serve(addr: SocketAddr, store: Store) -> Result<ServerHandle, StoreError> {
    serve_with(addr, store, ServerConfig::from_env()).await
}

/// [`serve`] with explicit settings.
pub async fn serve_with(
    addr: SocketAddr,
    store: Store,
    config: ServerConfig,
) -> Result<ServerHandle, StoreError> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = router_with(store.clone(), config.allowed_origins.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let graceful = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = graceful.await {
            eprintln!("blkkin store: http server stopped: {e}");
        }
    });
    let retention = tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.retention_interval);
        loop {
            tick.tick().await;
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.enforce_retention(now_us())).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => eprintln!("blkkin store: retention failed: {e}"),
                Err(e) => eprintln!("blkkin store: retention task failed: {e}"),
            }
        }
    });
    Ok(ServerHandle {
        addr,
        stop: Some(stop),
        server,
        retention,
    })
}

/// The routes of Zipkin's v2 API (plus `/health`), readable from any
/// browser origin.
pub fn router(store: Store) -> Router {
    router_with(store, AllowedOrigins::Any)
}

/// [`router`] allowing only the browser origins of `allowed` (CORS).
pub fn router_with(store: Store, allowed: AllowedOrigins) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/v2/services", get(services))
        .route("/api/v2/spans", get(span_names).post(post_spans))
        .route("/api/v2/remoteServices", get(remote_services))
        .route("/api/v2/traces", get(traces))
        .route("/api/v2/trace/{trace_id}", get(trace))
        .route("/api/v2/traceMany", get(trace_many))
        .route("/api/v2/dependencies", get(dependencies))
        .route("/api/v2/autocompleteKeys", get(autocomplete_keys))
        .route("/api/v2/autocompleteValues", get(autocomplete_values))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(allowed),
            super::cors::cors,
        ))
        .with_state(store)
}

/// An HTTP error answer: status and a plain-text message.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidQuery(_) | StoreError::InvalidSpan(_) => {
                ApiError::bad(e.to_string())
            }
            e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1 + "\n",
        )
            .into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn json<T: Serialize>(value: &T) -> ApiResult {
    let body = serde_json::to_vec(value).map_err(StoreError::from)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Runs a database call on the blocking pool.
async fn blocking<T, F>(store: Store, f: F) -> Result<T, ApiError>
where
    F: FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || f(store))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("query task failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

/// Query parameters; the first of repeated names wins, unknown names are
/// ignored (as Zipkin's server does).
struct Params(HashMap<String, String>);

impl Params {
    fn parse(raw: Option<String>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::bad(format!("malformed query string: {e}")))?;
        let mut map = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_insert(v);
        }
        Ok(Params(map))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::bad(format!("missing required query parameter '{name}'")))
    }

    /// A positive integer parameter; Zipkin's messages for zero/negative.
    fn positive(&self, name: &str) -> Result<Option<u64>, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let n: i64 = text.trim().parse().map_err(|_| {
            ApiError::bad(format!(
                "query parameter '{name}' must be an integer, got {text:?}"
            ))
        })?;
        if n <= 0 {
            return Err(ApiError::bad(format!("{name} <= 0")));
        }
        Ok(Some(n as u64))
    }
}

async fn health(State(store): State<Store>) -> ApiResult {
    let stats = blocking(store, |s| s.check().map(|()| s.stats())).await?;
    json(&serde_json::json!({ "status": "UP", "store": stats }))
}

async fn services(State(store): State<Store>) -> ApiResult {
    json(&blocking(store, |s| s.service_names()).await?)
}

async fn span_names(State(store): State<Store>, RawQuery(q): RawQuery) -> ApiResult {
    let service = Params::parse(q)?.required("serviceName")?.to_string();
    json(&blocking(store, move |s| s.span_names(&service)).await?)
}

async fn remote_services(State(store): State<Store>, RawQuery(q): RawQuery) -> ApiResult {
    let service = Params::parse(q)?.required("serviceName")?.to_string();
    json(&blocking(store, move |s| s.remote_service_names(&service)).await?)
}

async fn autocomplete_keys(State(store): State<Store>) -> ApiResult {
    json(&blocking(store, |s| s.autocomplete_keys()).await?)
}

async fn autocomplete_values(State(store): State<Store>, RawQuery(q): RawQuery) -> ApiResult {
    let key = Params::parse(q)?.required("key")?.to_string();
    json(&blocking(store, move |s| s.autocomplete_values(&key)).await?)
}

/// Parses `/api/v2/traces` parameters into a validated query.
fn traces_query(p: &Params, now_ms: u64) -> Result<QueryRequest, ApiError> {
    let limit = match p.positive("limit")? {
        None => DEFAULT_LIMIT,
        Some(n) if n > i32::MAX as u64 => return Err(ApiError::bad("limit is too large")),
        Some(n) => n as usize,
    };
    let q = QueryRequest {
        service_name: p.get("serviceName").map(Into::into),
        remote_service_name: p.get("remoteServiceName").map(Into::into),
        span_name: p.get("spanName").map(Into::into),
        annotation_query: parse_annotation_query(p.get("annotationQuery").unwrap_or("")),
        min_duration: p.positive("minDuration")?,
        max_duration: p.positive("maxDuration")?,
        end_ts: p.positive("endTs")?.unwrap_or(now_ms),
        lookback: p.positive("lookback")?.unwrap_or(DEFAULT_LOOKBACK_MS),
        limit,
    };
    Ok(q.validated()?)
}

async fn traces(State(store): State<Store>, RawQuery(q): RawQuery) -> ApiResult {
    let query = traces_query(&Params::parse(q)?, now_us() / 1000)?;
    json(&blocking(store, move |s| s.traces(&query)).await?)
}

async fn trace(State(store): State<Store>, Path(trace_id): Path<String>) -> ApiResult {
    let id = trace_id.clone();
    let spans = blocking(store, move |s| s.trace(&id)).await?;
    if spans.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{trace_id} not found"),
        ));
    }
    json(&spans)
}

async fn trace_many(State(store): State<Store>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q)?;
    let mut ids: Vec<String> = Vec::new();
    for id in p.required("traceIds")?.split(',').map(str::trim) {
        if id.is_empty() {
            continue;
        }
        let id = normalize_trace_id(id)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    match ids.len() {
        0 => Err(ApiError::bad("traceIds parameter is empty")),
        // Zipkin refuses a single id here too.
        1 => Err(ApiError::bad(
            "Use /api/v2/trace/{traceId} endpoint to retrieve a single trace",
        )),
        _ => json(&blocking(store, move |s| s.traces_by_id(&ids)).await?),
    }
}

async fn dependencies(State(store): State<Store>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q)?;
    p.required("endTs")?;
    let end_ts = p.positive("endTs")?.unwrap_or_default();
    let lookback = p.positive("lookback")?.unwrap_or(DEFAULT_LOOKBACK_MS);
    json(&blocking(store, move |s| s.dependencies(end_ts, lookback)).await?)
}

/// `POST /api/v2/spans`: a JSON list of v2 spans, 202 when stored.
async fn post_spans(State(store): State<Store>, headers: HeaderMap, body: Bytes) -> ApiResult {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported content type {ct:?}: this store accepts application/json v2 spans"
                ),
            ));
        }
    }
    if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
        if enc.as_bytes() != b"identity" {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "compressed bodies are not supported; send uncompressed JSON".into(),
            ));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad(
            "empty body: expected a JSON list of v2 spans",
        ));
    }
    let spans: Vec<Span> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("malformed JSON list of v2 spans: {e}")))?;
    blocking(store, move |s| s.insert(&spans)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::parse(Some(q.to_string())).unwrap()
    }

    #[test]
    fn traces_defaults_are_zipkins() {
        let q = traces_query(&params(""), 5_000_000).unwrap();
        assert_eq!((q.end_ts, q.lookback, q.limit), (5_000_000, 86_400_000, 10));
    }

    #[test]
    fn traces_parameters_are_parsed_and_checked() {
        let q = traces_query(
            &params("serviceName=OSD&spanName=Read&annotationQuery=error%20and%20a%3Db&minDuration=5&maxDuration=9&endTs=100&lookback=50&limit=3&unknown=1"),
            1,
        )
        .unwrap();
        assert_eq!(q.service_name.as_deref(), Some("osd"));
        assert_eq!(q.span_name.as_deref(), Some("read"));
        assert_eq!(q.annotation_query.len(), 2);
        assert_eq!((q.min_duration, q.max_duration), (Some(5), Some(9)));
        assert_eq!((q.end_ts, q.lookback, q.limit), (100, 50, 3));
        for bad in [
            "limit=x",
            "limit=0",
            "endTs=-1",
            "lookback=1.5",
            "maxDuration=3",
            "minDuration=5&maxDuration=4",
            "limit=99999999999",
        ] {
            assert!(traces_query(&params(bad), 1).is_err(), "{bad} accepted");
        }
    }
}
