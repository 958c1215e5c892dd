//! Admin: a tenant's alert webhook. `PUT /v1/admin/tenants/{id}/webhook` sets the URL and
//! a signing secret and shows the secret once; `GET` shows the URL only; `DELETE` removes
//! it.
//!
//! The secret is made here from 32 bytes of the operating system's random source unless
//! the admin supplies one (to rotate without losing deliveries, the receiver must know the
//! new secret before it is set). It is never logged, and after the `PUT` reply never shown
//! again. The URL rules are the budget Lambda's, which checks them again before every
//! delivery: `https`, or `http` only to a loopback host, and no credentials.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use lambda_http::http::Uri;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use tollgate_core::webhook::WebhookSecret;
use tollgate_store::WebhookEndpoint;

use super::load_tenant;
use super::tenants::path_tenant;
use crate::App;
use crate::error::ApiError;
use crate::http::{Query, json_body, no_content, ok};
use crate::ports::{EventQueue, UsageApiStore};

/// The longest accepted URL.
pub const MAX_URL_LEN: usize = 2048;

/// Why a webhook URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the URL is longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("not an absolute URL such as https://hooks.example.com/tollgate")]
    Unparsable,
    #[error("the URL has no host")]
    MissingHost,
    #[error("credentials in the URL are not allowed; put a token in the path or query")]
    Credentials,
    #[error("plain http is allowed only to loopback hosts (localhost, 127.0.0.0/8, [::1])")]
    InsecureHttp,
    #[error("the scheme must be https")]
    UnsupportedScheme,
}

/// Checks a webhook URL against the delivery rules.
pub fn check_url(url: &str) -> Result<(), UrlError> {
    if url.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    let uri: Uri = url.parse().map_err(|_| UrlError::Unparsable)?;
    let authority = uri.authority().ok_or(UrlError::Unparsable)?;
    if authority.as_str().contains('@') {
        return Err(UrlError::Credentials);
    }
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or(UrlError::MissingHost)?;
    match uri.scheme_str() {
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => Ok(()),
        Some(scheme) if scheme.eq_ignore_ascii_case("http") && is_loopback(host) => Ok(()),
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => Err(UrlError::InsecureHttp),
        _ => Err(UrlError::UnsupportedScheme),
    }
}

/// `localhost` or a loopback address literal.
fn is_loopback(host: &str) -> bool {
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || literal.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A fresh secret from OS randomness.
fn generate_secret() -> Result<WebhookSecret, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(RandomnessUnavailable(e)))?;
    Ok(WebhookSecret::from_random_bytes(bytes))
}

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
struct RandomnessUnavailable(getrandom::Error);

/// The body of `PUT`. `WebhookSecret`'s `Debug` is redacted, so this may derive it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WebhookRequest {
    url: String,
    /// The admin's own secret; one is generated when absent.
    #[serde(default)]
    secret: Option<WebhookSecret>,
}

/// The reply to `PUT`: the only time the secret is shown. No `Debug`: it holds the secret.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedWebhook<'a> {
    url: &'a str,
    secret: &'a str,
    created_at: DateTime<Utc>,
}

/// The webhook as `GET` shows it: never the secret.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookView<'a> {
    url: &'a str,
    created_at: DateTime<Utc>,
}

fn no_webhook(tenant: &str) -> ApiError {
    ApiError::absent("no_webhook", format!("tenant {tenant} has no webhook"))
}

/// `PUT /v1/admin/tenants/{id}/webhook`: body `{"url": "https://…"}`, optionally with
/// `"secret": "whsec_…"`. Replaces any earlier webhook and its secret.
pub async fn put<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let tenant = path_tenant(id)?;
    let body: WebhookRequest = json_body(request)?;
    check_url(&body.url).map_err(|e| ApiError::bad_request("bad_webhook_url", e.to_string()))?;
    load_tenant(app.store(), &tenant).await?;
    let secret = match body.secret {
        Some(secret) => secret,
        None => generate_secret()?,
    };
    let endpoint = WebhookEndpoint {
        url: body.url,
        secret: secret.expose().to_owned(),
        created_at: app.now(),
    };
    app.store().put_webhook(&tenant, &endpoint).await?;
    tracing::info!(%tenant, "webhook set");
    ok(&CreatedWebhook {
        url: &endpoint.url,
        secret: &endpoint.secret,
        created_at: endpoint.created_at,
    })
}

/// `GET /v1/admin/tenants/{id}/webhook`: the URL and when it was set.
pub async fn get<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let tenant = path_tenant(id)?;
    load_tenant(app.store(), &tenant).await?;
    let endpoint = app
        .store()
        .webhook(&tenant)
        .await?
        .ok_or_else(|| no_webhook(tenant.as_str()))?;
    ok(&WebhookView {
        url: &endpoint.url,
        created_at: endpoint.created_at,
    })
}

/// `DELETE /v1/admin/tenants/{id}/webhook`: 204, or 404 `no_webhook`. Alerts raised
/// afterwards are only listed by the API.
pub async fn delete<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let tenant = path_tenant(id)?;
    load_tenant(app.store(), &tenant).await?;
    if !app.store().delete_webhook(&tenant).await? {
        return Err(no_webhook(tenant.as_str()));
    }
    tracing::info!(%tenant, "webhook removed");
    no_content()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_goes_anywhere_and_http_only_to_loopback_without_credentials() {
        let cases = [
            ("https://hooks.example.com/tollgate?token=x", Ok(())),
            ("HTTPS://hooks.example.com/", Ok(())),
            ("https://10.0.0.1:8443/", Ok(())),
            ("http://127.0.0.1:8080/hook", Ok(())),
            ("http://127.1.2.3/hook", Ok(())),
            ("http://[::1]:9000/hook", Ok(())),
            ("http://localhost:3000/", Ok(())),
            ("http://example.com/hook", Err(UrlError::InsecureHttp)),
            ("http://10.0.0.1/hook", Err(UrlError::InsecureHttp)),
            ("http://127.0.0.1.nip.io/hook", Err(UrlError::InsecureHttp)),
            ("http://[::2]/hook", Err(UrlError::InsecureHttp)),
            ("https://user:pw@example.com/", Err(UrlError::Credentials)),
            ("http://user@localhost/", Err(UrlError::Credentials)),
            ("ftp://example.com/", Err(UrlError::UnsupportedScheme)),
            ("hooks.example.com/tollgate", Err(UrlError::Unparsable)),
            ("/tollgate", Err(UrlError::Unparsable)),
            ("https://exa mple.com/", Err(UrlError::Unparsable)),
            ("", Err(UrlError::Unparsable)),
        ];
        for (url, expected) in cases {
            assert_eq!(check_url(url), expected, "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(check_url(&long), Err(UrlError::TooLong));
    }

    #[test]
    fn generated_secrets_are_valid_and_distinct() {
        let (Ok(a), Ok(b)) = (generate_secret(), generate_secret()) else {
            panic!("no randomness");
        };
        assert!(WebhookSecret::parse(a.expose()).is_ok());
        assert_ne!(a.expose(), b.expose());
    }
}
