//! The webhook client against a real receiver on loopback that verifies every signature
//! with `tollgate_core::webhook::verify`, and the documented Python snippet against
//! signatures made here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use hyper::StatusCode;
use tokio::net::TcpListener;
use tollgate_budget::webhook::{DeliveryError, USER_AGENT_VALUE, UrlError, WebhookClient};
use tollgate_core::webhook::{SignatureError, WebhookSecret, sign};
use tollgate_devstack::webhook::WebhookReceiver;

const BODY: &[u8] = br#"{"id":"2026-11.threshold-80","tenant":"acme","severity":"warning"}"#;

/// A verifying receiver answering `status`.
async fn receiver(status: u16) -> WebhookReceiver {
    let receiver = WebhookReceiver::start(secret()).await.unwrap();
    receiver.answer_with(StatusCode::from_u16(status).unwrap());
    receiver
}

fn secret() -> WebhookSecret {
    WebhookSecret::from_random_bytes(*b"tollgate-webhook-test-secret-32b")
}

fn client() -> WebhookClient {
    WebhookClient::new().expect("system root certificates")
}

#[tokio::test]
async fn a_2xx_answer_is_a_delivery_the_receiver_verified() {
    let receiver = receiver(204).await;

    let delivered = client()
        .deliver(
            &receiver.url("/hooks/tollgate"),
            &secret(),
            "2026-11.threshold-80",
            BODY,
            Utc::now(),
        )
        .await
        .unwrap();

    assert_eq!(delivered.status, StatusCode::NO_CONTENT);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.verified, Ok(()));
    assert_eq!(request.path, "/hooks/tollgate");
    assert_eq!(request.body.as_ref(), BODY);
    assert_eq!(request.webhook_id.as_deref(), Some("2026-11.threshold-80"));
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(request.user_agent.as_deref(), Some(USER_AGENT_VALUE));
    assert!(USER_AGENT_VALUE.starts_with("tollgate-webhooks/"));
}

#[tokio::test]
async fn a_receiver_with_another_secret_refuses_and_that_is_not_retried() {
    let receiver = receiver(200).await;
    let other = WebhookSecret::from_random_bytes([1; 32]);

    let err = client()
        .deliver(&receiver.url("/"), &other, "a", BODY, Utc::now())
        .await
        .unwrap_err();

    assert_eq!(
        receiver.received()[0].verified,
        Err(SignatureError::NoMatchingSignature)
    );
    assert!(
        matches!(err, DeliveryError::Status(StatusCode::UNAUTHORIZED)),
        "{err:?}"
    );
    assert!(!err.retryable());
}

#[tokio::test]
async fn a_500_answer_is_retryable() {
    let receiver = receiver(500).await;

    let err = client()
        .deliver(&receiver.url("/"), &secret(), "a", BODY, Utc::now())
        .await
        .unwrap_err();

    assert!(matches!(
        err,
        DeliveryError::Status(StatusCode::INTERNAL_SERVER_ERROR)
    ));
    assert!(err.retryable());
    assert_eq!(err.reason(), "HTTP 500");
    assert_eq!(receiver.received()[0].verified, Ok(()));
}

#[tokio::test]
async fn a_429_answer_is_retryable() {
    let receiver = receiver(429).await;

    let err = client()
        .deliver(&receiver.url("/"), &secret(), "a", BODY, Utc::now())
        .await
        .unwrap_err();

    assert!(err.retryable(), "{err:?}");
}

#[tokio::test]
async fn a_400_answer_is_reported_and_not_retryable() {
    let receiver = receiver(400).await;

    let err = client()
        .deliver(&receiver.url("/"), &secret(), "a", BODY, Utc::now())
        .await
        .unwrap_err();

    assert!(matches!(
        err,
        DeliveryError::Status(StatusCode::BAD_REQUEST)
    ));
    assert!(!err.retryable());
    assert_eq!(err.reason(), "HTTP 400");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = receiver(307).await;

    let err = client()
        .deliver(&receiver.url("/hook"), &secret(), "a", BODY, Utc::now())
        .await
        .unwrap_err();

    assert!(!err.retryable());
    assert_eq!(err.reason(), "HTTP 307 (redirects are not followed)");
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/hook"]);
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_a_retryable_timeout() {
    let receiver = receiver(200).await;
    receiver.set_delay(Duration::from_secs(5));
    let client = client().with_timeout(Duration::from_millis(300));

    let started = std::time::Instant::now();
    let err = client
        .deliver(&receiver.url("/"), &secret(), "a", BODY, Utc::now())
        .await
        .unwrap_err();

    assert!(matches!(err, DeliveryError::Timeout(_)), "{err:?}");
    assert!(err.retryable());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn nobody_listening_is_a_retryable_connect_error() {
    let port = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap().port()
    };

    let err = client()
        .deliver(
            &format!("http://127.0.0.1:{port}/"),
            &secret(),
            "a",
            BODY,
            Utc::now(),
        )
        .await
        .unwrap_err();

    assert!(matches!(err, DeliveryError::Connect(_)), "{err:?}");
    assert!(err.retryable());
    assert!(
        err.reason().starts_with("connect failed: "),
        "{}",
        err.reason()
    );
    assert!(
        !err.reason().contains(&port.to_string()),
        "{}",
        err.reason()
    );
}

#[tokio::test]
async fn plain_http_to_a_non_loopback_host_is_refused_before_any_request() {
    let secret = secret();
    for url in [
        "http://hooks.example.com/tollgate",
        "http://10.1.2.3:8080/hook",
        "http://127.0.0.1.nip.io/hook",
    ] {
        let err = client()
            .deliver(url, &secret, "a", BODY, Utc::now())
            .await
            .unwrap_err();

        assert!(
            matches!(err, DeliveryError::Url(UrlError::InsecureHttp)),
            "{url}: {err:?}"
        );
        assert!(!err.retryable());
        assert!(err.reason().contains("loopback"), "{}", err.reason());
        assert!(!err.reason().contains(secret.expose()));
    }
}

#[tokio::test]
async fn a_webhook_id_that_cannot_be_a_header_is_refused() {
    let err = client()
        .deliver(
            "https://hooks.example.com/",
            &secret(),
            "a\nb",
            BODY,
            Utc::now(),
        )
        .await
        .unwrap_err();

    assert!(matches!(err, DeliveryError::InvalidWebhookId), "{err:?}");
    assert!(!err.retryable());
}

/// Runs `docs/snippets/verify_webhook.py` on one request; `None` without python3.
fn python_verifies(secret: &WebhookSecret, header: &str, body: &[u8]) -> Option<bool> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/snippets/verify_webhook.py");
    let mut child = match Command::new("python3")
        .arg(&script)
        .arg(header)
        .env("TOLLGATE_WEBHOOK_SECRET", secret.expose())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => panic!("running python3 {}: {err}", script.display()),
    };
    child.stdin.take().unwrap().write_all(body).unwrap();
    let status = child.wait().unwrap();
    match status.code() {
        Some(0) => Some(true),
        Some(1) => Some(false),
        other => panic!("{} exited with {other:?}", script.display()),
    }
}

#[test]
fn the_documented_python_snippet_verifies_real_signatures_and_rejects_tampering() {
    let secret = secret();
    let now: DateTime<Utc> = Utc::now();
    let header = sign(&secret, now, BODY);

    let Some(genuine) = python_verifies(&secret, &header, BODY) else {
        eprintln!(
            "SKIPPED: python3 is not installed, so docs/snippets/verify_webhook.py was not checked"
        );
        return;
    };
    assert!(
        genuine,
        "the snippet rejected a genuine signature: {header}"
    );

    let mut tampered = BODY.to_vec();
    tampered[10] ^= 1;
    assert_eq!(python_verifies(&secret, &header, &tampered), Some(false));

    let other = WebhookSecret::from_random_bytes([3; 32]);
    assert_eq!(python_verifies(&other, &header, BODY), Some(false));

    let stale = sign(&secret, now - TimeDelta::minutes(10), BODY);
    assert_eq!(python_verifies(&secret, &stale, BODY), Some(false));

    let rotating = tollgate_core::webhook::sign_rotating(&[&other, &secret], now, BODY);
    assert_eq!(python_verifies(&secret, &rotating, BODY), Some(true));
}

#[test]
fn the_python_in_the_docs_is_the_tested_snippet() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let docs = std::fs::read_to_string(root.join("docs/webhooks.md")).unwrap();
    let snippet = std::fs::read_to_string(root.join("docs/snippets/verify_webhook.py")).unwrap();
    let (_, after) = docs.split_once("### Python").unwrap();
    let (_, block) = after.split_once("```python\n").unwrap();
    let (block, _) = block.split_once("```").unwrap();

    // Every line shown in the docs appears in the snippet, in the same order.
    let mut snippet_lines = snippet.lines();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            snippet_lines.any(|s| s == line),
            "docs/webhooks.md shows a line docs/snippets/verify_webhook.py lacks (or out of order): {line:?}"
        );
    }
}
