//! Admin: a tenant's alert webhook. `PUT /v1/admin/tenants/{id}/webhook` sets the URL and
//! a signing secret and shows the secret once; `GET` shows the URL only; `DELETE` removes
//! it.
//!
//! The secret is made here from 32 bytes of the operating system's random source unless
//! the admin supplies one (to rotate without losing deliveries, the receiver must know the
//! new secret before it is set). It is never logged, and after the `PUT` reply never shown
//! again. The URL rules are `tollgate_core::webhook::check_url`'s, which the budget Lambda
//! applies again before every delivery: `https`, or `http` only to a loopback host, and
//! no credentials.

use chrono::{DateTime, Utc};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use tollgate_core::webhook::{WebhookSecret, check_url};
use tollgate_store::WebhookEndpoint;

use super::load_tenant;
use super::tenants::path_tenant;
use crate::App;
use crate::error::ApiError;
use crate::http::{Query, json_body, no_content, ok};
use crate::ports::{EventQueue, UsageApiStore};

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
pub struct WebhookRequest {
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
    fn generated_secrets_are_valid_and_distinct() {
        let (Ok(a), Ok(b)) = (generate_secret(), generate_secret()) else {
            panic!("no randomness");
        };
        assert!(WebhookSecret::parse(a.expose()).is_ok());
        assert_ne!(a.expose(), b.expose());
    }
}
