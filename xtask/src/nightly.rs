//! The nightly toolchain, for the jobs that need it (fuzzing, sanitizers) and nothing else:
//! installed by rustup when missing, run without the outer (stable) cargo's variables.

use std::process::Command;

use crate::run;

/// `rustup run nightly cargo ...`.
pub fn cargo() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo"])
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    command
}

/// Installs the nightly toolchain and `components` when missing.
pub fn ensure(components: &[&str]) -> Result<(), String> {
    let present = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !present {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map_err(|e| format!("rustup component list: {e}"))?;
    let installed = String::from_utf8_lossy(&installed.stdout).into_owned();
    for component in components {
        if !installed.contains(component) {
            run(Command::new("rustup").args([
                "component",
                "add",
                component,
                "--toolchain",
                "nightly",
            ]))?;
        }
    }
    Ok(())
}
