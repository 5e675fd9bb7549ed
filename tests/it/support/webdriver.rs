//! A real browser for tests: Debian's `chromedriver` on a free port driving headless
//! `chromium` (both installed by scripts/setup.sh), through the few W3C WebDriver commands the
//! tests need. The driver runs in its own process group, which is killed with the browser in it
//! when the `Browser` is dropped, also when a test fails. The operations page's benchmark
//! (benches/ui.rs) uses it too, so it stands alone.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// W3C's name for the key under which an element reference comes.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        if let Some(group) = rustix::process::Pid::from_raw(self.driver.id() as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a `width` x `height` window.
    pub async fn start(width: u32, height: u32) -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "the browser tests need Debian's chromium and chromium-driver: run scripts/setup.sh"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("chromedriver starts")
        };
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser
            .http
            .get(format!("{}/status", browser.base))
            .send()
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // What this machine's closed network needs (no background fetches), and what running
        // as root in a container needs (no sandbox, no /dev/shm reliance).
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
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let session = browser
            .command(
                reqwest::Method::POST,
                "/session",
                json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                    "goog:loggingPrefs": {"browser": "ALL"},
                }}}),
            )
            .await;
        let id = session["sessionId"].as_str().expect("a session id");
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.base));
        let request = if body.is_null() {
            request
        } else {
            request.json(&body)
        };
        let response = request.send().await.expect("chromedriver answers");
        let status = response.status();
        let answer: Value = response.json().await.expect("chromedriver answers JSON");
        assert!(status.is_success(), "WebDriver {path}: {status} {answer}");
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await;
    }

    /// Runs `body` (a function body: `return ...`) in the page with `args`; its value.
    pub async fn script(&self, body: &str, args: Vec<Value>) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": body, "args": args}),
        )
        .await
    }

    /// Runs `body` until it returns something other than `null` or `false`, at most `timeout`;
    /// that value, or the elapsed time and last value in the panic.
    pub async fn wait_for(&self, what: &str, body: &str, timeout: Duration) -> Value {
        let started = Instant::now();
        loop {
            let value = self.script(body, Vec::new()).await;
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            assert!(
                started.elapsed() < timeout,
                "{what}: not within {timeout:?} (last: {value})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Types `text` into the element `css` selects, as a user would.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
    }

    /// Makes the window as tall as the page, so that a screenshot shows all of it.
    pub async fn fit_window_to_page(&self) {
        let size = self
            .script(
                "return [window.outerWidth, document.documentElement.scrollHeight \
                 + window.outerHeight - window.innerHeight];",
                Vec::new(),
            )
            .await;
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            json!({"width": size[0], "height": size[1]}),
        )
        .await;
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 text"))
            .expect("a base64 PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// The console's messages since the last call (chromedriver's log endpoint), as
    /// (level, message).
    pub async fn console(&self) -> Vec<(String, String)> {
        let entries = self
            .command(reqwest::Method::POST, "/se/log", json!({"type": "browser"}))
            .await;
        entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| {
                        (
                            entry["level"].as_str().unwrap_or("").to_owned(),
                            entry["message"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
