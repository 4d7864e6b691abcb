//! `cargo xtask echo-bench [--runs N] [--bytes N] [--before REV]`: echo throughput in Wine —
//! figures, never a test. The example driver (`wsk_echo.sys`, raw NMR, through the `bridge` test
//! NETIO.SYS to Wine's own WSK provider) moves `--bytes` (default 16 MiB) through a loopback echo
//! server with `Parameters\Bytes`, beside the same driver as it was at `--before` (default
//! [`BEFORE`]: the work-item, lock-step exchange that issue 17 replaced with a task keeping two
//! chunks in flight; built from a git worktree of that commit) and a user-mode Winsock client
//! (`tests/wine/echo-bench/winsock_echo.c`, mingw-w64, 64 KiB lock-step chunks) doing the same in
//! the same prefix: same server, same message, every byte checked by each. Each side runs `--runs`
//! times (default 3, alternating); printed: every run, the medians in ms and MiB/s, and the
//! ratios.
//!
//! It installs what it needs (the cross toolchain, mingw-w64, Wine and the tests' venv), builds
//! and checks the images, builds the client, and runs `tests/wine/echo-bench/bench.py`, which
//! sets the prefix up as the Wine tests do (`tests/wine/wine_harness.py`). A failed run, a byte
//! count that differs, a leak or a crash fails the command.

use std::path::Path;
use std::process::Command;

use crate::{root, run, toolchain};

use crate::toolchain::MINGW_GCC;
const CLIENT_SOURCE: &str = "tests/wine/echo-bench/winsock_echo.c";
const BENCH_SCRIPT: &str = "tests/wine/echo-bench/bench.py";
const MIB: f64 = 1024.0 * 1024.0;
/// The driver compared against by default: the last commit whose echo exchange waited in work
/// items, one 64 KiB chunk in flight (main before issue 17's task landed).
pub const BEFORE: &str = "6c95c07";

/// The figures of one side: milliseconds per run.
#[derive(Debug, Default, PartialEq)]
struct Runs {
    driver: Vec<f64>,
    before: Vec<f64>,
    winsock: Vec<f64>,
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(f64::midpoint(sorted[n / 2 - 1], sorted[n / 2])),
    }
}

/// Reads bench.py's figures (`driver BYTES MS` / `winsock BYTES MS` lines); every line must
/// name `bytes`.
fn parse_figures(text: &str, bytes: u64) -> Result<Runs, String> {
    let mut runs = Runs::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [side, n, ms] = fields[..] else {
            return Err(format!("echo-bench: unreadable figure line {line:?}"));
        };
        if n.parse::<u64>() != Ok(bytes) {
            return Err(format!("echo-bench: {side} moved {n} bytes, not {bytes}"));
        }
        let ms: f64 = ms
            .parse()
            .map_err(|_| format!("echo-bench: unreadable time in {line:?}"))?;
        match side {
            "driver" => runs.driver.push(ms),
            "before" => runs.before.push(ms),
            "winsock" => runs.winsock.push(ms),
            _ => return Err(format!("echo-bench: unknown side in {line:?}")),
        }
    }
    Ok(runs)
}

/// MiB/s of `bytes` in `ms` milliseconds.
fn mib_per_s(bytes: u64, ms: f64) -> f64 {
    #[allow(clippy::cast_precision_loss)] // at most 4 GiB: exact in an f64
    let bytes = bytes as f64;
    bytes / MIB / (ms / 1000.0)
}

/// The summary: every run, the medians, the ratios (driver throughput / the driver before, and /
/// Winsock throughput).
fn report(runs: &Runs, bytes: u64, before: &str) -> Result<String, String> {
    let (Some(driver), Some(old), Some(winsock)) = (
        median(&runs.driver),
        median(&runs.before),
        median(&runs.winsock),
    ) else {
        return Err("echo-bench: no figures".into());
    };
    if driver <= 0.0 || old <= 0.0 || winsock <= 0.0 {
        return Err(format!(
            "echo-bench: a median of 0 ms (driver {driver} ms, before {old} ms, winsock \
             {winsock} ms): move more bytes (--bytes) for a measurable time"
        ));
    }
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|ms| format!("{ms:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    #[allow(clippy::cast_precision_loss)]
    let mib = bytes as f64 / MIB;
    Ok(format!(
        "echo-bench: {mib:.2} MiB ({bytes} bytes) through a loopback echo server in Wine, 64 KiB \
         chunks, every byte checked; {} runs each\n\
         \x20 driver  (wsk_echo.sys, a task, two chunks in flight):       runs {} ms; median {driver:.1} ms = {:.1} MiB/s\n\
         \x20 before  (wsk_echo.sys at {before}, work items, lock-step): runs {} ms; median {old:.1} ms = {:.1} MiB/s\n\
         \x20 winsock (winsock_echo.exe, ws2_32, lock-step):             runs {} ms; median {winsock:.1} ms = {:.1} MiB/s\n\
         \x20 ratio driver / before: {:.2}; driver / winsock: {:.2} (before / winsock: {:.2})\n",
        runs.driver.len(),
        list(&runs.driver),
        mib_per_s(bytes, driver),
        list(&runs.before),
        mib_per_s(bytes, old),
        list(&runs.winsock),
        mib_per_s(bytes, winsock),
        old / driver,
        winsock / driver,
        winsock / old,
    ))
}

/// The echo driver as it was at `rev`: a git worktree of that commit in `target/echo-bench/`,
/// built into its own target directory.
fn before_image(rev: &str) -> Result<std::path::PathBuf, String> {
    let out = root().join("target").join("echo-bench");
    let source = out.join("before");
    if source.join(".git").exists() {
        run(Command::new("git")
            .arg("-C")
            .arg(&source)
            .args(["checkout", "--quiet", "--detach", rev]))?;
    } else {
        run(Command::new("git")
            .current_dir(root())
            .args(["worktree", "add", "--force", "--detach"])
            .arg(&source)
            .arg(rev))?;
    }
    toolchain::build_variant_from(
        &source,
        "wsk-echo",
        "wsk_echo",
        "",
        &out.join("before-target"),
    )
}

/// The Python of the Wine tests' venv (`tests/wine/setup.sh` installs Wine and the venv when
/// missing and prints its path last).
fn wine_python() -> Result<String, String> {
    let out = Command::new("bash")
        .arg("tests/wine/setup.sh")
        .current_dir(root())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("tests/wine/setup.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(python) if out.status.success() && Path::new(python).exists() => {
            Ok(python.to_string())
        }
        _ => Err(format!(
            "tests/wine/setup.sh failed ({}): {stdout}",
            out.status
        )),
    }
}

/// `cargo xtask echo-bench [--runs N] [--bytes N] [--before REV]`.
pub fn echo_bench(args: &[String]) -> Result<(), String> {
    let usage =
        || "usage: cargo xtask echo-bench [--runs N] [--bytes N] [--before REV]".to_string();
    let (mut runs, mut bytes, mut before) = (3u32, 16u64 << 20, BEFORE.to_string());
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(usage)?;
        match flag.as_str() {
            "--runs" => runs = value.parse().ok().filter(|n| *n > 0).ok_or_else(usage)?,
            "--bytes" => {
                bytes = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
                    .ok_or_else(usage)?;
            }
            "--before" => before.clone_from(value),
            _ => return Err(usage()),
        }
    }
    toolchain::ensure()?;
    crate::build_and_check()?;
    let image = toolchain::image_path("wsk_echo");
    let before_image = before_image(&before)?;
    crate::toolchain::ensure_mingw()?;
    let out_dir = root().join("target").join("echo-bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let client = out_dir.join("winsock_echo.exe");
    run(Command::new(MINGW_GCC)
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o"])
        .arg(&client)
        .arg(CLIENT_SOURCE)
        .arg("-lws2_32"))?;
    let python = wine_python()?;
    let figures = out_dir.join("figures.txt");
    let _ = std::fs::remove_file(&figures);
    run(Command::new(python)
        .arg(BENCH_SCRIPT)
        .arg("--image")
        .arg(&image)
        .arg("--before")
        .arg(&before_image)
        .arg("--client")
        .arg(&client)
        .arg("--out")
        .arg(&figures)
        .args(["--bytes", &bytes.to_string(), "--runs", &runs.to_string()])
        .env("WSK_DRIVER_PROFILE", "wsk_echo"))?;
    let text =
        std::fs::read_to_string(&figures).map_err(|e| format!("{}: {e}", figures.display()))?;
    let measured = parse_figures(&text, bytes)?;
    let expected = usize::try_from(runs).unwrap_or(usize::MAX);
    if [&measured.driver, &measured.before, &measured.winsock]
        .iter()
        .any(|side| side.len() != expected)
    {
        return Err(format!(
            "echo-bench: {} driver, {} before and {} winsock runs, not {runs} each",
            measured.driver.len(),
            measured.before.len(),
            measured.winsock.len()
        ));
    }
    print!("{}", report(&measured, bytes, &before)?);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Runs, median, mib_per_s, parse_figures, report};

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn figures_are_read_and_checked() {
        let runs = parse_figures(
            "driver 16 10\nbefore 16 20\nwinsock 16 2.5\n\ndriver 16 12\n",
            16,
        )
        .unwrap();
        assert_eq!(
            runs,
            Runs {
                driver: vec![10.0, 12.0],
                before: vec![20.0],
                winsock: vec![2.5]
            }
        );
        assert!(
            parse_figures("driver 15 10\n", 16).is_err(),
            "wrong byte count"
        );
        assert!(parse_figures("driver 16\n", 16).is_err());
        assert!(parse_figures("other 16 1\n", 16).is_err());
        assert!(parse_figures("driver 16 fast\n", 16).is_err());
    }

    #[test]
    fn the_ratios_are_throughputs_over_the_drivers() {
        assert!((mib_per_s(16 << 20, 1000.0) - 16.0).abs() < 1e-9);
        let runs = Runs {
            driver: vec![400.0, 200.0, 300.0],
            before: vec![600.0, 600.0, 500.0],
            winsock: vec![100.0, 100.0, 150.0],
        };
        let text = report(&runs, 16 << 20, "abc").unwrap();
        assert!(text.contains("median 300.0 ms = 53.3 MiB/s"), "{text}");
        assert!(text.contains("median 600.0 ms = 26.7 MiB/s"), "{text}");
        assert!(text.contains("median 100.0 ms = 160.0 MiB/s"), "{text}");
        assert!(
            text.contains(
                "ratio driver / before: 2.00; driver / winsock: 0.33 (before / winsock: 0.17)"
            ),
            "{text}"
        );
        let zero = Runs {
            driver: vec![0.0],
            before: vec![1.0],
            winsock: vec![1.0],
        };
        assert!(report(&zero, 1, "abc").is_err());
    }
}
