//! A loom model check of a task's scheduling state ([`wsk_client::task::state::TaskState`]):
//! every interleaving (up to loom's bounds) of a task's runs with wakes from other threads (a
//! completion routine, a DPC), the unload's cancellation and waker drops. A "work item" is the
//! thread a wake's `true` told to queue it, which then runs it (a legal schedule of the system's
//! worker threads). What must hold in each: at most one run is queued or running at a time; no
//! wake is lost (a wake after the event the task waits for always leads to a poll that sees it);
//! the task completes once; its memory is freed exactly once, by the last reference.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::Ordering::SeqCst;

mod loom_word;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use loom::thread;
use loom_word::LoomWord;
use wsk_client::task::state::{AfterPoll, TaskState};

struct Shared {
    state: TaskState<LoomWord>,
    /// What the task's future waits for.
    event: AtomicBool,
    /// Runs queued and not started: never more than one.
    queued: AtomicUsize,
    /// A poll in progress: never two.
    polling: AtomicBool,
    completions: AtomicUsize,
    frees: AtomicUsize,
}

impl Shared {
    /// A new task with its first run queued and `wakers` wakers held elsewhere.
    fn new(wakers: u64) -> Arc<Self> {
        Arc::new(Self {
            state: TaskState::new_scheduled(LoomWord(AtomicU64::new(0)), wakers),
            event: AtomicBool::new(false),
            queued: AtomicUsize::new(1),
            polling: AtomicBool::new(false),
            completions: AtomicUsize::new(0),
            frees: AtomicUsize::new(0),
        })
    }

    /// A wake said "queue it": the caller's thread is the work item.
    fn queued_by_wake(&self) {
        assert_eq!(
            self.queued.fetch_add(1, SeqCst),
            0,
            "two runs queued at once"
        );
        self.run();
    }

    /// The work item's routine: start, poll once, end (and again when requeued).
    fn run(&self) {
        loop {
            assert_eq!(self.queued.fetch_sub(1, SeqCst), 1, "a run nobody queued");
            self.state.start_run();
            assert!(!self.polling.swap(true, SeqCst), "two polls at once");
            // The future: ready once its event happened or the task is cancelled.
            let ready = self.event.load(SeqCst) || self.state.is_cancelled();
            self.polling.store(false, SeqCst);
            if ready {
                self.state.complete();
                self.completions.fetch_add(1, SeqCst);
                self.drop_ref();
                return;
            }
            match self.state.end_run() {
                AfterPoll::Requeue => {
                    assert_eq!(self.queued.fetch_add(1, SeqCst), 0, "requeued twice");
                }
                AfterPoll::Idle => return,
            }
        }
    }

    fn drop_ref(&self) {
        if self.state.drop_ref() {
            self.frees.fetch_add(1, SeqCst);
        }
    }

    /// A waker's `wake` (by value).
    fn wake(&self) {
        if self.state.wake() {
            self.queued_by_wake();
        }
        self.drop_ref();
    }

    fn check_end(&self) {
        assert_eq!(self.completions.load(SeqCst), 1, "completed once");
        assert_eq!(self.frees.load(SeqCst), 1, "freed once");
        assert!(self.state.is_complete());
        assert_eq!(self.queued.load(SeqCst), 0);
    }
}

/// Explores the interleavings of `f` with at most `preemptions` preemptions per execution (the
/// lost wake-up needs one; three threads at three preemptions take minutes in a debug build).
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
    builder.check(f);
}

fn on_thread(
    shared: &Arc<Shared>,
    f: impl FnOnce(&Shared) + Send + 'static,
) -> thread::JoinHandle<()> {
    let shared = Arc::clone(shared);
    thread::spawn(move || f(&shared))
}

#[test]
fn a_wake_after_the_event_is_never_lost() {
    model(3, || {
        let shared = Shared::new(1);
        let first = on_thread(&shared, Shared::run);
        let completion = on_thread(&shared, |s| {
            s.event.store(true, SeqCst);
            s.wake();
        });
        first.join().unwrap();
        completion.join().unwrap();
        shared.check_end();
    });
}

#[test]
fn wakes_from_two_threads_queue_one_run_at_a_time() {
    model(2, || {
        let shared = Shared::new(2);
        let first = on_thread(&shared, Shared::run);
        let spurious = on_thread(&shared, Shared::wake);
        let completion = on_thread(&shared, |s| {
            s.event.store(true, SeqCst);
            s.wake();
        });
        first.join().unwrap();
        spurious.join().unwrap();
        completion.join().unwrap();
        shared.check_end();
    });
}

#[test]
fn the_unloads_cancellation_reaches_a_task_at_any_point() {
    model(2, || {
        let shared = Shared::new(1);
        let first = on_thread(&shared, Shared::run);
        // The unload: marks and wakes every listed task (it holds no waker: the list keeps the
        // task alive until it completes).
        let unload = on_thread(&shared, |s| {
            if s.state.cancel() {
                s.queued_by_wake();
            }
        });
        // A waker that fires for nothing and goes.
        let spurious = on_thread(&shared, Shared::wake);
        first.join().unwrap();
        unload.join().unwrap();
        spurious.join().unwrap();
        shared.check_end();
    });
}
