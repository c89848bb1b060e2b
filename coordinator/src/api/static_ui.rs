//! Serving a built web UI (CloudStack's own) at `/`, beside `/client/api`,
//! as CloudStack's management server does: files from one directory, never
//! outside it, with `index.html` for any path that names no file (the UI
//! routes in the browser), `index.html` always revalidated and other assets
//! cached for a day.

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The UI's directory, resolved once.
struct UiDir(PathBuf);

/// A router serving `dir` at `/` (merged after the API's routes, so
/// `/client/api` stays the API).
pub fn router(dir: &Path) -> std::io::Result<Router> {
    let root = std::fs::canonicalize(dir)?;
    if !root.join("index.html").is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} has no index.html", root.display()),
        ));
    }
    let state = Arc::new(UiDir(root));
    Ok(Router::new()
        .route("/", get(index))
        .route("/*path", get(file))
        .with_state(state))
}

/// Pure: the file a URL path names inside the UI directory, or `None` when
/// it tries to leave it (`..`, absolute parts, backslashes, NUL).
pub fn relative(url_path: &str) -> Option<PathBuf> {
    if url_path.contains('\\') || url_path.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(url_path.trim_start_matches('/')).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Pure: the media type of a file by its extension.
pub fn content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("html") | Some("htm") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") | Some("map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("ico") => "image/x-icon",
        Some("woff") => "font/woff",
        Some("woff2") => "font/woff2",
        Some("ttf") => "font/ttf",
        Some("eot") => "application/vnd.ms-fontobject",
        Some("txt") => "text/plain; charset=utf-8",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

async fn send(root: &Path, rel: &Path) -> Response {
    let index = rel.as_os_str().is_empty() || rel == Path::new("index.html");
    let wanted = root.join(rel);
    // A path that names no file inside the directory gets the UI's entry
    // page; a symbolic link out of the directory counts as no file.
    let path = match tokio::fs::canonicalize(&wanted).await {
        Ok(p) if p.starts_with(root) && p.is_file() => p,
        _ => root.join("index.html"),
    };
    let is_index = index || path == root.join("index.html");
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut r = Response::new(Body::from(bytes));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(&path)),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(if is_index {
                    "no-cache"
                } else {
                    "public, max-age=86400"
                }),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        }
        Err(_) => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn index(State(ui): State<Arc<UiDir>>) -> Response {
    send(&ui.0, Path::new("")).await
}

async fn file(State(ui): State<Arc<UiDir>>, UrlPath(path): UrlPath<String>) -> Response {
    match relative(&path) {
        Some(rel) => send(&ui.0, &rel).await,
        None => (StatusCode::BAD_REQUEST, "bad path").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_directory() {
        assert_eq!(relative("js/app.js"), Some(PathBuf::from("js/app.js")));
        assert_eq!(relative("/./css/a.css"), Some(PathBuf::from("css/a.css")));
        assert_eq!(relative("a/../../etc/passwd"), None);
        assert_eq!(relative("..\\x"), None);
        assert_eq!(relative("a\0b"), None);
        assert_eq!(relative(""), Some(PathBuf::new()));
    }

    #[test]
    fn media_types_follow_extensions() {
        assert_eq!(
            content_type(Path::new("a/b.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("x.woff2")), "font/woff2");
        assert_eq!(content_type(Path::new("noext")), "application/octet-stream");
    }
}
