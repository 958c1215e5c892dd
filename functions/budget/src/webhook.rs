//! Delivering one signed budget alert to a tenant's webhook.
//!
//! One call of [`WebhookClient::deliver`] is one attempt: a POST with the body, the
//! `Tollgate-Signature` and `Tollgate-Webhook-Id` headers (see [`tollgate_core::webhook`]),
//! bounded by a per-attempt timeout. Whether and when to try again is the caller's
//! decision, made from [`DeliveryError::retryable`] and
//! [`tollgate_core::webhook::retry_delay`].
//!
//! The URL rules protect receivers and secrets: `https://` to any host; plain `http://`
//! only to loopback hosts (the local demo and tests run their receiver there); no
//! credentials in the URL; redirects are never followed, because a redirect would send
//! a signed alert somewhere the admin did not register.

use std::error::Error as StdError;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tollgate_core::webhook::{
    SIGNATURE_HEADER, WEBHOOK_ID_HEADER, WebhookSecret, check_url, sign_rotating,
};

/// The URL rules' refusals, carried by [`DeliveryError::Url`].
pub use tollgate_core::webhook::UrlError;

/// How long one attempt may take, connecting included, unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sent with every delivery so receivers can recognise (and allow-list) tollgate.
pub const USER_AGENT_VALUE: &str = concat!("tollgate-webhooks/", env!("CARGO_PKG_VERSION"));

/// Longest reason kept from a lower-level error: enough to diagnose, small to store.
const MAX_REASON_DETAIL: usize = 160;

/// An HTTP(S) client for webhook deliveries; cheap to share, connections are pooled.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No usable root certificate in the system store: https could never verify.
    #[error("loading the system's root certificates failed")]
    RootCertificates(#[source] std::io::Error),
}

/// A delivery the receiver accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The receiver's 2xx status.
    pub status: StatusCode,
}

/// Why an attempt did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The webhook URL is refused; retrying cannot help until an admin changes it.
    #[error("webhook URL refused: {0}")]
    Url(#[from] UrlError),
    /// The alert id cannot be sent as a header value.
    #[error("the webhook id is not a valid header value")]
    InvalidWebhookId,
    /// The request could not be assembled (not expected: every part is checked above).
    #[error("the request could not be built")]
    Build(#[source] hyper::http::Error),
    /// No response within the per-attempt timeout.
    #[error("no response within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// No connection (DNS, TCP or TLS).
    #[error("connecting to the receiver failed")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// The connection broke before a response arrived.
    #[error("the request to the receiver failed")]
    Request(#[source] hyper_util::client::legacy::Error),
    /// The receiver answered, but not with 2xx.
    #[error("the receiver answered {0}")]
    Status(StatusCode),
}

impl DeliveryError {
    /// Whether a later attempt may succeed: network trouble, timeouts, 5xx, 429 and 408.
    /// Other answers (4xx, 3xx) say the receiver refuses this request as it is.
    pub fn retryable(&self) -> bool {
        match self {
            DeliveryError::Timeout(_) | DeliveryError::Connect(_) | DeliveryError::Request(_) => {
                true
            }
            DeliveryError::Status(status) => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            DeliveryError::Url(_) | DeliveryError::InvalidWebhookId | DeliveryError::Build(_) => {
                false
            }
        }
    }

    /// A short description safe to store on the alert and show to its tenant: no
    /// secret, no URL, no text from the receiver's response body.
    pub fn reason(&self) -> String {
        match self {
            DeliveryError::Connect(err) => format!("connect failed: {}", root_cause(err)),
            DeliveryError::Request(err) => format!("request failed: {}", root_cause(err)),
            DeliveryError::Status(status) if status.is_redirection() => {
                format!("HTTP {} (redirects are not followed)", status.as_u16())
            }
            DeliveryError::Status(status) => format!("HTTP {}", status.as_u16()),
            other => other.to_string(),
        }
    }
}

impl WebhookClient {
    /// A client trusting the system's root certificates, with [`DEFAULT_TIMEOUT`].
    pub fn new() -> Result<WebhookClient, ClientError> {
        let connector = HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(ClientError::RootCertificates)?
            // Both schemes reach the connector; `check_url` keeps http on loopback.
            .https_or_http()
            .enable_http1()
            .build();
        Ok(WebhookClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client with another per-attempt timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> WebhookClient {
        self.timeout = timeout;
        self
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One delivery attempt of `body` (JSON) to `url`, signed with `secret` at `now`.
    pub async fn deliver(
        &self,
        url: &str,
        secret: &WebhookSecret,
        webhook_id: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Delivered, DeliveryError> {
        self.deliver_rotating(url, &[secret], webhook_id, body, now)
            .await
    }

    /// Like [`WebhookClient::deliver`], signed with every one of `secrets` (one `v1=`
    /// entry each), for the time a secret is being rotated.
    pub async fn deliver_rotating(
        &self,
        url: &str,
        secrets: &[&WebhookSecret],
        webhook_id: &str,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Delivered, DeliveryError> {
        let uri = check_url(url)?;
        let webhook_id =
            HeaderValue::from_str(webhook_id).map_err(|_| DeliveryError::InvalidWebhookId)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header(SIGNATURE_HEADER, sign_rotating(secrets, now, body))
            .header(WEBHOOK_ID_HEADER, webhook_id)
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(DeliveryError::Build)?;

        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| DeliveryError::Timeout(self.timeout))?
            .map_err(|err| {
                if err.is_connect() {
                    DeliveryError::Connect(err)
                } else {
                    DeliveryError::Request(err)
                }
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(Delivered { status })
        } else {
            Err(DeliveryError::Status(status))
        }
    }
}

/// The innermost error's message, shortened: it names the actual trouble ("Connection
/// refused", "invalid peer certificate") without the layers hyper wraps around it.
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text: String = cause
        .to_string()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON_DETAIL)
        .collect();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_that_may_pass_later_are_retryable() {
        for (status, retryable) in [
            (500, true),
            (502, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (401, false),
            (404, false),
            (410, false),
            (301, false),
        ] {
            let err = DeliveryError::Status(StatusCode::from_u16(status).unwrap_or_default());
            assert_eq!(err.retryable(), retryable, "{status}");
        }
    }

    #[test]
    fn reasons_are_short_and_name_the_status() {
        assert_eq!(
            DeliveryError::Status(StatusCode::SERVICE_UNAVAILABLE).reason(),
            "HTTP 503"
        );
        assert_eq!(
            DeliveryError::Status(StatusCode::FOUND).reason(),
            "HTTP 302 (redirects are not followed)"
        );
        assert_eq!(
            DeliveryError::Timeout(Duration::from_secs(10)).reason(),
            "no response within 10000 ms"
        );
        assert_eq!(
            DeliveryError::Url(UrlError::InsecureHttp).reason(),
            "webhook URL refused: plain http:// is only allowed to loopback hosts; use https://"
        );
    }
}
