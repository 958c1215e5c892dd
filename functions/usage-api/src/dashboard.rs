//! The tenant dashboard: one static page, its script and its style sheet, compiled into
//! the binary and served without a key, because they hold no data. The page asks for the
//! tenant's API key, keeps it in the tab's `sessionStorage` (or takes it from the URL's
//! `#key=` fragment, which never reaches a server, and removes it from the address bar),
//! and reads everything it shows from this API with that key, so a tenant sees exactly
//! what the API would tell them and nothing more.
//!
//! Every reply carries a strict Content Security Policy: only this origin's script, style
//! sheet and API; no inline script or style, no frames, no forms posting elsewhere. The
//! script builds the page with DOM calls and `textContent` only, so nothing from the API
//! is ever parsed as markup.
//!
//! The page lives in `dashboard/` in this crate; `tests/tests/dashboard.rs` in the
//! workspace renders it in headless Chromium against the local stack.

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};

use crate::error::ApiError;
use crate::http::Query;

/// What the dashboard's replies allow the browser to load and do.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One file of the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asset {
    /// `GET /v1/dashboard`: the page.
    Page,
    /// `GET /v1/dashboard/app.js`.
    Script,
    /// `GET /v1/dashboard/app.css`.
    Style,
}

impl Asset {
    /// The file's content and media type.
    pub fn content(self) -> (&'static str, &'static str) {
        match self {
            Asset::Page => (
                include_str!("../dashboard/index.html"),
                "text/html; charset=utf-8",
            ),
            Asset::Script => (
                include_str!("../dashboard/app.js"),
                "text/javascript; charset=utf-8",
            ),
            Asset::Style => (
                include_str!("../dashboard/app.css"),
                "text/css; charset=utf-8",
            ),
        }
    }
}

/// Serves `asset` with the policy and headers that keep the page to itself. A query
/// string is refused like anywhere else in the API (400), so a key put in `?key=` by
/// mistake is not quietly accepted into server logs' habits.
pub fn serve(request: &Request, asset: Asset) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let (content, media_type) = asset.content();
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::X_FRAME_OPTIONS, "DENY")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::Text(content.to_owned()))
        .map_err(ApiError::internal)
}
