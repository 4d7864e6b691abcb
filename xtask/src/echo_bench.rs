//! `cargo xtask echo-bench [--runs N] [--bytes N] [--before REV | --no-before] [--round-trips [N]]`: echo
//! throughput and latency in Wine — figures, never a test. The example driver (`wsk_echo.sys`,
//! raw NMR, through the `bridge` test NETIO.SYS to Wine's own WSK provider) moves `--bytes`
//! (default 16 MiB) through a loopback echo server with `Parameters\Bytes`, beside the same driver
//! as it was at `--before` (default [`BEFORE`]: the work-item, lock-step exchange that issue 17
//! replaced with a task keeping two chunks in flight; built from a git worktree of that commit;
//! `--no-before` leaves it out, as CI's bounded run does),
//! the C echo driver (`baseline/wsk_echo_baseline.c`, raw NMR, built by
//! [`crate::baseline::build_c_echo`]: a system thread, IRPs and buffers allocated once, the same
//! two-chunks-in-flight algorithm) and a user-mode Winsock client
//! (`tests/wine/echo-bench/winsock_echo.c`, mingw-w64, 64 KiB lock-step chunks) doing the same in
//! the same prefix: same server, same message, every byte checked by each. Each side runs `--runs`
//! times (default 3, alternating); printed: every run, the medians in ms and MiB/s, and the
//! ratios (Rust against C: C's time over Rust's, so above 1 means Rust is faster).
//!
//! With `--round-trips` (N, default [`ROUND_TRIPS`]), `--runs` latency rounds follow: each driver
//! makes N round trips of a 1-byte message with `Parameters\RoundTrips`, one after the other,
//! and logs the p50 and p99 of their times (1 us buckets); printed: the medians of each, and the
//! ratio.
//!
//! It installs what it needs (the cross toolchain, mingw-w64, Wine and the tests' venv), builds
//! and checks the images, builds the client, and runs `tests/wine/echo-bench/bench.py`, which
//! sets the prefix up as the Wine tests do (`tests/wine/wine_harness.py`). A failed run, a byte
//! count that differs, a leak or a crash fails the command.

use std::fmt::Write as _;
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
/// Round trips per latency run when `--round-trips` has no value.
pub const ROUND_TRIPS: u32 = 10_000;

/// The figures of each side: milliseconds per throughput run, (p50, p99) in microseconds per
/// latency run, and the sides that have no latency mode.
#[derive(Debug, Default, PartialEq)]
struct Runs {
    driver: Vec<f64>,
    before: Vec<f64>,
    c: Vec<f64>,
    winsock: Vec<f64>,
    driver_latency: Vec<(f64, f64)>,
    c_latency: Vec<(f64, f64)>,
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

/// Reads bench.py's figures: `driver|before|c|winsock BYTES MS` lines (every one must name
/// `bytes`) and `driver-latency|c-latency N P50 P99` lines (every one must name `round_trips`).
fn parse_figures(text: &str, bytes: u64, round_trips: u32) -> Result<Runs, String> {
    let number = |line: &str, field: &str| -> Result<f64, String> {
        field
            .parse()
            .map_err(|_| format!("echo-bench: unreadable figure in {line:?}"))
    };
    let mut runs = Runs::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            [side @ ("driver-latency" | "c-latency"), n, p50, p99] => {
                if n.parse::<u32>() != Ok(round_trips) {
                    return Err(format!(
                        "echo-bench: {side} made {n} round trips, not {round_trips}"
                    ));
                }
                let figure = (number(line, p50)?, number(line, p99)?);
                if side == "driver-latency" {
                    runs.driver_latency.push(figure);
                } else {
                    runs.c_latency.push(figure);
                }
            }
            [side, n, ms] => {
                if n.parse::<u64>() != Ok(bytes) {
                    return Err(format!("echo-bench: {side} moved {n} bytes, not {bytes}"));
                }
                let ms = number(line, ms)?;
                match side {
                    "driver" => runs.driver.push(ms),
                    "before" => runs.before.push(ms),
                    "c" => runs.c.push(ms),
                    "winsock" => runs.winsock.push(ms),
                    _ => return Err(format!("echo-bench: unknown side in {line:?}")),
                }
            }
            _ => return Err(format!("echo-bench: unreadable figure line {line:?}")),
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

/// The summary: every run, the medians, the ratios (driver throughput / the driver before, / C,
/// and / Winsock throughput); then, when there were latency runs, the medians of their p50 and
/// p99.
fn report(runs: &Runs, bytes: u64, before: Option<&str>) -> Result<String, String> {
    let (Some(driver), Some(c), Some(winsock)) =
        (median(&runs.driver), median(&runs.c), median(&runs.winsock))
    else {
        return Err("echo-bench: no figures".into());
    };
    let old = match before {
        Some(_) => median(&runs.before).ok_or("echo-bench: no figures of the driver before")?,
        None => 1.0,
    };
    if driver <= 0.0 || old <= 0.0 || c <= 0.0 || winsock <= 0.0 {
        return Err(format!(
            "echo-bench: a median of 0 ms (driver {driver} ms, before {old} ms, C {c} ms, winsock \
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
    let mut out = format!(
        "echo-bench: {mib:.2} MiB ({bytes} bytes) through a loopback echo server in Wine, 64 KiB \
         chunks, every byte checked; {} runs each\n\
         \x20 driver  (wsk_echo.sys, a task, two chunks in flight):       runs {} ms; median {driver:.1} ms = {:.1} MiB/s\n",
        runs.driver.len(),
        list(&runs.driver),
        mib_per_s(bytes, driver),
    );
    if let Some(before) = before {
        let _ = writeln!(
            out,
            "  before  (wsk_echo.sys at {before}, work items, lock-step): runs {} ms; median {old:.1} ms = {:.1} MiB/s",
            list(&runs.before),
            mib_per_s(bytes, old),
        );
    }
    let _ = write!(
        out,
        "  c       (wsk_echo_baseline.sys, a thread, two in flight):   runs {} ms; median {c:.1} ms = {:.1} MiB/s\n\
         \x20 winsock (winsock_echo.exe, ws2_32, lock-step):             runs {} ms; median {winsock:.1} ms = {:.1} MiB/s\n",
        list(&runs.c),
        mib_per_s(bytes, c),
        list(&runs.winsock),
        mib_per_s(bytes, winsock),
    );
    if before.is_some() {
        let _ = writeln!(
            out,
            "  ratio driver / before: {:.2}; driver / winsock: {:.2} (before / winsock: {:.2})",
            old / driver,
            winsock / driver,
            winsock / old,
        );
    } else {
        let _ = writeln!(out, "  ratio driver / winsock: {:.2}", winsock / driver);
    }
    let _ = writeln!(
        out,
        "  ratio Rust / C (C's time over Rust's; above 1: Rust faster): {:.2}",
        c / driver
    );
    out.push_str(&latency_report(runs));
    Ok(out)
}

/// The latency lines: per side, the medians of its runs' p50 and p99.
fn latency_report(runs: &Runs) -> String {
    let mut out = String::new();
    for (label, figures) in [
        ("driver (wsk_echo.sys)", &runs.driver_latency),
        ("c      (wsk_echo_baseline.sys)", &runs.c_latency),
    ] {
        let p50: Vec<f64> = figures.iter().map(|(p50, _)| *p50).collect();
        let p99: Vec<f64> = figures.iter().map(|(_, p99)| *p99).collect();
        if let (Some(p50), Some(p99)) = (median(&p50), median(&p99)) {
            let _ = writeln!(
                out,
                "  latency {label}: {} runs; median p50 {p50:.0} us, median p99 {p99:.0} us \
                 (runs p50/p99: {})",
                figures.len(),
                figures
                    .iter()
                    .map(|(a, b)| format!("{a:.0}/{b:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    if let (Some(rust), Some(c)) = (
        median(&runs.driver_latency.iter().map(|f| f.0).collect::<Vec<_>>()),
        median(&runs.c_latency.iter().map(|f| f.0).collect::<Vec<_>>()),
    ) && rust > 0.0
    {
        let _ = writeln!(
            out,
            "  ratio Rust / C latency p50 (C's over Rust's; above 1: Rust faster): {:.2}",
            c / rust
        );
    }
    out
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

/// What `cargo xtask echo-bench` was asked for.
#[derive(Debug, PartialEq)]
struct Options {
    runs: u32,
    bytes: u64,
    /// The commit of the driver before; `None`: no such side (`--no-before`).
    before: Option<String>,
    /// Latency rounds of this many round trips; `None`: none.
    round_trips: Option<u32>,
}

const USAGE: &str = "usage: cargo xtask echo-bench [--runs N] [--bytes N] [--before REV | \
                     --no-before] [--round-trips [N]]";

/// Reads the command's arguments; `--round-trips` without a number is [`ROUND_TRIPS`].
fn parse_options(args: &[String]) -> Result<Options, String> {
    let usage = || USAGE.to_string();
    let mut options = Options {
        runs: 3,
        bytes: 16 << 20,
        before: Some(BEFORE.to_string()),
        round_trips: None,
    };
    let mut rest = args.iter().peekable();
    while let Some(flag) = rest.next() {
        if flag == "--round-trips" {
            let value = rest.next_if(|value| !value.starts_with("--"));
            options.round_trips = Some(match value {
                None => ROUND_TRIPS,
                Some(value) => value
                    .parse()
                    .ok()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(usage)?,
            });
            continue;
        }
        if flag == "--no-before" {
            options.before = None;
            continue;
        }
        let value = rest.next().ok_or_else(usage)?;
        match flag.as_str() {
            "--runs" => options.runs = value.parse().ok().filter(|n| *n > 0).ok_or_else(usage)?,
            "--bytes" => {
                options.bytes = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=u64::from(u32::MAX)).contains(n))
                    .ok_or_else(usage)?;
            }
            "--before" => options.before = Some(value.clone()),
            _ => return Err(usage()),
        }
    }
    Ok(options)
}

/// Whether `measured` holds every run asked for: `runs` of each throughput side (the driver
/// before only with `before`) and, with latency rounds, `runs` of C's and of the Rust driver's.
fn check_counts(measured: &Runs, runs: u32, before: bool, latency: bool) -> Result<(), String> {
    let expected = usize::try_from(runs).unwrap_or(usize::MAX);
    let counts = [
        measured.driver.len(),
        if before {
            measured.before.len()
        } else {
            expected
        },
        measured.c.len(),
        measured.winsock.len(),
    ];
    let latency_counts = [measured.driver_latency.len(), measured.c_latency.len()];
    if (!before && !measured.before.is_empty())
        || counts.iter().any(|n| *n != expected)
        || (latency && latency_counts.iter().any(|n| *n != expected))
        || (!latency && latency_counts.iter().any(|n| *n != 0))
    {
        return Err(format!(
            "echo-bench: {counts:?} driver/before/c/winsock runs and {latency_counts:?} \
             driver/c latency runs, not {runs} each"
        ));
    }
    Ok(())
}

/// `cargo xtask echo-bench [--runs N] [--bytes N] [--before REV | --no-before] [--round-trips [N]]`.
pub fn echo_bench(args: &[String]) -> Result<(), String> {
    let Options {
        runs,
        bytes,
        before,
        round_trips,
    } = parse_options(args)?;
    toolchain::ensure()?;
    crate::build_and_check()?;
    let image = toolchain::image_path("wsk_echo");
    let before_image = before.as_deref().map(before_image).transpose()?;
    let [c_image, _] = crate::baseline::build_c_echo()?;
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
    let mut bench = Command::new(python);
    bench.arg(BENCH_SCRIPT).arg("--image").arg(&image);
    if let Some(before_image) = &before_image {
        bench.arg("--before").arg(before_image);
    }
    run(bench
        .arg("--c")
        .arg(&c_image)
        .arg("--client")
        .arg(&client)
        .arg("--out")
        .arg(&figures)
        .args(["--bytes", &bytes.to_string(), "--runs", &runs.to_string()])
        .args(["--round-trips", &round_trips.unwrap_or(0).to_string()])
        .env("WSK_DRIVER_PROFILE", "wsk_echo"))?;
    let text =
        std::fs::read_to_string(&figures).map_err(|e| format!("{}: {e}", figures.display()))?;
    let measured = parse_figures(&text, bytes, round_trips.unwrap_or(0))?;
    check_counts(&measured, runs, before.is_some(), round_trips.is_some())?;
    print!("{}", report(&measured, bytes, before.as_deref())?);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{
        Options, ROUND_TRIPS, Runs, check_counts, median, mib_per_s, parse_figures, parse_options,
        report,
    };

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
            "driver 16 10\nbefore 16 20\nc 16 8\nwinsock 16 2.5\n\ndriver 16 12\n\
             driver-latency 7 40 90\nc-latency 7 30 80\n",
            16,
            7,
        )
        .unwrap();
        assert_eq!(
            runs,
            Runs {
                driver: vec![10.0, 12.0],
                before: vec![20.0],
                c: vec![8.0],
                winsock: vec![2.5],
                driver_latency: vec![(40.0, 90.0)],
                c_latency: vec![(30.0, 80.0)],
            }
        );
        assert!(
            parse_figures("driver 15 10\n", 16, 7).is_err(),
            "wrong byte count"
        );
        assert!(
            parse_figures("c-latency 8 1 2\n", 16, 7).is_err(),
            "wrong round trip count"
        );
        assert!(parse_figures("driver 16\n", 16, 7).is_err());
        assert!(parse_figures("other 16 1\n", 16, 7).is_err());
        assert!(parse_figures("driver 16 fast\n", 16, 7).is_err());
        assert!(parse_figures("c-latency 7 1\n", 16, 7).is_err());
        assert!(parse_figures("c-latency 7 1 slow\n", 16, 7).is_err());
        assert!(parse_figures("unsupported driver-latency\n", 16, 7).is_err());
    }

    #[test]
    fn options_are_read() {
        let args = |text: &str| {
            text.split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let default = parse_options(&[]).unwrap();
        assert_eq!(
            default,
            Options {
                runs: 3,
                bytes: 16 << 20,
                before: Some(super::BEFORE.to_string()),
                round_trips: None
            }
        );
        let o = parse_options(&args("--runs 1 --bytes 1048576 --round-trips 1000")).unwrap();
        assert_eq!((o.runs, o.bytes, o.round_trips), (1, 1 << 20, Some(1000)));
        let o = parse_options(&args("--round-trips --runs 2")).unwrap();
        assert_eq!((o.runs, o.round_trips), (2, Some(ROUND_TRIPS)));
        let o = parse_options(&args("--runs 2 --round-trips")).unwrap();
        assert_eq!(o.round_trips, Some(ROUND_TRIPS));
        let o = parse_options(&args("--no-before --before abc")).unwrap();
        assert_eq!(o.before.as_deref(), Some("abc"));
        let o = parse_options(&args("--before abc --no-before")).unwrap();
        assert_eq!(o.before, None);
        for bad in [
            "--round-trips 0",
            "--round-trips 1000001",
            "--runs 0",
            "--bytes 0",
            "--runs",
            "--other 1",
        ] {
            assert!(parse_options(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_run_is_counted() {
        let runs = Runs {
            driver: vec![1.0],
            before: vec![1.0],
            c: vec![1.0],
            winsock: vec![1.0],
            ..Runs::default()
        };
        assert!(check_counts(&runs, 1, true, false).is_ok());
        assert!(check_counts(&runs, 2, true, false).is_err());
        assert!(
            check_counts(&runs, 1, true, true).is_err(),
            "no latency runs"
        );
        assert!(
            check_counts(&runs, 1, false, false).is_err(),
            "before runs unasked"
        );
        let latency = Runs {
            driver_latency: vec![(1.0, 2.0)],
            c_latency: vec![(1.0, 2.0)],
            before: Vec::new(),
            ..runs
        };
        assert!(check_counts(&latency, 1, false, true).is_ok());
        assert!(
            check_counts(&latency, 1, false, false).is_err(),
            "unasked latency"
        );
        assert!(
            check_counts(&latency, 1, true, true).is_err(),
            "no before runs"
        );
        let c_only = Runs {
            driver_latency: Vec::new(),
            ..latency
        };
        assert!(
            check_counts(&c_only, 1, false, true).is_err(),
            "a Rust driver without the latency mode"
        );
    }

    #[test]
    fn the_ratios_are_throughputs_over_the_drivers() {
        assert!((mib_per_s(16 << 20, 1000.0) - 16.0).abs() < 1e-9);
        let runs = Runs {
            driver: vec![400.0, 200.0, 300.0],
            before: vec![600.0, 600.0, 500.0],
            c: vec![150.0, 150.0, 200.0],
            winsock: vec![100.0, 100.0, 150.0],
            ..Runs::default()
        };
        let text = report(&runs, 16 << 20, Some("abc")).unwrap();
        assert!(text.contains("median 300.0 ms = 53.3 MiB/s"), "{text}");
        assert!(text.contains("median 600.0 ms = 26.7 MiB/s"), "{text}");
        assert!(text.contains("median 150.0 ms = 106.7 MiB/s"), "{text}");
        assert!(text.contains("median 100.0 ms = 160.0 MiB/s"), "{text}");
        assert!(
            text.contains(
                "ratio driver / before: 2.00; driver / winsock: 0.33 (before / winsock: 0.17)"
            ),
            "{text}"
        );
        assert!(text.contains("above 1: Rust faster): 0.50"), "{text}");
        assert!(!text.contains("latency"), "no latency runs: {text}");
        let zero = Runs {
            driver: vec![0.0],
            before: vec![1.0],
            c: vec![1.0],
            winsock: vec![1.0],
            ..Runs::default()
        };
        assert!(report(&zero, 1, Some("abc")).is_err());
        let text = report(
            &Runs {
                before: Vec::new(),
                ..runs
            },
            16 << 20,
            None,
        )
        .unwrap();
        assert!(!text.contains("before"), "{text}");
        assert!(text.contains("ratio driver / winsock: 0.33"), "{text}");
    }

    #[test]
    fn latency_medians_per_side() {
        let runs = Runs {
            driver: vec![1.0],
            before: vec![1.0],
            c: vec![1.0],
            winsock: vec![1.0],
            driver_latency: vec![(50.0, 200.0), (40.0, 100.0), (60.0, 300.0)],
            c_latency: vec![(30.0, 90.0), (20.0, 70.0), (25.0, 80.0)],
        };
        let text = report(&runs, 1 << 20, Some("abc")).unwrap();
        assert!(
            text.contains("wsk_echo.sys): 3 runs; median p50 50 us, median p99 200 us"),
            "{text}"
        );
        assert!(
            text.contains("wsk_echo_baseline.sys): 3 runs; median p50 25 us, median p99 80 us"),
            "{text}"
        );
        assert!(text.contains("above 1: Rust faster): 0.50"), "{text}");
    }
}
