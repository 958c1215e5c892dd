//! Identifiers that end up inside storage keys and wire formats.
//!
//! They are validated once, at the edge of the domain, so that a key such as
//! `USAGE#{tenant}` can never be forged by a tenant id that contains `#`.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} characters long; the limit is {max}")]
    TooLong {
        kind: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{kind} {value:?} contains {ch:?}; allowed are ASCII letters, digits and - _ . : @")]
    BadCharacter {
        kind: &'static str,
        value: String,
        ch: char,
    },
}

fn validate(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let len = value.chars().count();
    if len > max {
        return Err(IdError::TooLong { kind, len, max });
    }
    if let Some(ch) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@')))
    {
        return Err(IdError::BadCharacter {
            kind,
            value: value.to_owned(),
            ch,
        });
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The longest accepted value, in characters.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

identifier!(
    /// A tenant: the CloudEvents `subject` of a usage event, the owner of every usage row.
    TenantId,
    "tenant id",
    64
);
identifier!(
    /// A meter, such as `api_requests` or `storage_gb`.
    MeterName,
    "meter name",
    64
);
identifier!(
    /// A plan, such as `starter`.
    PlanName,
    "plan name",
    64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        assert!(TenantId::new("acme-corp_01").is_ok());
        assert!(MeterName::new("api.requests").is_ok());
    }

    #[test]
    fn refuses_key_separators_and_empty_values() {
        assert!(matches!(
            TenantId::new("a#b"),
            Err(IdError::BadCharacter { ch: '#', .. })
        ));
        assert!(matches!(TenantId::new(""), Err(IdError::Empty { .. })));
        assert!(matches!(
            TenantId::new("x".repeat(65)),
            Err(IdError::TooLong { len: 65, .. })
        ));
    }

    #[test]
    fn deserialising_validates() {
        let bad: Result<TenantId, _> = serde_json::from_str("\"a b\"");
        assert!(bad.is_err());
        let good: TenantId = serde_json::from_str("\"acme\"").unwrap();
        assert_eq!(good.as_str(), "acme");
    }
}
