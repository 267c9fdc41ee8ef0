//! `gateway check` on every shipped config and on broken ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn conf_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("examples")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            // conf/engine.yaml is the engine's (checked by the engine_config suite).
            let engine = p.file_name().is_some_and(|n| n == "engine.yaml");
            if !engine && p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 3, "expected conf/gateway.yaml and examples");
    files
}

fn check(path: &Path) -> (bool, String, String) {
    let out = Command::new(e2e::bin::path("gateway"))
        .args(["check", "--conf"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_config_is_valid() {
    for f in conf_files() {
        let (ok, stdout, stderr) = check(&f);
        assert!(ok, "{}: {stderr}", f.display());
        assert!(stdout.contains(": ok ("), "{stdout}");
    }
}

#[test]
fn broken_configs_list_every_error_with_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(
        &file,
        r#"_format_version: "3.0"
services:
  - name: billing
    url: http://127.0.0.1:9000
    colour: blue
    routes:
      - name: ok
        paths: [/ok]
      - name: bad
        paths: [/foo/../bar, "~/(unclosed"]
        methods: [get]
  - name: billing
    host: example.com
    port: 70000
routes:
  - name: orphan
    service: nowhere
    paths: [/x]
plugins:
  - name: no-such-plugin
consumers:
  - username: alice
    keyauth_credentials:
      - key: super-secret-key-1
  - username: bob
    keyauth_credentials:
      - key: super-secret-key-1
"#,
    )
    .unwrap();
    let (ok, _, stderr) = check(&file);
    assert!(!ok);
    let expect = [
        ":5: services[0].colour: unknown field",
        ":10: services[0].routes[1].paths[0]: non-normalized path, consider use '/bar' instead",
        ":10: services[0].routes[1].paths[1]: invalid regex",
        ":11: services[0].routes[1].methods[0]: invalid value",
        ":12: services[1].name: uniqueness violation: 'services' entity with name set to 'billing' already declared",
        ":14: services[1].port: value should be between 0 and 65535",
        ":17: routes[0].service: invalid reference 'service: nowhere' (no such entry in 'services')",
        ":20: plugins[0].name: plugin 'no-such-plugin' not enabled",
        "uniqueness violation: 'keyauth_credentials' entity with key set to '<redacted>'",
    ];
    for e in expect {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }
    assert!(
        !stderr.contains("super-secret-key-1"),
        "a credential leaked into the error output:\n{stderr}"
    );

    // Not YAML at all, and a missing file.
    std::fs::write(&file, "services: [\n").unwrap();
    let (ok, _, stderr) = check(&file);
    assert!(!ok);
    assert!(stderr.contains("invalid YAML"), "{stderr}");
    let (ok, _, stderr) = check(&dir.path().join("missing.yaml"));
    assert!(!ok);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn run_refuses_a_broken_config_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "_format_version: \"3.0\"\nservices:\n  - url: ftp://x\n",
    )
    .unwrap();
    let out = Command::new(e2e::bin::path("gateway"))
        .args(["run", "--conf"])
        .arg(&file)
        .args(["--http-listen", &format!("127.0.0.1:{}", e2e::free_port())])
        .args(["--https-listen", &format!("127.0.0.1:{}", e2e::free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", e2e::free_port())])
        .arg("--certs-dir")
        .arg(dir.path().join("certs"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":3: services[0].url"), "{stderr}");
}

#[test]
fn run_refuses_a_taken_port() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ok.yaml");
    std::fs::write(&file, "_format_version: \"3.0\"\n").unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let out = Command::new(e2e::bin::path("gateway"))
        .args(["run", "--conf"])
        .arg(&file)
        .args(["--http-listen", &taken_addr.to_string()])
        .args(["--https-listen", &format!("127.0.0.1:{}", e2e::free_port())])
        .args(["--admin-listen", &format!("127.0.0.1:{}", e2e::free_port())])
        .arg("--certs-dir")
        .arg(dir.path().join("certs"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {taken_addr} (--http-listen)")),
        "{stderr}"
    );
}
