//! A loom model check of [`wsk_client::task::atomic_waker::AtomicWaker`], the rendezvous between a
//! request's future and its completion routine: every interleaving (up to loom's bounds) of a
//! registration (and a second one, with another waker) against a completion that sets its result
//! and wakes. What must hold in each: the slot is never accessed by two parties at once (loom's
//! cell reports it: a `take` that ignores the registrant's claim is caught); no wake is lost — a
//! registrant that found the result missing after registering is woken, through the last waker
//! it registered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::Ordering::SeqCst;
use std::task::{Wake, Waker};

mod loom_word;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use loom::thread;
use loom_word::LoomWord;
use wsk_client::task::atomic_waker::{AtomicWaker, WakerCell};

/// Loom's cell as the waker slot: loom reports two accesses at once.
struct LoomCell(UnsafeCell<Option<Waker>>);

impl WakerCell for LoomCell {
    unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut Option<Waker>) -> R) -> R {
        // SAFETY: per the trait's contract (loom checks it).
        self.0.with_mut(|slot| f(unsafe { &mut *slot }))
    }
}

/// A waker that counts its wakes.
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, SeqCst);
    }
}

fn counter() -> (std::sync::Arc<Counter>, Waker) {
    let counter = std::sync::Arc::new(Counter(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    (counter, waker)
}

struct Shared {
    waker: AtomicWaker<LoomWord, LoomCell>,
    result: AtomicBool,
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        waker: AtomicWaker::with(LoomWord(AtomicU64::new(0)), LoomCell(UnsafeCell::new(None))),
        result: AtomicBool::new(false),
    })
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn a_completion_racing_a_poll_is_never_lost() {
    model(|| {
        let s = shared();
        let routine = {
            let s = s.clone();
            thread::spawn(move || {
                s.result.store(true, SeqCst);
                s.waker.wake();
            })
        };
        // The future's poll: register, then look for the result.
        let (count, waker) = counter();
        s.waker.register(&waker);
        let ready = s.result.load(SeqCst);
        routine.join().unwrap();
        assert!(
            ready || count.0.load(SeqCst) > 0,
            "pending, and never woken"
        );
    });
}

#[test]
fn a_second_registration_is_the_one_woken() {
    model(|| {
        let s = shared();
        let routine = {
            let s = s.clone();
            thread::spawn(move || {
                s.result.store(true, SeqCst);
                s.waker.wake();
            })
        };
        // Polled twice with different wakers (a future moved to another task, say).
        let (_first_count, first) = counter();
        s.waker.register(&first);
        let (second_count, second) = counter();
        s.waker.register(&second);
        let ready = s.result.load(SeqCst);
        routine.join().unwrap();
        assert!(
            ready || second_count.0.load(SeqCst) > 0,
            "pending after the second registration, which was never woken"
        );
    });
}
