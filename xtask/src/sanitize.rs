//! `cargo xtask sanitize`: the host tests under the address sanitizer, and the race and detach
//! tests under the thread sanitizer — nightly `-Zsanitizer`, with `-Zbuild-std` so that std is
//! instrumented too (an uninstrumented std makes the thread sanitizer report its own `Arc` and
//! thread internals). Installs the nightly toolchain and its `rust-src` when missing. Loom's test
//! is left out (its model checker is not meant to run under a sanitizer, and takes long there).
//! No suppressions: a report fails the command.

use std::process::Command;

use crate::run;

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The test targets, per package: everything but the loom test and the build tooling.
const ASAN_TESTS: &[(&str, &[&str])] = &[
    ("wsk-sys", &["--tests"]),
    ("wsk-host-model", &["--lib"]),
    (
        "wsk-client",
        &[
            "--lib",
            "--test",
            "lifecycle",
            "--test",
            "sockets",
            "--test",
            "negotiation_props",
            "--test",
            "no_handle",
            "--test",
            "wsk_register",
        ],
    ),
    ("wsk-echo", &["--lib"]),
    ("wsk-attach", &["--lib"]),
];

/// The tests with threads racing (detaches against calls, completions against closes).
const TSAN_TESTS: &[(&str, &[&str])] = &[(
    "wsk-client",
    &[
        "--lib",
        "--test",
        "lifecycle",
        "--test",
        "sockets",
        "--test",
        "wsk_register",
    ],
)];

fn ensure_tools() -> Result<(), String> {
    let ok = |args: &[&str]| {
        Command::new("rustup")
            .args(args)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !ok(&["run", "nightly", "rustc", "--version"]) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let listed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map_err(|e| format!("rustup component list: {e}"))?;
    if !String::from_utf8_lossy(&listed.stdout).contains("rust-src") {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn sanitized(sanitizer: &str, tests: &[(&str, &[&str])]) -> Result<(), String> {
    for (package, targets) in tests {
        let mut command = Command::new("rustup");
        command
            .args([
                "run",
                "nightly",
                "cargo",
                "test",
                "-Zbuild-std",
                "--target",
                TARGET,
            ])
            .args([
                "--target-dir",
                &format!("target/sanitize-{sanitizer}"),
                "-p",
                package,
            ])
            .args(*targets)
            .env("RUSTFLAGS", format!("-Zsanitizer={sanitizer}"))
            .env("RUSTDOCFLAGS", format!("-Zsanitizer={sanitizer}"))
            // The workspace's dev profile aborts on panic (kernel code); the test harness unwinds,
            // and with -Zbuild-std two panic strategies would build two `core`s.
            .env("CARGO_PROFILE_DEV_PANIC", "unwind")
            .env("ASAN_OPTIONS", "detect_leaks=1")
            .env("TSAN_OPTIONS", "halt_on_error=1")
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("RUSTUP_TOOLCHAIN");
        run(&mut command)?;
    }
    Ok(())
}

pub fn sanitize() -> Result<(), String> {
    ensure_tools()?;
    sanitized("address", ASAN_TESTS)?;
    sanitized("thread", TSAN_TESTS)?;
    eprintln!("sanitize: the address and thread sanitizers found nothing");
    Ok(())
}
