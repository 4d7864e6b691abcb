//! `cargo xtask baseline`: the seed driver against its C baseline (issue 12, "Performance 1").
//!
//! Builds three images and prints their figures:
//! - the shipped Rust image (`wsk_attach.sys`, logging), built and checked as `cargo xtask sys`
//!   does;
//! - the Rust image with logging compiled out (feature `no-log`), built into `target/nolog` so the
//!   shipped image stays, and checked (no `DbgPrintEx` import);
//! - `baseline/wsk_attach_baseline.c`, Microsoft's seed completed in C, built with mingw-w64
//!   (`x86_64-w64-mingw32-gcc -Os`, installed when missing) into `target/baseline`.
//!
//! It also builds the C echo driver, `baseline/wsk_echo_baseline.c` (the comparator of
//! `examples/wsk-echo`, issue 20), in both registration modes ([`build_c_echo`]), and prints its
//! sizes beside the Rust echo image's; its throughput and latency are `cargo xtask echo-bench`'s.
//! Then the instructions per 64 KiB echo round trip of the Rust echo image and the C raw NMR one
//! (issue 20 item 4): each runs the harness's `echo` scenario in bulk mode
//! (`count_instructions.py --echo-bulk`: `Parameters\Bytes` = K1 and K2 chunks of 64 KiB, a
//! 64-byte `Message`), twice (the counts must be the same), and (count(K2) - count(K1)) /
//! (K2 - K1) is one round trip's cost; printed with the socket calls per round trip, the ratio
//! Rust / C against the goal (1.5x, not asserted), the same without the byte comparison (the C
//! driver's `RtlCompareMemory` runs outside its image) and the functions a round trip's
//! instructions go to.
//!
//! Figures: each image's file size (and `.text` size), and the instructions each executes inside
//! itself from `DriverEntry` to the end of `DriverUnload` under Speakeasy
//! (`tests/speakeasy/count_instructions.py`: a code hook over the image's range while the harness
//! plays NMR and checks its rules), for the scenarios "1.1 accepted" and "fallback to 1.0", with
//! the ratios to C and the functions the instructions go to. The goals are printed, not asserted;
//! the command fails when a build fails, a run breaks a harness rule or does not complete, or a
//! count is zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::LittleEndian as LE;
use object::read::pe::PeFile64;

use crate::image::{self, Logging};
use crate::{root, run, toolchain};

use crate::toolchain::{MINGW_GCC, MINGW_LIB};
const MINGW_DLLTOOL: &str = "x86_64-w64-mingw32-dlltool";

/// What a C driver author passes for the smallest honest `-Os` kernel image: freestanding, no C
/// runtime, one function and one datum per section so the linker drops what is unused, stripped;
/// a native image entered at `DriverEntry`, relocatable (ASLR) and NX-compatible, with the usual
/// 512-byte file and page section alignment. Unwind tables stay (`.pdata`/`.xdata`, as MSVC
/// emits them: the kernel's stack walks need them).
const CFLAGS: &[&str] = &[
    "-Os",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-ffreestanding",
    "-nostdlib",
    "-fno-stack-protector",
    "-fno-builtin",
    "-ffunction-sections",
    "-fdata-sections",
    "-s",
    "-Wl,--subsystem,native",
    "-Wl,--entry,DriverEntry",
    "-Wl,--gc-sections",
    "-Wl,--dynamicbase",
    "-Wl,--nxcompat",
    "-Wl,--image-base,0x140000000",
    "-Wl,--file-alignment,0x200",
    "-Wl,--section-alignment,0x1000",
];

/// The C echo driver's source, and the images [`build_c_echo`] makes of it: raw NMR (the default)
/// and `-DWSK_REGISTER`.
const C_ECHO_SOURCE: &str = "baseline/wsk_echo_baseline.c";
const C_ECHO_IMAGES: [(&str, &[&str]); 2] = [
    ("wsk_echo_baseline", &[]),
    ("wsk_echo_baseline_wskregister", &["-DWSK_REGISTER"]),
];
/// The echo driver is a throughput and latency comparator: built for speed (`-O2` where the
/// seed's baseline has `-Os`), the rest of [`CFLAGS`] as it is.
const C_ECHO_OPTIMIZATION: &str = "-O2";

/// The harness scenarios compared, with the names issue 12 gives them.
const SCENARIOS: &[(&str, &str)] = &[("default", "1.1 accepted"), ("fallback", "fallback to 1.0")];

/// Functions shown per image and scenario.
const TOP_FUNCTIONS: usize = 8;

/// One image under comparison.
struct Image {
    label: &'static str,
    path: PathBuf,
    map: PathBuf,
}

/// What the instruction count of one image found, per scenario: the instructions inside the
/// image, the driver's socket calls (`WskSend`, `WskReceive`, ...) and the instructions per function.
#[derive(Default)]
struct Counts {
    instructions: BTreeMap<String, u64>,
    calls: BTreeMap<String, BTreeMap<String, u64>>,
    functions: BTreeMap<String, Vec<(u64, String)>>,
}

/// The echo figure (issue 20 item 4): bulk runs of `K1` and `K2` chunks of [`ECHO_CHUNK`] bytes;
/// the difference of their counts over `K2 - K1` is one round trip's (load, connect, close and
/// unload cancel out).
const ECHO_CHUNKS: (u64, u64) = (4, 12);
/// A bulk chunk: the echo drivers send at most 64 KiB at once, and the 64-byte Message of
/// `count_instructions.py --echo-bulk` makes every chunk exactly that.
const ECHO_CHUNK: u64 = 64 * 1024;
/// The goal of issue 20: Rust <= 1.5x C instructions per round trip (printed, not asserted).
const ECHO_GOAL: f64 = 1.5;
/// Functions whose instructions are the byte comparison of what came back: the Rust driver's
/// (`stream::matches`' slice comparison) runs inside its image; the C driver calls
/// `RtlCompareMemory`, a kernel routine outside its image (not counted).
const COMPARE_FUNCTIONS: &[&str] = &[
    "compiler_builtins::mem::memcmp",
    "compiler_builtins::mem::bcmp",
];

/// `target/baseline`, created.
fn out_dir() -> Result<PathBuf, String> {
    let out = root().join("target").join("baseline");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// NETIO.SYS's import library: mingw-w64's when it has one, else one made from our .def in
/// `out`.
fn netio_library(out: &Path) -> Result<PathBuf, String> {
    let mingw_netio = Path::new(MINGW_LIB).join("libnetio.a");
    if mingw_netio.exists() {
        return Ok(mingw_netio);
    }
    let lib = out.join("libnetio.a");
    run(Command::new(MINGW_DLLTOOL)
        .current_dir(root())
        .arg("-d")
        .arg("baseline/netio.def")
        .arg("-l")
        .arg(&lib))?;
    Ok(lib)
}

/// Builds the C echo driver (`baseline/wsk_echo_baseline.c`) with mingw-w64 (installed when
/// missing) into `target/baseline/wsk_echo_baseline.sys` (raw NMR) and
/// `target/baseline/wsk_echo_baseline_wskregister.sys` (`-DWSK_REGISTER`), each with its linker
/// map beside it; returns the two images, in that order.
pub fn build_c_echo() -> Result<[PathBuf; 2], String> {
    crate::toolchain::ensure_mingw()?;
    let out = out_dir()?;
    let netio = netio_library(&out)?;
    let flags = CFLAGS.iter().map(|flag| {
        if *flag == "-Os" {
            C_ECHO_OPTIMIZATION
        } else {
            flag
        }
    });
    let mut images = Vec::new();
    for (name, defines) in C_ECHO_IMAGES {
        let image = out.join(format!("{name}.sys"));
        let map = out.join(format!("{name}.map"));
        run(Command::new(MINGW_GCC)
            .current_dir(root())
            .args(flags.clone())
            .args(defines)
            .arg(format!("-Wl,-Map,{}", map.display()))
            .arg("-o")
            .arg(&image)
            .arg(C_ECHO_SOURCE)
            .arg("-lntoskrnl")
            .arg(&netio))?;
        images.push(image);
    }
    let [nmr, wsk_register]: [PathBuf; 2] = images
        .try_into()
        .map_err(|_| "build_c_echo: not two images".to_string())?;
    Ok([nmr, wsk_register])
}

/// Where [`build_c_echo`] puts the C echo driver's raw NMR image.
pub fn c_echo_image() -> PathBuf {
    root()
        .join("target")
        .join("baseline")
        .join(format!("{}.sys", C_ECHO_IMAGES[0].0))
}

/// Builds the C baseline into `target/baseline`; returns the image and its linker map.
fn build_c() -> Result<Image, String> {
    let out = out_dir()?;
    let netio = netio_library(&out)?;
    let image = out.join("wsk_attach_baseline.sys");
    let map = out.join("wsk_attach_baseline.map");
    run(Command::new(MINGW_GCC)
        .current_dir(root())
        .args(CFLAGS)
        .arg(format!("-Wl,-Map,{}", map.display()))
        .arg("-o")
        .arg(&image)
        .arg("baseline/wsk_attach_baseline.c")
        .arg("-lntoskrnl")
        .arg(&netio))?;
    Ok(Image {
        label: "C baseline (mingw-w64 gcc -Os)",
        path: image,
        map,
    })
}

/// The file size and the `.text` size of the image at `path`.
fn sizes(path: &Path) -> Result<(u64, u64), String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let pe = PeFile64::parse(&*data)
        .map_err(|e| format!("{}: not a PE32+ image: {e}", path.display()))?;
    let text = pe
        .section_table()
        .iter()
        .filter(|section| section.name.starts_with(b".text"))
        .map(|section| u64::from(section.virtual_size.get(LE)))
        .sum();
    Ok((data.len() as u64, text))
}

/// Runs the seed's scenarios on `image` with the instruction-counting hook; fails when the
/// harness found a problem (a rule broken, a run not completed, a zero count) or a count is zero.
fn count(python: &Path, image: &Image) -> Result<Counts, String> {
    let scenarios: Vec<String> = SCENARIOS
        .iter()
        .map(|(scenario, _)| (*scenario).to_string())
        .collect();
    let args: Vec<String> = scenarios
        .iter()
        .flat_map(|scenario| ["--scenario".to_string(), scenario.clone()])
        .collect();
    count_runs(python, image, "wsk_attach", &args, &scenarios)
}

/// The `count_instructions.py` scenario name of a bulk echo of `chunks` chunks.
fn bulk_scenario(chunks: u64) -> String {
    format!("echo-bulk:{}", chunks * ECHO_CHUNK)
}

/// Runs the bulk echo of [`ECHO_CHUNKS`] on an echo driver's `image` (profile `wsk_echo`: the C
/// driver has the Rust driver's identity) with the instruction-counting hook.
fn count_echo(python: &Path, image: &Image) -> Result<Counts, String> {
    let (k1, k2) = ECHO_CHUNKS;
    let args: Vec<String> = [k1, k2]
        .iter()
        .flat_map(|k| ["--echo-bulk".to_string(), (k * ECHO_CHUNK).to_string()])
        .collect();
    count_runs(
        python,
        image,
        "wsk_echo",
        &args,
        &[bulk_scenario(k1), bulk_scenario(k2)],
    )
}

/// Runs `count_instructions.py --tsv` on `image` (profile `profile`, its scenarios given by
/// `args`); fails when the harness found a problem (a rule broken, a run not completed, a zero
/// count) or one of `scenarios` has no count or a zero one.
fn count_runs(
    python: &Path,
    image: &Image,
    profile: &str,
    args: &[String],
    scenarios: &[String],
) -> Result<Counts, String> {
    let mut command = Command::new(python);
    command
        .arg("tests/speakeasy/count_instructions.py")
        .arg("--tsv")
        .args(["--profile", profile])
        .arg("--map")
        .arg(&image.map)
        .args(args)
        .arg(&image.path)
        .current_dir(root());
    eprintln!("$ {}", crate::describe(&command));
    let output = command
        .output()
        .map_err(|e| format!("count_instructions.py: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut counts = Counts::default();
    let mut problems = Vec::new();
    let number = |line: &str, n: &str| {
        n.parse::<u64>()
            .map_err(|e| format!("count_instructions.py: {line:?}: {e}"))
    };
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["instructions", scenario, n] => {
                counts
                    .instructions
                    .insert((*scenario).to_string(), number(line, n)?);
            }
            ["calls", scenario, n, name] => {
                counts
                    .calls
                    .entry((*scenario).to_string())
                    .or_default()
                    .insert((*name).to_string(), number(line, n)?);
            }
            ["function", scenario, n, name] => {
                counts
                    .functions
                    .entry((*scenario).to_string())
                    .or_default()
                    .push((number(line, n)?, (*name).to_string()));
            }
            ["problem", scenario, text] => problems.push(format!("{scenario}: {text}")),
            _ => {}
        }
    }
    if !output.status.success() || !problems.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        return Err(format!(
            "{} ({}): the Speakeasy run failed ({})\n  {}",
            image.label,
            image.path.display(),
            output.status,
            problems.join("\n  ")
        ));
    }
    for scenario in scenarios {
        match counts.instructions.get(scenario) {
            Some(n) if *n > 0 => {}
            other => {
                return Err(format!(
                    "{} ({}), scenario {scenario}: instruction count {other:?}: no instruction \
                     counted inside the image",
                    image.label,
                    image.path.display()
                ));
            }
        }
    }
    Ok(counts)
}

/// One echo image's figures per 64 KiB round trip, from its bulk runs.
struct RoundTrip {
    /// The whole runs' counts, K1 then K2 chunks.
    totals: (u64, u64),
    /// Instructions per round trip: (count(K2) - count(K1)) / (K2 - K1).
    per_trip: f64,
    /// Of which the byte comparison inside the image ([`COMPARE_FUNCTIONS`]).
    compare: f64,
    /// Socket calls per round trip, by name (`WskSend`, `WskReceive`).
    calls: BTreeMap<String, f64>,
    /// Functions by instructions per round trip, most first.
    functions: Vec<(f64, String)>,
}

#[allow(clippy::cast_precision_loss)] // instruction and call counts, far below 2^52
fn per_trip(counts: &Counts) -> Result<RoundTrip, String> {
    let (k1, k2) = ECHO_CHUNKS;
    let (s1, s2) = (bulk_scenario(k1), bulk_scenario(k2));
    let total = |s: &String| counts.instructions.get(s).copied().unwrap_or(0);
    let totals = (total(&s1), total(&s2));
    let trips = (k2 - k1) as f64;
    let difference = |a: u64, b: u64| (b as f64 - a as f64) / trips;
    if totals.1 <= totals.0 {
        return Err(format!(
            "echo round trips: {} instructions for {k2} chunks, {} for {k1}: no cost per chunk",
            totals.1, totals.0
        ));
    }
    let mut calls = BTreeMap::new();
    for name in ["WskSend", "WskReceive"] {
        let n = |s: &String| {
            counts
                .calls
                .get(s)
                .and_then(|c| c.get(name))
                .copied()
                .unwrap_or(0)
        };
        calls.insert(name.to_string(), difference(n(&s1), n(&s2)));
    }
    let by_name = |s: &String| -> BTreeMap<&str, u64> {
        counts
            .functions
            .get(s)
            .into_iter()
            .flatten()
            .map(|(n, name)| (name.as_str(), *n))
            .collect()
    };
    let (f1, f2) = (by_name(&s1), by_name(&s2));
    let mut functions: Vec<(f64, String)> = f2
        .keys()
        .chain(f1.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|name| {
            let a = f1.get(name).copied().unwrap_or(0);
            let b = f2.get(name).copied().unwrap_or(0);
            (difference(a, b), (*name).to_string())
        })
        .filter(|(n, _)| *n != 0.0)
        .collect();
    functions.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let compare = functions
        .iter()
        .filter(|(_, name)| COMPARE_FUNCTIONS.contains(&name.as_str()))
        .map(|(n, _)| n)
        .sum();
    Ok(RoundTrip {
        totals,
        per_trip: difference(totals.0, totals.1),
        compare,
        calls,
        functions,
    })
}

/// Counts the bulk runs of `image` twice and checks both give the same figures (the harness is
/// deterministic: a difference is a harness bug, and the figure would mean nothing).
fn count_echo_twice(python: &Path, image: &Image) -> Result<Counts, String> {
    let first = count_echo(python, image)?;
    let second = count_echo(python, image)?;
    if first.instructions != second.instructions || first.calls != second.calls {
        return Err(format!(
            "{} ({}): two identical bulk runs gave different counts ({:?} then {:?}): the \
             figure is not reproducible",
            image.label,
            image.path.display(),
            first.instructions,
            second.instructions
        ));
    }
    Ok(first)
}

/// The echo section: per image, the bulk runs' totals, the instructions per 64 KiB round trip,
/// the socket calls per round trip, the ratio Rust / C, and where a round trip's instructions go.
fn echo_trip_report(labels: [&str; 2], trips: &[RoundTrip; 2]) -> String {
    let (k1, k2) = ECHO_CHUNKS;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\necho round trips (Speakeasy, bulk mode, 64 KiB chunks, instructions inside the image; \
         each count the same in two runs):"
    );
    for (label, trip) in labels.iter().zip(trips) {
        let calls = |name: &str| trip.calls.get(name).copied().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "  {label:<28} K1={k1}: {}  K2={k2}: {}  per 64 KiB round trip: {:.0}   \
             (sends/receives per round trip: {}/{})",
            trip.totals.0,
            trip.totals.1,
            trip.per_trip,
            calls("WskSend"),
            calls("WskReceive")
        );
    }
    let [rust, c] = trips;
    let ratio = rust.per_trip / c.per_trip;
    let _ = writeln!(
        out,
        "  Rust / C: {ratio:.2}x (goal <= {ECHO_GOAL}x: {})",
        if ratio <= ECHO_GOAL { "met" } else { "NOT met" }
    );
    let (rust_rest, c_rest) = (rust.per_trip - rust.compare, c.per_trip - c.compare);
    let _ = writeln!(
        out,
        "  without the byte comparison of what came back (Rust: memcmp inside its image, {:.0} \
         per round trip; C: RtlCompareMemory, a kernel routine outside its image, not counted): \
         Rust {rust_rest:.0}, C {c_rest:.0}, Rust / C: {:.2}x",
        rust.compare,
        rust_rest / c_rest
    );
    let _ = writeln!(
        out,
        "\n  where a round trip's instructions go (top functions):"
    );
    for (label, trip) in labels.iter().zip(trips) {
        let _ = writeln!(out, "  {label}:");
        for (n, function) in trip.functions.iter().take(TOP_FUNCTIONS) {
            let _ = writeln!(out, "    {n:>8.1}  {function}");
        }
    }
    out
}

#[allow(clippy::cast_precision_loss)] // byte and instruction counts, far below 2^52
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

pub fn baseline() -> Result<(), String> {
    // The shipped image, built and checked as `cargo xtask sys` does.
    crate::build_and_check()?;
    let normal = Image {
        label: "Rust seed (wsk_attach.sys)",
        path: toolchain::image_path("wsk_attach"),
        map: toolchain::map_path("wsk_attach"),
    };
    // The same driver with logging compiled out, in its own target directory.
    let nolog_dir = root().join("target").join("nolog");
    let nolog_path = toolchain::build_variant("wsk-attach", "wsk_attach", "no-log", &nolog_dir)?;
    print!(
        "{}",
        image::check_logging(&nolog_path, &root(), Logging::Off)?
    );
    let nolog = Image {
        label: "Rust seed, no-log",
        map: image::map_beside(&nolog_path),
        path: nolog_path,
    };
    crate::toolchain::ensure_mingw()?;
    let c = build_c()?;

    run(Command::new("bash").arg("tests/speakeasy/setup-venv.sh"))?;
    let python = root().join("target/speakeasy-venv/bin/python");
    let images = [normal, nolog, c];
    let counts = images
        .iter()
        .map(|image| count(&python, image))
        .collect::<Result<Vec<Counts>, String>>()?;
    let image_sizes = images
        .iter()
        .map(|image| sizes(&image.path))
        .collect::<Result<Vec<(u64, u64)>, String>>()?;
    print!("{}", report(&images, &image_sizes, &counts));
    let echo = echo_images(build_c_echo()?);
    let echo_sizes = echo
        .iter()
        .map(|(_, path)| sizes(path))
        .collect::<Result<Vec<(u64, u64)>, String>>()?;
    print!("{}", echo_report(&echo, &echo_sizes));
    // Instructions per 64 KiB echo round trip, Rust against C raw NMR (issue 20 item 4).
    let echo_counted = [
        Image {
            label: "wsk_echo.sys (Rust)",
            path: toolchain::image_path("wsk_echo"),
            map: toolchain::map_path("wsk_echo"),
        },
        Image {
            label: "wsk_echo_baseline.sys (C)",
            map: echo[1].1.with_extension("map"),
            path: echo[1].1.clone(),
        },
    ];
    let trips = echo_counted
        .iter()
        .map(|image| count_echo_twice(&python, image).and_then(|c| per_trip(&c)))
        .collect::<Result<Vec<RoundTrip>, String>>()?;
    let trips: [RoundTrip; 2] = trips
        .try_into()
        .map_err(|_| "echo round trips: not two images".to_string())?;
    print!(
        "{}",
        echo_trip_report([echo_counted[0].label, echo_counted[1].label], &trips)
    );
    Ok(())
}

/// The echo images compared by size: the Rust one (`cargo xtask sys` built it), then the C
/// ones.
fn echo_images(c: [PathBuf; 2]) -> Vec<(&'static str, PathBuf)> {
    let [nmr, wsk_register] = c;
    vec![
        (
            "Rust echo (wsk_echo.sys)",
            toolchain::image_path("wsk_echo"),
        ),
        ("C echo, raw NMR (gcc -O2)", nmr),
        ("C echo, WskRegister (gcc -O2)", wsk_register),
    ]
}

/// The sizes of the echo images (Rust first, then C raw NMR, C `WskRegister`), with the ratios of
/// each to the C raw NMR one.
fn echo_report(images: &[(&str, PathBuf)], sizes: &[(u64, u64)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\necho drivers: image size (file bytes; .text bytes) and ratio to the C raw NMR one \
         (throughput and latency: cargo xtask echo-bench)"
    );
    let Some(&(c_size, c_text)) = sizes.get(1) else {
        return out;
    };
    for ((label, path), (size, text)) in images.iter().zip(sizes) {
        let _ = writeln!(
            out,
            "  {label:<32} {size:>6} B  (.text {text:>5} B)  size x{:.2}  .text x{:.2}   {}",
            ratio(*size, c_size),
            ratio(*text, c_text),
            path.display()
        );
    }
    out
}

/// The figures of `images` (Rust, Rust no-log, C), their `sizes` (file, `.text`) and `counts`.
fn report(images: &[Image; 3], sizes: &[(u64, u64)], counts: &[Counts]) -> String {
    let mut out = String::new();
    let (c_size, c_text) = sizes[2];
    let _ = writeln!(
        out,
        "\nimage size (file bytes; .text bytes) and ratio to the C baseline"
    );
    for (image, (size, text)) in images.iter().zip(sizes) {
        let _ = writeln!(
            out,
            "  {:<32} {size:>6} B  (.text {text:>5} B)  size x{:.2}  .text x{:.2}   {}",
            image.label,
            ratio(*size, c_size),
            ratio(*text, c_text),
            image.path.display()
        );
    }
    let _ = writeln!(
        out,
        "\ninstructions executed inside the image, DriverEntry to the end of DriverUnload \
         (Speakeasy), and ratio to the C baseline"
    );
    let _ = writeln!(
        out,
        "  {:<18} {:>10} {:>12} {:>8} {:>10} {:>12}",
        "scenario", "Rust", "Rust no-log", "C", "Rust/C", "no-log/C"
    );
    for (scenario, name) in SCENARIOS {
        let n: Vec<u64> = counts
            .iter()
            .map(|c| c.instructions.get(*scenario).copied().unwrap_or(0))
            .collect();
        let _ = writeln!(
            out,
            "  {name:<18} {:>10} {:>12} {:>8} {:>9.2}x {:>11.2}x",
            n[0],
            n[1],
            n[2],
            ratio(n[0], n[2]),
            ratio(n[1], n[2])
        );
    }
    let _ = writeln!(out, "\nwhere the instructions go (top functions)");
    for (scenario, name) in SCENARIOS {
        for (image, c) in images.iter().zip(counts) {
            let _ = writeln!(out, "  {}, {name}:", image.label);
            for (n, function) in c
                .functions
                .get(*scenario)
                .into_iter()
                .flatten()
                .take(TOP_FUNCTIONS)
            {
                let _ = writeln!(out, "    {n:>6}  {function}");
            }
        }
    }
    let (nolog_size, _) = sizes[1];
    let _ = writeln!(
        out,
        "\ngoals of issue 12 (printed, not asserted): no-log size <= C: {} ({nolog_size} vs \
         {c_size} B)",
        if nolog_size <= c_size {
            "met"
        } else {
            "NOT met"
        }
    );
    for (scenario, name) in SCENARIOS {
        let rust = counts[1].instructions.get(*scenario).copied().unwrap_or(0);
        let c = counts[2].instructions.get(*scenario).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {name}: no-log instructions <= 1.5x C: {} ({rust} vs {c}, x{:.2})",
            if rust * 2 <= c * 3 { "met" } else { "NOT met" },
            ratio(rust, c)
        );
    }
    out
}
