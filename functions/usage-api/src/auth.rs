//! Who is calling: API keys, roles, and which tenant a request may see.
//!
//! A key arrives as `Authorization: Bearer <key>` (or `x-api-key: <key>`). It is never
//! stored, logged or compared as text: the API computes its SHA-256 digest and reads the
//! key record stored under that digest. An unknown, revoked or malformed key is a 401
//! with no hint which of the three it was.
//!
//! **Timing.** The lookup is by digest, so the only secret-dependent work is hashing the
//! presented key (constant time in its length) and DynamoDB's exact-match `GetItem` on
//! the digest. Learning how long a lookup of digest *d* takes tells an attacker nothing
//! about which key hashes to a stored digest: finding one is a SHA-256 preimage. The
//! record read back is then compared with the computed digest in constant time
//! ([`digests_match`]) before it is trusted, so a mismatched record can never
//! authenticate, and that comparison leaks nothing either.
//!
//! **Isolation.** A tenant key is bound to its tenant: tenant routes answer for that
//! tenant only, and naming another tenant (`?tenant=other`) is a 404, the same reply an
//! unknown tenant gets, so a key cannot probe which tenants exist. Admin routes answer
//! 403 to tenant keys. Admin keys may call tenant routes for any tenant with
//! `?tenant=<id>`.

use lambda_http::http::HeaderMap;
use lambda_http::http::header::AUTHORIZATION;
use tollgate_core::ids::TenantId;
use tollgate_core::tenant::{ApiKeyHash, ApiKeyRole};

use crate::error::ApiError;
use crate::ports::ApiKeys;

/// Keys longer than this are refused without hashing them.
pub const MAX_KEY_LEN: usize = 256;

/// The caller, once its key checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A tenant key: reads and writes its own tenant only.
    Tenant { tenant: TenantId },
    /// An admin key: manages everything.
    Admin,
}

impl Principal {
    /// Admin routes: 403 for tenant keys.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant { .. } => Err(ApiError::Forbidden),
        }
    }

    /// The tenant a tenant route serves, given the `tenant` query parameter.
    ///
    /// Tenant keys get their own tenant; naming any other is a 404 (no existence leak).
    /// Admin keys must name one.
    pub fn tenant_scope(&self, requested: Option<&str>) -> Result<TenantId, ApiError> {
        match (self, requested) {
            (Principal::Tenant { tenant }, None) => Ok(tenant.clone()),
            (Principal::Tenant { tenant }, Some(requested)) if requested == tenant.as_str() => {
                Ok(tenant.clone())
            }
            (Principal::Tenant { .. }, Some(_)) => Err(ApiError::NotFound { what: "tenant" }),
            (Principal::Admin, None) => Err(ApiError::bad_request(
                "tenant_required",
                "admin keys must name the tenant: ?tenant=<id>",
            )),
            (Principal::Admin, Some(requested)) => TenantId::new(requested).map_err(|e| {
                ApiError::bad_request(
                    "bad_query_parameter",
                    format!("query parameter `tenant`: {e}"),
                )
            }),
        }
    }
}

/// The presented key: `Authorization: Bearer <key>`, else `x-api-key`. An
/// `Authorization` header of another scheme is not a key (it may be meant for a proxy).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim());
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
        })
        .filter(|key| !key.is_empty())
}

/// Compares two digests in time independent of where they differ.
pub fn digests_match(a: &ApiKeyHash, b: &ApiKeyHash) -> bool {
    let (a, b) = (a.as_hex().as_bytes(), b.as_hex().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Checks the request's key and returns who it belongs to.
pub async fn authenticate<S: ApiKeys>(
    store: &S,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let key = presented_key(headers).ok_or(ApiError::Unauthorized)?;
    if key.len() > MAX_KEY_LEN {
        return Err(ApiError::Unauthorized);
    }
    let digest = ApiKeyHash::of(key);
    let record = store
        .api_key(&digest)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if !digests_match(&record.hash, &digest) || !record.is_active() {
        return Err(ApiError::Unauthorized);
    }
    match (record.role, record.tenant) {
        (ApiKeyRole::Admin, _) => Ok(Principal::Admin),
        (ApiKeyRole::Tenant, Some(tenant)) => Ok(Principal::Tenant { tenant }),
        (ApiKeyRole::Tenant, None) => {
            tracing::warn!(key = ?record.hash, "tenant key record without a tenant; refused");
            Err(ApiError::Unauthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::HeaderValue;
    use tollgate_core::tenant::ApiKeyRecord;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn keys_come_from_bearer_authorization_or_x_api_key() {
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer tg_1")])),
            Some("tg_1")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer  tg_1 ")])),
            Some("tg_1")
        );
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "tg_2")])),
            Some("tg_2")
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer ")])),
            None
        );
        assert_eq!(presented_key(&headers(&[])), None);
    }

    #[test]
    fn digests_match_only_when_equal() {
        let a = ApiKeyHash::of("a");
        assert!(digests_match(&a, &ApiKeyHash::of("a")));
        assert!(!digests_match(&a, &ApiKeyHash::of("b")));
    }

    /// A digest differing from `a` in exactly the hex digit at `position`.
    fn one_digit_off(a: &ApiKeyHash, position: usize) -> ApiKeyHash {
        let mut hex = a.as_hex().as_bytes().to_vec();
        hex[position] = if hex[position] == b'0' { b'1' } else { b'0' };
        ApiKeyHash::from_hex(std::str::from_utf8(&hex).unwrap()).unwrap()
    }

    #[test]
    fn digests_differing_in_any_single_digit_do_not_match() {
        let a = ApiKeyHash::of("tg_some_key");
        for position in 0..64 {
            let b = one_digit_off(&a, position);
            assert!(!digests_match(&a, &b), "position {position}");
            assert!(!digests_match(&b, &a), "position {position}");
            assert!(digests_match(&b, &b.clone()));
        }
    }

    /// The comparison must stay the constant-time fold, and `authenticate` must trust a
    /// record only through it: no `==` between digests (which stops at the first
    /// difference) on the way to a principal. Timing itself is not measured here.
    #[test]
    fn the_key_path_compares_digests_in_constant_time_only() {
        let source = include_str!("auth.rs");
        let body = |name: &str| {
            let start = source.find(name).unwrap();
            let end = start + source[start..].find("\n}\n").unwrap();
            source[start..end].to_owned()
        };
        let compare = body("pub fn digests_match(");
        assert!(
            compare.contains("fold(0u8, |diff, (x, y)| diff | (x ^ y))"),
            "{compare}"
        );
        assert!(!compare.contains("a == b"), "{compare}");
        let authenticate = body("pub async fn authenticate<");
        assert!(
            authenticate.contains("digests_match(&record.hash, &digest)"),
            "{authenticate}"
        );
        for forbidden in [
            "hash ==",
            "== digest",
            "hash !=",
            "!= digest",
            "as_hex() ==",
        ] {
            assert!(
                !authenticate.contains(forbidden),
                "{forbidden} in {authenticate}"
            );
        }
    }

    /// A store holding one key, counting lookups.
    struct OneKey {
        record: ApiKeyRecord,
        lookups: std::sync::atomic::AtomicUsize,
    }

    impl ApiKeys for OneKey {
        async fn api_key(
            &self,
            hash: &ApiKeyHash,
        ) -> Result<Option<ApiKeyRecord>, tollgate_store::StoreError> {
            self.lookups
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok((*hash == self.record.hash).then(|| self.record.clone()))
        }

        async fn create_api_key(&self, _: &ApiKeyRecord) -> Result<(), tollgate_store::StoreError> {
            Ok(())
        }

        async fn revoke_api_key(
            &self,
            _: &ApiKeyHash,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<ApiKeyRecord, tollgate_store::StoreError> {
            Ok(self.record.clone())
        }

        async fn tenant_api_keys(
            &self,
            _: &TenantId,
        ) -> Result<Vec<ApiKeyRecord>, tollgate_store::StoreError> {
            Ok(vec![self.record.clone()])
        }
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        map
    }

    #[tokio::test]
    async fn oversized_keys_are_refused_without_a_lookup_and_the_limit_itself_is_looked_up() {
        let at_limit = format!("tg_{}", "k".repeat(MAX_KEY_LEN - 3));
        let store = OneKey {
            record: ApiKeyRecord {
                hash: ApiKeyHash::of(&at_limit),
                role: ApiKeyRole::Tenant,
                tenant: Some(TenantId::new("acme").unwrap()),
                label: String::new(),
                created_at: chrono::DateTime::UNIX_EPOCH,
                revoked_at: None,
            },
            lookups: std::sync::atomic::AtomicUsize::new(0),
        };
        let lookups = || store.lookups.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            authenticate(&store, &bearer(&at_limit)).await.unwrap(),
            Principal::Tenant {
                tenant: TenantId::new("acme").unwrap()
            }
        );
        assert_eq!(lookups(), 1);
        for oversized in [format!("{at_limit}k"), "k".repeat(64 * 1024)] {
            let error = authenticate(&store, &bearer(&oversized)).await.unwrap_err();
            assert_eq!(error.code(), "unauthorized");
        }
        let mut x_api_key = HeaderMap::new();
        x_api_key.insert(
            "x-api-key",
            HeaderValue::from_str(&"k".repeat(MAX_KEY_LEN + 1)).unwrap(),
        );
        assert!(authenticate(&store, &x_api_key).await.is_err());
        assert_eq!(lookups(), 1, "no lookup for an oversized key");
    }

    #[test]
    fn tenant_keys_see_only_their_tenant_and_admins_must_name_one() {
        let acme = TenantId::new("acme").unwrap();
        let tenant = Principal::Tenant {
            tenant: acme.clone(),
        };
        assert_eq!(tenant.tenant_scope(None).unwrap(), acme);
        assert_eq!(tenant.tenant_scope(Some("acme")).unwrap(), acme);
        assert_eq!(
            tenant.tenant_scope(Some("globex")).unwrap_err().code(),
            "not_found"
        );
        assert_eq!(tenant.require_admin().unwrap_err().code(), "forbidden");
        assert_eq!(
            Principal::Admin.tenant_scope(None).unwrap_err().code(),
            "tenant_required"
        );
        assert_eq!(
            Principal::Admin
                .tenant_scope(Some("globex"))
                .unwrap()
                .as_str(),
            "globex"
        );
    }
}
