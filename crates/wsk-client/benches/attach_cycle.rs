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

const REFERENCES: u32 = 2_000_000;

/// How many times each figure is measured; the median is printed (2 cores shared with whatever
/// else runs make single runs noisy).
const REPEATS: usize = 7;

/// Median nanoseconds per iteration of `op`, run `REFERENCES` times on each of `threads` threads
/// at once, over `REPEATS` measurements.
fn per_op(threads: usize, op: impl Fn() + Sync) -> f64 {
    let mut runs: Vec<f64> = (0..REPEATS).map(|_| once(threads, &op)).collect();
    runs.sort_by(f64::total_cmp);
    runs[REPEATS / 2]
}

/// Nanoseconds per iteration of `op`, run `REFERENCES` times on each of `threads` threads at once.
fn once(threads: usize, op: &(impl Fn() + Sync)) -> f64 {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for _ in 0..REFERENCES {
                    op();
                }
            });
        }
    });
    #[allow(clippy::cast_precision_loss)]
    let nanos = start.elapsed().as_nanos() as f64 / f64::from(REFERENCES);
    nanos
}

/// The per-call protection cost: acquire + drop of a binding reference, against a bare atomic
/// increment and decrement of one shared counter, on 1 and 2 threads.
fn reference_cost(s: &Session) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let provider = s.register_provider(ProviderConfig::default_wsk());
    let counter = AtomicU64::new(0);
    println!(
        "binding reference (acquire + drop) vs a bare atomic increment + decrement (median of {REPEATS}):"
    );
    for threads in [1, 2] {
        let bare = per_op(threads, || {
            counter.fetch_add(1, Ordering::AcqRel);
            counter.fetch_sub(1, Ordering::AcqRel);
        });
        let reference = per_op(threads, || {
            let reference = wsk_client::BindingRef::<common::TestDriver>::acquire();
            assert!(reference.is_ok());
            drop(reference);
        });
        println!(
            "  {threads} thread(s): reference {reference:.1} ns, bare atomics {bare:.1} ns, ratio {:.2}",
            reference / bare
        );
    }
    let _ = s.deregister_provider(provider);
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
    reference_cost(&s);
    s.driver_unload();
    s.check_clean();

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/x86_64-pc-windows-msvc/release");
    for name in ["wsk_attach.sys", "wsk_echo.sys", "wsk_echo_wskregister.sys"] {
        let image = root.join(name);
        match std::fs::metadata(&image) {
            Ok(meta) => println!("release image {name}: {} bytes", meta.len()),
            Err(_) => println!("release image {name}: not built (run `cargo xtask sys` first)"),
        }
    }
}
