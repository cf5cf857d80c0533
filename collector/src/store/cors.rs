//! Cross-origin access to the query API, as Zipkin's server allows it, so a
//! Zipkin UI or a Grafana served from another origin can read the store.
//!
//! Zipkin (`ZipkinHttpConfiguration`, Armeria's CORS service) allows the
//! origins of `QUERY_ALLOWED_ORIGINS` (comma-separated, default `*`), the
//! methods GET and POST and the request headers `content-type` and
//! `x-grpc-web`. It answers a preflight (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) with 200 and, for an allowed origin,
//! `Access-Control-Allow-{Origin,Methods,Headers}` and `Max-Age: 0`; other
//! requests carrying an allowed `Origin` get `Access-Control-Allow-Origin`
//! and `-Allow-Headers`. A disallowed origin gets no CORS headers (the
//! browser then refuses), never an error. A listed origin is echoed with
//! `Vary: Origin`; `*` is answered as `*`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Environment variable naming the allowed origins, as Zipkin's server.
pub const ALLOWED_ORIGINS_ENV: &str = "QUERY_ALLOWED_ORIGINS";

const ALLOW_METHODS: &str = "GET,POST";
const ALLOW_HEADERS: &str = "content-type,x-grpc-web";

/// Which browser origins may read the query API.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedOrigins {
    /// Any origin (`*`), Zipkin's default.
    #[default]
    Any,
    /// Only these origins (e.g. `http://grafana.example:3000`), compared
    /// case-insensitively.
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Parses Zipkin's comma-separated form: `*` (alone or among others)
    /// allows any origin; empty entries are ignored; nothing at all means
    /// the default, any origin.
    pub fn parse(text: &str) -> AllowedOrigins {
        let list: Vec<String> = text
            .split(',')
            .map(|o| o.trim().to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        if list.is_empty() || list.iter().any(|o| o == "*") {
            AllowedOrigins::Any
        } else {
            AllowedOrigins::List(list)
        }
    }

    /// From `QUERY_ALLOWED_ORIGINS`, any origin when unset.
    pub fn from_env() -> AllowedOrigins {
        std::env::var(ALLOWED_ORIGINS_ENV)
            .map(|v| AllowedOrigins::parse(&v))
            .unwrap_or_default()
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`,
    /// `None` when it is not allowed.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self {
            AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowedOrigins::List(list) => {
                let o = origin.to_str().ok()?;
                list.iter()
                    .any(|a| a.eq_ignore_ascii_case(o))
                    .then(|| origin.clone())
            }
        }
    }
}

/// Sets the CORS headers shared by preflights and ordinary answers; false
/// when the origin is not allowed (nothing set).
fn set_origin(allowed: &AllowedOrigins, origin: &HeaderValue, headers: &mut HeaderMap) -> bool {
    let Some(value) = allowed.allow(origin) else {
        return false;
    };
    if matches!(allowed, AllowedOrigins::List(_)) {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    true
}

/// The middleware: answers preflights, decorates other answers.
pub(super) async fn cors(
    State(allowed): State<Arc<AllowedOrigins>>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request.headers().get(header::ORIGIN).cloned();
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = StatusCode::OK.into_response();
        let headers = response.headers_mut();
        if set_origin(&allowed, &origin, headers) {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("0"),
            );
        }
        return response;
    }
    let mut response = next.run(request).await;
    set_origin(&allowed, &origin, response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_like_zipkins_property() {
        assert_eq!(AllowedOrigins::parse(""), AllowedOrigins::Any);
        assert_eq!(AllowedOrigins::parse("*"), AllowedOrigins::Any);
        assert_eq!(AllowedOrigins::parse("http://a, *"), AllowedOrigins::Any);
        assert_eq!(
            AllowedOrigins::parse(" http://A.example ,,http://b:3000"),
            AllowedOrigins::List(vec!["http://a.example".into(), "http://b:3000".into()])
        );
    }

    #[test]
    fn a_listed_origin_is_echoed_and_others_get_nothing() {
        let list = AllowedOrigins::parse("http://a.example");
        let a = HeaderValue::from_static("http://A.example");
        assert_eq!(list.allow(&a), Some(a.clone()));
        assert_eq!(list.allow(&HeaderValue::from_static("http://b")), None);
        let mut h = HeaderMap::new();
        assert!(!set_origin(
            &list,
            &HeaderValue::from_static("http://b"),
            &mut h
        ));
        assert!(h.is_empty());
        assert!(set_origin(&list, &a, &mut h));
        assert_eq!(h[header::VARY], "origin");
        assert_eq!(
            AllowedOrigins::Any.allow(&a),
            Some(HeaderValue::from_static("*"))
        );
    }
}
