//! The dashboard in a real browser: Debian's `chromium`, driven over WebDriver by
//! `chromedriver` (`fantoccini`). Start a run from the form and watch its nodes turn
//! green, open an agent's panel, check the run list, the cost page and phone width; explore
//! a topic and watch tiles and the chart fill, then press Stop; give the token once. When a
//! test fails, a screenshot of each view it visited (and of the page at the failure) is
//! saved under `target/tmp/`. Outside CI, without chromium these tests say why they skip.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};

use super::Server;
use crate::support::Test;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A chain of three agents at 700 ms each, with a price, so there is something to watch
/// and something on the cost page.
const CHAIN: &str = "\
name: chain3
description: three steps, one after the other
model_profiles:
  steady:
    provider: mock
    model: mock-1
    latency_ms: 700
    price: { input_per_mtok: 1.0, output_per_mtok: 2.0 }
defaults: { model_profile: steady }
agents:
  - name: one
    system_prompt: Draft it.
  - name: two
    depends_on: [one]
    system_prompt: Improve it.
  - name: three
    depends_on: [two]
    system_prompt: Polish it.
";

const PROFILES: &str = "\
model_profiles:
  mock-steady:
    provider: mock
    model: mock-1
    latency_ms: 120
    vocabulary: 5000
    price: { input_per_mtok: 1.0, output_per_mtok: 2.0 }
";

/// chromedriver and a browser session, ended when dropped.
struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromedriver"))
            .find(|p| p.is_file())
    })
}

async fn start_browser() -> Result<Browser, String> {
    if !Path::new(CHROMIUM).is_file() {
        return Err(format!(
            "no {CHROMIUM} (apt-get install chromium chromium-driver)"
        ));
    }
    let driver_bin =
        chromedriver().ok_or("no chromedriver on PATH (apt-get install chromium-driver)")?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?.port()
    };
    let driver = Command::new(driver_bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start chromedriver: {e}"))?;
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut browser = Browser {
        driver,
        client: None,
        _profile: profile,
    };
    let url = format!("http://127.0.0.1:{port}");
    let http = super::client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{url}/status")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if Instant::now() > deadline {
            return Err("chromedriver did not come up within 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(std::iter::once(format!(
        "--user-data-dir={}",
        browser._profile.path().display()
    )))
    .collect::<Vec<_>>();
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .map_err(|e| format!("cannot start a chromium session: {e}"))?;
    browser.client = Some(client);
    Ok(browser)
}

/// A labelled PNG.
type Shot = (String, Vec<u8>);

/// Screenshots of the views a test went through, written out if it fails.
#[derive(Clone, Default)]
struct Shots(Arc<Mutex<Vec<Shot>>>);

impl Shots {
    async fn take(&self, c: &Client, label: &str) {
        if let Ok(png) = c.screenshot().await {
            self.0.lock().unwrap().push((label.to_string(), png));
        }
    }
}

/// Runs `body` with a browser; on failure saves the screenshots and fails the test.
async fn with_browser<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Client, Shots) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut browser = match start_browser().await {
        Ok(b) => b,
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: the browser test `{name}` needs chromium and chromedriver: {why}");
            return;
        }
        Err(why) => panic!("CI must run the browser tests: {why}"),
    };
    let client = browser.client.take().expect("a session");
    let shots = Shots::default();
    let result = AssertUnwindSafe(body(client.clone(), shots.clone()))
        .catch_unwind()
        .await;
    let failure = match result {
        Ok(Ok(())) => None,
        Ok(Err(message)) => Some(message),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into()),
        ),
    };
    if let Some(message) = failure {
        shots.take(&client, "at-failure").await;
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let mut saved = Vec::new();
        for (i, (label, png)) in shots.0.lock().unwrap().iter().enumerate() {
            let path = dir.join(format!("browser-{name}-{i}-{label}.png"));
            if std::fs::write(&path, png).is_ok() {
                saved.push(path.display().to_string());
            }
        }
        if let Ok(html) = client.source().await {
            let path = dir.join(format!("browser-{name}.html"));
            let _ = std::fs::write(&path, html);
        }
        let _ = client.close().await;
        panic!("{message}\nscreenshots: {}", saved.join(", "));
    }
    let _ = client.close().await;
}

/// Polls `check` until it returns `Some`, for up to 30 s.
async fn until<T, F, Fut>(what: &str, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css)).await.map_or(0, |v| v.len())
}

async fn text(c: &Client, css: &str) -> Option<String> {
    c.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, Vec::new()).await.unwrap_or(Value::Null)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The page fits the window: no sideways scrolling.
async fn fits(c: &Client) -> Result<(), String> {
    let w = js(
        c,
        "return [document.documentElement.scrollWidth, window.innerWidth];",
    )
    .await;
    let (scroll, inner) = (w[0].as_u64().unwrap_or(0), w[1].as_u64().unwrap_or(0));
    if scroll > inner {
        return Err(format!(
            "the page is {scroll} px wide in a {inner} px window"
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_a_run_from_the_form_and_watch_it() {
    let server = Server::start(Test::new().file(".orc/ensembles/chain3.yaml", CHAIN), &[]);
    let base = server.base.clone();
    with_browser("run", |c, shots| async move {
        c.goto(&format!("{base}/")).await.map_err(err)?;
        let select = c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#ensemble-select option[value=chain3]"))
            .await
            .map_err(err)?;
        drop(select);
        fits(&c).await?;
        shots.take(&c, "runs").await;
        c.find(Locator::Css("#ensemble-select"))
            .await
            .map_err(err)?
            .select_by_value("chain3")
            .await
            .map_err(err)?;
        c.find(Locator::Css("#run-input"))
            .await
            .map_err(err)?
            .send_keys("a haiku about rust")
            .await
            .map_err(err)?;
        c.find(Locator::Css("#start-button")).await.map_err(err)?.click().await.map_err(err)?;
        // The run page: three nodes, the later ones waiting while the first runs.
        until("the DAG", || async { (count(&c, "svg.dag .node").await == 3).then_some(()) }).await?;
        let url = c.current_url().await.map_err(err)?;
        let id = url.path().strip_prefix("/runs/").ok_or("not on a run page")?.to_string();
        let early = js(&c, "return [...document.querySelectorAll('svg.dag .node')].map(n => n.dataset.state);").await;
        if early.as_array().is_none_or(|s| !s.iter().any(|x| x == "waiting" || x == "queued")) {
            return Err(format!("no node was waiting at first: {early}"));
        }
        shots.take(&c, "run-live").await;
        until("every node succeeded", || async {
            (count(&c, "svg.dag .node[data-state=succeeded]").await == 3).then_some(())
        })
        .await?;
        // Green: the succeeded colour of the light theme.
        let stroke = js(&c, "return getComputedStyle(document.querySelector('svg.dag .node[data-agent=three] rect.box')).stroke;").await;
        if stroke != "rgb(46, 157, 91)" {
            return Err(format!("a succeeded node is drawn in {stroke}, not green"));
        }
        until("the run's status", || async {
            c.find(Locator::Css("#run-status[data-status=succeeded]")).await.ok()
        })
        .await?;
        // The agent panel: the prompt as sent, the output, the numbers.
        c.find(Locator::Css("svg.dag .node[data-agent=two]")).await.map_err(err)?.click().await.map_err(err)?;
        let title = until("the agent panel", || async {
            text(&c, "#agent-panel h2").await.filter(|t| t.starts_with("two"))
        })
        .await?;
        let panel = text(&c, "#agent-panel").await.unwrap_or_default();
        for needle in ["steady (mock-1)", "attempts", "latency", "Prompt as sent", "Output", "Improve it."] {
            if !panel.contains(needle) {
                return Err(format!("the panel of `two` lacks {needle:?}: {title}\n{panel}"));
            }
        }
        let prompt = text(&c, "#agent-prompt").await.unwrap_or_default();
        if !prompt.contains("a haiku about rust") {
            return Err(format!("the prompt as sent lacks the input: {prompt}"));
        }
        let console = text(&c, "#console").await.unwrap_or_default();
        if !console.contains("run_finished") || !console.contains("agent_prompt") {
            return Err(format!("the console lacks events: {console}"));
        }
        fits(&c).await?;
        shots.take(&c, "run-done").await;
        // The run list has it.
        c.find(Locator::Css("a[data-nav=runs]")).await.map_err(err)?.click().await.map_err(err)?;
        let row = format!("#runs-table tr[data-run='{id}'] .pill.succeeded");
        until("the run in the list", || async { c.find(Locator::Css(&row)).await.ok() }).await?;
        // The cost page.
        c.find(Locator::Css("a[data-nav=cost]")).await.map_err(err)?.click().await.map_err(err)?;
        let table = until("the cost table", || async { text(&c, "#cost-table").await }).await?;
        if !table.contains("steady") {
            return Err(format!("the cost page lacks the profile: {table}"));
        }
        shots.take(&c, "cost").await;
        // Phone width: the run page still fits.
        c.set_window_size(390, 844).await.map_err(err)?;
        c.goto(&format!("{base}/runs/{id}")).await.map_err(err)?;
        until("the DAG at phone width", || async {
            (count(&c, "svg.dag .node[data-state=succeeded]").await == 3).then_some(())
        })
        .await?;
        fits(&c).await?;
        shots.take(&c, "run-phone").await;
        c.goto(&format!("{base}/")).await.map_err(err)?;
        until("the run list at phone width", || async { c.find(Locator::Css(&row)).await.ok() }).await?;
        fits(&c).await?;
        Ok(())
    })
    .await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore_fills_tiles_and_chart_until_stop() {
    let server = Server::start(Test::new().file(".orc/profiles/steady.yaml", PROFILES), &[]);
    let base = server.base.clone();
    let api = super::client();
    with_browser("explore", |c, shots| async move {
        c.goto(&format!("{base}/explore")).await.map_err(err)?;
        c.wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#explore-profiles input[value=mock-steady]"))
            .await
            .map_err(err)?
            .click()
            .await
            .map_err(err)?;
        // Only mock-steady: untick the default.
        c.find(Locator::Css("#explore-profiles input[value=mock]"))
            .await
            .map_err(err)?
            .click()
            .await
            .map_err(err)?;
        c.find(Locator::Css("#explore-topic"))
            .await
            .map_err(err)?
            .send_keys("kitchen tools")
            .await
            .map_err(err)?;
        let iterations = c
            .find(Locator::Css("input[name=iterations]"))
            .await
            .map_err(err)?;
        iterations.clear().await.map_err(err)?;
        iterations.send_keys("100000").await.map_err(err)?;
        shots.take(&c, "explore-form").await;
        c.find(Locator::Css("#explore-button"))
            .await
            .map_err(err)?
            .click()
            .await
            .map_err(err)?;
        until("tiles and chart bars", || async {
            (count(&c, "#tiles .tile").await >= 15 && count(&c, "#chart rect.bar").await >= 4)
                .then_some(())
        })
        .await?;
        let unique: u64 = text(&c, "#card-unique .v")
            .await
            .unwrap_or_default()
            .replace(',', "")
            .parse()
            .map_err(|_| "the unique card shows no number")?;
        if unique == 0 {
            return Err("the unique card shows 0".into());
        }
        let uam = text(&c, "#card-uam .v").await.unwrap_or_default();
        if uam.parse::<f64>().map_or(true, |v| v <= 0.0) {
            return Err(format!("the UAM card shows {uam}"));
        }
        fits(&c).await?;
        shots.take(&c, "explore-live").await;
        c.find(Locator::Css("#stop-button"))
            .await
            .map_err(err)?
            .click()
            .await
            .map_err(err)?;
        until("the run to finish after Stop", || async {
            c.find(Locator::Css("#run-status[data-status=succeeded]"))
                .await
                .ok()
        })
        .await?;
        let url = c.current_url().await.map_err(err)?;
        let id = url.path().trim_start_matches("/runs/").to_string();
        let doc: Value = api
            .get(format!("{base}/api/runs/{id}"))
            .send()
            .await
            .map_err(err)?
            .json()
            .await
            .map_err(err)?;
        let metrics = &doc["agents"][0]["metrics"];
        if metrics["stop_reason"] != "stopped" {
            return Err(format!("the run did not stop on request: {metrics}"));
        }
        // Every item found is a tile (up to the 400 shown).
        let items = doc["agents"][0]["items"].as_array().map_or(0, Vec::len);
        let tiles = count(&c, "#tiles .tile").await;
        if tiles != items.min(400) {
            return Err(format!("{tiles} tiles for {items} items"));
        }
        shots.take(&c, "explore-stopped").await;
        Ok(())
    })
    .await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_asked_for_once() {
    let server = Server::start(
        Test::new().file(".orc/ensembles/chain3.yaml", CHAIN),
        &["--token", "let-me-in"],
    );
    let base = server.base.clone();
    with_browser("token", |c, shots| async move {
        c.goto(&format!("{base}/")).await.map_err(err)?;
        let input = c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#token-dialog[open] #token-input"))
            .await
            .map_err(err)?;
        shots.take(&c, "token-dialog").await;
        input.send_keys("let-me-in").await.map_err(err)?;
        c.find(Locator::Css("#token-form button"))
            .await
            .map_err(err)?
            .click()
            .await
            .map_err(err)?;
        until("the ensembles, with the token", || async {
            c.find(Locator::Css("#ensemble-select option[value=chain3]"))
                .await
                .ok()
        })
        .await?;
        // Kept for the session: a reload asks no more.
        c.refresh().await.map_err(err)?;
        until("the ensembles after a reload", || async {
            c.find(Locator::Css("#ensemble-select option[value=chain3]"))
                .await
                .ok()
        })
        .await?;
        if count(&c, "#token-dialog[open]").await != 0 {
            return Err("the token was asked for again".into());
        }
        Ok(())
    })
    .await;
    drop(server);
}
