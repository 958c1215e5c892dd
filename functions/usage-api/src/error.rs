//! Request errors and their JSON replies: `{"code": "...", "message": "..."}`.
//!
//! Every error has a stable, machine-readable `code` and an HTTP status. Client errors
//! say what was wrong with the request; internal errors keep their source for the log
//! and reply with a generic message, so no internal text (table names, AWS error
//! messages) ever reaches a response body.

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Response};
use serde_json::json;
use thiserror::Error;
use tollgate_store::StoreError;

/// Why a request failed.
#[derive(Debug, Error)]
pub enum ApiError {
    /// No key, an unknown key or a revoked key.
    #[error("a valid API key is required")]
    Unauthorized,
    /// A tenant key on an admin route.
    #[error("this key may not use this route")]
    Forbidden,
    /// The resource does not exist, or belongs to another tenant (the two look the same).
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The tenant has no such resource: a 404 whose `code` says which (`no_budget`,
    /// `no_statement`…), so clients can tell "not set yet" from a wrong path.
    #[error("{message}")]
    Absent { code: &'static str, message: String },
    #[error("no route matches {path}")]
    NoRoute { path: String },
    #[error("{method} is not allowed here; allowed: {}", .allowed.join(", "))]
    MethodNotAllowed {
        method: String,
        allowed: Vec<&'static str>,
    },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The path or the query string is longer than the API reads (see
    /// `http::MAX_PATH_BYTES` and `http::MAX_QUERY_BYTES`).
    #[error("the {part} is longer than {limit} bytes")]
    UriTooLong { part: &'static str, limit: usize },
    /// The request is malformed: `code` names the rule, `message` explains it.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// The request conflicts with what is stored (an id already taken, say).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// No event of an intake request could be queued.
    #[error("the usage queue is unavailable; no event was accepted")]
    QueueUnavailable,
    /// Anything else: logged with its source, answered with a generic message.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn absent(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Absent {
            code,
            message: message.into(),
        }
    }

    pub fn internal(source: impl std::error::Error + Send + Sync + 'static) -> ApiError {
        ApiError::Internal(Box::new(source))
    }

    /// The HTTP status of the reply.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } | ApiError::NoRoute { .. } | ApiError::Absent { .. } => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::QueueUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code of the reply.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::NoRoute { .. } => "no_such_route",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UriTooLong { .. } => "uri_too_long",
            ApiError::BadRequest { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Absent { code, .. } => code,
            ApiError::QueueUnavailable => "queue_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The message of the reply: generic for internal errors.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; the request was logged".to_owned(),
            other => other.to_string(),
        }
    }

    /// The JSON reply. Internal errors are logged here, with their source chain.
    pub fn into_response(self) -> Response<Body> {
        if let ApiError::Internal(source) = &self {
            tracing::error!(error = %error_chain(source.as_ref()), "request failed");
        }
        let body = json!({"code": self.code(), "message": self.public_message()});
        let mut builder = Response::builder()
            .status(self.status())
            .header(header::CONTENT_TYPE, "application/json");
        if let ApiError::MethodNotAllowed { allowed, .. } = &self {
            builder = builder.header(header::ALLOW, allowed.join(", "));
        }
        if matches!(self, ApiError::Unauthorized) {
            builder = builder.header(header::WWW_AUTHENTICATE, "Bearer");
        }
        builder
            .body(Body::Text(body.to_string()))
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::internal(error)
    }
}

/// `error: cause: cause…`, for logs.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_show_their_text() {
        let error = ApiError::internal(std::io::Error::other("table tollgate-prod is gone"));
        assert_eq!(error.code(), "internal");
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = std::str::from_utf8(response.body().as_ref()).unwrap_or_default();
        assert!(!body.contains("tollgate-prod"), "{body}");
    }

    #[test]
    fn method_not_allowed_names_the_allowed_methods() {
        let response = ApiError::MethodNotAllowed {
            method: "PATCH".into(),
            allowed: vec!["GET", "PUT"],
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response.headers().get(header::ALLOW).map(|v| v.as_bytes()),
            Some(&b"GET, PUT"[..])
        );
    }
}
