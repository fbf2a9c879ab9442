//! Issue 25, a page to look at: `GET /` in a real browser (Debian's
//! chromium, headless): the DOM names every repository, tag, platform,
//! image size and index digest the API serves, and the commands to pull;
//! it follows a rebuild; nothing a source wrote runs as markup. The
//! screenshot is kept in target/test-artifacts/ for people to look at.

use super::*;

/// `chromium --headless` on `url`: `--dump-dom` (the DOM after load) or
/// `--screenshot=FILE`; private profile, bounded in time.
fn chromium(profile: &Path, url: &str, what: &[&str]) -> String {
    require_tool("chromium");
    let out = Command::new("timeout")
        .args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1200,900", "--hide-scrollbars"])
        .args(what)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium {what:?}: {out:?}");
    String::from_utf8(out.stdout).expect("a UTF-8 DOM")
}

/// `Image size` as `ocimux` should count it: the manifest, its config and
/// layers, as the API serves them.
fn image_size(server: &Server, manifest: &str) -> u64 {
    let m = get(
        &server.url(&format!("/v2/app/manifests/{manifest}")),
        &[&format!("Accept: {OCI_MANIFEST}")],
    );
    let v = m.json();
    let parts = v["layers"].as_array().unwrap().iter().chain([&v["config"]]);
    m.body.len() as u64 + parts.map(|d| d["size"].as_u64().unwrap()).sum::<u64>()
}

#[test]
fn the_page_shows_what_is_served_in_a_browser_and_follows_rebuilds() {
    let tmp = tempfile::tempdir().unwrap();
    let (amd64, arm64) = two_layouts(tmp.path(), "page");
    // A source whose path is markup: it shows in a rebuild's error.
    let hostile = tmp.path().join("arm64<img src=x id=pwned>");
    fs::rename(&arm64, &hostile).unwrap();
    let server = Server::start_quiet(&[], &["app", s(&amd64), s(&hostile)]);
    let index = get(
        &server.url("/v2/app/manifests/latest"),
        &[&format!("Accept: {OCI_INDEX}")],
    );
    let digest = index.header("docker-content-digest").unwrap().to_owned();
    let profile = tmp.path().join("profile");
    let dom = chromium(&profile, &server.url("/"), &["--dump-dom"]);
    assert!(dom.contains("<h3>app:latest</h3>"), "{dom}");
    assert!(dom.contains(&format!("<code class=\"digest\">{digest}</code>")));
    assert!(dom.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    let port = server.host.rsplit(':').next().unwrap();
    for m in index.json()["manifests"].as_array().unwrap() {
        let platform = format!(
            "{}/{}",
            m["platform"]["os"].as_str().unwrap(),
            m["platform"]["architecture"].as_str().unwrap()
        );
        let manifest = m["digest"].as_str().unwrap();
        let row = format!(
            "<td class=\"platform\">{platform}</td><td class=\"size\" data-bytes=\"{}\">",
            image_size(&server, manifest)
        );
        assert!(dom.contains(&row), "{row} in {dom}");
        assert!(dom.contains(&format!("<code>{manifest}</code>")));
    }
    let pulls = [
        format!(
            "podman pull --tls-verify=false {}/app:latest\n",
            server.host
        ),
        format!(
            "skopeo copy --all --src-tls-verify=false docker://{}/app:latest oci:app:latest\n",
            server.host
        ),
        format!(
            "ctr images pull --plain-http --all-platforms {}/app:latest\n",
            server.host
        ),
        format!("podman pull --tls-verify=false 10.0.2.2:{port}/app:latest\n"),
    ];
    for p in &pulls {
        assert!(dom.contains(p.as_str()), "{p} in {dom}");
    }

    // The screenshot: a PNG of the window's size, not a blank page.
    let shot = tmp.path().join("page.png");
    chromium(
        &profile,
        &server.url("/"),
        &[&format!("--screenshot={}", shot.display())],
    );
    let png = fs::read(&shot).unwrap();
    assert_eq!(png.get(..8), Some(&b"\x89PNG\r\n\x1a\n"[..]));
    let dim = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1200, 900));
    let blank = tmp.path().join("blank.png");
    chromium(
        &profile,
        "about:blank",
        &[&format!("--screenshot={}", blank.display())],
    );
    let blank_len = fs::metadata(&blank).unwrap().len() as usize;
    assert!(
        png.len() > 4 * blank_len,
        "{} bytes, a blank page {blank_len}",
        png.len()
    );
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-artifacts");
    fs::create_dir_all(&kept).unwrap();
    fs::copy(&shot, kept.join("page.png")).unwrap();

    // A source breaks: the page says so, its path shown as text only;
    // fixed, the page follows again.
    let good = fs::read(hostile.join("index.json")).unwrap();
    fs::write(hostile.join("index.json"), b"{").unwrap();
    let mut dom = String::new();
    wait_for(
        "the page to show the failing rebuild",
        Duration::from_secs(30),
        || {
            dom = chromium(&profile, &server.url("/"), &["--dump-dom"]);
            dom.contains("class=\"failing\"")
        },
    );
    assert!(dom.contains("&lt;img src=x id=pwned&gt;"), "{dom}");
    assert!(!dom.contains("<img"), "{dom}");
    assert!(dom.contains(&digest), "the last good snapshot still shows");
    fs::write(hostile.join("index.json"), good).unwrap();
    wait_for(
        "the page to follow the fixed source",
        Duration::from_secs(30),
        || {
            let dom = chromium(&profile, &server.url("/"), &["--dump-dom"]);
            !dom.contains("class=\"failing\"") && dom.contains(&digest)
        },
    );
    server.stop();
}
