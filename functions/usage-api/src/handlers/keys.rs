//! Admin: tenant API keys. `POST /v1/admin/tenants/{id}/keys` creates one and shows its
//! secret once; `GET /v1/admin/tenants/{id}/keys` lists records (digests, never secrets);
//! `DELETE /v1/admin/keys/{sha256}` revokes a key by its digest.
//!
//! A secret is `tg_` followed by 32 bytes (256 bits) from the operating system's random
//! source, hex encoded. Only its SHA-256 digest is stored.

use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use tollgate_core::ids::TenantId;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRecord, ApiKeyRole};
use tollgate_store::StoreError;

use super::load_tenant;
use super::tenants::path_tenant;
use crate::App;
use crate::error::ApiError;
use crate::http::{Query, body_bytes, json, ok};
use crate::ports::{EventQueue, UsageApiStore};

/// The prefix of every secret, so leaked keys are easy to recognise and scan for.
pub const KEY_PREFIX: &str = "tg_";

/// Random bytes in a secret.
pub const KEY_BYTES: usize = 32;

/// The longest key label.
pub const MAX_LABEL: usize = 64;

/// A fresh secret from OS randomness.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; KEY_BYTES];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKey {
    #[serde(default)]
    label: String,
}

/// The reply to a key creation: the only time the secret is shown.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedKey {
    /// The secret. Store it now: it cannot be shown again.
    key: String,
    #[serde(flatten)]
    record: ApiKeyRecord,
}

/// `POST /v1/admin/tenants/{id}/keys`: body `{"label": "…"}` (optional).
pub async fn create<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let tenant = path_tenant(id)?;
    let body: NewKey = if body_bytes(request)?.is_empty() {
        NewKey::default()
    } else {
        crate::http::json_body(request)?
    };
    if body.label.chars().count() > MAX_LABEL || body.label.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_label",
            format!("`label` must be at most {MAX_LABEL} characters without control characters"),
        ));
    }
    load_tenant(app.store(), &tenant).await?;
    let key = generate_secret().map_err(|e| ApiError::internal(RandomnessUnavailable(e)))?;
    let record = ApiKeyRecord {
        hash: ApiKeyHash::of(&key),
        role: ApiKeyRole::Tenant,
        tenant: Some(tenant),
        label: body.label,
        created_at: app.now(),
        revoked_at: None,
    };
    app.store().create_api_key(&record).await?;
    tracing::info!(tenant = ?record.tenant, key = ?record.hash, "API key created");
    json(StatusCode::CREATED, &CreatedKey { key, record })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyList {
    keys: Vec<ApiKeyRecord>,
}

/// `GET /v1/admin/tenants/{id}/keys`: the tenant's key records, oldest first.
pub async fn list<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    id: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let tenant: TenantId = path_tenant(id)?;
    load_tenant(app.store(), &tenant).await?;
    let keys = app.store().tenant_api_keys(&tenant).await?;
    ok(&KeyList { keys })
}

/// `DELETE /v1/admin/keys/{sha256}`: revokes the key; revoking twice keeps the first time.
pub async fn revoke<S: UsageApiStore, Q: EventQueue>(
    app: &App<S, Q>,
    digest: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    Query::of(request, &[])?;
    let hash = ApiKeyHash::from_hex(digest).ok_or_else(|| {
        ApiError::bad_request(
            "bad_path_parameter",
            "the key is named by its SHA-256 digest: 64 lowercase hex digits",
        )
    })?;
    match app.store().revoke_api_key(&hash, app.now()).await {
        Ok(record) => {
            tracing::info!(key = ?record.hash, "API key revoked");
            ok(&record)
        }
        Err(StoreError::NotFound { .. }) => Err(ApiError::NotFound { what: "API key" }),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
struct RandomnessUnavailable(getrandom::Error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_256_bit_hex_and_distinct() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert!(a.starts_with("tg_"));
        assert_eq!(a.len(), 3 + 64);
        assert!(a[3..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
