//! `cargo xtask fuzz [SECONDS]`: the fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer with
//! address sanitizer, on the nightly toolchain), each for a bounded time, growing the committed
//! corpus `fuzz/corpus/<target>/`; prints the executions per target and in all. Installs what it
//! needs: the nightly toolchain (rustup) and cargo-fuzz (crates.io) when missing. A crash fails
//! the command (libFuzzer leaves the input in `fuzz/artifacts/<target>/`).

use crate::{describe, nightly, root, run};

/// The targets, in `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 5] = [
    "address_chain",
    "ipv4_literal",
    "attach_decision",
    "echo_parameters",
    "receive_indication",
];

fn ensure_tools() -> Result<(), String> {
    nightly::ensure(&[])?;
    let fuzz = nightly::cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !fuzz {
        run(crate::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// The `stat::number_of_executed_units` libFuzzer prints at the end.
fn executions(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .filter_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
}

pub fn fuzz(seconds: u32) -> Result<(), String> {
    ensure_tools()?;
    let mut total = 0u64;
    let mut figures = Vec::new();
    for target in TARGETS {
        let corpus = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
        let mut command = nightly::cargo();
        command.current_dir(root()).args([
            "fuzz",
            "run",
            target,
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
        ]);
        eprintln!("$ {}", describe(&command));
        let out = command
            .output()
            .map_err(|e| format!("{}: {e}", describe(&command)))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!(
                "fuzz target {target} failed ({}):\n{}",
                out.status,
                tail.join("\n")
            ));
        }
        let n = executions(&stderr)
            .ok_or_else(|| format!("fuzz target {target}: no execution count in its output"))?;
        total += n;
        figures.push((target, n));
    }
    println!("fuzzing, {seconds} s per target:");
    for (target, n) in figures {
        println!("  {target:<16} {n:>12} executions, no crash");
    }
    println!("  {:<16} {total:>12} executions", "total");
    Ok(())
}
