//! The operator dashboard at `/ui/`: three static files compiled into the binary (no
//! build step, nothing fetched from elsewhere). The page signs in with an API key and
//! reads everything from `/api/v1`, so it shows and changes only what that key may; these
//! routes themselves need no key, as they hold no data.

use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{ANY, NOT_FOUND};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// Only this origin's own script, style and API; no framing, no inline code.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's page, without the trailing slash (the page names its files by
/// absolute path, so it works from either).
#[utoipa::path(
    get,
    path = "/ui",
    operation_id = "dashboard_without_slash",
    tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard.", content_type = "text/html", body = String),
        Errors<ANY>
    )
)]
pub async fn index_without_slash() -> Response {
    index().await
}

/// The dashboard's page.
#[utoipa::path(
    get,
    path = "/ui/",
    operation_id = "dashboard",
    tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard.", content_type = "text/html", body = String),
        Errors<ANY>
    )
)]
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// One of the dashboard's files: `app.js`, `app.css`, or the page itself as `index.html`.
#[utoipa::path(
    get,
    path = "/ui/{file}",
    operation_id = "dashboard_file",
    tag = "dashboard",
    params(("file" = String, Path, description = "`app.js`, `app.css`, or `index.html` (the page again).")),
    responses(
        (
            status = 200,
            description = "The file.",
            content((String = "text/javascript"), (String = "text/css"), (String = "text/html"))
        ),
        Errors<{ ANY | NOT_FOUND }>
    )
)]
pub async fn file(Path(file): Path<String>) -> Result<Response, ApiError> {
    match file.as_str() {
        "app.js" => Ok(asset("text/javascript; charset=utf-8", SCRIPT)),
        "app.css" => Ok(asset("text/css; charset=utf-8", STYLE)),
        "index.html" => Ok(asset("text/html; charset=utf-8", INDEX)),
        _ => {
            let shown: String = file.chars().take(100).collect();
            Err(ApiError::not_found(format!(
                "the dashboard has no file {shown:?}; it has app.js, app.css and index.html"
            )))
        }
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidated on every load: the files change with the binary, which is small.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY)),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_the_files_this_module_serves() {
        // Every src/href in the page names a file `file` answers (or the page itself).
        for reference in INDEX.split(['"']).filter(|s| s.starts_with("/ui/")) {
            let name = reference.trim_start_matches("/ui/");
            assert!(["app.js", "app.css"].contains(&name), "{reference}");
        }
        assert!(INDEX.contains("/ui/app.js") && INDEX.contains("/ui/app.css"));
    }

    #[test]
    fn no_inline_script_or_style_that_the_policy_would_block() {
        assert!(
            !INDEX.contains("<script>") && !INDEX.contains("style="),
            "inline code in index.html"
        );
        assert!(!SCRIPT.contains("style=\""), "an inline style attribute in app.js");
    }
}
