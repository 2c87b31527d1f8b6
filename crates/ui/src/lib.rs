//! The web UI: static ES modules (Preact + htm, uPlot) embedded in the binary and served at `/`.
//! No build step: what is in `assets/` is what the browser gets. Third-party modules live in
//! `assets/vendor/`, refreshed by `scripts/vendor-ui.sh`.
//!
//! # Layout
//! - [`router`]: `/` and every path the other routers do not claim. An embedded file is served
//!   with its content type, an ETag and `Cache-Control`; any other path without a file extension
//!   gets `index.html` (client-side routes); `/api/...` is never shadowed: it answers the API's
//!   JSON 404.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

/// One embedded file.
pub struct Asset {
    /// Relative to `assets/`, `/`-separated.
    pub path: &'static str,
    pub body: &'static [u8],
    /// A quoted content hash.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The UI's routes, to be merged after the API's (it has no fallback of its own, so merging
/// cannot clash with theirs).
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/{*path}", any(file))
}

/// The embedded file at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    ASSETS
        .binary_search_by(|a| a.path.cmp(path))
        .ok()
        .map(|i| &ASSETS[i])
}

async fn index(headers: HeaderMap) -> Response {
    serve(
        asset("index.html").expect("assets/index.html is embedded"),
        &headers,
    )
}

async fn file(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path == "api" || path.starts_with("api/") {
        // The API's own answer for a route it does not have.
        let body = r#"{"error":{"code":"not_found","message":"no such route"}}"#;
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
        )
            .into_response();
    }
    if let Some(a) = asset(path) {
        return serve(a, &headers);
    }
    let last = path.rsplit('/').next().unwrap_or("");
    if last.contains('.') {
        // A missing file, not a page: index.html here would hide the mistake.
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    index(headers).await
}

fn serve(a: &'static Asset, headers: &HeaderMap) -> Response {
    let cache = if a.path.starts_with("vendor/") {
        // Third-party files change only when re-vendored.
        "public, max-age=86400"
    } else {
        // Our own files: revalidate every time (cheap: 304 by ETag), so a new binary shows at once.
        "no-cache"
    };
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(a.body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(content_type(a.path)),
        );
        r
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    res
}

/// The content type by file extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests;
