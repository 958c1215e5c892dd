//! Tenants and their API keys.
//!
//! API keys are never stored: only their SHA-256 digest is, so a leaked table does not
//! leak credentials. A key is looked up by its digest, which is why the digest (not a
//! random id) is the storage key.

use std::fmt::{self, Write as _};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{PlanName, TenantId};

/// Whether a tenant's traffic and usage are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
}

/// A tenant's profile: who they are, what they pay for, where they are billed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantProfile {
    pub tenant: TenantId,
    pub display_name: String,
    pub plan: PlanName,
    pub status: TenantStatus,
    /// The Stripe customer (`cus_…`) that metered usage is reported for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_customer_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What a key may do: a tenant key reads its own tenant only; an admin key manages all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyRole {
    Tenant,
    Admin,
}

/// The SHA-256 digest of an API key, hex encoded: the only form a key is stored in.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKeyHash(String);

impl ApiKeyHash {
    /// Digests a presented key.
    pub fn of(secret: &str) -> ApiKeyHash {
        let digest = Sha256::digest(secret.as_bytes());
        let mut hex = String::with_capacity(64);
        for byte in digest.iter() {
            // Writing into a String cannot fail.
            let _ = write!(hex, "{byte:02x}");
        }
        ApiKeyHash(hex)
    }

    /// Wraps a digest read back from storage; `None` unless it is 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<ApiKeyHash> {
        (hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| ApiKeyHash(hex.to_owned()))
    }

    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeyHash {
    /// Shows a prefix only: even a digest does not belong in logs in full.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyHash({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// A stored API key record (the digest plus what it grants).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyRecord {
    pub hash: ApiKeyHash,
    pub role: ApiKeyRole,
    /// The tenant a tenant key belongs to; `None` for admin keys.
    pub tenant: Option<TenantId>,
    /// A short label shown in listings (`ci-deploy`), never the key.
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            ApiKeyHash::of("abc").as_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn debug_output_does_not_show_the_whole_digest() {
        let shown = format!("{:?}", ApiKeyHash::of("secret"));
        assert!(shown.len() < 30, "{shown}");
    }

    #[test]
    fn from_hex_accepts_only_digests() {
        let h = ApiKeyHash::of("k");
        assert_eq!(ApiKeyHash::from_hex(h.as_hex()), Some(h));
        assert_eq!(ApiKeyHash::from_hex("XYZ"), None);
    }
}
