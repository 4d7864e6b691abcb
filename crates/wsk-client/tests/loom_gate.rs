//! A loom model check of the reference/detach primitive ([`wsk_client::gate::Gate`]): every
//! interleaving (up to loom's bounds) of entries, leaves, the close and the completion it waits
//! for, on three and four threads. What must hold in each: a close that found users inside is
//! completed exactly once, by the last leave; a close that found none is never "completed"; no
//! entry succeeds after the close; the count ends at zero.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, AtomicUsize};
use loom::thread;
use wsk_client::gate::{AtomicWord, Close, Gate, Leave, Refused};

/// Loom's atomic as the gate's word.
struct LoomWord(AtomicU64);

impl AtomicWord for LoomWord {
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order);
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.0.compare_exchange(current, new, success, failure)
    }
    fn fetch_sub(&self, value: u64, order: Ordering) -> u64 {
        self.0.fetch_sub(value, order)
    }
    fn fetch_or(&self, value: u64, order: Ordering) -> u64 {
        self.0.fetch_or(value, order)
    }
}

fn open_gate() -> Gate<LoomWord> {
    let gate = Gate::with_word(LoomWord(AtomicU64::new(0)));
    let generation = gate.reserve().unwrap();
    assert!(gate.open(generation));
    gate
}

/// What the model's threads share: the gate, the completions the last leave performed, and
/// whether the close must be completed.
struct World {
    gate: Gate<LoomWord>,
    completions: AtomicUsize,
    closed_pending: AtomicUsize,
    entered_after_close: AtomicUsize,
    closed: AtomicUsize,
}

impl World {
    fn leave(&self) {
        if self.gate.leave() == Leave::LastOfClosing {
            // The completion (NmrClientDetachProviderComplete, or waking the unload).
            self.completions.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn enter_and_leave(&self) {
        let closed_before = self.closed.load(Ordering::Acquire) == 1;
        match self.gate.enter() {
            Ok(()) => {
                if closed_before {
                    self.entered_after_close.fetch_add(1, Ordering::AcqRel);
                }
                self.leave();
            }
            Err(Refused::Closed) => {}
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }

    fn close(&self) {
        let close = self.gate.close();
        self.closed.store(1, Ordering::Release);
        if let Close::Pending(_) = close {
            self.closed_pending.store(1, Ordering::Release);
        }
    }

    fn check(&self) {
        let expected = self.closed_pending.load(Ordering::Acquire);
        assert_eq!(
            self.completions.load(Ordering::Acquire),
            expected,
            "a pending close must be completed exactly once, an idle one never"
        );
        assert_eq!(self.entered_after_close.load(Ordering::Acquire), 0);
        assert_eq!(self.gate.enter(), Err(Refused::Closed));
    }
}

fn world(inside: usize) -> Arc<World> {
    let gate = open_gate();
    for _ in 0..inside {
        gate.enter().unwrap();
    }
    Arc::new(World {
        gate,
        completions: AtomicUsize::new(0),
        closed_pending: AtomicUsize::new(0),
        entered_after_close: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
    })
}

#[test]
fn holder_newcomer_and_detach_on_three_threads() {
    loom::model(|| {
        // One reference held from before (a socket); a call starting; the detach beginning.
        let w = world(1);
        let holder = {
            let w = Arc::clone(&w);
            thread::spawn(move || w.leave())
        };
        let newcomer = {
            let w = Arc::clone(&w);
            thread::spawn(move || w.enter_and_leave())
        };
        let detach = {
            let w = Arc::clone(&w);
            thread::spawn(move || w.close())
        };
        holder.join().unwrap();
        newcomer.join().unwrap();
        detach.join().unwrap();
        w.check();
    });
}

#[test]
fn two_holders_and_detach_on_three_threads() {
    loom::model(|| {
        // Two references held (two sockets), released on two threads while the detach begins.
        let w = world(2);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let w = Arc::clone(&w);
                thread::spawn(move || w.leave())
            })
            .collect();
        let detach = {
            let w = Arc::clone(&w);
            thread::spawn(move || w.close())
        };
        for t in threads {
            t.join().unwrap();
        }
        detach.join().unwrap();
        w.check();
    });
}

#[test]
fn two_newcomers_and_detach_on_three_threads() {
    loom::model(|| {
        // Nobody inside yet: two calls start and end while the detach begins.
        let w = world(0);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let w = Arc::clone(&w);
                thread::spawn(move || w.enter_and_leave())
            })
            .collect();
        w.close();
        for t in threads {
            t.join().unwrap();
        }
        w.check();
    });
}

#[test]
fn a_stale_open_never_opens_a_reused_gate() {
    loom::model(|| {
        // Attach A reserved the gate; NMR detached and cleaned it up (freed) before A's open;
        // attach B reserves it again on another thread while A's late open runs.
        let gate = Arc::new(Gate::with_word(LoomWord(AtomicU64::new(0))));
        let a = gate.reserve().unwrap();
        assert_eq!(gate.close(), Close::Idle);
        gate.free(a);
        let b_thread = {
            let gate = Arc::clone(&gate);
            thread::spawn(move || gate.reserve())
        };
        let a_opened = gate.open(a);
        let b = b_thread
            .join()
            .unwrap()
            .expect("the freed gate is reservable");
        assert!(!a_opened, "a stale open succeeded");
        assert!(gate.open(b), "the new reservation opens");
    });
}
