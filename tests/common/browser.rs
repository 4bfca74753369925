//! A real headless Chromium for the board's tests, driven through chromedriver over the W3C
//! WebDriver HTTP protocol with the reqwest client the tests already use: no DevTools crate,
//! no extra dependency.
//!
//! Debian's `chromium` and `chromium-driver` packages (`.ci/run` installs them). When they
//! are missing, [`Browser::start`] returns `None` with a message saying so, and the test
//! skips, unless the environment variable `CI` is set: under CI a missing browser fails.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The desktop viewport and a phone's (390 px wide).
pub const DESKTOP: (u32, u32) = (1400, 900);
pub const PHONE: (u32, u32) = (390, 844);

pub struct Browser {
    driver: Child,
    /// The TMPDIR of chromedriver and Chromium: their scratch directories (a killed Chromium
    /// leaves its `scoped_dir`s behind) go with the browser instead of piling up in /tmp.
    _scratch: tempfile::TempDir,
    base: String,
    session: String,
    http: reqwest::Client,
}

fn which(name: &str, default: &str) -> Option<PathBuf> {
    let p = PathBuf::from(default);
    if p.exists() {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.exists())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a `size` viewport; `None`
    /// (after saying why) when they are not installed and `CI` is unset.
    pub async fn start(size: (u32, u32)) -> Option<Browser> {
        let (Some(chromium), Some(driver)) = (
            which("chromium", CHROMIUM),
            which("chromedriver", CHROMEDRIVER),
        ) else {
            let msg = "chromium and chromedriver are not installed \
                       (Debian: apt-get install chromium chromium-driver; .ci/run does)";
            assert!(
                std::env::var_os("CI").is_none(),
                "{msg}; CI is set, so this fails"
            );
            eprintln!("SKIPPED: {msg}");
            return None;
        };
        let port = free_port();
        let scratch = tempfile::tempdir().expect("a scratch directory for the browser");
        // A process group of its own, Chromium included, so that dropping the browser (a test
        // that panicked before `quit`) ends them all rather than orphaning Chromium.
        let child = Command::new(driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .env("TMPDIR", scratch.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        orch::http_client::install_crypto();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            driver: child,
            _scratch: scratch,
            base,
            session: String::new(),
            http,
        };
        browser.wait_ready().await;
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--hide-scrollbars",
                         "--disable-crash-reporter", "--disable-breakpad",
                         // This machine has no network: without these Chromium keeps
                         // dialling Google's services and logs refused connections.
                         "--disable-background-networking", "--disable-component-update",
                         "--disable-sync", "--disable-quic", "--no-first-run",
                         format!("--window-size={},{}", size.0, size.1)],
            }
        }}});
        let v = browser.send("POST", "/session", Some(caps)).await;
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        browser.resize(size).await;
        Some(browser)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self
                .http
                .get(format!("{}/status", self.base))
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if let Some(r) = ready {
                let v: Value = r.json().await.unwrap_or_default();
                if v["value"]["ready"] == json!(true) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One WebDriver command; returns its `value`, panicking on a WebDriver error.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let resp = req.send().await.expect("chromedriver answers");
        let status = resp.status();
        let v: Value = resp.json().await.expect("chromedriver sends JSON");
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn resize(&self, (width, height): (u32, u32)) {
        self.send(
            "POST",
            &self.session_path("/window/rect"),
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    pub async fn goto(&self, url: &str) {
        self.send(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.send(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Polls `script` until it returns `true` or `timeout` passes; returns whether it did.
    pub async fn wait_for(&self, script: &str, args: Value, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.eval(script, args.clone()).await == json!(true) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the viewport's page as `target/screenshots/<name>.png`; returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let v = self
            .send("GET", &self.session_path("/screenshot"), None)
            .await;
        let png = decode_base64(v.as_str().expect("screenshot is base64"));
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn quit(mut self) {
        let path = self.session_path("");
        self.send("DELETE", &path, None).await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.driver.id()) {
            // SAFETY: a plain signal to the process group this helper started.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `target/screenshots`, under `CARGO_TARGET_DIR` when it is set.
pub fn screenshots_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("screenshots")
}

fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}
