//! Benchmark (not a test): attach + detach cycles of a driver embedding the library, in the host
//! model of NMR, and the sizes of the release kernel images. Prints figures; asserts nothing about time.
//!
//! `cargo bench --bench attach_cycle`. The time per cycle includes the model's own bookkeeping
//! (a mutex and an event log per call), so it bounds the driver's cost from above; the counts
//! (allocations and NMR calls per cycle) are exact.

#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use std::time::Instant;

#[path = "../tests/common/mod.rs"]
mod common;

use wsk_host_model::{Event, ProviderConfig, Session, Status as NtStatus, WSK_1_1};

const CYCLES: usize = 20_000;

fn count(events: &[Event], wanted: fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| wanted(e)).count()
}

fn cycles(s: &Session, name: &str, config: &ProviderConfig) {
    let before = s.events().len();
    let start = Instant::now();
    for _ in 0..CYCLES {
        let provider = s.register_provider(config.clone());
        let detached = s.deregister_provider(provider);
        assert_eq!(detached, [NtStatus::SUCCESS]);
    }
    let elapsed = start.elapsed();
    let events = s.events();
    let events = &events[before..];
    #[allow(clippy::cast_precision_loss)]
    let per = |n: usize| n as f64 / CYCLES as f64;
    let allocations = count(events, |e| matches!(e, Event::Allocate { ok: true, .. }));
    let nmr_attach = count(events, |e| {
        matches!(e, Event::NmrClientAttachProvider { .. })
    });
    let nmr_complete = count(events, |e| {
        matches!(e, Event::NmrClientDetachProviderComplete { .. })
    });
    println!("{name}:");
    println!("  cycles (attach + detach + cleanup): {CYCLES}");
    println!(
        "  pool allocations per cycle:         {:.2}",
        per(allocations)
    );
    println!(
        "  driver->NMR calls per cycle:        {:.2} (NmrClientAttachProvider {:.2}, NmrClientDetachProviderComplete {:.2})",
        per(nmr_attach + nmr_complete),
        per(nmr_attach),
        per(nmr_complete)
    );
    #[allow(clippy::cast_precision_loss)]
    let nanos = elapsed.as_nanos() as f64 / CYCLES as f64;
    println!("  time per cycle, model included:     {nanos:.0} ns");
}

fn main() {
    let mut s = common::started();
    cycles(
        &s,
        "first version fits (WSK 1.1)",
        &ProviderConfig::default_wsk(),
    );
    cycles(
        &s,
        "fallback (1.1 refused, WSK 1.0)",
        &ProviderConfig::default_wsk().answer(WSK_1_1, NtStatus::NOINTERFACE),
    );
    s.driver_unload();
    s.check_clean();

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-pc-windows-msvc/release");
    for name in ["wsk_attach.sys", "wsk_echo.sys"] {
        let image = root.join(name);
        match std::fs::metadata(&image) {
            Ok(meta) => println!("release image {name}: {} bytes", meta.len()),
            Err(_) => println!("release image {name}: not built (run `cargo xtask sys` first)"),
        }
    }
}
