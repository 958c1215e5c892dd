//! `GET /v1/dashboard` and its script and style sheet: served without a key, with a
//! policy that keeps the page to this origin, and written so that the policy holds (no
//! inline script or style, no markup built from strings). Chromium renders the page
//! against the local stack in the workspace's `tests/tests/dashboard.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail by panicking

mod common;

use common::{ACME_KEY, harness};
use tollgate_usage_api::dashboard::{Asset, CONTENT_SECURITY_POLICY};

#[tokio::test]
async fn the_page_its_script_and_style_are_served_without_a_key_under_a_strict_policy() {
    let h = harness("dashboard-assets").await;
    for (path, media) in [
        ("/v1/dashboard", "text/html"),
        ("/v1/dashboard/app.js", "text/javascript"),
        ("/v1/dashboard/app.css", "text/css"),
    ] {
        for key in [None, Some(ACME_KEY), Some("tg_not_a_key")] {
            let reply = h.call("GET", path, key, None).await;
            reply.expect(200);
            let header = |name: &str| reply.headers[name].to_str().unwrap().to_owned();
            assert!(header("content-type").starts_with(media), "{path}");
            assert_eq!(header("content-security-policy"), CONTENT_SECURITY_POLICY);
            assert_eq!(header("x-content-type-options"), "nosniff");
            assert_eq!(header("x-frame-options"), "DENY");
            assert_eq!(header("referrer-policy"), "no-referrer");
        }
    }
    // A key in the query string is refused, not quietly taken.
    h.call("GET", "/v1/dashboard?key=tg_x", None, None)
        .await
        .expect_error(400, "unknown_query_parameter");
}

#[test]
fn the_policy_allows_nothing_from_elsewhere_and_nothing_inline() {
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'none'",
    ] {
        assert!(CONTENT_SECURITY_POLICY.contains(directive), "{directive}");
    }
    assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
}

#[test]
fn the_page_needs_no_inline_code_and_the_script_builds_no_markup_from_strings() {
    let (page, _) = Asset::Page.content();
    let (script, _) = Asset::Script.content();
    assert!(page.contains(r#"<script src="dashboard/app.js" defer></script>"#));
    assert!(page.contains(r#"<link rel="stylesheet" href="dashboard/app.css">"#));
    assert_eq!(page.matches("<script").count(), 1, "no inline script");
    for inline in [
        " style=",
        " onclick=",
        " onload=",
        "<style",
        "javascript:",
        "http://",
        "https://",
    ] {
        assert!(!page.contains(inline), "the page holds {inline:?}");
    }
    for unsafe_call in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ] {
        assert!(
            !script.contains(unsafe_call),
            "the script calls {unsafe_call}"
        );
    }
    // It talks to this API only, by relative paths, and keeps the key out of the URL.
    // (The SVG namespace is a name, not an address.)
    let addresses = script.replace("\"http://www.w3.org/2000/svg\"", "");
    assert!(!addresses.contains("http://") && !addresses.contains("https://"));
    assert!(script.contains("history.replaceState"));
    assert!(script.contains("sessionStorage"));
    assert!(!script.contains("localStorage"));
}
