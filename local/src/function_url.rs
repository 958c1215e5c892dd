//! A Lambda Function URL, locally: an HTTP server on `127.0.0.1` in front of a function.
//!
//! `usage-api` is reached through a Function URL in AWS, so locally every HTTP request is
//! turned into the event a Function URL sends (payload format 2.0, the API Gateway HTTP
//! API shape that `lambda_http` parses) and the function's reply back into HTTP:
//!
//! - **Request → event**: `version: "2.0"`, `routeKey: "$default"`, `rawPath`,
//!   `rawQueryString` (as sent), `cookies` (from `Cookie`, which is then not among the
//!   headers), `headers` (lower-case names; repeated headers joined with `,`),
//!   `queryStringParameters` (decoded; repeated keys joined with `,`; absent without a
//!   query), `requestContext` (`accountId: "anonymous"` as for auth type `NONE`, `apiId` and
//!   `domainPrefix` = the URL id, `domainName` = `<url-id>.lambda-url.us-east-1.on.aws`,
//!   `http` {method, path, protocol, sourceIp, userAgent}, `requestId`, `routeKey` and
//!   `stage` `$default`, `time`, `timeEpoch`), `body` (absent when empty; base64 with
//!   `isBase64Encoded: true` unless the content type is textual and the bytes are UTF-8).
//!   The `host` header is the local one (`127.0.0.1:<port>`), as a client sent it.
//! - **Reply → response**: an object with `statusCode` is a structured response
//!   (`statusCode`, `headers`, `cookies` as `Set-Cookie` headers, `body`,
//!   `isBase64Encoded`); any other JSON result is a `200` with `content-type:
//!   application/json` and that JSON as the body, as Function URLs do.
//! - **Limits and failures**: a request body over 6 MB is answered `413` without invoking
//!   the function; a function error, timeout, crash or malformed reply is a `502` with a
//!   generic body (the cause is logged, never echoed to the client). Every response
//!   carries `x-amzn-requestid`.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, SET_COOKIE};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::function::{InvokeError, LOCAL_REGION, LocalFunction};
use crate::http_server::{Body, HttpServer, ReadBodyError, read_body, respond};
use crate::runtime_api::MAX_PAYLOAD_BYTES;

/// A Function URL in front of a function. Stops when dropped.
#[derive(Debug)]
pub struct FunctionUrl {
    server: HttpServer,
    url_id: String,
}

impl FunctionUrl {
    /// Starts serving `function` on `127.0.0.1:<free port>`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(function: Arc<LocalFunction>) -> std::io::Result<Self> {
        let url_id = uuid::Uuid::new_v4().simple().to_string();
        let id = url_id.clone();
        let server = HttpServer::start(move |request, peer| {
            let function = Arc::clone(&function);
            let url_id = id.clone();
            async move { handle(&function, &url_id, request, peer).await }
        })
        .await?;
        Ok(Self { server, url_id })
    }

    /// The base URL, `http://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.server.addr())
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The URL id (the `apiId` and `domainPrefix` of the events).
    pub fn url_id(&self) -> &str {
        &self.url_id
    }
}

async fn handle(
    function: &LocalFunction,
    url_id: &str,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = request.into_parts();
    let mut response = match read_body(body, MAX_PAYLOAD_BYTES).await {
        Err(ReadBodyError::TooLarge) => too_large(),
        Err(ReadBodyError::Broken(reason)) => {
            tracing::debug!(%reason, "a Function URL request body could not be read");
            respond(
                StatusCode::BAD_REQUEST,
                "application/json",
                r#"{"Message":"Bad Request"}"#,
            )
        }
        Ok(body) => {
            let event = request_event(&parts, &body, peer, url_id, &request_id, Utc::now());
            match function.invoke(event).await {
                Ok(reply) => http_response(&reply).unwrap_or_else(|reason| {
                    tracing::warn!(function = %function.name(), %reason, "the function's reply is not a Function URL response");
                    bad_gateway()
                }),
                Err(InvokeError::RequestTooLarge { .. }) => too_large(),
                Err(err) => {
                    tracing::warn!(function = %function.name(), error = %err, "a Function URL invocation failed");
                    bad_gateway()
                }
            }
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-amzn-requestid", value);
    }
    response
}

fn too_large() -> Response<Body> {
    respond(
        StatusCode::PAYLOAD_TOO_LARGE,
        "application/json",
        r#"{"Message":"Request Entity Too Large"}"#,
    )
}

fn bad_gateway() -> Response<Body> {
    respond(
        StatusCode::BAD_GATEWAY,
        "application/json",
        r#"{"Message":"Internal Server Error"}"#,
    )
}

/// The Function URL event (payload format 2.0) for one HTTP request.
pub(crate) fn request_event(
    parts: &Parts,
    body: &[u8],
    peer: SocketAddr,
    url_id: &str,
    request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in parts.headers.keys() {
        let values = parts
            .headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        if name == hyper::header::COOKIE {
            cookies.extend(values.flat_map(|value| {
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|cookie| !cookie.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            }));
        } else {
            let joined = values.collect::<Vec<_>>().join(",");
            headers.insert(name.as_str().to_owned(), Value::String(joined));
        }
    }
    let user_agent = headers
        .get("user-agent")
        .cloned()
        .unwrap_or_else(|| Value::String(String::new()));
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or_default();
    let method = parts.method.as_str();
    let protocol = format!("{:?}", parts.version);

    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": url_id,
            "domainName": format!("{url_id}.lambda-url.{LOCAL_REGION}.on.aws"),
            "domainPrefix": url_id,
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": protocol,
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !raw_query.is_empty() {
        event["queryStringParameters"] = Value::Object(query_parameters(raw_query));
    }
    if !body.is_empty() {
        let content_type = parts
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        match std::str::from_utf8(body) {
            Ok(text) if is_textual(content_type) => event["body"] = json!(text),
            _ => {
                event["body"] = json!(BASE64.encode(body));
                event["isBase64Encoded"] = json!(true);
            }
        }
    }
    event
}

/// Content types whose bodies a Function URL passes as text: `text/*` and the JSON, XML,
/// form, JavaScript and YAML families. A missing content type counts as text.
fn is_textual(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.is_empty()
        || essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || [
            "application/json",
            "application/xml",
            "application/x-www-form-urlencoded",
            "application/javascript",
            "application/yaml",
            "application/graphql",
        ]
        .contains(&essence.as_str())
}

/// Decoded query parameters; repeated keys are joined with commas.
fn query_parameters(raw_query: &str) -> Map<String, Value> {
    let mut parameters: Vec<(String, String)> = Vec::new();
    for pair in raw_query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(key), decode(value));
        match parameters.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(&value);
            }
            None => parameters.push((key, value)),
        }
    }
    parameters
        .into_iter()
        .map(|(key, value)| (key, Value::String(value)))
        .collect()
}

/// Form-style percent decoding: `%XX` is a byte, `+` a space; anything malformed stays.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                if let Some(byte) = hex {
                    decoded.push(byte);
                    i += 2;
                } else {
                    decoded.push(b'%');
                }
            }
            other => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The HTTP response for a function's reply, or why the reply is not a valid one.
pub(crate) fn http_response(reply: &Value) -> Result<Response<Body>, String> {
    let structured = reply
        .as_object()
        .filter(|fields| fields.contains_key("statusCode"));
    let Some(fields) = structured else {
        return Ok(respond(
            StatusCode::OK,
            "application/json",
            reply.to_string(),
        ));
    };
    let status = match &fields["statusCode"] {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .and_then(|code| StatusCode::from_u16(code).ok())
    .ok_or_else(|| format!("statusCode {} is not an HTTP status", fields["statusCode"]))?;

    let mut builder = Response::builder().status(status);
    match fields.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            for (name, value) in headers {
                let value = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    other => return Err(format!("header {name} has the value {other}")),
                };
                builder = builder.header(name.as_str(), value);
            }
        }
        Some(other) => return Err(format!("headers is not an object: {other}")),
    }
    match fields.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cookies)) => {
            for cookie in cookies {
                let cookie = cookie
                    .as_str()
                    .ok_or_else(|| format!("a cookie is not a string: {cookie}"))?;
                builder = builder.header(SET_COOKIE, cookie);
            }
        }
        Some(other) => return Err(format!("cookies is not a list: {other}")),
    }
    let body = match fields.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(body)) => {
            if fields.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                Bytes::from(
                    BASE64
                        .decode(body)
                        .map_err(|err| format!("body is not base64: {err}"))?,
                )
            } else {
                Bytes::from(body.clone())
            }
        }
        Some(other) => return Err(format!("body is not a string: {other}")),
    };
    builder.body(Full::new(body)).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use http_body_util::BodyExt;

    fn parts(builder: hyper::http::request::Builder) -> Parts {
        builder.body(()).unwrap().into_parts().0
    }

    fn event_for(builder: hyper::http::request::Builder, body: &[u8]) -> Value {
        let now = Utc.with_ymd_and_hms(2026, 11, 23, 16, 0, 0).unwrap();
        let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        request_event(&parts(builder), body, peer, "abc123", "req-1", now)
    }

    #[test]
    fn a_request_becomes_a_payload_2_0_event() {
        let event = event_for(
            Request::builder()
                .method("POST")
                .uri("/v1/usage/t%201?from=2026-11-01&meter=a&meter=b&q=x+y%21")
                .header("Content-Type", "application/json")
                .header("X-Trace", "one")
                .header("X-Trace", "two")
                .header("Cookie", "a=1; b=2")
                .header("User-Agent", "curl/8"),
            br#"{"n":1}"#,
        );
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["routeKey"], "$default");
        assert_eq!(event["rawPath"], "/v1/usage/t%201");
        assert_eq!(
            event["rawQueryString"],
            "from=2026-11-01&meter=a&meter=b&q=x+y%21"
        );
        assert_eq!(
            event["queryStringParameters"],
            json!({"from": "2026-11-01", "meter": "a,b", "q": "x y!"})
        );
        assert_eq!(event["headers"]["x-trace"], "one,two");
        assert_eq!(event["headers"]["content-type"], "application/json");
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(event["body"], r#"{"n":1}"#);
        assert_eq!(event["isBase64Encoded"], false);
        let context = &event["requestContext"];
        assert_eq!(context["http"]["method"], "POST");
        assert_eq!(context["http"]["path"], "/v1/usage/t%201");
        assert_eq!(context["http"]["protocol"], "HTTP/1.1");
        assert_eq!(context["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(context["http"]["userAgent"], "curl/8");
        assert_eq!(context["domainName"], "abc123.lambda-url.us-east-1.on.aws");
        assert_eq!(context["stage"], "$default");
        assert_eq!(context["requestId"], "req-1");
        assert_eq!(context["time"], "23/Nov/2026:16:00:00 +0000");
        assert_eq!(context["timeEpoch"], 1_795_449_600_000_i64);

        let typed: aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest =
            serde_json::from_value(event.clone()).unwrap();
        assert_eq!(typed.raw_path.as_deref(), Some("/v1/usage/t%201"));
        let v2: aws_lambda_events::apigw::ApiGatewayV2httpRequest =
            serde_json::from_value(event).unwrap();
        assert_eq!(v2.request_context.http.method, hyper::Method::POST);
    }

    #[test]
    fn a_bare_get_has_no_body_query_or_cookies() {
        let event = event_for(Request::builder().uri("/health"), b"");
        assert!(event.get("body").is_none());
        assert!(event.get("queryStringParameters").is_none());
        assert!(event.get("cookies").is_none());
        assert_eq!(event["rawQueryString"], "");
    }

    #[test]
    fn binary_bodies_are_base64() {
        let event = event_for(
            Request::builder()
                .method("PUT")
                .uri("/blob")
                .header("content-type", "application/octet-stream"),
            &[0, 159, 146, 150],
        );
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(event["body"], BASE64.encode([0, 159, 146, 150]));
    }

    async fn body_of(response: Response<Body>) -> Vec<u8> {
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec()
    }

    #[tokio::test]
    async fn a_structured_reply_maps_to_status_headers_cookies_and_body() {
        let reply = json!({
            "statusCode": 201,
            "headers": {"content-type": "text/plain", "x-count": 3},
            "cookies": ["s=1; HttpOnly", "t=2"],
            "body": "aGVsbG8=",
            "isBase64Encoded": true,
        });
        let response = http_response(&reply).unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(response.headers()["x-count"], "3");
        let cookies: Vec<_> = response.headers().get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["s=1; HttpOnly", "t=2"]);
        assert_eq!(body_of(response).await, b"hello");
    }

    #[tokio::test]
    async fn a_plain_json_reply_is_a_200_with_that_json() {
        let response = http_response(&json!({"usage": 5})).unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(body_of(response).await, br#"{"usage":5}"#);
    }

    #[test]
    fn malformed_replies_are_refused() {
        for reply in [
            json!({"statusCode": 1000}),
            json!({"statusCode": "abc"}),
            json!({"statusCode": 200, "headers": ["x"]}),
            json!({"statusCode": 200, "body": {"not": "a string"}}),
            json!({"statusCode": 200, "body": "***", "isBase64Encoded": true}),
        ] {
            assert!(http_response(&reply).is_err(), "{reply}");
        }
    }
}
