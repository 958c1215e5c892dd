//! Signed webhooks: the secret, the signature scheme and the retry schedule.
//!
//! Budget alerts are POSTed to a URL the tenant's admin registered, with a secret they
//! share with tollgate. The receiver must be able to tell that a request came from
//! tollgate, that its body was not altered, and that it is not an old request replayed.
//! Everything here is pure: the caller supplies the clock and the randomness.
//!
//! The scheme:
//! - The secret is `whsec_` followed by at least 43 characters of URL-safe base64
//!   (32 random bytes when tollgate makes it). The HMAC key is the UTF-8 bytes of the
//!   **whole** secret string, prefix included, so receivers never decode anything.
//! - Every delivery carries `Tollgate-Signature: t=<unix seconds>,v1=<hex>`, where
//!   `<hex>` is the lowercase hex HMAC-SHA256 of `"<t>.<raw body>"` (the timestamp digits
//!   as sent, a dot, then the body bytes exactly as received).
//! - The header may carry several `v1=` entries (one per secret while a secret is being
//!   rotated); a delivery is authentic if any of them matches. Unknown keys are ignored
//!   so the scheme can grow (`v2=`) without breaking receivers.
//! - The receiver compares in constant time and rejects a `t` more than a tolerance
//!   ([`DEFAULT_TOLERANCE`], 5 minutes) away from its own clock, which bounds replays.
//! - `Tollgate-Webhook-Id` carries the alert's id. Delivery is at least once, so the
//!   receiver dedupes on it.
//! - The URL is `https`, or plain `http` only to a loopback host, with no credentials
//!   ([`check_url`]): the usage API checks it when it is set, the sender before every
//!   attempt.
//! - A failed attempt is retried after [`retry_delay`] (exponential from 30 s, capped at
//!   1 h, full jitter), up to [`MAX_ATTEMPTS`] attempts in all.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use tollgate_core::webhook::{DEFAULT_TOLERANCE, WebhookSecret, sign, verify};
//!
//! let secret = WebhookSecret::from_random_bytes([7; 32]);
//! let sent_at = Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).single().ok_or("time")?;
//! let body = br#"{"id":"alert-1"}"#;
//! let header = sign(&secret, sent_at, body);
//!
//! let received_at = sent_at + chrono::TimeDelta::seconds(2);
//! verify(&secret, &header, body, received_at, DEFAULT_TOLERANCE)?;
//! assert!(verify(&secret, &header, b"{}", received_at, DEFAULT_TOLERANCE).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt::{self, Write as _};
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use http::Uri;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The header carrying the timestamp and signatures.
pub const SIGNATURE_HEADER: &str = "Tollgate-Signature";
/// The header carrying the alert's id, for the receiver's dedupe.
pub const WEBHOOK_ID_HEADER: &str = "Tollgate-Webhook-Id";
/// How far a signature's timestamp may be from the receiver's clock, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
/// Attempts per alert, the first included; after that many failures the delivery is
/// marked failed.
pub const MAX_ATTEMPTS: u32 = 10;

const SECRET_PREFIX: &str = "whsec_";
/// 32 bytes in unpadded base64.
const SECRET_MIN_BODY_LEN: usize = 43;
/// Generous, but bounded: a secret is stored and sent through headers of admin requests.
const SECRET_MAX_BODY_LEN: usize = 256;
const SIGNATURE_HEX_LEN: usize = 64;
/// Enough digits for any `i64`; anything longer is not a timestamp.
const TIMESTAMP_MAX_DIGITS: usize = 19;

const RETRY_BASE_MS: u64 = 30_000;
const RETRY_CAP_MS: u64 = 3_600_000;

type HmacSha256 = Hmac<Sha256>;

/// A webhook signing secret (`whsec_…`).
///
/// Its `Debug` and `Display` are redacted so it cannot leak through logs or error
/// messages; [`WebhookSecret::expose`] is the one deliberate way to read it. It
/// (de)serialises as the plain string because it has to be stored and handed to the
/// admin once.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// Makes a secret from 32 bytes of the caller's randomness (core has no random source).
    pub fn from_random_bytes(bytes: [u8; 32]) -> WebhookSecret {
        WebhookSecret(format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// Validates a secret given by an admin or read back from storage.
    pub fn parse(text: &str) -> Result<WebhookSecret, SecretError> {
        let rest = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        if let Some(position) = rest
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(SecretError::InvalidCharacter {
                position: SECRET_PREFIX.len() + position,
            });
        }
        match rest.len() {
            len if len < SECRET_MIN_BODY_LEN => Err(SecretError::TooShort {
                len,
                min: SECRET_MIN_BODY_LEN,
            }),
            len if len > SECRET_MAX_BODY_LEN => Err(SecretError::TooLong {
                len,
                max: SECRET_MAX_BODY_LEN,
            }),
            _ => Ok(WebhookSecret(text.to_owned())),
        }
    }

    /// The secret in clear, for signing and storage only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length, so this never fails; the fallback keeps it total.
        HmacSha256::new_from_slice(self.0.as_bytes())
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(REDACTED)")
    }
}

impl fmt::Display for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SECRET_PREFIX}REDACTED")
    }
}

impl FromStr for WebhookSecret {
    type Err = SecretError;
    fn from_str(text: &str) -> Result<Self, SecretError> {
        WebhookSecret::parse(text)
    }
}

impl TryFrom<String> for WebhookSecret {
    type Error = SecretError;
    fn try_from(text: String) -> Result<Self, SecretError> {
        WebhookSecret::parse(&text)
    }
}

impl From<WebhookSecret> for String {
    fn from(secret: WebhookSecret) -> String {
        secret.0
    }
}

/// Why a string is not a webhook secret. Never quotes the string: it may be a real secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a webhook secret starts with `whsec_`")]
    MissingPrefix,
    #[error(
        "a webhook secret holds only URL-safe base64 (A-Z a-z 0-9 - _); character {position} is not"
    )]
    InvalidCharacter { position: usize },
    #[error("a webhook secret needs at least {min} characters after `whsec_`, got {len}")]
    TooShort { len: usize, min: usize },
    #[error("a webhook secret has at most {max} characters after `whsec_`, got {len}")]
    TooLong { len: usize, max: usize },
}

/// The `Tollgate-Signature` header value for `body` sent at `timestamp`.
pub fn sign(secret: &WebhookSecret, timestamp: DateTime<Utc>, body: &[u8]) -> String {
    sign_rotating(&[secret], timestamp, body)
}

/// Like [`sign`], with one `v1=` entry per secret: while a secret is rotated, receivers
/// holding either the old or the new one can verify.
pub fn sign_rotating(secrets: &[&WebhookSecret], timestamp: DateTime<Utc>, body: &[u8]) -> String {
    let t = timestamp.timestamp().to_string();
    let mut header = format!("t={t}");
    for secret in secrets {
        let tag = signed_payload_mac(secret, &t, body).finalize().into_bytes();
        header.push_str(",v1=");
        for byte in tag.iter() {
            // Writing into a String cannot fail.
            let _ = write!(header, "{byte:02x}");
        }
    }
    header
}

/// Checks a `Tollgate-Signature` header against the raw body, as a receiver does.
///
/// The timestamp is checked first (cheap, and it is what stops a replay of a genuine
/// request); then every `v1=` entry is compared in constant time.
pub fn verify(
    secret: &WebhookSecret,
    header: &str,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let parsed = ParsedHeader::parse(header)?;

    let skew = now.timestamp().abs_diff(parsed.timestamp);
    if skew > tolerance.as_secs() {
        return Err(SignatureError::TimestampOutsideTolerance {
            skew_seconds: skew,
            tolerance_seconds: tolerance.as_secs(),
        });
    }

    let mac = signed_payload_mac(secret, parsed.timestamp_text, body);
    if parsed
        .signatures
        .iter()
        .any(|signature| mac.clone().verify_slice(signature).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::NoMatchingSignature)
    }
}

/// Why a webhook request did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed Tollgate-Signature header: {0}")]
    MalformedHeader(#[from] MalformedHeader),
    #[error(
        "signature timestamp is {skew_seconds} s away from now, more than the {tolerance_seconds} s tolerance"
    )]
    TimestampOutsideTolerance {
        skew_seconds: u64,
        tolerance_seconds: u64,
    },
    #[error("no signature in the header matches the body")]
    NoMatchingSignature,
}

/// What is wrong with a `Tollgate-Signature` header's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedHeader {
    #[error("an entry is not `key=value`")]
    NotKeyValue,
    #[error("no `t=` timestamp")]
    MissingTimestamp,
    #[error("more than one `t=` timestamp")]
    DuplicateTimestamp,
    #[error("the timestamp is not unix seconds in decimal digits")]
    InvalidTimestamp,
    #[error("no `v1=` signature")]
    MissingSignature,
    #[error("a `v1=` signature is not 64 lowercase hex digits")]
    InvalidSignature,
}

/// The delay before retrying after failed attempt number `attempt` (1 for the first).
///
/// Exponential from 30 s, doubling per attempt, capped at 1 h, with full jitter: a value
/// uniform in `0..=ceiling` drawn from the caller's `random`, so receivers recovering from
/// an outage are not hit by every retry at once. Integer milliseconds throughout.
pub fn retry_delay(attempt: u32, random: u64) -> Duration {
    let doublings = attempt.saturating_sub(1);
    let ceiling_ms = 1u64
        .checked_shl(doublings)
        .and_then(|factor| RETRY_BASE_MS.checked_mul(factor))
        .map_or(RETRY_CAP_MS, |ms| ms.min(RETRY_CAP_MS));
    Duration::from_millis(random % (ceiling_ms + 1))
}

fn signed_payload_mac(secret: &WebhookSecret, timestamp_text: &str, body: &[u8]) -> HmacSha256 {
    let mut mac = secret.mac();
    mac.update(timestamp_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

struct ParsedHeader<'a> {
    timestamp: i64,
    /// The digits as sent: they, not a re-formatting of the number, were signed.
    timestamp_text: &'a str,
    signatures: Vec<[u8; 32]>,
}

impl<'a> ParsedHeader<'a> {
    fn parse(header: &'a str) -> Result<ParsedHeader<'a>, MalformedHeader> {
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for entry in header.split(',') {
            let (key, value) = entry
                .trim()
                .split_once('=')
                .ok_or(MalformedHeader::NotKeyValue)?;
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(MalformedHeader::DuplicateTimestamp);
                    }
                    timestamp = Some((parse_timestamp(value)?, value));
                }
                "v1" => signatures.push(decode_signature(value)?),
                _ => {}
            }
        }
        let (timestamp, timestamp_text) = timestamp.ok_or(MalformedHeader::MissingTimestamp)?;
        if signatures.is_empty() {
            return Err(MalformedHeader::MissingSignature);
        }
        Ok(ParsedHeader {
            timestamp,
            timestamp_text,
            signatures,
        })
    }
}

fn parse_timestamp(text: &str) -> Result<i64, MalformedHeader> {
    if text.is_empty()
        || text.len() > TIMESTAMP_MAX_DIGITS
        || !text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(MalformedHeader::InvalidTimestamp);
    }
    text.parse().map_err(|_| MalformedHeader::InvalidTimestamp)
}

fn decode_signature(text: &str) -> Result<[u8; 32], MalformedHeader> {
    if text.len() != SIGNATURE_HEX_LEN {
        return Err(MalformedHeader::InvalidSignature);
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        let (Some(high), Some(low)) = (hex_digit(pair[0]), hex_digit(pair[1])) else {
            return Err(MalformedHeader::InvalidSignature);
        };
        *byte = (high << 4) | low;
    }
    Ok(bytes)
}

/// Lowercase only: with one spelling per value, no altered header can still verify.
fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// The longest accepted webhook URL.
pub const MAX_URL_LEN: usize = 2048;

/// Why a webhook URL is refused. Never quotes the URL: it may hold tokens.
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
    #[error("plain http:// is only allowed to loopback hosts; use https://")]
    InsecureHttp,
    #[error("only https:// URLs are supported (http:// for loopback hosts)")]
    UnsupportedScheme,
}

/// Parses a webhook URL and applies the rules: `https` anywhere, plain `http` only to a
/// loopback host (`localhost`, `127.0.0.0/8`, `[::1]`: local receivers in development),
/// no credentials, at most [`MAX_URL_LEN`] characters.
pub fn check_url(url: &str) -> Result<Uri, UrlError> {
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
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => Ok(uri),
        Some(scheme) if scheme.eq_ignore_ascii_case("http") && is_loopback(host) => Ok(uri),
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => Err(UrlError::InsecureHttp),
        _ => Err(UrlError::UnsupportedScheme),
    }
}

/// `localhost` or a loopback address literal (`127.0.0.0/8`, `[::1]`).
fn is_loopback(host: &str) -> bool {
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.eq_ignore_ascii_case("localhost")
        || literal.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use chrono::{TimeDelta, TimeZone};
    use proptest::prelude::*;

    fn secret(byte: u8) -> WebhookSecret {
        WebhookSecret::from_random_bytes([byte; 32])
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).single().unwrap()
    }

    const T0: i64 = 1_794_312_000;

    #[test]
    fn a_generated_secret_is_prefixed_url_safe_base64_of_43_characters() {
        let secret = WebhookSecret::from_random_bytes([0xfb; 32]);
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(text.len(), 6 + 43);
        assert!(!text.contains(['+', '/', '=']));
        assert!(WebhookSecret::parse(text).is_ok());
    }

    #[test]
    fn parsing_rejects_each_broken_rule_with_its_own_error() -> Result<(), String> {
        let good_body = "A".repeat(43);
        let cases: Vec<(String, Result<(), SecretError>)> = vec![
            (format!("whsec_{good_body}"), Ok(())),
            (format!("whsec_{}", "a".repeat(256)), Ok(())),
            (good_body.clone(), Err(SecretError::MissingPrefix)),
            (
                format!("WHSEC_{good_body}"),
                Err(SecretError::MissingPrefix),
            ),
            (
                format!("whsec_{}", "A".repeat(42)),
                Err(SecretError::TooShort { len: 42, min: 43 }),
            ),
            (
                format!("whsec_{}", "a".repeat(257)),
                Err(SecretError::TooLong { len: 257, max: 256 }),
            ),
            (
                format!("whsec_AB+{good_body}"),
                Err(SecretError::InvalidCharacter { position: 8 }),
            ),
            (
                format!("whsec_{good_body}="),
                Err(SecretError::InvalidCharacter { position: 49 }),
            ),
        ];
        for (text, expected) in cases {
            let got = WebhookSecret::parse(&text).map(|_| ());
            if got != expected {
                return Err(format!("{text}: expected {expected:?}, got {got:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn parse_errors_never_quote_the_secret() {
        let text = format!("whsec_{}!", "S3cr3t".repeat(8));
        let err = WebhookSecret::parse(&text).unwrap_err();
        assert!(!err.to_string().contains("S3cr3t"), "{err}");
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let secret = secret(42);
        let body = &secret.expose()[6..];
        for shown in [format!("{secret:?}"), format!("{secret}")] {
            assert!(shown.contains("REDACTED"), "{shown}");
            assert!(!shown.contains(body), "{shown}");
        }
    }

    #[test]
    fn serde_round_trips_the_secret_as_a_plain_string_and_validates_it() {
        let secret = secret(9);
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, format!("\"{}\"", secret.expose()));
        let back: WebhookSecret = serde_json::from_str(&json).unwrap();
        assert_eq!(back.expose(), secret.expose());
        assert!(serde_json::from_str::<WebhookSecret>("\"whsec_short\"").is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_keyed_by_the_whole_secret_string_over_t_dot_body() {
        // The expected value comes from Python's stdlib:
        // hmac.new(secret.encode(), b"1794312000." + body, hashlib.sha256).hexdigest()
        let secret =
            WebhookSecret::parse("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        let header = sign(&secret, at(T0), br#"{"id":"a1"}"#);
        assert_eq!(
            header,
            "t=1794312000,v1=8eba9f31c080c05641598040f55069159979ae328ee22f94f1b36d98ceecb0e3"
        );
    }

    #[test]
    fn a_fresh_signature_verifies() {
        let secret = secret(1);
        let header = sign(&secret, at(T0), b"hello");
        assert_eq!(
            verify(&secret, &header, b"hello", at(T0 + 300), DEFAULT_TOLERANCE),
            Ok(())
        );
        assert_eq!(
            verify(&secret, &header, b"hello", at(T0 - 300), DEFAULT_TOLERANCE),
            Ok(())
        );
    }

    #[test]
    fn timestamps_beyond_the_tolerance_either_way_are_rejected() {
        let secret = secret(1);
        let header = sign(&secret, at(T0), b"hello");
        for now in [at(T0 + 301), at(T0 - 301)] {
            assert_eq!(
                verify(&secret, &header, b"hello", now, DEFAULT_TOLERANCE),
                Err(SignatureError::TimestampOutsideTolerance {
                    skew_seconds: 301,
                    tolerance_seconds: 300
                })
            );
        }
    }

    #[test]
    fn another_secret_or_body_or_timestamp_does_not_match() {
        let secret = secret(1);
        let header = sign(&secret, at(T0), b"hello");
        let now = at(T0);
        assert_eq!(
            verify(&self::secret(2), &header, b"hello", now, DEFAULT_TOLERANCE),
            Err(SignatureError::NoMatchingSignature)
        );
        assert_eq!(
            verify(&secret, &header, b"hellp", now, DEFAULT_TOLERANCE),
            Err(SignatureError::NoMatchingSignature)
        );
        let moved = header.replacen(&format!("t={T0}"), &format!("t={}", T0 + 1), 1);
        assert_eq!(
            verify(&secret, &moved, b"hello", now, DEFAULT_TOLERANCE),
            Err(SignatureError::NoMatchingSignature)
        );
    }

    #[test]
    fn during_rotation_either_secret_verifies_a_doubly_signed_request() {
        let (old, new) = (secret(1), secret(2));
        let header = sign_rotating(&[&old, &new], at(T0), b"x");
        assert_eq!(header.matches(",v1=").count(), 2);
        for secret in [&old, &new] {
            assert_eq!(
                verify(secret, &header, b"x", at(T0), DEFAULT_TOLERANCE),
                Ok(())
            );
        }
        assert_eq!(
            verify(&secret(3), &header, b"x", at(T0), DEFAULT_TOLERANCE),
            Err(SignatureError::NoMatchingSignature)
        );
    }

    #[test]
    fn a_captured_request_replayed_after_the_window_is_refused_and_cannot_be_restamped() {
        let secret = secret(7);
        let body = br#"{"type":"budget.threshold_crossed"}"#;
        let captured = sign(&secret, at(T0), body);
        // Within the window the genuine request verifies (the receiver dedupes by id) ...
        assert_eq!(
            verify(&secret, &captured, body, at(T0 + 299), DEFAULT_TOLERANCE),
            Ok(())
        );
        // ... past it, the same bytes are refused for their age, before any MAC work.
        let later = at(T0 + 3600);
        assert_eq!(
            verify(&secret, &captured, body, later, DEFAULT_TOLERANCE),
            Err(SignatureError::TimestampOutsideTolerance {
                skew_seconds: 3600,
                tolerance_seconds: 300
            })
        );
        // Swapping in a fresh `t` (or a zero-padded spelling of the old one) breaks the MAC.
        let (_, v1) = captured.split_once(',').unwrap();
        for restamped in [format!("t={},{v1}", T0 + 3600), format!("t=0{T0},{v1}")] {
            let now = if restamped.starts_with("t=0") {
                at(T0)
            } else {
                later
            };
            assert_eq!(
                verify(&secret, &restamped, body, now, DEFAULT_TOLERANCE),
                Err(SignatureError::NoMatchingSignature),
                "{restamped}"
            );
        }
    }

    #[test]
    fn timestamps_far_in_the_future_or_past_are_refused_without_overflow() {
        let secret = secret(1);
        for t in [0, 1, T0 + 301, T0 + 86_400 * 365, i64::MAX] {
            let header = format!("t={t},v1={}", "00".repeat(32));
            assert!(
                matches!(
                    verify(&secret, &header, b"x", at(T0), DEFAULT_TOLERANCE),
                    Err(SignatureError::TimestampOutsideTolerance { .. })
                ),
                "t={t}"
            );
        }
        // A signer whose clock runs ahead by more than the tolerance is refused too.
        let ahead = sign(&secret, at(T0 + 301), b"x");
        assert!(matches!(
            verify(&secret, &ahead, b"x", at(T0), DEFAULT_TOLERANCE),
            Err(SignatureError::TimestampOutsideTolerance {
                skew_seconds: 301,
                ..
            })
        ));
    }

    #[test]
    fn a_tampered_body_is_refused_however_it_was_changed() {
        let secret = secret(3);
        let body = br#"{"alert":{"spent":"80.00"}}"#;
        let header = sign(&secret, at(T0), body);
        let tampered: [&[u8]; 5] = [
            br#"{"alert":{"spent":"8.00"}}"#,
            br#"{"alert":{"spent":"80.00"}} "#,
            br#"{"alert": {"spent":"80.00"}}"#,
            &body[..body.len() - 1],
            b"",
        ];
        for candidate in tampered {
            assert_eq!(
                verify(&secret, &header, candidate, at(T0), DEFAULT_TOLERANCE),
                Err(SignatureError::NoMatchingSignature),
                "{}",
                String::from_utf8_lossy(candidate)
            );
        }
    }

    #[test]
    fn during_rotation_one_matching_v1_among_several_is_enough_in_any_order() {
        let (old, new) = (secret(1), secret(2));
        let body = b"rotating";
        let t = at(T0);
        let old_only = sign(&old, t, body);
        let new_only = sign(&new, t, body);
        let (_, old_v1) = old_only.split_once(',').unwrap();
        let (_, new_v1) = new_only.split_once(',').unwrap();
        let forged = format!("v1={}", "ab".repeat(32));
        // New first, old first, and with a forged entry in between: a receiver holding
        // either secret accepts; one holding neither does not.
        for header in [
            format!("t={T0},{new_v1},{old_v1}"),
            format!("t={T0},{old_v1},{forged},{new_v1}"),
            sign_rotating(&[&new, &old], t, body),
        ] {
            for secret in [&old, &new] {
                assert_eq!(
                    verify(secret, &header, body, t, DEFAULT_TOLERANCE),
                    Ok(()),
                    "{header}"
                );
            }
            assert_eq!(
                verify(&secret(9), &header, body, t, DEFAULT_TOLERANCE),
                Err(SignatureError::NoMatchingSignature)
            );
        }
        // A forged entry next to the old secret's does not let the new secret's holder in.
        let only_old = format!("t={T0},{forged},{old_v1}");
        assert_eq!(
            verify(&new, &only_old, body, t, DEFAULT_TOLERANCE),
            Err(SignatureError::NoMatchingSignature)
        );
    }

    #[test]
    fn whitespace_and_unknown_keys_are_accepted_but_uppercase_hex_is_not() {
        let secret = secret(5);
        let header = sign(&secret, at(T0), b"b");
        let (t, v1) = header.split_once(',').unwrap();
        let relaxed = format!(" v0=legacy , {t} ,v2=future, {v1} ");
        assert_eq!(
            verify(&secret, &relaxed, b"b", at(T0), DEFAULT_TOLERANCE),
            Ok(())
        );
        let shouting = format!("{t},v1={}", v1[3..].to_uppercase());
        assert_eq!(
            verify(&secret, &shouting, b"b", at(T0), DEFAULT_TOLERANCE),
            Err(SignatureError::MalformedHeader(
                MalformedHeader::InvalidSignature
            ))
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        let sig = format!("v1={}", "ab".repeat(32));
        let cases = [
            (String::new(), MalformedHeader::NotKeyValue),
            (sig.clone(), MalformedHeader::MissingTimestamp),
            (
                format!("t=1,t=2,{sig}"),
                MalformedHeader::DuplicateTimestamp,
            ),
            (format!("t=,{sig}"), MalformedHeader::InvalidTimestamp),
            (format!("t=-5,{sig}"), MalformedHeader::InvalidTimestamp),
            (format!("t=+5,{sig}"), MalformedHeader::InvalidTimestamp),
            (format!("t=1e9,{sig}"), MalformedHeader::InvalidTimestamp),
            (
                format!("t=99999999999999999999,{sig}"),
                MalformedHeader::InvalidTimestamp,
            ),
            ("t=1".to_owned(), MalformedHeader::MissingSignature),
            ("t=1,v1=abc".to_owned(), MalformedHeader::InvalidSignature),
            (
                format!("t=1,v1={}", "zz".repeat(32)),
                MalformedHeader::InvalidSignature,
            ),
            (format!("t=1;{sig}"), MalformedHeader::InvalidTimestamp),
            (format!("t=1,{sig},garbage"), MalformedHeader::NotKeyValue),
        ];
        for (header, expected) in cases {
            assert_eq!(
                verify(&secret(1), &header, b"", at(1), DEFAULT_TOLERANCE),
                Err(SignatureError::MalformedHeader(expected)),
                "{header:?}"
            );
        }
    }

    #[test]
    fn retry_delays_double_from_30_seconds_and_stop_growing_at_an_hour() {
        // With `random` equal to the ceiling, full jitter returns the ceiling itself.
        let maxima: Vec<u64> = (1..=MAX_ATTEMPTS)
            .map(|attempt| {
                let ceiling = (30_000u64 << (attempt - 1)).min(3_600_000);
                retry_delay(attempt, ceiling).as_millis() as u64
            })
            .collect();
        assert_eq!(
            maxima,
            [
                30_000, 60_000, 120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000,
                3_600_000, 3_600_000
            ]
        );
    }

    #[test]
    fn retry_delay_has_full_jitter_down_to_zero() {
        assert_eq!(retry_delay(1, 0), Duration::ZERO);
        assert_eq!(retry_delay(1, 30_001), Duration::ZERO);
        assert_eq!(retry_delay(1, 12_345), Duration::from_millis(12_345));
    }

    #[test]
    fn retry_delay_never_overflows_for_huge_attempt_numbers() {
        assert_eq!(retry_delay(0, 30_000), Duration::from_secs(30));
        for attempt in [63, 64, 65, 1000, u32::MAX] {
            assert_eq!(retry_delay(attempt, 3_600_000), Duration::from_secs(3600));
        }
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(body in proptest::collection::vec(any::<u8>(), 0..2048),
                                        key in any::<[u8; 32]>(),
                                        t in 0i64..4_000_000_000,
                                        skew in -300i64..=300) {
            let secret = WebhookSecret::from_random_bytes(key);
            let header = sign(&secret, at(t), &body);
            prop_assert_eq!(
                verify(&secret, &header, &body, at(t) + TimeDelta::seconds(skew), DEFAULT_TOLERANCE),
                Ok(())
            );
        }

        #[test]
        fn any_single_flipped_body_byte_fails(body in proptest::collection::vec(any::<u8>(), 1..512),
                                              key in any::<[u8; 32]>(),
                                              index in any::<prop::sample::Index>(),
                                              flip in 1u8..=255) {
            let secret = WebhookSecret::from_random_bytes(key);
            let header = sign(&secret, at(T0), &body);
            let mut tampered = body.clone();
            tampered[index.index(body.len())] ^= flip;
            prop_assert_eq!(
                verify(&secret, &header, &tampered, at(T0), DEFAULT_TOLERANCE),
                Err(SignatureError::NoMatchingSignature)
            );
        }

        #[test]
        fn any_single_flipped_header_byte_fails(key in any::<[u8; 32]>(),
                                                index in any::<prop::sample::Index>(),
                                                flip in 1u8..=255) {
            let secret = WebhookSecret::from_random_bytes(key);
            let header = sign(&secret, at(T0), b"body");
            let mut tampered = header.clone().into_bytes();
            let position = index.index(tampered.len());
            tampered[position] ^= flip;
            // A flip may produce invalid UTF-8, which no header parser would hand over.
            if let Ok(tampered) = String::from_utf8(tampered) {
                prop_assert!(verify(&secret, &tampered, b"body", at(T0), DEFAULT_TOLERANCE).is_err());
            }
        }
    }

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
            ("http://LOCALHOST/", Ok(())),
            ("http://example.com/hook", Err(UrlError::InsecureHttp)),
            ("http://10.0.0.1/hook", Err(UrlError::InsecureHttp)),
            ("http://127.0.0.1.nip.io/hook", Err(UrlError::InsecureHttp)),
            ("http://localhost.example.com/", Err(UrlError::InsecureHttp)),
            ("http://[::2]/hook", Err(UrlError::InsecureHttp)),
            ("https://user:pw@example.com/", Err(UrlError::Credentials)),
            ("http://user@localhost/", Err(UrlError::Credentials)),
            ("ftp://example.com/", Err(UrlError::UnsupportedScheme)),
            ("hooks.example.com/tollgate", Err(UrlError::Unparsable)),
            ("/relative/path", Err(UrlError::Unparsable)),
            ("not a url", Err(UrlError::Unparsable)),
            ("https://exa mple.com/", Err(UrlError::Unparsable)),
            ("", Err(UrlError::Unparsable)),
        ];
        for (url, expected) in cases {
            assert_eq!(check_url(url).map(|_| ()), expected, "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(check_url(&long).map(|_| ()), Err(UrlError::TooLong));
    }
}
