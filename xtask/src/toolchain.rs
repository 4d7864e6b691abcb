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

/// The driver images of the workspace: (cargo package, image stem).
pub const DRIVERS: &[(&str, &str)] = &[("wsk-attach", "wsk_attach"), ("wsk-echo", "wsk_echo")];

/// The release output folder of the kernel target.
fn release_dir() -> PathBuf {
    root().join("target").join(TARGET).join("release")
}

/// Where `build_sys` puts the image of the driver whose image stem is `stem`.
pub fn image_path(stem: &str) -> PathBuf {
    release_dir().join(format!("{stem}.sys"))
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

/// `cargo` for the kernel target: Debian's rustc, lld-link, build-std.
fn kernel_cargo(subcommand: &str) -> Command {
    let mut command = cargo();
    command
        .arg(subcommand)
        .args(["--release", "--target", TARGET, "--lib"]);
    for (package, _) in DRIVERS {
        command.args(["-p", package]);
    }
    command
        .args([
            "-Zbuild-std=core",
            "-Zbuild-std-features=compiler-builtins-mem",
        ])
        .env("RUSTC", RUSTC)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_X86_64_PC_WINDOWS_MSVC_LINKER", LLD_LINK);
    command
}

/// Builds every driver image and copies each to its [`image_path`]. Fails on any compiler
/// warning.
pub fn build_sys() -> Result<Vec<PathBuf>, String> {
    let mut command = kernel_cargo("build");
    command.args(["--message-format", "short"]);
    command.current_dir(root());
    eprintln!(
        "$ cargo build --release --target {TARGET} -Zbuild-std=core (Debian rustc, lld-link)"
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
    DRIVERS
        .iter()
        .map(|(_, stem)| {
            let built = release_dir().join(format!("{stem}.dll"));
            let image = image_path(stem);
            std::fs::copy(&built, &image)
                .map_err(|e| format!("copy {} to {}: {e}", built.display(), image.display()))?;
            Ok(image)
        })
        .collect()
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
    run(with_clippy(&mut kernel_cargo("check")))
}

/// rustfmt and clippy on the Wine tests' NETIO.SYS (kernel code too; its own workspace), each
/// variant.
pub fn clippy_wine_provider() -> Result<(), String> {
    let manifest = "tests/wine/netio-provider/Cargo.toml";
    run(cargo().args(["fmt", "--check", "--manifest-path", manifest]))?;
    for variant in ["wsk11", "noif11"] {
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
