//! A small W3C WebDriver client for ChromeDriver: sessions, navigation, elements by CSS
//! selector, clicks, typing, scripts and screenshots. Blocking, over loopback HTTP/1.1;
//! enough for the dashboard test to read a page the way a person sees it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::http;
use crate::process::Supervised;

/// The key under which WebDriver names an element in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Each WebDriver command's bound (starting a browser is the slowest).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often [`Browser::wait_until`] checks.
const POLL: Duration = Duration::from_millis(100);
/// Sessions started by this process, for their profile directories' names.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

/// A running ChromeDriver; stops (with its browsers) when dropped.
#[derive(Debug)]
pub struct ChromeDriver {
    addr: SocketAddr,
    browser: PathBuf,
    _process: Supervised,
}

impl ChromeDriver {
    pub(crate) fn new(port: u16, process: Supervised, browser: PathBuf) -> Self {
        Self {
            addr: ([127, 0, 0, 1], port).into(),
            browser,
            _process: process,
        }
    }

    /// Starts a headless browser of `width` × `height` CSS pixels with a fresh profile,
    /// offline apart from loopback: no background networking, updates, sync or QUIC.
    ///
    /// # Errors
    ///
    /// When ChromeDriver cannot start the browser.
    pub fn new_session(&self, width: u32, height: u32) -> Result<Browser> {
        let profile = std::env::temp_dir().join(format!(
            "tollgate-chromium-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        ));
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": self.browser,
                        "args": args,
                    },
                },
            },
        });
        let value = command(self.addr, "POST", "/session", Some(&capabilities))?;
        let session = value["sessionId"]
            .as_str()
            .with_context(|| format!("no sessionId in {value}"))?
            .to_owned();
        Ok(Browser {
            addr: self.addr,
            session,
            profile,
        })
    }
}

/// An element of the current page, as WebDriver names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

/// One browser session; ends (the browser quits, its profile is removed) when dropped.
#[derive(Debug)]
pub struct Browser {
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

impl Browser {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        command(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    /// Opens `url` and waits for the page to load.
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.call("POST", "/url", Some(&json!({ "url": url })))
            .map(drop)
    }

    /// The address bar's URL.
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn url(&self) -> Result<String> {
        let value = self.call("GET", "/url", None)?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The page's current markup, as the browser holds it.
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn source(&self) -> Result<String> {
        let value = self.call("GET", "/source", None)?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching the CSS `selector`, if any.
    ///
    /// # Errors
    ///
    /// On any WebDriver error other than "no such element".
    pub fn find(&self, selector: &str) -> Result<Option<Element>> {
        let body = json!({ "using": "css selector", "value": selector });
        match self.call("POST", "/element", Some(&body)) {
            Ok(value) => element(&value).map(Some),
            Err(err) if err.to_string().contains("no such element") => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Every element matching the CSS `selector`, in document order.
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn find_all(&self, selector: &str) -> Result<Vec<Element>> {
        let body = json!({ "using": "css selector", "value": selector });
        let value = self.call("POST", "/elements", Some(&body))?;
        value
            .as_array()
            .with_context(|| format!("not a list of elements: {value}"))?
            .iter()
            .map(element)
            .collect()
    }

    /// Polls `check` until it yields a value or `timeout` passes.
    ///
    /// # Errors
    ///
    /// When `check` fails or the time is up (with `what` in the message).
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self)? {
                return Ok(value);
            }
            if Instant::now() >= deadline {
                bail!("waited {} s for {what}", timeout.as_secs());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for an element matching `selector`.
    ///
    /// # Errors
    ///
    /// When none shows within `timeout`.
    pub fn wait_for(&self, selector: &str, timeout: Duration) -> Result<Element> {
        self.wait_until(selector, timeout, |browser| browser.find(selector))
    }

    /// The element's rendered text, as a person reads it (hidden parts left out).
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn text(&self, element: &Element) -> Result<String> {
        let value = self.call("GET", &format!("/element/{}/text", element.0), None)?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// An attribute of the element, `None` when it has none.
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn attribute(&self, element: &Element, name: &str) -> Result<Option<String>> {
        let value = self.call(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// A DOM property of the element (an input's current `value`, say).
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn property(&self, element: &Element, name: &str) -> Result<Value> {
        self.call(
            "GET",
            &format!("/element/{}/property/{name}", element.0),
            None,
        )
    }

    /// Whether the element is displayed.
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn is_displayed(&self, element: &Element) -> Result<bool> {
        let value = self.call("GET", &format!("/element/{}/displayed", element.0), None)?;
        Ok(value.as_bool().unwrap_or(false))
    }

    /// Clicks the element (scrolled into view first, as a person would).
    ///
    /// # Errors
    ///
    /// On any WebDriver error, such as the element being covered.
    pub fn click(&self, element: &Element) -> Result<()> {
        self.call(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(&json!({})),
        )
        .map(drop)
    }

    /// Empties an input.
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn clear(&self, element: &Element) -> Result<()> {
        self.call(
            "POST",
            &format!("/element/{}/clear", element.0),
            Some(&json!({})),
        )
        .map(drop)
    }

    /// Types `text` into the element.
    ///
    /// # Errors
    ///
    /// On any WebDriver error.
    pub fn type_text(&self, element: &Element, text: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(&json!({ "text": text })),
        )
        .map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns
    /// what it returns.
    ///
    /// # Errors
    ///
    /// When the script throws or WebDriver fails.
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// A PNG of the whole page: the window is made as tall as the document first.
    ///
    /// # Errors
    ///
    /// On any WebDriver error or a reply that is not base64.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let height = self
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight);",
                &[],
            )?
            .as_u64()
            .unwrap_or(1000);
        let rect = self.call("GET", "/window/rect", None)?;
        let width = rect["width"].as_u64().unwrap_or(1280);
        self.call(
            "POST",
            "/window/rect",
            Some(&json!({ "width": width, "height": height.clamp(600, 10_000) + 100 })),
        )?;
        self.execute("window.scrollTo(0, 0);", &[])?;
        let value = self.call("GET", "/screenshot", None)?;
        let encoded = value.as_str().context("the screenshot is not a string")?;
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .context("the screenshot is not base64")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = command(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn element(value: &Value) -> Result<Element> {
    value[ELEMENT_KEY]
        .as_str()
        .map(|id| Element(id.to_owned()))
        .with_context(|| format!("not an element: {value}"))
}

/// Sends one WebDriver command and returns its `value`, or the error WebDriver named.
fn command(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let text = body.map(Value::to_string).unwrap_or_default();
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("Content-Type", "application/json; charset=utf-8")]
    } else {
        &[]
    };
    let reply = http::request(addr, method, path, headers, &text, COMMAND_TIMEOUT)
        .with_context(|| format!("WebDriver {method} {path}"))?;
    let mut json: Value = serde_json::from_str(&reply.body).with_context(|| {
        format!(
            "WebDriver {method} {path} answered {} with no JSON: {}",
            reply.status, reply.body
        )
    })?;
    let value = json["value"].take();
    if reply.status != 200 {
        bail!(
            "WebDriver {method} {path}: {} ({}): {}",
            value["error"].as_str().unwrap_or("unknown error"),
            reply.status,
            value["message"].as_str().unwrap_or_default()
        );
    }
    Ok(value)
}
