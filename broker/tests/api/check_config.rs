//! `trustbroker check-config` and a refused `serve`, as processes.

use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_trustbroker")
}

#[test]
fn check_config_lists_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        "listen = \"0.0.0.0:1\"\n[tokens]\nmax_ttl = \"nope\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("2 problems"), "{err}");
    assert!(err.contains("broker.toml:1: listen"), "{err}");
    assert!(err.contains("broker.toml:3: tokens.max_ttl"), "{err}");

    std::fs::write(&path, "issuer = \"http://127.0.0.1:8080\"\n").unwrap();
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_with_a_bad_config_never_binds_or_writes_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        "[state]\npath = \"state\"\n[tokens]\nmax_ttl = \"nope\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("state").exists());
}
