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
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::model::Span;

use super::cors::AllowedOrigins;
use super::db::now_us;
use super::query::{parse_annotation_query, QueryRequest, DEFAULT_LIMIT, DEFAULT_LOOKBACK_MS};
use super::span_ext::normalize_trace_id;
use super::{QueryCancel, QueryToken, Store, StoreError};

/// Largest accepted `POST /api/v2/spans` body: 16 MiB (larger → 413).
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Default largest `limit` served by `/api/v2/traces` (larger asks are
/// clamped to it).
pub const DEFAULT_MAX_LIMIT: usize = 1000;

/// Default longest `lookback` served (7 days, the store's default
/// retention; longer asks are clamped to it).
pub const DEFAULT_MAX_LOOKBACK: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default time a heavy query may run before it is answered 503.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// How the query server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Browser origins allowed to read the API (CORS), any by default.
    pub allowed_origins: AllowedOrigins,
    /// Largest `limit` of `/api/v2/traces`; larger values are clamped.
    pub max_limit: usize,
    /// Longest `lookback` of `/api/v2/traces` and `/api/v2/dependencies`;
    /// longer values are clamped.
    pub max_lookback: Duration,
    /// How long a heavy query (`/traces`, `/dependencies`, `/traceMany`)
    /// may run: past it the answer is 503 and the query is cancelled.
    pub query_timeout: Duration,
    /// Heavy queries running at once; one more is answered 503 at once
    /// (light queries such as `/api/v2/services` are never held back by
    /// them). Defaults to the number of cores.
    pub max_heavy_queries: usize,
    /// When set, every request but `/health` and CORS preflights must
    /// carry `Authorization: Bearer <token>` (401 otherwise).
    pub token: Option<QueryToken>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            retention_interval: Duration::from_secs(60),
            allowed_origins: AllowedOrigins::Any,
            max_limit: DEFAULT_MAX_LIMIT,
            max_lookback: DEFAULT_MAX_LOOKBACK,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            max_heavy_queries: std::thread::available_parallelism().map_or(1, |n| n.get()),
            token: None,
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
    let app = router_from(store.clone(), &config);
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
    router_from(
        store,
        &ServerConfig {
            allowed_origins: allowed,
            ..ServerConfig::default()
        },
    )
}

/// The routes of [`router`] with every setting of `config` (CORS, query
/// limits, timeout and concurrency cap).
pub fn router_from(store: Store, config: &ServerConfig) -> Router {
    let api = Api {
        store,
        limits: Arc::new(Limits {
            max_limit: config.max_limit.max(1),
            max_lookback_ms: u64::try_from(config.max_lookback.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            query_timeout: config.query_timeout,
            max_heavy: config.max_heavy_queries.max(1),
        }),
        heavy: Arc::new(Semaphore::new(config.max_heavy_queries.max(1))),
    };
    let mut router = Router::new()
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
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    if let Some(token) = &config.token {
        // Inside CORS: preflights are answered before it, and a 401 still
        // carries the CORS headers a browser needs to read it.
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::new(token.clone()),
            super::auth::require_token,
        ));
    }
    router
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(config.allowed_origins.clone()),
            super::cors::cors,
        ))
        .with_state(api)
}

/// What every handler sees.
#[derive(Clone)]
struct Api {
    store: Store,
    limits: Arc<Limits>,
    /// One permit per heavy query allowed to run.
    heavy: Arc<Semaphore>,
}

/// The server-side bounds of queries.
#[derive(Debug)]
struct Limits {
    max_limit: usize,
    max_lookback_ms: u64,
    query_timeout: Duration,
    max_heavy: usize,
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
            StoreError::Cancelled => ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1 + "\n",
        )
            .into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
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

/// Runs a heavy query on the blocking pool, within the server's cap on
/// heavy queries (503 at once when every slot is taken) and its query
/// timeout (503 when it expires; the query is then cancelled, and keeps its
/// slot until it has stopped, so the cap bounds the work really running).
async fn heavy<T, F>(api: &Api, f: F) -> Result<T, ApiError>
where
    F: FnOnce(Store, &QueryCancel) -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    let permit = api.heavy.clone().try_acquire_owned().map_err(|_| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many heavy queries at once (at most {}): retry later",
                api.limits.max_heavy
            ),
        )
    })?;
    let cancel = QueryCancel::default();
    let store = api.store.clone();
    let token = cancel.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f(store, &token)
    });
    let timeout = api.limits.query_timeout;
    match tokio::time::timeout(timeout, task).await {
        Ok(joined) => joined
            .map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("query task failed: {e}"),
                )
            })?
            .map_err(ApiError::from),
        Err(_) => {
            cancel.cancel();
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "query ran past the {:.1} s query timeout and was cancelled: \
                     narrow it (a shorter lookback, a smaller limit, more criteria)",
                    timeout.as_secs_f64()
                ),
            ))
        }
    }
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

async fn health(State(api): State<Api>) -> ApiResult {
    let stats = blocking(api.store, |s| s.check().map(|()| s.stats())).await?;
    json(&serde_json::json!({ "status": "UP", "store": stats }))
}

async fn services(State(Api { store, .. }): State<Api>) -> ApiResult {
    json(&blocking(store, |s| s.service_names()).await?)
}

async fn span_names(State(Api { store, .. }): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let service = Params::parse(q)?.required("serviceName")?.to_string();
    json(&blocking(store, move |s| s.span_names(&service)).await?)
}

async fn remote_services(State(Api { store, .. }): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let service = Params::parse(q)?.required("serviceName")?.to_string();
    json(&blocking(store, move |s| s.remote_service_names(&service)).await?)
}

async fn autocomplete_keys(State(Api { store, .. }): State<Api>) -> ApiResult {
    json(&blocking(store, |s| s.autocomplete_keys()).await?)
}

async fn autocomplete_values(
    State(Api { store, .. }): State<Api>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let key = Params::parse(q)?.required("key")?.to_string();
    json(&blocking(store, move |s| s.autocomplete_values(&key)).await?)
}

/// Parses `/api/v2/traces` parameters into a validated query, `limit` and
/// `lookback` clamped to the server's maximums.
fn traces_query(p: &Params, now_ms: u64, limits: &Limits) -> Result<QueryRequest, ApiError> {
    let limit = match p.positive("limit")? {
        None => DEFAULT_LIMIT,
        Some(n) if n > i32::MAX as u64 => return Err(ApiError::bad("limit is too large")),
        Some(n) => n as usize,
    }
    .min(limits.max_limit);
    let q = QueryRequest {
        service_name: p.get("serviceName").map(Into::into),
        remote_service_name: p.get("remoteServiceName").map(Into::into),
        span_name: p.get("spanName").map(Into::into),
        annotation_query: parse_annotation_query(p.get("annotationQuery").unwrap_or("")),
        min_duration: p.positive("minDuration")?,
        max_duration: p.positive("maxDuration")?,
        end_ts: p.positive("endTs")?.unwrap_or(now_ms),
        lookback: lookback(p, limits)?,
        limit,
    };
    Ok(q.validated()?)
}

/// The `lookback` parameter (Zipkin's default when absent), clamped to the
/// server's maximum.
fn lookback(p: &Params, limits: &Limits) -> Result<u64, ApiError> {
    Ok(p.positive("lookback")?
        .unwrap_or(DEFAULT_LOOKBACK_MS)
        .min(limits.max_lookback_ms))
}

async fn traces(State(api): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let query = traces_query(&Params::parse(q)?, now_us() / 1000, &api.limits)?;
    json(&heavy(&api, move |s, cancel| s.traces_with(&query, cancel)).await?)
}

async fn trace(State(Api { store, .. }): State<Api>, Path(trace_id): Path<String>) -> ApiResult {
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

async fn trace_many(State(api): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
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
        n if n > api.limits.max_limit => Err(ApiError::bad(format!(
            "too many traceIds: {n} (this server answers at most {})",
            api.limits.max_limit
        ))),
        _ => json(&heavy(&api, move |s, _| s.traces_by_id(&ids)).await?),
    }
}

async fn dependencies(State(api): State<Api>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q)?;
    p.required("endTs")?;
    let end_ts = p.positive("endTs")?.unwrap_or_default();
    let lookback = lookback(&p, &api.limits)?;
    json(
        &heavy(&api, move |s, cancel| {
            s.dependencies_with(end_ts, lookback, cancel)
        })
        .await?,
    )
}

/// `POST /api/v2/spans`: a JSON list of v2 spans, 202 when stored.
///
/// The body must be declared `application/json` (415 otherwise, a missing
/// Content-Type included: a body of unknown type is never guessed at). A
/// span breaking Zipkin's rules is refused on its own and counted; the
/// valid spans of the body are stored, and the answer is then 400 naming
/// the first refused span.
async fn post_spans(
    State(Api { store, .. }): State<Api>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|ct| ct.to_str().unwrap_or("").to_ascii_lowercase());
    match ct {
        Some(ct) if ct.starts_with("application/json") => {}
        Some(ct) => {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported content type {ct:?}: this store accepts application/json v2 spans"
                ),
            ))
        }
        None => {
            return Err(ApiError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "missing Content-Type: send v2 spans as application/json".into(),
            ))
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
    let total = spans.len();
    let outcome = blocking(store, move |s| s.insert(&spans)).await?;
    match outcome.rejection_text() {
        None => Ok(StatusCode::ACCEPTED.into_response()),
        Some(why) => Err(ApiError::bad(format!(
            "stored {} of {total} spans; refused {why}",
            outcome.stored
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::parse(Some(q.to_string())).unwrap()
    }

    fn limits() -> Limits {
        Limits {
            max_limit: DEFAULT_MAX_LIMIT,
            max_lookback_ms: DEFAULT_MAX_LOOKBACK.as_millis() as u64,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
            max_heavy: 1,
        }
    }

    #[test]
    fn traces_defaults_are_zipkins() {
        let q = traces_query(&params(""), 5_000_000, &limits()).unwrap();
        assert_eq!((q.end_ts, q.lookback, q.limit), (5_000_000, 86_400_000, 10));
    }

    #[test]
    fn traces_parameters_are_parsed_and_checked() {
        let q = traces_query(
            &params("serviceName=OSD&spanName=Read&annotationQuery=error%20and%20a%3Db&minDuration=5&maxDuration=9&endTs=100&lookback=50&limit=3&unknown=1"),
            1,
            &limits(),
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
            assert!(
                traces_query(&params(bad), 1, &limits()).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn limit_and_lookback_are_clamped_to_the_servers_maximums() {
        let small = Limits {
            max_limit: 50,
            max_lookback_ms: 3_600_000,
            ..limits()
        };
        let q = traces_query(
            &params("limit=1000000&lookback=999999999999&endTs=10000000000"),
            1,
            &small,
        )
        .unwrap();
        assert_eq!((q.limit, q.lookback), (50, 3_600_000));
        let q = traces_query(&params("limit=7&lookback=60000"), 1, &small).unwrap();
        assert_eq!((q.limit, q.lookback), (7, 60_000), "smaller asks kept");
        // The default lookback (1 day) is clamped too.
        let q = traces_query(&params(""), 100_000_000, &small).unwrap();
        assert_eq!(q.lookback, 3_600_000);
    }
}
