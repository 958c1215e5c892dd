//! The OpenAPI 3.1 document of the API (`openapi.json` in this crate), served at
//! `GET /v1/openapi.json` without a key. Tests check it against [`crate::router::ROUTES`].

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};

use crate::error::ApiError;
use crate::http::Query;

/// The document, as written.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// `GET /v1/openapi.json`.
pub fn serve(request: &Request) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .body(Body::Text(DOCUMENT.to_owned()))
        .map_err(ApiError::internal)
}
