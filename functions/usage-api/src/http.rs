//! Request and response plumbing shared by the handlers: query parameters, bodies,
//! JSON and CSV replies, times and windows as they appear on the wire.

use chrono::{DateTime, SecondsFormat, Utc};
use lambda_http::aws_lambda_events::query_map::QueryMap;
use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tollgate_core::window::{Granularity, Window};

use crate::error::ApiError;

/// The largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The longest query string read: every legitimate one is far shorter (ids are at most
/// 64 characters, cursors about 200), and a bound keeps parsing and the parameter names
/// echoed in 400 messages small. Longer is a 414 (`uri_too_long`), after the key check.
pub const MAX_QUERY_BYTES: usize = 4096;

/// The longest path read, for the same reason: the longest route with its parameters is
/// under 100 bytes, and path parameters are echoed in 400 and 404 messages.
pub const MAX_PATH_BYTES: usize = 1024;

/// The query parameters of a request, decoded (WHATWG `application/x-www-form-urlencoded`).
#[derive(Debug)]
pub struct Query(QueryMap);

impl Query {
    /// Reads the query string of the request URI and refuses one longer than
    /// [`MAX_QUERY_BYTES`], parameters other than `allowed`, and parameters given twice.
    ///
    /// Every handler reads its query first, before its path parameters, so this is also
    /// where a path longer than [`MAX_PATH_BYTES`] is refused.
    pub fn of(request: &Request, allowed: &[&str]) -> Result<Query, ApiError> {
        if request.uri().path().len() > MAX_PATH_BYTES {
            return Err(ApiError::UriTooLong {
                part: "path",
                limit: MAX_PATH_BYTES,
            });
        }
        let raw = request.uri().query().unwrap_or_default();
        if raw.len() > MAX_QUERY_BYTES {
            return Err(ApiError::UriTooLong {
                part: "query string",
                limit: MAX_QUERY_BYTES,
            });
        }
        let map: QueryMap = raw.parse().unwrap_or_default();
        for (name, _) in map.iter() {
            if !allowed.contains(&name) {
                let expected = if allowed.is_empty() {
                    "this route takes no query parameters".to_owned()
                } else {
                    format!("expected one of: {}", allowed.join(", "))
                };
                return Err(ApiError::bad_request(
                    "unknown_query_parameter",
                    format!("unknown query parameter `{name}`; {expected}"),
                ));
            }
            if map.all(name).is_some_and(|values| values.len() > 1) {
                return Err(ApiError::bad_request(
                    "bad_query_parameter",
                    format!("query parameter `{name}` is given more than once"),
                ));
            }
        }
        Ok(Query(map))
    }

    /// The value of `name`, if given and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.first(name).filter(|value| !value.is_empty())
    }

    /// Parses the value of `name` with `parse`; a failure is a `bad_query_parameter`.
    pub fn parse<T, E: std::fmt::Display>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|value| {
                parse(value).map_err(|e| {
                    ApiError::bad_request(
                        "bad_query_parameter",
                        format!("query parameter `{name}`: {e}"),
                    )
                })
            })
            .transpose()
    }
}

/// The request body, refused when larger than [`MAX_BODY_BYTES`].
pub fn body_bytes(request: &Request) -> Result<&[u8], ApiError> {
    let bytes: &[u8] = request.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(bytes)
}

/// The request body parsed as JSON into `T`.
pub fn json_body<T: DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    let bytes = body_bytes(request)?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "bad_json",
            "the request needs a JSON body",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the body is not valid: {e}")))
}

/// A JSON reply.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Response<Body>, ApiError> {
    let text = serde_json::to_string(value).map_err(ApiError::internal)?;
    json_text(status, text)
}

/// A JSON reply whose body is already serialised: the same reply [`json`] makes of the
/// value `text` was serialised from.
pub fn json_text(status: StatusCode, text: String) -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::Text(text))
        .map_err(ApiError::internal)
}

/// A `200 OK` JSON reply.
pub fn ok<T: Serialize>(value: &T) -> Result<Response<Body>, ApiError> {
    json(StatusCode::OK, value)
}

/// A `204 No Content` reply.
pub fn no_content() -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(ApiError::internal)
}

/// A CSV reply offered as a download named `filename`.
pub fn csv(text: String, filename: &str) -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            "text/csv; charset=utf-8; header=present",
        )
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        )
        .body(Body::Text(text))
        .map_err(ApiError::internal)
}

/// An instant as it appears on the wire: RFC 3339, UTC, `Z`, whole seconds unless finer.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 instant (any offset; converted to UTC).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{text:?} is not an RFC 3339 time ({e})"))
}

/// A window on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowView {
    pub granularity: Granularity,
    /// `2026-11-23T15`, `2026-11-23` or `2026-11`.
    pub key: String,
    pub start: String,
    pub end: String,
}

impl From<Window> for WindowView {
    fn from(window: Window) -> Self {
        WindowView {
            granularity: window.granularity(),
            key: window.key(),
            start: rfc3339(window.start()),
            end: rfc3339(window.end()),
        }
    }
}
