//! Finding (and building) the workspace's binaries from a test executable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);

/// Returns the path of an up-to-date workspace binary (`gateway`, `engine`).
///
/// Runs at test set-up. The first call per binary in a test process runs `cargo
/// build -p NAME --bin NAME` for the test's own profile and target directory (a
/// no-op when nothing changed), so a test never runs a stale binary. An
/// environment variable `<NAME>_BIN` (e.g. `GATEWAY_BIN`) names a binary to use
/// instead and skips the build.
pub fn path(name: &str) -> PathBuf {
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let bin = match std::env::var_os(format!("{}_BIN", name.to_ascii_uppercase())) {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe()
                .unwrap_or_else(|e| panic!("cannot find the test executable: {e}"));
            // target/<profile>/deps/<test> or target/<profile>/<bin> -> target/<profile>
            let parent = exe
                .parent()
                .unwrap_or_else(|| panic!("unexpected executable path {}", exe.display()));
            let profile_dir = if parent.file_name().is_some_and(|n| n == "deps") {
                parent.parent().unwrap_or(parent)
            } else {
                parent
            }
            .to_path_buf();
            build(name, &profile_dir);
            profile_dir.join(name)
        }
    };
    assert!(bin.is_file(), "{} does not exist", bin.display());
    built.insert(name.to_string(), bin.clone());
    bin
}

/// Runs `cargo build -p NAME --bin NAME` into `profile_dir`.
fn build(name: &str, profile_dir: &Path) {
    let cargo = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(str::to_owned))
        .unwrap_or_else(|| "cargo".to_owned());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| panic!("the e2e crate has no parent directory"));
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "-p", name, "--bin", name])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"));
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target_dir);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo} to build {name}: {e}"));
    assert!(
        out.status.success(),
        "building {name} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
