//! A zero-config static site on `wharf serve`'s embedded defaults (host processes):
//! served by the binary's own file server, so a host without busybox serves it too,
//! and never a file outside the site (a symbolic link leading out is refused when the
//! upload is unpacked, and by the server: see `static_site`'s unit test).

mod common;

use common::Server;

#[tokio::test]
async fn a_static_site_is_served_by_wharf_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("studio").join("brochure");
    std::fs::create_dir_all(site.join("css")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>hello static</h1>\n").unwrap();
    std::fs::write(site.join("css/site.css"), "h1 { color: teal }\n").unwrap();
    // Beside the site, not in it: must never be served.
    std::fs::write(tmp.path().join("studio/private.txt"), "not for the web\n").unwrap();

    let mut server = Server::start(tmp.path());
    server.wait_ready(tmp.path()).await;
    let (ok, out) = server.cli(&["deploy", site.to_str().unwrap()]);
    assert!(ok, "wharf deploy failed:\n{out}");
    let host = format!("brochure.studio.localhost:{}", server.proxy_port);
    assert_eq!(
        server.get(&host).await,
        (200, "<h1>hello static</h1>\n".into())
    );
    let r = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/css/site.css",
            server.proxy_port
        ))
        .header("host", &host)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    // Wharf's server, not busybox httpd (whose 404 is an HTML page).
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    for path in [
        "/../private.txt",
        "/%2e%2e/private.txt",
        "/leak.txt",
        "/nope",
    ] {
        assert_eq!(
            server.get_path(&host, path).await,
            (404, "not found\n".into()),
            "{path}"
        );
    }
}
