//! Outbound fetches (SPEC §7) against canned HTTP servers on loopback: what is refused is
//! refused before any connection is made, or at the first redirect.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use federation::fetch::{FetchError, FetchPolicy, fetch};
use federation::outbound::AddressRefused;

/// A loopback server answering every connection with `response`; counts connections.
struct Canned {
    port: u16,
    hits: Arc<AtomicUsize>,
}

fn canned(response: Vec<u8>) -> Canned {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(&response);
        }
    });
    Canned { port, hits }
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn loopback_http() -> FetchPolicy {
    FetchPolicy {
        allow_http_loopback: true,
        timeout: Duration::from_millis(500),
        ..FetchPolicy::default()
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn plain_http_to_loopback_needs_the_danger_switch() {
    let s = canned(ok(br#"{"keys":[]}"#));
    let url = format!("http://127.0.0.1:{}/bundle", s.port);
    assert_eq!(
        run(fetch(&url, &FetchPolicy::default())),
        Err(FetchError::Scheme)
    );
    assert_eq!(s.hits.load(Ordering::SeqCst), 0);
    assert_eq!(
        run(fetch(&url, &loopback_http())).unwrap(),
        br#"{"keys":[]}"#
    );
    // Never plain http anywhere else, switch or not.
    assert_eq!(
        run(fetch("http://93.184.216.34/bundle", &loopback_http())),
        Err(FetchError::Scheme)
    );
}

#[test]
fn metadata_link_local_and_private_addresses_are_never_connected_to() {
    for (url, why) in [
        (
            "https://169.254.169.254/latest/meta-data",
            AddressRefused::LinkLocalOrMetadata,
        ),
        (
            "https://[fd00:ec2::254]/",
            AddressRefused::LinkLocalOrMetadata,
        ),
        ("https://10.0.0.1/bundle", AddressRefused::Private),
        ("https://192.168.1.10/bundle", AddressRefused::Private),
    ] {
        assert!(
            matches!(run(fetch(url, &FetchPolicy::default())), Err(FetchError::Address { why: w, .. }) if w == why),
            "{url}"
        );
    }
}

#[test]
fn redirects_are_refused_and_their_target_never_reached() {
    let target = canned(ok(b"secret"));
    for location in [
        format!("http://127.0.0.1:{}/elsewhere", target.port),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "https://another.example/bundle".to_owned(),
    ] {
        let s = canned(
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
        );
        let url = format!("http://127.0.0.1:{}/bundle", s.port);
        assert_eq!(
            run(fetch(&url, &loopback_http())),
            Err(FetchError::Redirect),
            "{location}"
        );
    }
    assert_eq!(target.hits.load(Ordering::SeqCst), 0);
}

#[test]
fn bodies_over_the_cap_are_refused() {
    let big = vec![b' '; 5 * 1024 * 1024];
    let s = canned(ok(&big));
    let url = format!("http://127.0.0.1:{}/bundle", s.port);
    assert_eq!(
        run(fetch(&url, &loopback_http())),
        Err(FetchError::TooLarge(1024 * 1024))
    );
    // Without a Content-Length, the cap holds while streaming.
    let mut chunked = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
    chunked.extend_from_slice(&big);
    let s = canned(chunked);
    let url = format!("http://127.0.0.1:{}/bundle", s.port);
    assert_eq!(
        run(fetch(&url, &loopback_http())),
        Err(FetchError::TooLarge(1024 * 1024))
    );
}

#[test]
fn a_server_that_never_answers_times_out() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let conns: Vec<_> = l.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(2));
        drop(conns);
    });
    let url = format!("http://127.0.0.1:{port}/bundle");
    assert_eq!(run(fetch(&url, &loopback_http())), Err(FetchError::Timeout));
}

#[test]
fn non_200_is_an_error() {
    let s = canned(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n".to_vec());
    let url = format!("http://127.0.0.1:{}/bundle", s.port);
    assert_eq!(
        run(fetch(&url, &loopback_http())),
        Err(FetchError::Status(500))
    );
}

#[test]
fn cache_headers_say_how_long_a_response_stays_fresh() {
    let with = |headers: &str| {
        let body = br#"{"keys":[]}"#;
        let mut r = format!(
            "HTTP/1.1 200 OK\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        let c = canned(r);
        run(federation::fetch::fetch_fresh(
            &format!("http://127.0.0.1:{}/jwks", c.port),
            &loopback_http(),
        ))
        .unwrap()
        .fresh_for
    };
    assert_eq!(
        with("Cache-Control: public, max-age=22004, must-revalidate\r\nAge: 4\r\n"),
        Some(Duration::from_secs(22000))
    );
    assert_eq!(
        with("Date: Mon, 23 Nov 2026 10:00:00 GMT\r\nExpires: Mon, 23 Nov 2026 10:10:00 GMT\r\n"),
        Some(Duration::from_secs(600))
    );
    assert_eq!(with("Cache-Control: no-store\r\n"), Some(Duration::ZERO));
    assert_eq!(with(""), None);
}
