//! Build tooling for wsk-attach, run as `cargo xtask <command>`:
//!
//! - `sys [--driver wsk_attach|wsk_echo] [--provider NAME | --all | --list]`: install the cross
//!   toolchain if missing, build both driver images, check them, and run one (default the seed
//!   driver, `wsk_attach.sys`) under Speakeasy against a WSK provider scenario, printing the trace
//!   (the README's first command);
//! - `check-image [PATH]`: check a built image (default: both);
//! - `sanitize`: the host tests under the address sanitizer and the race tests under the thread
//!   sanitizer (nightly, instrumented std; see `sanitize.rs`);
//! - `fuzz [SECONDS]`: every fuzz target of `fuzz/` for SECONDS each (default 60; see `fuzz.rs`);
//! - `package [--release] [--pfx FILE [--pfx-password-env VAR]]`: a test-signed package per driver
//!   under `target/package/` for a test VM (see `package.rs`);
//! - `baseline`: the seed driver (shipped and `no-log`) against its C baseline: sizes and
//!   instructions executed under Speakeasy, with ratios (see `baseline.rs`);
//! - `echo-bench [--runs N] [--bytes N] [--before REV | --no-before] [--round-trips [N]]`: the
//!   echo driver's throughput and latency in Wine beside the C echo driver and a user-mode
//!   Winsock client (see `echo_bench.rs`);
//! - `package-crates`: `cargo package` of the library's publishable crates, verified (see
//!   `publish.rs`);
//! - `new NAME [--path DIR]`: a new driver crate from the template (see `new.rs`);
//! - `build-crate DIR`: cross-build such a crate's `.sys`, check it, run it under Speakeasy;
//! - `ci`: every check — fmt, no `unsafe` in the drivers (`safe_drivers.rs`), clippy (host and kernel target), host tests, rustdoc, bounded
//!   fuzzing, the sanitizers, the cross build, the image check, the C baseline's figures, the
//!   signed packages and their checks, the Speakeasy tests (for the echo server's images, their
//!   own suite, `tests/speakeasy/test_server.py`) and the Wine `sc.exe` tests of every signed
//!   image, the per-operation figures (`cargo bench --bench socket_ops`, a bounded echo-bench),
//!   and the workflow lint (the README's test command; `.ci/run` runs it).

// Build tooling, not kernel code: an out-of-range index here is a bug to stop on, with a message.
#![allow(clippy::indexing_slicing)]

mod baseline;
mod echo_bench;
mod fuzz;
mod image;
mod inf;
mod new;
mod nightly;
mod package;
mod publish;
mod safe_drivers;
mod sanitize;
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

/// Builds and checks every driver image; prints each check's summary.
fn build_and_check() -> Result<Vec<PathBuf>, String> {
    toolchain::ensure()?;
    let images = toolchain::build_sys()?;
    for image in &images {
        match image::check(image, &root()) {
            Ok(report) => print!("{report}"),
            Err(error) => {
                // Leave no rejected image where the tests and the README look for one.
                for image in &images {
                    let _ = std::fs::remove_file(image);
                }
                return Err(error);
            }
        }
    }
    Ok(images)
}

/// The main job: build and check the images, and run one under Speakeasy (`run_driver.py` sets
/// up its own virtual environment on first use).
fn sys(args: &[String]) -> Result<(), String> {
    let (image, scenario_args) = match args {
        [flag, image, rest @ ..] if flag == "--driver" => (image.as_str(), rest),
        rest => ("wsk_attach", rest),
    };
    let Some(driver) = toolchain::driver(image) else {
        let known: Vec<&str> = toolchain::DRIVERS.iter().map(|d| d.image).collect();
        return Err(format!("unknown driver {image} ({})", known.join(", ")));
    };
    build_and_check()?;
    run(Command::new("python3")
        .arg("tests/speakeasy/run_driver.py")
        .args(scenario_args)
        .arg(toolchain::image_path(driver.image))
        .env("WSK_DRIVER_PROFILE", driver.image))
}

/// The Speakeasy end-to-end tests of one image, whose test profile is `profile`.
fn speakeasy_tests(image: &Path, profile: &str) -> Result<(), String> {
    speakeasy_suite(image, profile, "tests/speakeasy")
}

/// The echo server's own Speakeasy suite (its listening socket, accept, receive events and UDP
/// echo; the generic suites expect a client's connection and do not run it yet).
const SERVER_SUITE: &str = "tests/speakeasy/test_server.py";
/// The Speakeasy tests of the C echo driver (`baseline/wsk_echo_baseline.c`).
const C_ECHO_SUITE: &str = "tests/speakeasy/test_c_echo.py";

/// The Speakeasy tests in `tests` (a directory or a file) of one image, whose test profile is
/// `profile`.
fn speakeasy_suite(image: &Path, profile: &str, tests: &str) -> Result<(), String> {
    run(Command::new("bash").arg("tests/speakeasy/setup-venv.sh"))?;
    run(Command::new("target/speakeasy-venv/bin/python")
        .args(["-m", "pytest", tests, "-q", "-p", "no:cacheprovider"])
        .env("WSK_DRIVER_SYS", image)
        .env("WSK_DRIVER_PROFILE", profile))
}

fn ci() -> Result<(), String> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    // The drivers are safe code: no `unsafe` outside their tests.
    safe_drivers::check(&root())?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--workspace"]))?;
    // The example drivers' other backend (a feature): their lints and their own tests.
    for package in ["wsk-echo", "wsk-echo-server"] {
        run(cargo().args([
            "clippy",
            "-p",
            package,
            "--all-targets",
            "--features",
            "wsk-register",
            "--",
            "-D",
            "warnings",
        ]))?;
        run(cargo().args(["test", "-p", package, "--features", "wsk-register"]))?;
    }
    // The library's crates package (and their packages build): `cargo package` verifies each
    // by building it from its .crate file, for the host (a kernel build of them is the drivers').
    publish::package()?;
    run(cargo()
        .args([
            "doc",
            "--no-deps",
            "--document-private-items",
            "--workspace",
        ])
        .env("RUSTDOCFLAGS", "-D warnings"))?;
    // Bounded fuzzing of every target (nightly, address sanitizer); the corpora grow in place.
    fuzz::fuzz(30)?;
    // The address sanitizer over the host tests, the thread sanitizer over the race tests.
    sanitize::sanitize()?;
    toolchain::ensure()?;
    toolchain::clippy_kernel()?;
    toolchain::clippy_wine_provider()?;
    let images = build_and_check()?;
    // The figures against the C baseline (printed; it fails only if a run or a count fails).
    baseline::baseline()?;
    // The C echo driver under the harness (its system thread, KeWaitForMultipleObjects, the
    // wait on its thread object) and the harness's rules for them: the image baseline() built.
    speakeasy_suite(&baseline::c_echo_image(), "wsk_echo_baseline", C_ECHO_SUITE)?;
    // The suites run the test-signed images of the packages, as a VM would load them.
    let signed = package::ci(&images)?;
    for ((image, signed), driver) in images.iter().zip(&signed).zip(toolchain::DRIVERS) {
        image::self_test(image, &root())?;
        if driver.speakeasy {
            speakeasy_tests(signed, driver.image)?;
        } else if driver.package == "wsk-echo-server" {
            speakeasy_suite(signed, driver.image, SERVER_SUITE)?;
        }
        run(Command::new("bash")
            .arg("tests/wine/run.sh")
            .env("WSK_DRIVER_SYS", signed)
            .env("WSK_DRIVER_PROFILE", driver.image))?;
    }
    // The per-operation figures, printed and never asserted (issue 20): what a steady-state
    // socket operation allocates, in the host model; then a bounded echo-bench in Wine: the Rust
    // driver, the C driver and the Winsock client, throughput and latency.
    run(cargo().args(["bench", "-p", "wsk-client", "--bench", "socket_ops"]))?;
    echo_bench::echo_bench(
        &[
            "--runs",
            "1",
            "--bytes",
            "4194304",
            "--round-trips",
            "1000",
            "--no-before",
        ]
        .map(String::from),
    )?;
    // A driver of one's own: `cargo xtask new` into a temporary folder, tested, built, run.
    new::ci()?;
    run(Command::new("bash").arg("windows/lint-workflows.sh"))?;
    eprintln!("xtask ci: every check passed");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("sys") => sys(args.get(1..).unwrap_or_default()),
        Some("sanitize") => sanitize::sanitize(),
        Some("new") => new::new(args.get(1..).unwrap_or_default()),
        Some("build-crate") => match args.get(1..) {
            Some([dir]) => new::build_crate(Path::new(dir)).map(|_| ()),
            _ => Err("usage: cargo xtask build-crate DIR".to_string()),
        },
        Some("fuzz") => match args.get(1).map(|s| s.parse::<u32>()) {
            None => fuzz::fuzz(60),
            Some(Ok(seconds)) => fuzz::fuzz(seconds),
            Some(Err(_)) => Err("usage: cargo xtask fuzz [SECONDS]".to_string()),
        },
        Some("check-image") => {
            let images: Vec<PathBuf> = match args.get(1) {
                Some(path) => vec![PathBuf::from(path)],
                None => toolchain::DRIVERS
                    .iter()
                    .map(|driver| toolchain::image_path(driver.image))
                    .collect(),
            };
            images.iter().try_for_each(|image| {
                image::check(image, &root()).map(|report| print!("{report}"))
            })
        }
        Some("package") => package::command(args.get(1..).unwrap_or_default()),
        Some("ci") => ci(),
        Some("echo-bench") => echo_bench::echo_bench(args.get(1..).unwrap_or_default()),
        Some("baseline") => baseline::baseline(),
        Some("package-crates") => publish::package(),
        _ => Err(
            "usage: cargo xtask <sys [--driver NAME] [--provider NAME | --all | --list] | check-image [PATH] | sanitize | fuzz [SECONDS] | package [--release] [--pfx FILE [--pfx-password-env VAR]] | baseline | package-crates | echo-bench [--runs N] [--bytes N] [--before REV | --no-before] [--round-trips [N]] | new NAME [--path DIR] | build-crate DIR | ci>"
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
