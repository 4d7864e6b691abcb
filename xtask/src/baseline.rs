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
//! sizes beside the Rust echo image's; its figures are `cargo xtask echo-bench`'s.
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

/// What the instruction count of one image found, per scenario.
#[derive(Default)]
struct Counts {
    instructions: BTreeMap<String, u64>,
    functions: BTreeMap<String, Vec<(u64, String)>>,
}

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

/// Runs both scenarios on `image` with the instruction-counting hook; fails when the harness
/// found a problem (a rule broken, a run not completed, a zero count) or a count is zero.
fn count(python: &Path, image: &Image) -> Result<Counts, String> {
    let mut command = Command::new(python);
    command
        .arg("tests/speakeasy/count_instructions.py")
        .arg("--tsv")
        .args(["--profile", "wsk_attach"])
        .arg("--map")
        .arg(&image.map);
    for (scenario, _) in SCENARIOS {
        command.args(["--scenario", scenario]);
    }
    command.arg(&image.path).current_dir(root());
    eprintln!("$ {}", crate::describe(&command));
    let output = command
        .output()
        .map_err(|e| format!("count_instructions.py: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut counts = Counts::default();
    let mut problems = Vec::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["instructions", scenario, n] => {
                let n = n
                    .parse::<u64>()
                    .map_err(|e| format!("count_instructions.py: {line:?}: {e}"))?;
                counts.instructions.insert((*scenario).to_string(), n);
            }
            ["function", scenario, n, name] => {
                let n = n
                    .parse::<u64>()
                    .map_err(|e| format!("count_instructions.py: {line:?}: {e}"))?;
                counts
                    .functions
                    .entry((*scenario).to_string())
                    .or_default()
                    .push((n, (*name).to_string()));
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
    for (scenario, _) in SCENARIOS {
        match counts.instructions.get(*scenario) {
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
