//! `cargo xtask sanitize`: the host tests under the address sanitizer, and the race and detach
//! tests under the thread sanitizer — nightly `-Zsanitizer`, with `-Zbuild-std` so that std is
//! instrumented too (an uninstrumented std makes the thread sanitizer report its own `Arc` and
//! thread internals). Installs the nightly toolchain and its `rust-src` when missing. Loom's tests
//! are left out (its model checker is not meant to run under a sanitizer, and takes long there).
//! No suppressions: a report fails the command.

use crate::{nightly, run};

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The library's tests with threads racing (detaches against calls, completions against
/// closes, work items against the unload, wakes and timer DPCs against task runs).
const RACE_TESTS: &[&str] = &[
    "--lib",
    "--test",
    "lifecycle",
    "--test",
    "sockets",
    "--test",
    "wsk_register",
    "--test",
    "tasks",
    "--test",
    "async_sockets",
    "--test",
    "listeners",
    "--test",
    "datagrams",
    "--test",
    "receive_events",
    "--test",
    "accept_events",
];

/// The test targets, per package: everything but the loom test and the build tooling.
const ASAN_TESTS: &[(&str, &[&str])] = &[
    ("wsk-sys", &["--tests"]),
    ("wsk-host-model", &["--lib"]),
    ("wsk-client", RACE_TESTS),
    (
        "wsk-client",
        &["--test", "negotiation_props", "--test", "no_handle"],
    ),
    ("wsk-echo", &["--lib"]),
    ("wsk-echo-server", &["--lib"]),
    ("wsk-attach", &["--lib"]),
];

/// The race tests.
const TSAN_TESTS: &[(&str, &[&str])] = &[("wsk-client", RACE_TESTS)];

fn sanitized(sanitizer: &str, tests: &[(&str, &[&str])]) -> Result<(), String> {
    for (package, targets) in tests {
        let target_dir = format!("target/sanitize-{sanitizer}");
        let mut command = nightly::cargo();
        command
            .args(["test", "-Zbuild-std", "--target", TARGET])
            .args(["--target-dir", &target_dir, "-p", package])
            .args(*targets)
            .env("RUSTFLAGS", format!("-Zsanitizer={sanitizer}"))
            .env("RUSTDOCFLAGS", format!("-Zsanitizer={sanitizer}"))
            // The workspace's dev profile aborts on panic (kernel code); the test harness unwinds,
            // and with -Zbuild-std two panic strategies would build two `core`s.
            .env("CARGO_PROFILE_DEV_PANIC", "unwind")
            .env("ASAN_OPTIONS", "detect_leaks=1")
            .env("TSAN_OPTIONS", "halt_on_error=1");
        run(&mut command)?;
    }
    Ok(())
}

pub fn sanitize() -> Result<(), String> {
    nightly::ensure(&["rust-src"])?;
    sanitized("address", ASAN_TESTS)?;
    sanitized("thread", TSAN_TESTS)?;
    eprintln!("sanitize: the address and thread sanitizers found nothing");
    Ok(())
}
