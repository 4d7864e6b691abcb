//! Build tooling for wsk-attach, run as `cargo xtask <command>`:
//!
//! - `sys [--provider NAME | --all | --list]`: install the cross toolchain if missing, build
//!   `wsk_attach.sys`, check the image, and run it under Speakeasy against a WSK provider scenario,
//!   printing the trace (the README's first command);
//! - `check-image [PATH]`: check a built image;
//! - `ci`: every check — fmt, clippy (host and kernel target), host tests, rustdoc, the cross build, the
//!   image check, the Speakeasy tests and the Wine `sc.exe` tests of the image, and the workflow
//!   lint (the README's test command; `.ci/run` runs it).

// Build tooling, not kernel code: an out-of-range index here is a bug to stop on, with a message.
#![allow(clippy::indexing_slicing)]

mod image;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The workspace root (this crate lives in `<root>/xtask`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Runs a command in the workspace root; an error names the command.
fn run(command: &mut Command) -> Result<(), String> {
    command.current_dir(root());
    eprintln!("$ {}", describe(command));
    let status = command
        .status()
        .map_err(|e| format!("{}: {e}", describe(command)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{} failed ({status})", describe(command)))
    }
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds and checks the image; prints the check's summary.
fn build_and_check() -> Result<PathBuf, String> {
    toolchain::ensure()?;
    let image = toolchain::build_sys()?;
    match image::check(&image, &root()) {
        Ok(report) => {
            print!("{report}");
            Ok(image)
        }
        Err(error) => {
            // Leave no rejected image where the tests and the README look for one.
            let _ = std::fs::remove_file(&image);
            Err(error)
        }
    }
}

/// The main job: build, check, and run the image under Speakeasy (`run_driver.py` sets up its
/// own virtual environment on first use).
fn sys(scenario_args: &[String]) -> Result<(), String> {
    let image = build_and_check()?;
    run(Command::new("python3")
        .arg("tests/speakeasy/run_driver.py")
        .args(scenario_args)
        .arg(&image))
}

/// The Speakeasy end-to-end tests of the image.
fn speakeasy_tests(image: &Path) -> Result<(), String> {
    run(Command::new("bash").arg("tests/speakeasy/setup-venv.sh"))?;
    run(Command::new("target/speakeasy-venv/bin/python")
        .args(["-m", "pytest", "tests/speakeasy", "-q"])
        .env("WSK_ATTACH_SYS", image))
}

fn ci() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--workspace"]))?;
    run(cargo()
        .args([
            "doc",
            "--no-deps",
            "--document-private-items",
            "-p",
            "wsk-attach",
        ])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    toolchain::ensure()?;
    toolchain::clippy_kernel()?;
    toolchain::clippy_wine_provider()?;
    let image = build_and_check()?;
    image::self_test(&image, &root())?;
    speakeasy_tests(&image)?;
    run(Command::new("bash")
        .arg("tests/wine/run.sh")
        .env("WSK_ATTACH_SYS", &image))?;
    run(Command::new("bash").arg("windows/lint-workflows.sh"))?;
    eprintln!("xtask ci: every check passed");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("sys") => sys(args.get(1..).unwrap_or_default()),
        Some("check-image") => {
            let image = args
                .get(1)
                .map_or_else(toolchain::image_path, PathBuf::from);
            image::check(&image, &root()).map(|report| print!("{report}"))
        }
        Some("ci") => ci(),
        _ => Err(
            "usage: cargo xtask <sys [--provider NAME | --all | --list] | check-image [PATH] | ci>"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: error: {error}");
            ExitCode::FAILURE
        }
    }
}
