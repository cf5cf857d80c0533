//! Optional bearer-token access to the query API (`--query-token-file`).
//!
//! With a token configured, every request but `/health` (for load balancers
//! and orchestrators) and CORS preflights (which browsers send without
//! credentials) must carry `Authorization: Bearer <token>`; anything else is
//! answered 401 with `WWW-Authenticate: Bearer`. The token is compared in
//! constant time. Without TLS in front of the server the token crosses the
//! network in clear: bind the API to loopback or put it behind a TLS proxy.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::StoreError;

/// The secret a query API client must present.
#[derive(Clone, PartialEq, Eq)]
pub struct QueryToken(String);

impl std::fmt::Debug for QueryToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryToken(..)")
    }
}

impl QueryToken {
    /// A token from its text (surrounding whitespace removed); empty text,
    /// or text no HTTP header can carry, is refused.
    pub fn new(text: &str) -> Result<QueryToken, StoreError> {
        let token = text.trim();
        if token.is_empty() {
            return Err(StoreError::InvalidToken("the token is empty".into()));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(StoreError::InvalidToken(
                "the token must be printable ASCII without spaces".into(),
            ));
        }
        Ok(QueryToken(token.to_string()))
    }

    /// The token in `path` (its first line; a trailing newline is fine).
    pub fn from_file(path: &Path) -> Result<QueryToken, StoreError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| StoreError::InvalidToken(format!("reading {}: {e}", path.display())))?;
        QueryToken::new(text.lines().next().unwrap_or(""))
            .map_err(|e| StoreError::InvalidToken(format!("{}: {e}", path.display())))
    }

    /// Whether an `Authorization` header value presents this token.
    fn admits(&self, value: Option<&HeaderValue>) -> bool {
        let Some(given) = value
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        constant_time_eq(given.trim().as_bytes(), self.0.as_bytes())
    }
}

/// Equality whose time depends on the lengths only, not on where the
/// first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: 401 unless the request presents the token.
pub(super) async fn require_token(
    State(token): State<Arc<QueryToken>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/health"
        || token.admits(request.headers().get(header::AUTHORIZATION))
    {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer realm=\"blkkin\""),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "missing or wrong bearer token: send Authorization: Bearer <token>\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_is_admitted() {
        let t = QueryToken::new(" s3cret\n").unwrap();
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(t.admits(Some(&v("Bearer s3cret"))));
        assert!(!t.admits(Some(&v("Bearer s3cre"))));
        assert!(!t.admits(Some(&v("Bearer s3cretx"))));
        assert!(!t.admits(Some(&v("Basic s3cret"))));
        assert!(!t.admits(Some(&v("s3cret"))));
        assert!(!t.admits(None));
        assert!(QueryToken::new("  \n").is_err());
        assert!(QueryToken::new("a b").is_err());
        assert_eq!(format!("{t:?}"), "QueryToken(..)", "never logged");
    }
}
