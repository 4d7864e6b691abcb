//! A loom model check of the reference/detach primitive ([`wsk_client::gate::Gate`]): every
//! interleaving (up to loom's bounds) of entries, leaves, the closes (a binding's detach, the
//! unload's sweep) and the completions they wait for, on three and four threads. What must hold
//! in each: a close that found users inside is completed exactly once, by the last leave; a close
//! that found none is never "completed"; no entry succeeds after a close; the count ends at zero;
//! a gate freed during the sweep stays swept.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::Ordering;

mod loom_word;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, AtomicUsize};
use loom::thread;
use loom_word::LoomWord;
use wsk_client::gate::{Close, Closer, Gate, Leave, Refused};

/// Explores the interleavings of `f` with at most three preemptions per execution (loom's
/// advice for bounding the search: the bugs this test guards against need two or three; without
/// a bound the claim's compare-exchange loops make the search take many minutes).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// Runs `f` on a new loom thread, with its own handle on `shared`.
fn on_thread<T, R>(
    shared: &Arc<T>,
    f: impl FnOnce(&T) -> R + Send + 'static,
) -> thread::JoinHandle<R>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
{
    let shared = Arc::clone(shared);
    thread::spawn(move || f(&shared))
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
    /// Per closer (0: the owner's detach, 1: the sweep): completions, and closes that found users.
    completions: [AtomicUsize; 2],
    closed_pending: [AtomicUsize; 2],
    entered_after_close: AtomicUsize,
    closed: AtomicUsize,
    /// A closer that counts itself inside ([`Gate::close_held`]) is leaving: no other leave may
    /// complete its close before this is set.
    held_closer_ending: AtomicUsize,
    held: AtomicUsize,
}

impl World {
    fn leave(&self) {
        self.left(self.gate.leave());
    }

    fn left(&self, leave: Leave) {
        if let Leave::LastOfClosing { owner, sweep } = leave {
            if owner && self.held.load(Ordering::Acquire) == 1 {
                assert_eq!(
                    self.held_closer_ending.load(Ordering::Acquire),
                    1,
                    "a leave completed a held close before its closer had left"
                );
            }
            // The completions: NmrClientDetachProviderComplete, waking the unload.
            for (closer, completed) in [owner, sweep].into_iter().enumerate() {
                if completed {
                    self.completions[closer].fetch_add(1, Ordering::AcqRel);
                }
            }
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
            // A refused entry leaves at once, and may complete a close like any leave.
            Err((Refused::Closed | Refused::Swept, leave)) => self.left(leave),
            Err((other, _)) => panic!("unexpected refusal {other:?}"),
        }
    }

    fn close_as(&self, closer: Closer) {
        let close = self.gate.close(closer);
        self.closed.store(1, Ordering::Release);
        if let Close::Pending(_) = close {
            self.closed_pending[closer as usize].store(1, Ordering::Release);
        }
    }

    fn close(&self) {
        self.close_as(Closer::Owner);
    }

    /// The detach callback's form: closes counting itself inside, then leaves as its last action
    /// (its own leave, when last, is the completion: it returns `STATUS_SUCCESS`).
    fn close_held_and_leave(&self) {
        self.held.store(1, Ordering::Release);
        let _others = self.gate.close_held(Closer::Owner);
        self.closed.store(1, Ordering::Release);
        // Pending or not, a held close is completed exactly once: by the closer or another leave.
        self.closed_pending[0].store(1, Ordering::Release);
        self.held_closer_ending.store(1, Ordering::Release);
        self.leave();
    }

    fn check(&self) {
        for closer in 0..2 {
            assert_eq!(
                self.completions[closer].load(Ordering::Acquire),
                self.closed_pending[closer].load(Ordering::Acquire),
                "a pending close must be completed exactly once, an idle one never (closer {closer})"
            );
        }
        assert_eq!(self.entered_after_close.load(Ordering::Acquire), 0);
        assert!(self.gate.enter().is_err());
    }
}

fn world(inside: usize) -> Arc<World> {
    let gate = open_gate();
    for _ in 0..inside {
        gate.enter().unwrap();
    }
    Arc::new(World {
        gate,
        completions: [AtomicUsize::new(0), AtomicUsize::new(0)],
        closed_pending: [AtomicUsize::new(0), AtomicUsize::new(0)],
        entered_after_close: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        held_closer_ending: AtomicUsize::new(0),
        held: AtomicUsize::new(0),
    })
}

#[test]
fn holder_newcomer_and_detach_on_three_threads() {
    model(|| {
        // One reference held from before (a socket); a call starting; the detach beginning.
        let w = world(1);
        let holder = on_thread(&w, World::leave);
        let newcomer = on_thread(&w, World::enter_and_leave);
        let detach = on_thread(&w, World::close);
        holder.join().unwrap();
        newcomer.join().unwrap();
        detach.join().unwrap();
        w.check();
    });
}

#[test]
fn a_held_reference_cloned_during_a_detach_keeps_it_pending() {
    model(|| {
        // A socket's reference (held from before) cloned for its close while the detach begins
        // (`Gate::enter_held`: never refused): the detach is completed exactly once, by the last
        // of the two leaves, never while the clone is held.
        let w = world(1);
        let holder = on_thread(&w, |w| {
            w.gate.enter_held();
            w.leave();
            w.leave();
        });
        let detach = on_thread(&w, World::close);
        holder.join().unwrap();
        detach.join().unwrap();
        w.check();
    });
}

#[test]
fn holder_newcomer_and_a_held_detach_on_three_threads() {
    model(|| {
        // The detach callback's protocol: it counts itself inside while it runs, so no leave can
        // complete the detach before the callback has left (and said whether it pends); the
        // detach is completed exactly once, by the callback's own leave or by the last other.
        let w = world(1);
        let holder = on_thread(&w, World::leave);
        let newcomer = on_thread(&w, World::enter_and_leave);
        let detach = on_thread(&w, World::close_held_and_leave);
        holder.join().unwrap();
        newcomer.join().unwrap();
        detach.join().unwrap();
        w.check();
    });
}

#[test]
fn two_holders_and_detach_on_three_threads() {
    model(|| {
        // Two references held (two sockets), released on two threads while the detach begins.
        let w = world(2);
        let threads: Vec<_> = (0..2).map(|_| on_thread(&w, World::leave)).collect();
        let detach = on_thread(&w, World::close);
        for t in threads {
            t.join().unwrap();
        }
        detach.join().unwrap();
        w.check();
    });
}

#[test]
fn two_newcomers_and_detach_on_three_threads() {
    model(|| {
        // Nobody inside yet: two calls start and end while the detach begins.
        let w = world(0);
        let threads: Vec<_> = (0..2)
            .map(|_| on_thread(&w, World::enter_and_leave))
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
    model(|| {
        // Attach A reserved the gate; NMR detached and cleaned it up (freed) before A's open;
        // attach B reserves it again on another thread while A's late open runs.
        let gate = Arc::new(Gate::with_word(LoomWord(AtomicU64::new(0))));
        let a = gate.reserve().unwrap();
        assert_eq!(gate.close(Closer::Owner), Close::Idle);
        gate.free(a);
        let b_thread = on_thread(&gate, Gate::reserve);
        let a_opened = gate.open(a);
        let b = b_thread
            .join()
            .unwrap()
            .expect("the freed gate is reservable");
        assert!(!a_opened, "a stale open succeeded");
        assert!(gate.open(b), "the new reservation opens");
    });
}

#[test]
fn holder_detach_and_sweep_on_three_threads() {
    model(|| {
        // A reference held (a socket) is released while the provider detaches and the unload
        // sweeps: each close that found it inside is completed once, by its release.
        let w = world(1);
        let holder = on_thread(&w, World::leave);
        let detach = on_thread(&w, |w| w.close_as(Closer::Owner));
        w.close_as(Closer::Sweep);
        holder.join().unwrap();
        detach.join().unwrap();
        w.check();
    });
}

#[test]
fn a_gate_freed_during_the_sweep_stays_swept() {
    model(|| {
        // A binding's cleanup frees its slot while the unload sweeps every slot: whichever comes
        // first, the slot cannot be reserved (by a new attach) before the sweep ends.
        let gate = Arc::new(Gate::with_word(LoomWord(AtomicU64::new(0))));
        let generation = gate.reserve().unwrap();
        assert_eq!(gate.close(Closer::Owner), Close::Idle);
        let cleanup = on_thread(&gate, move |gate| gate.free(generation));
        let _ = gate.close(Closer::Sweep);
        cleanup.join().unwrap();
        assert_eq!(gate.reserve(), None, "a swept gate was reserved");
        gate.unsweep();
        assert!(gate.reserve().is_some());
    });
}

#[test]
fn a_newcomer_refused_by_an_idle_close_completes_nothing() {
    model(|| {
        // Nobody inside when the detach closes: it completes itself (idle), unless a newcomer's
        // momentary entry, refused, claimed the completion first — never both.
        let w = world(0);
        let newcomer = on_thread(&w, World::enter_and_leave);
        let sweeper = on_thread(&w, |w| w.close_as(Closer::Sweep));
        w.close();
        newcomer.join().unwrap();
        sweeper.join().unwrap();
        w.check();
    });
}

#[test]
fn a_momentary_entry_on_a_free_gate_does_not_stop_a_reservation() {
    model(|| {
        // A lookup tries a free slot while an attach reserves and opens it.
        let gate = Arc::new(Gate::with_word(LoomWord(AtomicU64::new(0))));
        let lookup = on_thread(&gate, |gate| match gate.enter() {
            Ok(()) => gate.leave(),
            Err((_, leave)) => leave,
        });
        let generation = gate
            .reserve()
            .expect("a momentary entry blocked the reservation");
        assert!(gate.open(generation), "a momentary entry blocked the open");
        assert_eq!(lookup.join().unwrap(), Leave::Left);
    });
}

#[test]
fn a_late_claim_never_completes_the_next_life() {
    model(|| {
        // A holder leaves a closing gate while a newcomer's momentary entry comes and goes: one
        // of them completes the close and at once frees the gate, reserves and opens it again (a
        // cleanup, a new attach), enters it (a call) and closes it (a detach). The other's claim,
        // late, must complete neither life again: the new life's close is completed by its own
        // call's leave.
        let gate = Arc::new(Gate::with_word(LoomWord(AtomicU64::new(0))));
        let generation = gate.reserve().unwrap();
        assert!(gate.open(generation));
        gate.enter().unwrap();
        assert_eq!(gate.close(Closer::Owner), Close::Pending(1));
        let completions = Arc::new(AtomicUsize::new(0));
        let on_leave = {
            let gate = Arc::clone(&gate);
            let completions = Arc::clone(&completions);
            move |leave: Leave| {
                if let Leave::LastOfClosing { owner: true, .. } = leave
                    && completions.fetch_add(1, Ordering::AcqRel) == 0
                {
                    gate.free(generation);
                    let next = gate.reserve().expect("freed");
                    assert!(gate.open(next));
                    gate.enter().unwrap();
                    assert!(matches!(gate.close(Closer::Owner), Close::Pending(_)));
                }
            }
        };
        let holder = {
            let on_leave = on_leave.clone();
            on_thread(&gate, move |gate| on_leave(gate.leave()))
        };
        let newcomer = on_thread(&gate, move |gate| match gate.enter() {
            Ok(()) => on_leave(gate.leave()),
            Err((_, leave)) => on_leave(leave),
        });
        holder.join().unwrap();
        newcomer.join().unwrap();
        assert_eq!(
            completions.load(Ordering::Acquire),
            1,
            "a late claim completed again"
        );
        // The new life's call leaves: its close is completed now, by this leave.
        assert_eq!(
            gate.leave(),
            Leave::LastOfClosing {
                owner: true,
                sweep: false
            }
        );
    });
}
