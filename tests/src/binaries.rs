//! The frontend binaries, built once per test process.
//!
//! `cargo test --workspace` must work on a clean clone and must never test a
//! stale binary, so the first test that needs a frontend runs `cargo build` for
//! its package into the target directory this test binary was built in (found
//! from its own path), with the same profile; later tests reuse the result.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A frontend's package and binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    /// `chat-mio`, the forked daemon.
    Mio,
    /// `chat-smol`, the single-process server.
    Smol,
}

impl Binary {
    /// Returns the package that holds the binary.
    pub fn package(self) -> &'static str {
        match self {
            Binary::Mio => "chat-mio",
            Binary::Smol => "frontend-smol",
        }
    }

    /// Returns the binary's name.
    pub fn name(self) -> &'static str {
        match self {
            Binary::Mio => "chat-mio",
            Binary::Smol => "chat-smol",
        }
    }

    /// Returns the environment variable that names a prebuilt binary to test instead.
    pub fn override_var(self) -> &'static str {
        match self {
            Binary::Mio => "CHAT_TESTS_MIO_BIN",
            Binary::Smol => "CHAT_TESTS_SMOL_BIN",
        }
    }

    /// Returns the path of the freshly built binary, building it on first use.
    ///
    /// Panics with cargo's output if the build fails: no test of this frontend can run.
    pub fn path(self) -> &'static Path {
        static MIO: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        static SMOL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let cell = match self {
            Binary::Mio => &MIO,
            Binary::Smol => &SMOL,
        };
        match cell.get_or_init(|| build(self)) {
            Ok(path) => path,
            Err(message) => panic!("{message}"),
        }
    }
}

/// Where this test binary was built: `<target>/<profile>/deps/<test>`.
struct Layout {
    target_dir: PathBuf,
    profile_dir: PathBuf,
    profile: String,
}

fn layout() -> Result<Layout, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test binary: {e}"))?;
    let deps = exe.parent().ok_or("the test binary has no directory")?;
    let profile_dir = deps.parent().ok_or("the test binary is not under <target>/<profile>/deps")?;
    let target_dir =
        profile_dir.parent().ok_or("the test binary is not under <target>/<profile>/deps")?.to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the profile directory has no name")?
        .to_owned();
    Ok(Layout { target_dir, profile_dir: profile_dir.to_path_buf(), profile })
}

fn build(binary: Binary) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(binary.override_var()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{}={} is not a file", binary.override_var(), path.display()))
        };
    }
    let layout = layout()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("-p")
        .arg(binary.package())
        .arg("--bin")
        .arg(binary.name())
        .arg("--target-dir")
        .arg(&layout.target_dir);
    match layout.profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.arg("--profile").arg(other);
        }
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run {} build for {}: {e}", cargo.to_string_lossy(), binary.name()))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build -p {} failed ({}):\n{}",
            binary.package(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let path = layout.profile_dir.join(binary.name());
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("cargo built {} but {} is missing", binary.package(), path.display()))
    }
}
