//! The Linux cross toolchain for the kernel image: Debian's `rustc-web` (with `rust-web-src` for
//! `-Zbuild-std`) and LLVM 22's `lld-link`; and the cross build itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, root, run};

const RUSTC: &str = "/usr/bin/rustc";
const CLIPPY_DRIVER: &str = "/usr/bin/clippy-driver";
const CORE_SOURCE: &str = "/usr/lib/rustlib/src/rust/library/core/Cargo.toml";
const LLD_LINK: &str = "/usr/lib/llvm-22/bin/lld-link";
const PACKAGES: &[&str] = &["rustc-web", "rust-web-src", "rust-web-clippy", "lld-22"];
const TARGET: &str = "x86_64-pc-windows-msvc";

/// One driver image the workspace builds.
#[derive(Clone, Copy, Debug)]
pub struct Driver {
    /// The cargo package.
    pub package: &'static str,
    /// The crate's file stem: the linker's output, the `.inx`, the service name on a VM.
    pub stem: &'static str,
    /// The cargo features of this build.
    pub features: &'static str,
    /// The image's name here (`<image>.sys`), and its test profile (`tests/driver_profiles.py`).
    pub image: &'static str,
    /// Whether the generic Speakeasy suites run it (not the echo server's: it has a suite of its
    /// own, `tests/speakeasy/test_server.py`, with the provider side of listening sockets,
    /// events and datagrams).
    pub speakeasy: bool,
}

/// The driver images of the workspace: the seed driver, and the example drivers (the echo client
/// and the echo server) in both backends.
pub const DRIVERS: &[Driver] = &[
    Driver {
        package: "wsk-attach",
        stem: "wsk_attach",
        features: "",
        image: "wsk_attach",
        speakeasy: true,
    },
    Driver {
        package: "wsk-echo",
        stem: "wsk_echo",
        features: "",
        image: "wsk_echo",
        speakeasy: true,
    },
    Driver {
        package: "wsk-echo",
        stem: "wsk_echo",
        features: "wsk-register",
        image: "wsk_echo_wskregister",
        speakeasy: true,
    },
    Driver {
        package: "wsk-echo-server",
        stem: "wsk_echo_server",
        features: "",
        image: "wsk_echo_server",
        speakeasy: false,
    },
    Driver {
        package: "wsk-echo-server",
        stem: "wsk_echo_server",
        features: "wsk-register",
        image: "wsk_echo_server_wskregister",
        speakeasy: false,
    },
];

/// The driver whose image is `image`.
pub fn driver(image: &str) -> Option<&'static Driver> {
    DRIVERS.iter().find(|driver| driver.image == image)
}

/// The release output folder of the kernel target.
fn release_dir() -> PathBuf {
    root().join("target").join(TARGET).join("release")
}

/// Where `build_sys` puts the image named `image`.
pub fn image_path(image: &str) -> PathBuf {
    release_dir().join(format!("{image}.sys"))
}

/// The linker map of the image named `image` (the linker writes `deps/<stem>.map`; `build_sys`
/// copies it for images of the same crate built with other features).
pub fn map_path(image: &str) -> PathBuf {
    release_dir().join("deps").join(format!("{image}.map"))
}

fn rustc_is_debian_web() -> bool {
    Command::new(RUSTC)
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).starts_with("rustc 1.9"))
}

/// Installs the Debian packages when any piece is missing.
pub fn ensure() -> Result<(), String> {
    let present = rustc_is_debian_web()
        && Path::new(CORE_SOURCE).exists()
        && Path::new(LLD_LINK).exists()
        && Path::new(CLIPPY_DRIVER).exists();
    if present {
        return Ok(());
    }
    eprintln!(
        "xtask: installing the cross toolchain ({})",
        PACKAGES.join(" ")
    );
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if rustc_is_debian_web() && Path::new(CORE_SOURCE).exists() && Path::new(LLD_LINK).exists() {
        Ok(())
    } else {
        Err(format!(
            "{} installed, but {RUSTC}, {CORE_SOURCE} or {LLD_LINK} is still missing",
            PACKAGES.join(" ")
        ))
    }
}

/// `cargo` for the kernel target: Debian's rustc, lld-link, build-std; every driver package
/// built with `features`.
fn kernel_cargo(subcommand: &str, features: &str) -> Command {
    let mut command = kernel_cargo_for(subcommand);
    let mut packages: Vec<&str> = DRIVERS
        .iter()
        .filter(|driver| driver.features == features)
        .map(|driver| driver.package)
        .collect();
    packages.sort_unstable();
    packages.dedup();
    for package in packages {
        command.args(["-p", package]);
    }
    if !features.is_empty() {
        command.args(["--features", features]);
    }
    command
}

/// `cargo` for the kernel target (Debian's rustc, lld-link, build-std), for the package in its
/// working directory unless `-p` says otherwise.
fn kernel_cargo_for(subcommand: &str) -> Command {
    let mut command = cargo();
    command
        .arg(subcommand)
        .args(["--release", "--target", TARGET, "--lib"])
        .args([
            "-Zbuild-std=core",
            "-Zbuild-std-features=compiler-builtins-mem",
        ])
        .env("RUSTC", RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER", LLD_LINK);
    command
}

/// Builds the driver crate in `dir` (its own workspace: one made by `cargo xtask new`), whose
/// image is `<stem>.sys`, into its `target/`; the image is copied beside its linker map's folder
/// (`<target>/x86_64-pc-windows-msvc/release/<stem>.sys`). Fails on any compiler warning.
pub fn build_crate(dir: &Path, stem: &str) -> Result<PathBuf, String> {
    ensure()?;
    let mut command = kernel_cargo_for("build");
    command
        .args(["--message-format", "short"])
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(dir);
    eprintln!(
        "$ cargo build --release --target {TARGET} -Zbuild-std=core (Debian rustc, lld-link) in {}",
        dir.display()
    );
    let what = dir.display().to_string();
    build_image(&mut command, &what, &dir.join("target"), stem)
}

/// Runs the kernel build `command` (of `what`), failing on an error or any compiler warning,
/// and copies its `<stem>.dll` to `<stem>.sys` in `target_dir`'s release folder: the image.
fn build_image(
    command: &mut Command,
    what: &str,
    target_dir: &Path,
    stem: &str,
) -> Result<PathBuf, String> {
    let output = command.output().map_err(|e| format!("cargo build: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let warned = stderr
        .lines()
        .any(|line| line.contains("warning") && !line.contains("did not match any packages"));
    if !output.status.success() || warned {
        eprint!("{stderr}");
        return Err(format!("the kernel build of {what} failed or warned"));
    }
    let release = target_dir.join(TARGET).join("release");
    let image = release.join(format!("{stem}.sys"));
    std::fs::copy(release.join(format!("{stem}.dll")), &image)
        .map_err(|e| format!("copy {stem}.dll to {}: {e}", image.display()))?;
    Ok(image)
}

/// Builds every driver image and copies each to its [`image_path`]. Fails on any compiler
/// warning.
pub fn build_sys() -> Result<Vec<PathBuf>, String> {
    let mut builds: Vec<&str> = DRIVERS.iter().map(|driver| driver.features).collect();
    builds.sort_unstable();
    builds.dedup();
    // One cargo build per feature set (the packages with the same features build together); each
    // build's outputs are copied before the next one overwrites them, and the default build runs
    // last, so that the linker maps it leaves (deps/<stem>.map) are its own.
    builds.reverse();
    for features in builds {
        let mut command = kernel_cargo("build", features);
        command.args(["--message-format", "short"]);
        command.current_dir(root());
        eprintln!(
            "$ cargo build --release --target {TARGET} -Zbuild-std=core --features '{features}' \
             (Debian rustc, lld-link)"
        );
        let output = command.output().map_err(|e| format!("cargo build: {e}"))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let warnings: Vec<&str> = stderr
            .lines()
            .filter(|line| line.contains("warning") && !line.contains("did not match any packages"))
            .collect();
        if !output.status.success() || !warnings.is_empty() {
            eprint!("{stderr}");
            return Err("the kernel build failed or warned".into());
        }
        for driver in DRIVERS.iter().filter(|driver| driver.features == features) {
            let copy = |from: PathBuf, to: PathBuf| {
                std::fs::copy(&from, &to)
                    .map(|_| to.clone())
                    .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
            };
            let deps = release_dir().join("deps");
            if driver.image != driver.stem {
                copy(
                    deps.join(format!("{}.map", driver.stem)),
                    map_path(driver.image),
                )?;
            }
            copy(
                release_dir().join(format!("{}.dll", driver.stem)),
                image_path(driver.image),
            )?;
        }
    }
    // In DRIVERS order, whatever the build order.
    Ok(DRIVERS
        .iter()
        .map(|driver| image_path(driver.image))
        .collect())
}

/// Builds the driver `package` (file stem `stem`) with `features` into its own target directory
/// `target_dir`, so that the shipped images and their linker maps stay as they are (`cargo xtask
/// baseline`'s `no-log` build). The image is copied to `<release>/<stem>.sys` there, beside
/// `deps/<stem>.map`, so the image check finds its map. Fails on any compiler warning.
pub fn build_variant(
    package: &str,
    stem: &str,
    features: &str,
    target_dir: &Path,
) -> Result<PathBuf, String> {
    build_variant_from(&root(), package, stem, features, target_dir)
}

/// [`build_variant`] of the sources in `source` (another checkout of this repository: `cargo
/// xtask echo-bench`'s driver from before a change).
pub fn build_variant_from(
    source: &Path,
    package: &str,
    stem: &str,
    features: &str,
    target_dir: &Path,
) -> Result<PathBuf, String> {
    // This package alone (not every driver of DRIVERS with these features: `source` may be a
    // checkout from before some of them existed).
    let mut command = kernel_cargo_for("build");
    command.args(["-p", package]);
    if !features.is_empty() {
        command.args(["--features", features]);
    }
    command
        .args(["--message-format", "short"])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(source);
    eprintln!(
        "$ cargo build --release --target {TARGET} -p {package} --features '{features}' \
         (Debian rustc, lld-link, CARGO_TARGET_DIR={})",
        target_dir.display()
    );
    build_image(
        &mut command,
        &format!("{package} --features '{features}'"),
        target_dir,
        stem,
    )
}

/// Makes `command` run clippy with warnings denied (Debian's clippy-driver, matching its rustc).
fn with_clippy(command: &mut Command) -> &mut Command {
    command.env("RUSTC_WORKSPACE_WRAPPER", CLIPPY_DRIVER).env(
        "CLIPPY_ARGS",
        "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
    )
}

/// Clippy on the kernel build of every driver and the library crates under them (`cfg(wsk_kernel)`,
/// `no_std`), warnings denied.
pub fn clippy_kernel() -> Result<(), String> {
    let mut builds: Vec<&str> = DRIVERS.iter().map(|driver| driver.features).collect();
    builds.sort_unstable();
    builds.dedup();
    builds
        .into_iter()
        .try_for_each(|features| run(with_clippy(&mut kernel_cargo("check", features))))
}

/// rustfmt and clippy on the Wine tests' NETIO.SYS (kernel code too; its own workspace), each
/// variant.
pub fn clippy_wine_provider() -> Result<(), String> {
    let manifest = "tests/wine/netio-provider/Cargo.toml";
    run(cargo().args(["fmt", "--check", "--manifest-path", manifest]))?;
    for variant in ["wsk11", "noif11", "bridge"] {
        let mut command = cargo();
        command
            .args([
                "check",
                "--release",
                "--target",
                TARGET,
                "--manifest-path",
                manifest,
            ])
            .args([
                "--features",
                variant,
                "--target-dir",
                "target/wine-provider/cargo",
            ])
            .args([
                "-Zbuild-std=core",
                "-Zbuild-std-features=compiler-builtins-mem",
            ])
            .env("RUSTC", RUSTC)
            .env("RUSTC_BOOTSTRAP", "1");
        run(with_clippy(&mut command))?;
    }
    Ok(())
}

/// mingw-w64's C compiler (the C baseline, the Winsock comparator of the echo bench).
pub const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";
/// Debian's package of it.
const MINGW_PACKAGE: &str = "gcc-mingw-w64-x86-64";
/// Where mingw-w64 keeps its import libraries (`libntoskrnl.a`, and `libnetio.a` in recent ones).
pub const MINGW_LIB: &str = "/usr/x86_64-w64-mingw32/lib";

fn mingw_present() -> bool {
    Command::new(MINGW_GCC)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
        && Path::new(MINGW_LIB).join("libntoskrnl.a").exists()
}

/// Installs mingw-w64's C compiler (and with it its import libraries) when missing.
pub fn ensure_mingw() -> Result<(), String> {
    if mingw_present() {
        return Ok(());
    }
    eprintln!("xtask: installing mingw-w64 ({MINGW_PACKAGE})");
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            MINGW_PACKAGE,
        ])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if mingw_present() {
        Ok(())
    } else {
        Err(format!(
            "{MINGW_PACKAGE} installed, but {MINGW_GCC} or {MINGW_LIB}/libntoskrnl.a is missing"
        ))
    }
}
