//! [`TaskState`]: a task's scheduling state and reference count in one atomic word — the small
//! state machine that lets a waker queue the task's work item at most once, however many wakes
//! come and from wherever (a completion routine, a DPC, the task itself while it is polled), and
//! loses none. Exposed for its loom model check (`tests/loom_task.rs`); the executor
//! ([`crate::task`]) is its one user.
//!
//! | bits | meaning                                                                  |
//! |------|--------------------------------------------------------------------------|
//! | 0    | `SCHEDULED`: its work item is queued (or about to be); a wake does nothing |
//! | 1    | `RUNNING`: its work item polls it now                                    |
//! | 2    | `NOTIFIED`: woken while scheduled or running: a running one is queued again when its run returns |
//! | 3    | `COMPLETE`: the future has returned `Ready` (and is dropped); wakes do nothing |
//! | 4    | `CANCELLED`: the unload began; the task's futures see it                 |
//! | 8-63 | references: the task's own (until it completes) and one per waker       |
//!
//! IRQL: interlocked, non-blocking: any IRQL.

use core::sync::atomic::Ordering;

use crate::gate::AtomicWord;

const SCHEDULED: u64 = 1 << 0;
const RUNNING: u64 = 1 << 1;
const NOTIFIED: u64 = 1 << 2;
const COMPLETE: u64 = 1 << 3;
const CANCELLED: u64 = 1 << 4;
const REF_ONE: u64 = 1 << 8;

/// What a run does once the future returned `Pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterPoll {
    /// It was woken while it ran: queue its work item again.
    Requeue,
    /// Nothing: a wake will queue it.
    Idle,
}

/// A task's state word.
pub struct TaskState<W> {
    word: W,
}

impl<W: AtomicWord> TaskState<W> {
    /// A new task, scheduled (its first run is queued at once), with its own reference and
    /// `wakers` more.
    pub fn new_scheduled(word: W, wakers: u64) -> Self {
        word.store(SCHEDULED | (REF_ONE * (1 + wakers)), Ordering::Release);
        Self { word }
    }

    /// A wake. `true`: the caller queues the task's work item (it was idle, and is scheduled now).
    ///
    /// A wake of a task that is not complete always writes the word (an interlocked update that
    /// releases), so that what the waker did before it is seen by the poll it leads to: the next
    /// run's `start_run` acquires the word after this update, whatever the order — an idle task is
    /// queued by this wake; a scheduled one starts after it; a running one is marked `NOTIFIED`
    /// and runs again. (Loom finds the lost wake-up when a wake of a scheduled task writes
    /// nothing: `tests/loom_task.rs`.)
    pub fn wake(&self) -> bool {
        let mut queue = false;
        let _ = self.word.fetch_update(|state| {
            queue = false;
            if state & COMPLETE != 0 {
                None
            } else if state & (SCHEDULED | RUNNING) != 0 {
                Some(state | NOTIFIED)
            } else {
                queue = true;
                Some(state | SCHEDULED)
            }
        });
        queue
    }

    /// Marks the task cancelled and wakes it; `true` as for [`TaskState::wake`].
    pub fn cancel(&self) -> bool {
        let previous = self.word.fetch_or(CANCELLED, Ordering::AcqRel);
        if previous & COMPLETE != 0 {
            return false;
        }
        self.wake()
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.word.load(Ordering::Acquire) & CANCELLED != 0
    }

    /// The run begins (the work item's routine): scheduled becomes running; a wake from now on
    /// is noted for the end of the run.
    pub fn start_run(&self) {
        let _ = self.word.fetch_update(|state| {
            debug_assert!(state & SCHEDULED != 0, "a run of a task not scheduled");
            Some((state & !(SCHEDULED | NOTIFIED)) | RUNNING)
        });
    }

    /// The run polled the future, which returned `Pending`.
    pub fn end_run(&self) -> AfterPoll {
        let mut after = AfterPoll::Idle;
        let _ = self.word.fetch_update(|state| {
            if state & NOTIFIED != 0 {
                after = AfterPoll::Requeue;
                Some((state & !(RUNNING | NOTIFIED)) | SCHEDULED)
            } else {
                after = AfterPoll::Idle;
                Some(state & !RUNNING)
            }
        });
        after
    }

    /// The run polled the future, which returned `Ready` and was dropped: complete; wakes do
    /// nothing from now on. The task's own reference is still to drop ([`TaskState::drop_ref`]).
    pub fn complete(&self) {
        let _ = self
            .word
            .fetch_update(|state| Some((state & !(RUNNING | NOTIFIED | SCHEDULED)) | COMPLETE));
    }

    /// Whether the future has completed.
    pub fn is_complete(&self) -> bool {
        self.word.load(Ordering::Acquire) & COMPLETE != 0
    }

    /// One more reference (a waker cloned).
    pub fn clone_ref(&self) {
        let _ = self.word.fetch_add(REF_ONE, Ordering::Relaxed);
    }

    /// One reference less; `true` when it was the last: the caller frees the task.
    pub fn drop_ref(&self) -> bool {
        let previous = self.word.fetch_sub(REF_ONE, Ordering::AcqRel);
        debug_assert!(previous >= REF_ONE, "a task reference dropped twice");
        previous < 2 * REF_ONE
    }
}
