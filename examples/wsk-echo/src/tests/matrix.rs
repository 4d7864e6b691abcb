//! The failure matrix in the host model (issue 12, "Reliability 3"): every call of
//! `tests/failure-matrix.txt` that this driver makes in a load, an echo exchange and an unload —
//! each occurrence of it, with each failure status its documentation lists — fails in its own run;
//! then again every occurrence of the calls a bulk exchange (`Bytes`, three chunks) makes more
//! often.
//! Each run must show the failure (`DriverEntry` returns the status, or a log line carries it in
//! hex), unload, and leave nothing: no pool block, IRP, MDL, socket, work item, binding, client or
//! device object, and no rule of the model broken.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use wsk_client::sys::REG_DWORD;
use wsk_host_model::failure_matrix::{How, rows};
use wsk_host_model::{ProviderConfig, Session, Status};

use super::set_parameters;
use crate::DriverEntry;
use crate::stream::chunk_len;

const UNLOADED: &str = "wsk_echo: unloaded, live pool allocations: 0";

const MESSAGE: &str = "hello, echo";

/// The echo's `Parameters` in a scenario: `Host`, and `Bytes` for a bulk exchange.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    host: &'static str,
    bytes: Option<u32>,
}

/// An address literal; a name (which the model's `WskGetAddressInfo` resolves), for the calls
/// only a name makes; a bulk exchange of three chunks (the last one short), for the calls made
/// once per chunk.
fn scenarios() -> [Scenario; 3] {
    let bulk = chunk_len(MESSAGE.len(), usize::MAX) * 2 + 7;
    [
        Scenario {
            host: "127.0.0.1",
            bytes: None,
        },
        Scenario {
            host: "localhost",
            bytes: None,
        },
        Scenario {
            host: "127.0.0.1",
            bytes: Some(u32::try_from(bulk).unwrap()),
        },
    ]
}

/// A session with a provider and the echo's parameters; `fail` chooses the failure.
fn load(scenario: Scenario, fail: impl FnOnce(&Session)) -> (Session, Status) {
    let mut s = super::session();
    s.register_provider(ProviderConfig::default_wsk());
    set_parameters(&s, scenario.host, 7, MESSAGE);
    if let Some(bytes) = scenario.bytes {
        s.set_parameter("Parameters", "Bytes", REG_DWORD, &bytes.to_le_bytes());
    }
    fail(&s);
    let status = s.driver_entry(DriverEntry);
    s.wait_work_items();
    (s, status)
}

/// The text of a caught panic.
fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(ToString::to_string))
        .unwrap_or_default()
}

/// One run failing the `occurrence`-th call of `call` with `status`; `Err` says what went wrong.
fn run(
    scenario: Scenario,
    call: &str,
    how: How,
    occurrence: usize,
    (name, status): (&str, Status),
) -> Result<(), String> {
    let (mut s, entry) = load(scenario, |s| s.fail_call(call, occurrence, status));
    let reported = if how == How::Null {
        Status::INSUFFICIENT_RESOURCES
    } else {
        status
    };
    #[allow(clippy::cast_sign_loss)]
    let hex = format!("0x{:08X}", reported.raw() as u32);
    if entry == Status::SUCCESS {
        s.driver_unload();
    }
    if !s.injected() {
        s.check_clean();
        return Err("the call was not made".into());
    }
    let log = s.log();
    // The status reaches DriverEntry, or a log line gives it (in hex, or by name when the driver
    // recovers from it: a fallback, a retry).
    let shown = entry == reported
        || log
            .iter()
            .any(|line| line.contains(&hex) || (how != How::Null && line.contains(name)));
    // A value not found is not a failure when the value is optional: the exchange goes on with
    // its default (a required value's absence is logged with the status).
    let optional_absent = call == "ZwQueryValueKey"
        && status == Status::from_raw(0xC000_0034_u32.cast_signed())
        && log.iter().any(|l| l.starts_with("wsk_echo: echo ok"));
    if !shown && !optional_absent {
        s.check_clean();
        return Err(format!(
            "not reported: DriverEntry {entry:?}, no log line with {hex}: {log:#?}"
        ));
    }
    if call == "NmrDeregisterClient" || call == "NmrWaitForClientDeregisterComplete" {
        // NMR refused the deregistration (or its wait failed: whether it ended is unknown): the
        // driver logs it and returns from DriverUnload, keeping its device object so that the
        // image stays mapped for NMR, which may keep the client and its binding and detach them
        // only when the system shuts down (the model's shutdown) — into a mapped image.
        let kept = log.iter().any(|l| {
            l.ends_with(
                "unload: deregistration failed: the device object is kept, the image stays loaded",
            )
        });
        if !log
            .iter()
            .any(|l| l.ends_with(&format!("{call} failed: {hex}")))
            || !kept
            || s.image_unmapped()
        {
            s.check_clean();
            return Err(format!(
                "no NmrDeregisterClient line, or the image unmapped: {log:#?}"
            ));
        }
        s.system_shutdown();
        s.wait_work_items();
    } else if entry == Status::SUCCESS && log.last().map(String::as_str) != Some(UNLOADED) {
        s.check_clean();
        return Err(format!(
            "the unload's last line is not {UNLOADED:?}: {log:#?}"
        ));
    }
    s.check_clean();
    Ok(())
}

#[test]
fn every_call_failing_with_every_documented_status_is_reported_and_leaves_nothing() {
    let rows = rows();
    let mut tried: Vec<(String, Scenario, usize, usize)> = Vec::new();
    let mut failures = Vec::new();
    let mut made: BTreeMap<String, usize> = BTreeMap::new();
    for scenario in scenarios() {
        // The calls this driver makes, and how often, in a run without failure.
        let (mut s, entry) = load(scenario, |_| {});
        assert_eq!(entry, Status::SUCCESS);
        s.driver_unload();
        assert!(s.log().iter().any(|l| l.starts_with("wsk_echo: echo ok")));
        let counts = s.call_counts();
        s.check_clean();
        drop(s);
        for row in &rows {
            // A call is failed in the first scenario that makes it, and again in one that
            // makes it more often (each chunk's).
            let Some(&count) = counts
                .get(&row.call)
                .filter(|&&count| made.get(&row.call).is_none_or(|&before| count > before))
            else {
                continue;
            };
            for occurrence in 1..=count {
                for (name, status) in &row.statuses {
                    let outcome = catch_unwind(AssertUnwindSafe(|| {
                        run(scenario, &row.call, row.how, occurrence, (name, *status))
                    }));
                    let problem = match outcome {
                        Ok(Ok(())) => None,
                        Ok(Err(problem)) => Some(problem),
                        Err(panic) => Some(message(&*panic)),
                    };
                    if let Some(problem) = problem {
                        failures.push(format!(
                            "{scenario:?}: {} #{occurrence} {name}: {problem}",
                            row.call
                        ));
                    }
                }
            }
            tried.push((row.call.clone(), scenario, count, row.statuses.len()));
        }
        for (call, count) in counts {
            let most = made.entry(call).or_insert(count);
            *most = (*most).max(count);
        }
    }
    // Every call this driver makes that can fail is in the matrix.
    let failable = |name: &str| {
        name.starts_with("Wsk")
            || name.starts_with("Nmr")
            || name.starts_with("Zw")
            || name.contains("Allocate")
            || name == "IoCreateDevice"
            || name == "IoSetCompletionRoutineEx"
    };
    let listed = |name: &str| rows.iter().any(|r| r.call == name);
    let never_fail = [
        "NmrClientDetachProviderComplete",
        "WskReleaseProviderNPI",
        "WskDeregister",
        "WskFreeAddressInfo",
        "ZwClose",
    ];
    let missing: Vec<&String> = made
        .keys()
        .filter(|name| failable(name) && !listed(name) && !never_fail.contains(&name.as_str()))
        .collect();
    let runs: usize = tried.iter().map(|(_, _, n, k)| n * k).sum();
    let pairs: BTreeMap<&str, usize> = tried.iter().map(|(c, _, _, k)| (c.as_str(), *k)).collect();
    println!(
        "failure matrix ({}): {} calls, {} call x status pairs, {runs} runs (every occurrence)",
        if cfg!(feature = "wsk-register") {
            "WskRegister backend"
        } else {
            "NMR backend"
        },
        pairs.len(),
        pairs.values().sum::<usize>()
    );
    for (call, scenario, count, k) in &tried {
        println!("  {call}: {count} occurrence(s) x {k} status(es) ({scenario:?})");
    }
    assert!(
        missing.is_empty(),
        "calls missing from the matrix: {missing:?}"
    );
    assert!(
        failures.is_empty(),
        "{} run(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
