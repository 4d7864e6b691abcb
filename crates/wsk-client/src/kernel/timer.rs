//! Timers for tasks: [`sleep`] and [`timeout`], over one `KTIMER` and its `KDPC` per client.
//!
//! Each pending [`Sleep`] is an entry in the client's timer list (threaded through the futures
//! themselves, which are pinned while they wait: no allocation per sleep), under a spin lock. The
//! client's `KTIMER` is set for the earliest deadline; its DPC (at `DISPATCH_LEVEL`) wakes every
//! task whose deadline has passed and sets the timer for the next one. A sleep dropped before its
//! deadline takes its entry out. The timer and DPC are initialised when the client first sleeps;
//! the unload cancels the timer and flushes the DPCs (`KeFlushQueuedDpcs`) once every task has
//! ended, so that no DPC of the image runs after `DriverUnload` returns (no entry is left by
//! then: each belonged to a task).
//!
//! Times are interrupt times ([`crate::time::Instant`]); the timer is set with a relative due time.
//!
//! IRQL: [`sleep`] and [`timeout`] make futures at any IRQL; they are polled in tasks
//! (`PASSIVE_LEVEL`) — or wherever their caller polls, at <= `DISPATCH_LEVEL`; the DPC runs at
//! `DISPATCH_LEVEL`; the unload's shutdown at `PASSIVE_LEVEL`.

use core::cell::{Cell, UnsafeCell};
use core::future::Future;
use core::marker::{PhantomData, PhantomPinned};
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, Ordering};
use core::task::{Context, Poll, Waker};

use crate::client::Client;
use crate::spin_lock::SpinLock;
use crate::status::NtError;
use crate::sys::{
    KDPC, KTIMER, KeCancelTimer, KeFlushQueuedDpcs, KeInitializeDpc, KeInitializeTimer, KeSetTimer,
    PVOID,
};
use crate::task;
use crate::time::{Duration, Instant};

/// The timer was never used.
const UNUSED: u8 = 0;
/// Initialised (`KeInitializeTimer`, `KeInitializeDpc`): the unload must cancel and flush.
const READY: u8 = 1;

/// The client's timer: the list of pending sleeps, the `KTIMER` and its `KDPC`.
pub struct TimerQueue {
    list: SpinLock<Entries>,
    /// `UNUSED` or `READY`; changes under the list's lock.
    init: AtomicU8,
    timer: UnsafeCell<KTIMER>,
    dpc: UnsafeCell<KDPC>,
}

// SAFETY: the KTIMER and KDPC are only passed to Ke* routines (which synchronise themselves),
// after their initialisation under the list's lock; the list is under its lock.
unsafe impl Sync for TimerQueue {}

/// The pending sleeps, and the deadline the timer is set for.
struct Entries {
    head: *mut Entry,
    armed: Option<Instant>,
}

// SAFETY: the entries are pinned futures' fields, reached only under the lock.
unsafe impl Send for Entries {}

/// A pending sleep's place in the list (inside the pinned [`Sleep`]).
struct Entry {
    deadline: Instant,
    waker: Option<Waker>,
    linked: bool,
    previous: *mut Entry,
    next: *mut Entry,
}

impl TimerQueue {
    pub(crate) const fn new() -> Self {
        Self {
            list: SpinLock::new(Entries {
                head: ptr::null_mut(),
                armed: None,
            }),
            init: AtomicU8::new(UNUSED),
            timer: UnsafeCell::new(KTIMER { Opaque: [0; 8] }),
            dpc: UnsafeCell::new(KDPC { Opaque: [0; 8] }),
        }
    }

    /// Sets the timer for `deadline` when nothing earlier is armed. Under the list's lock.
    fn arm<C: Client>(&self, entries: &mut Entries, deadline: Instant) {
        if entries.armed.is_some_and(|armed| armed <= deadline) {
            return;
        }
        if self.init.load(Ordering::Acquire) == UNUSED {
            // SAFETY: resident (the client's static state), not set (never initialised before);
            // IRQL <= DISPATCH_LEVEL; under the lock, so once.
            unsafe { KeInitializeTimer(self.timer.get()) };
            // SAFETY: as above; the DPC routine is this module's for `C`, with no context (it
            // finds the queue through `C`).
            unsafe { KeInitializeDpc(self.dpc.get(), Some(expired::<C>), ptr::null_mut()) };
            self.init.store(READY, Ordering::Release);
        }
        let due = deadline.saturating_duration_since(Instant::now());
        // At least one tick: a due time of 0 would be an absolute time in 1601.
        let due = due.max(Duration::from_ticks(1));
        // SAFETY: the initialised timer and DPC; a relative due time; IRQL <= DISPATCH_LEVEL. A
        // set timer is reset.
        let _ = unsafe { KeSetTimer(self.timer.get(), due.relative_100ns(), self.dpc.get()) };
        entries.armed = Some(deadline);
    }

    /// The unload's last step for timers (every task has ended, so no sleep is pending): cancels
    /// the timer and waits until its DPC has returned. IRQL: `PASSIVE_LEVEL`.
    pub(crate) fn shut_down(&self) {
        if self.init.load(Ordering::Acquire) == UNUSED {
            return;
        }
        // SAFETY: the initialised timer; IRQL <= DISPATCH_LEVEL.
        let _ = unsafe { KeCancelTimer(self.timer.get()) };
        // A DPC that fired before the cancel may still run: wait until it has returned.
        // SAFETY: PASSIVE_LEVEL.
        unsafe { KeFlushQueuedDpcs() };
        let mut entries = self.list.lock();
        entries.armed = None;
        // A later registration of the client (the same image) initialises them again.
        self.init.store(UNUSED, Ordering::Release);
        drop(entries);
    }
}

/// `KDEFERRED_ROUTINE` of client `C`'s timer: wakes every sleep whose deadline has passed and
/// sets the timer for the next one.
///
/// IRQL: `DISPATCH_LEVEL`.
///
/// # Safety
/// Called by the kernel for the DPC `TimerQueue::arm` initialised for client `C`.
unsafe extern "system" fn expired<C: Client>(
    _dpc: *mut KDPC,
    _context: PVOID,
    _argument1: PVOID,
    _argument2: PVOID,
) {
    let queue = &C::state().runtime.timers;
    let mut entries = queue.list.lock();
    entries.armed = None;
    let now = Instant::now();
    let mut next_deadline: Option<Instant> = None;
    let mut next = entries.head;
    while let Some(entry) = NonNull::new(next) {
        // SAFETY: a linked entry is a pending sleep, pinned until it unlinks itself under the
        // lock, which this routine holds.
        let entry = unsafe { &mut *entry.as_ptr() };
        next = entry.next;
        if entry.deadline <= now {
            unlink(&mut entries, entry);
            if let Some(waker) = entry.waker.take() {
                waker.wake();
            }
        } else {
            next_deadline = Some(next_deadline.map_or(entry.deadline, |d| d.min(entry.deadline)));
        }
    }
    if let Some(deadline) = next_deadline {
        queue.arm::<C>(&mut entries, deadline);
    }
}

fn link(entries: &mut Entries, entry: &mut Entry) {
    entry.previous = ptr::null_mut();
    entry.next = entries.head;
    if let Some(next) = NonNull::new(entries.head) {
        // SAFETY: a linked entry (pinned, under the lock).
        unsafe { (*next.as_ptr()).previous = entry };
    }
    entries.head = entry;
    entry.linked = true;
}

fn unlink(entries: &mut Entries, entry: &mut Entry) {
    match NonNull::new(entry.previous) {
        // SAFETY: a linked entry (pinned, under the lock).
        Some(previous) => unsafe { (*previous.as_ptr()).next = entry.next },
        None => entries.head = entry.next,
    }
    if let Some(next) = NonNull::new(entry.next) {
        // SAFETY: as above.
        unsafe { (*next.as_ptr()).previous = entry.previous };
    }
    entry.linked = false;
    entry.previous = ptr::null_mut();
    entry.next = ptr::null_mut();
}

/// Completes after `duration` (at the first poll after the deadline), with `Ok(())`; or with
/// `Err(STATUS_CANCELLED)` as soon as the task awaiting it is cancelled.
pub fn sleep<C: Client>(duration: Duration) -> Sleep<C> {
    sleep_until::<C>(Instant::now().saturating_add(duration))
}

/// As [`sleep`], until `deadline`.
pub fn sleep_until<C: Client>(deadline: Instant) -> Sleep<C> {
    sleep_until_with::<C>(deadline, true)
}

fn sleep_until_with<C: Client>(deadline: Instant, ends_when_cancelled: bool) -> Sleep<C> {
    Sleep {
        ends_when_cancelled,
        entry: UnsafeCell::new(Entry {
            deadline,
            waker: None,
            linked: false,
            previous: ptr::null_mut(),
            next: ptr::null_mut(),
        }),
        registered: Cell::new(false),
        _pinned: PhantomPinned,
        _client: PhantomData,
    }
}

/// See [`sleep`].
///
/// # Invariants
/// While `entry.linked`, the future is pinned and its entry is in client `C`'s timer list; the
/// entry is read and written under that list's lock only.
#[must_use = "a future does nothing unless awaited"]
pub struct Sleep<C: Client> {
    /// `false` for [`grace`]'s: the time runs out even in a cancelled task.
    ends_when_cancelled: bool,
    entry: UnsafeCell<Entry>,
    /// The entry was linked once (it may be linked still): written by this future alone, so its
    /// drop knows, without the lock, whether to take the lock.
    registered: Cell<bool>,
    _pinned: PhantomPinned,
    _client: PhantomData<fn() -> C>,
}

// SAFETY: the entry is reached under the timer list's lock only; the waker is Send.
unsafe impl<C: Client> Send for Sleep<C> {}

impl<C: Client> Sleep<C> {
    /// Takes the entry out of the list when it is in (under the lock).
    fn unlink_entry(&self) {
        let queue = &C::state().runtime.timers;
        let mut entries = queue.list.lock();
        // SAFETY: under the lock (the invariant).
        let entry = unsafe { &mut *self.entry.get() };
        if entry.linked {
            unlink(&mut entries, entry);
        }
        let waker = entry.waker.take();
        drop(entries);
        drop(waker);
    }
}

impl<C: Client> Future for Sleep<C> {
    type Output = Result<(), NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.ends_when_cancelled && task::is_cancelled(cx) {
            self.unlink_entry();
            return Poll::Ready(Err(NtError::CANCELLED));
        }
        let queue = &C::state().runtime.timers;
        let mut entries = queue.list.lock();
        // SAFETY: under the lock (the invariant); `self` is pinned, so the entry stays where it
        // is while linked (the drop unlinks it).
        let entry = unsafe { &mut *self.entry.get() };
        if Instant::now() >= entry.deadline {
            if entry.linked {
                unlink(&mut entries, entry);
            }
            let waker = entry.waker.take();
            drop(entries);
            drop(waker);
            return Poll::Ready(Ok(()));
        }
        match &mut entry.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => entry.waker = Some(cx.waker().clone()),
        }
        if !entry.linked {
            link(&mut entries, entry);
            self.registered.set(true);
        }
        let deadline = entry.deadline;
        queue.arm::<C>(&mut entries, deadline);
        Poll::Pending
    }
}

impl<C: Client> Drop for Sleep<C> {
    fn drop(&mut self) {
        // An entry never linked is this future's alone; one linked once may still be in the
        // list (the DPC unlinks it under the lock): take the lock to find out.
        if self.registered.get() {
            self.unlink_entry();
        }
    }
}

/// Runs `future` for at most `duration`: its output, or `Err(STATUS_IO_TIMEOUT)` when the time
/// ran out first (the future is dropped with the `Timeout` then), or `Err(STATUS_CANCELLED)`
/// when the task is cancelled first.
pub fn timeout<C: Client, F: Future>(duration: Duration, future: F) -> Timeout<C, F> {
    Timeout {
        future,
        sleep: sleep::<C>(duration),
    }
}

/// Runs `future` for at most `duration`, **even in a cancelled task**: the bounded last step of
/// a task the unload (or its handle) cancelled — a graceful disconnect before the close. Its
/// output, or `Err(STATUS_IO_TIMEOUT)` when the time ran out first (the future is dropped then:
/// a request in it is cancelled). The unload waits for it, at most `duration`: keep it short.
pub fn grace<C: Client, F: Future>(duration: Duration, future: F) -> Timeout<C, F> {
    Timeout {
        future,
        sleep: sleep_until_with::<C>(Instant::now().saturating_add(duration), false),
    }
}

/// See [`timeout`]. (A future written by hand, as every future of the library: an `async fn`
/// would bring the compiler's "resumed after completion" panic path into the image.)
#[must_use = "a future does nothing unless awaited"]
pub struct Timeout<C: Client, F> {
    future: F,
    sleep: Sleep<C>,
}

impl<C: Client, F: Future> Future for Timeout<C, F> {
    type Output = Result<F::Output, NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: pinning is structural for both fields: neither is moved out of a pinned
        // `Timeout` (no method takes them, there is no `Drop` impl, and `Timeout` is `Unpin` only
        // when both are).
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above: `future` is pinned with `self`.
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(output) = future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        // SAFETY: as above: `sleep` is pinned with `self`.
        let sleep = unsafe { Pin::new_unchecked(&mut this.sleep) };
        match sleep.poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Err(NtError::IO_TIMEOUT)),
            Poll::Ready(Err(status)) => Poll::Ready(Err(status)),
            Poll::Pending => Poll::Pending,
        }
    }
}
