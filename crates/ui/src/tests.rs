use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt;

use super::*;

async fn get(path: &str, etag: Option<&str>) -> Response {
    let mut req = Request::get(path);
    if let Some(t) = etag {
        req = req.header(header::IF_NONE_MATCH, t);
    }
    router()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn ctype(r: &Response) -> &str {
    r.headers()[header::CONTENT_TYPE].to_str().unwrap()
}

#[tokio::test]
async fn root_is_index_html() {
    let r = get("/", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ctype(&r), "text/html; charset=utf-8");
    assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
}

#[tokio::test]
async fn files_have_their_types_and_vendor_files_are_cached() {
    let r = get("/js/app.js", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ctype(&r), "text/javascript; charset=utf-8");
    let r = get("/vendor/preact.module.js", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CACHE_CONTROL], "public, max-age=86400");
    assert_eq!(
        ctype(&get("/manifest.json", None).await),
        "application/json"
    );
    assert_eq!(ctype(&get("/icon.svg", None).await), "image/svg+xml");
}

#[tokio::test]
async fn etag_gives_not_modified() {
    let r = get("/js/app.js", None).await;
    let tag = r.headers()[header::ETAG].to_str().unwrap().to_string();
    assert_eq!(
        get("/js/app.js", Some(&tag)).await.status(),
        StatusCode::NOT_MODIFIED
    );
}

#[tokio::test]
async fn client_routes_fall_back_to_index_but_missing_files_do_not() {
    let r = get("/devices/abc", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ctype(&r), "text/html; charset=utf-8");
    assert_eq!(
        get("/js/nope.js", None).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn api_paths_are_never_shadowed() {
    let r = get("/api/v1/nope", None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(ctype(&r), "application/json");
    let post = Request::post("/api/v1/nope").body(Body::empty()).unwrap();
    let r = router().oneshot(post).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[test]
fn every_vendored_file_has_a_licence_beside_it() {
    for name in [
        "LICENSE-preact",
        "LICENSE-htm",
        "LICENSE-uplot",
        "LICENSE-leaflet",
        "LICENSE-world-atlas",
    ] {
        assert!(asset(&format!("vendor/{name}")).is_some(), "{name}");
    }
}
