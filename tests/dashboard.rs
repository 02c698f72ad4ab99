//! The dashboard in a real browser: headless Chromium, driven through
//! chromedriver (both Debian packages, which scripts/test.sh installs), loads
//! the page of a `slum serve` in front of real tenement servers, signs in
//! with an API token, and sees what the fleet does: its servers and tenants,
//! their traffic, and a server that is killed turning offline.
//!
//! With `SLUM_DASHBOARD_SCREENSHOT=PATH` the test saves a screenshot of the
//! page there (the README's is `docs/dashboard.png`).

mod common;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::serve::Slum;
use fantoccini::{Client, ClientBuilder, Locator};
use slum::ServerStatus;

/// The chromedriver of the system, if installed.
fn chromedriver() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
}

/// A chromedriver on a loopback port, stopped when dropped.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Driver {
    async fn start(path: &std::path::Path) -> Driver {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        // A process group of its own, which the browser it starts joins: a
        // test that fails before closing its session leaves no browser behind.
        let child = Command::new(path)
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Driver { child, addr }
    }

    /// A headless Chromium session (as root in a container: no sandbox).
    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1440,1140",
                    "--no-proxy-server", "--hide-scrollbars",
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://{}", self.addr))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group: chromedriver and the browser it started.
        if let Ok(group) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no preconditions; the group is this test's own.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// The element `css` selects, waited for (bounded).
async fn shown(browser: &Client, css: &str, within: Duration) -> fantoccini::elements::Element {
    match browser
        .wait()
        .at_most(within)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element,
        Err(e) => {
            // What the page showed instead, to tell why.
            let url = browser.current_url().await.map(|u| u.to_string());
            let text = match browser.find(Locator::Css("body")).await {
                Ok(body) => body.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!("{css} not shown within {within:?} ({e}); at {url:?} the page said:\n{text}")
        }
    }
}

/// Sends a few requests to each domain, the first ones more; returns how
/// many were answered 200.
async fn traffic(slum: &Slum, domains: &[&str]) -> usize {
    let mut ok = 0;
    for (i, d) in domains.iter().enumerate() {
        for _ in 0..(40 / (i + 1)) {
            ok += usize::from(slum.get(d, "/").await.0 == 200);
        }
    }
    ok
}

#[tokio::test]
async fn the_dashboard_shows_the_fleet_and_a_killed_server_turning_offline() {
    let Some(mut fleet) = common::fleet(3).await else {
        return;
    };
    let Some(driver_path) = chromedriver() else {
        assert!(
            std::env::var_os("SLUM_TEST_NETNS").is_none(),
            "no chromedriver: install the Debian packages chromium and chromium-driver \
             (scripts/test.sh does)"
        );
        eprintln!("note: no chromedriver; the dashboard's browser test was skipped");
        return;
    };
    let slum = Slum::start(|_| {}).await;
    for (s, region) in fleet.servers.iter().zip(["eu-west", "us-east", "us-east"]) {
        let mut record = s.record();
        record.region = Some(region.into());
        slum.db().add_server(&record).await.unwrap();
    }
    slum.state.fleet_changed().await;
    let domains = ["acme.com", "umbrella.io", "globex.net", "initech.org"];
    for (d, server) in domains.iter().zip(["s1", "s2", "s1", "s3"]) {
        slum.add_running_tenant(d, server).await;
    }
    let started = Instant::now();
    while !slum
        .db()
        .list_servers()
        .await
        .unwrap()
        .iter()
        .all(|s| s.status == ServerStatus::Online)
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "servers online"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(traffic(&slum, &domains).await, 40 + 20 + 13 + 10);
    let (_, secret) = slum.db().create_api_token("dashboard").await.unwrap();

    let driver = Driver::start(&driver_path).await;
    let browser = driver.browser().await;
    let page = format!("http://{}/ui/", slum.api);
    browser.goto(&page).await.unwrap();

    // Signed out: the form asks for a token.
    let field = shown(
        &browser,
        "#sign-in:not([hidden]) #token",
        Duration::from_secs(20),
    )
    .await;
    field.send_keys("slum_not_a_token").await.unwrap();
    browser
        .find(Locator::Css("#sign-in button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shown(
        &browser,
        "#sign-in-failed:not([hidden])",
        Duration::from_secs(20),
    )
    .await;
    let field = shown(&browser, "#token", Duration::from_secs(5)).await;
    field.clear().await.unwrap();
    field.send_keys(&secret).await.unwrap();
    browser
        .find(Locator::Css("#sign-in button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The fleet: its servers online, with their regions; its tenants; the
    // busiest of them.
    let s1 = r#"tr[data-server="s1"] .badge[data-status="online"]"#;
    shown(&browser, s1, Duration::from_secs(20)).await;
    for s in ["s2", "s3"] {
        let css = format!(r#"tr[data-server="{s}"] .badge[data-status="online"]"#);
        shown(&browser, &css, Duration::from_secs(10)).await;
    }
    let row = shown(&browser, r#"tr[data-server="s1"]"#, Duration::from_secs(5)).await;
    let text = row.text().await.unwrap();
    assert!(text.contains("eu-west"), "{text}");
    for d in domains {
        shown(
            &browser,
            &format!(r#"#tenants tr[data-domain="{d}"]"#),
            Duration::from_secs(20),
        )
        .await;
    }
    shown(
        &browser,
        r#"#top tr[data-tenant="acme"]"#,
        Duration::from_secs(10),
    )
    .await;
    shown(
        &browser,
        r#"#instances tr[data-instance="acme:prod"]"#,
        Duration::from_secs(20),
    )
    .await;
    // The token is nowhere in the page, and the script cannot read the
    // session's cookie.
    let source = browser.source().await.unwrap();
    assert!(!source.contains(&secret), "the token is in the page");
    let cookies = browser
        .execute("return document.cookie", vec![])
        .await
        .unwrap();
    assert_eq!(cookies, serde_json::json!(""), "HttpOnly: {cookies}");
    assert!(!browser
        .current_url()
        .await
        .unwrap()
        .as_str()
        .contains(&secret));

    // A server dies: the page says so, within the health checks' time, and
    // the event is among the recent ones.
    fleet.server_mut("s1").unwrap().kill().unwrap();
    let offline = r#"tr[data-server="s1"] .badge[data-status="offline"]"#;
    shown(&browser, offline, Duration::from_secs(60)).await;
    let s2 = r#"tr[data-server="s2"] .badge[data-status="online"]"#;
    shown(&browser, s2, Duration::from_secs(5)).await;
    let event = r#"#events li[data-kind="server-offline"]"#;
    shown(&browser, event, Duration::from_secs(10)).await;

    if let Some(path) = std::env::var_os("SLUM_DASHBOARD_SCREENSHOT") {
        // The tenants of s1 are answered 503 now: their errors show.
        traffic(&slum, &domains).await;
        // The next refresh, with that traffic in.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let png = browser.screenshot().await.unwrap();
        std::fs::write(&path, png).unwrap();
    }

    // Signing out ends it.
    browser
        .find(Locator::Css("#sign-out button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shown(&browser, "#sign-in:not([hidden])", Duration::from_secs(20)).await;
    browser.close().await.unwrap();
}
