//! Tasks: futures run by the client's work items — the executor of an asynchronous WSK client, in
//! the shape of Rust-for-Linux's workqueue executor (kasync): a task's waker queues the task's work
//! item, each run of the work item polls the future once and returns, and the unload cancels every
//! task and waits until each has ended, so no task code runs after `DriverUnload` returns.
//!
//! [`spawn`] puts the future in pool (tag [`crate::Client::TASK_TAG`]) with an `IO_WORKITEM`
//! allocated for it, and queues its first run. A wake queues the work item at most once however
//! many wakes come ([`state::TaskState`], model-checked with loom); a wake during a run queues it
//! again when the run returns. So no work item of the library waits: a run is one poll, short as
//! "System Worker Threads" asks of every work item routine.
//!
//! Wakers are `Send + Sync` and may be used at IRQL <= `DISPATCH_LEVEL` (a completion routine, a
//! DPC): a wake is one interlocked update and, at most once, `IoQueueWorkItem`. A waker must not
//! outlive the client's unload: the library's own (its requests, its timers) never do; keep the
//! embedder's in contexts the unload waits for, like binding references ([`crate::provider`]).
//!
//! # The executor's contract
//! - A task runs at `PASSIVE_LEVEL`, in a system worker thread, one poll per run: it must not wait
//!   (no `KeWaitForSingleObject` with a timeout, no blocking call) — await instead.
//! - Tasks count as the client's outstanding work: from [`spawn`] until the task has completed
//!   and its last waker is gone. The unload (dropping the [`crate::Registration`]) cancels every
//!   task — [`is_cancelled`] says so, the library's futures end with `STATUS_CANCELLED` — and waits
//!   until each has completed; a task that ignores the cancellation keeps the unload waiting
//!   (logged every 5 s). A spawn after the unload began is refused.
//! - A provider's detach does not cancel tasks: it is told to [`crate::Client::on_detach`], and
//!   requests through the detaching binding fail; a task ends its use of the binding there.
//!
//! IRQL: [`spawn`] at <= `DISPATCH_LEVEL`; a task's future is polled at `PASSIVE_LEVEL`; wakers
//! at <= `DISPATCH_LEVEL`.

pub mod atomic_waker;
mod handle;
mod join;
mod set;
pub mod state;

pub use handle::{TaskCell, TaskHandle};
pub use join::{Join, OptionFuture, join};
pub use set::TaskSet;

use core::cell::UnsafeCell;
use core::future::Future;
use core::mem::{ManuallyDrop, MaybeUninit};
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::status::NtError;
use crate::sys::{
    DEVICE_OBJECT, DelayedWorkQueue, IO_WORKITEM, IoAllocateWorkItem, IoFreeWorkItem,
    IoQueueWorkItem, PVOID,
};
use state::{AfterPoll, TaskState};

/// What every task starts with, whatever its future: reached through wakers and the client's
/// task list without knowing the future's type.
#[repr(C)]
pub(crate) struct Header {
    state: TaskState<AtomicU64>,
    /// The task's work item; set before the task is shared, freed with the task.
    item: *mut IO_WORKITEM,
    /// The functions that know the client and the future.
    vtable: &'static TaskVtable,
    /// Neighbours in the client's task list: read and written under its lock only.
    links: UnsafeCell<Links>,
}

#[derive(Clone, Copy)]
struct Links {
    previous: *mut Header,
    next: *mut Header,
}

/// A task in pool: the header first (a `*mut Header` is a `*mut Task<F>`), then the future,
/// dropped in place when it completes (the header lives on until the last waker goes).
#[repr(C)]
struct Task<F> {
    header: Header,
    /// Written once the task is allocated (a failed allocation drops the future where it is).
    future: UnsafeCell<MaybeUninit<F>>,
}

struct TaskVtable {
    /// Polls the future (the run's, alone).
    poll: unsafe fn(NonNull<Header>, &mut Context<'_>) -> Poll<()>,
    /// Drops the future in place (once, when it completed).
    drop_future: unsafe fn(NonNull<Header>),
    /// Queues the task's work item.
    queue: unsafe fn(NonNull<Header>),
    /// Frees the task, then leaves the client's work gate (the last reference is gone).
    free: unsafe fn(NonNull<Header>),
}

/// The client's live tasks (spawned, not completed), for the unload's cancellation: a list
/// threaded through the tasks' headers, under the client's task lock.
pub(crate) struct TaskList {
    head: *mut Header,
}

// SAFETY: the headers are in pool, reached only under the lock that guards the list.
unsafe impl Send for TaskList {}

impl TaskList {
    pub(crate) const fn new() -> Self {
        Self {
            head: ptr::null_mut(),
        }
    }

    /// # Safety
    /// `header` is a live task not in the list; the caller holds the list's lock.
    unsafe fn push(&mut self, header: NonNull<Header>) {
        // SAFETY: per the contract.
        let links = unsafe { header.as_ref() }.links.get();
        // SAFETY: the links are written under the lock (the caller's).
        unsafe {
            links.write(Links {
                previous: ptr::null_mut(),
                next: self.head,
            });
        };
        if let Some(next) = NonNull::new(self.head) {
            // SAFETY: a listed task is live; under the lock.
            unsafe { set_previous(next, header.as_ptr()) };
        }
        self.head = header.as_ptr();
    }

    /// # Safety
    /// `header` is a live task in the list; the caller holds the list's lock.
    unsafe fn remove(&mut self, header: NonNull<Header>) {
        // SAFETY: per the contract.
        let links = unsafe { header.as_ref() }.links.get();
        // SAFETY: read under the lock.
        let Links { previous, next } = unsafe { links.read() };
        match NonNull::new(previous) {
            // SAFETY: a listed task is live; under the lock.
            Some(previous) => unsafe { set_next(previous, next) },
            None => self.head = next,
        }
        if let Some(next) = NonNull::new(next) {
            // SAFETY: as above.
            unsafe { set_previous(next, previous) };
        }
    }
}

/// # Safety
/// `header` is a listed task; the caller holds the list's lock.
unsafe fn set_previous(header: NonNull<Header>, previous: *mut Header) {
    // SAFETY: per the contract.
    let links = unsafe { header.as_ref() }.links.get();
    // SAFETY: under the lock.
    unsafe { (*links).previous = previous };
}

/// # Safety
/// As [`set_previous`].
unsafe fn set_next(header: NonNull<Header>, next: *mut Header) {
    // SAFETY: per the contract.
    let links = unsafe { header.as_ref() }.links.get();
    // SAFETY: under the lock.
    unsafe { (*links).next = next };
}

/// The future of a task (dropped in place at completion: `MaybeUninit` is transparent).
///
/// # Safety
/// `task` is live.
unsafe fn future_of<F>(task: NonNull<Task<F>>) -> *mut F {
    // SAFETY: per the contract.
    unsafe { task.as_ref() }.future.get().cast::<F>()
}

/// Spawns `future` as a task of client `C`: it runs in the client's work items until it
/// completes, or until it is cancelled (by the unload, or through its [`TaskHandle`]) and it then
/// completes. The handle may be dropped at once: the task runs on.
///
/// IRQL <= `DISPATCH_LEVEL`.
///
/// # Errors
/// `STATUS_INVALID_DEVICE_STATE` when the client is not registered or its unload has begun;
/// `STATUS_INSUFFICIENT_RESOURCES` when the task or its work item cannot be allocated. The future
/// is dropped then, in the caller's context (logged).
pub fn spawn<C, F>(future: F) -> Result<TaskHandle, NtError>
where
    C: Client,
    F: Future<Output = ()> + Send + 'static,
{
    let runtime = &C::state().runtime;
    if runtime.enter_work().is_err() {
        log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "task: not spawned: the client is not registered or unloading"
        );
        return Err(NtError::INVALID_DEVICE_STATE);
    }
    match allocate::<C, F>(future) {
        Ok(header) => {
            if runtime.insert_task(header).is_err() {
                // SAFETY: allocated above, never shared: its future and memory go here.
                unsafe { discard::<C, F>(header) };
                log!(
                    C,
                    DPFLTR_WARNING_LEVEL,
                    "task: not spawned: the unload has begun"
                );
                return Err(NtError::INVALID_DEVICE_STATE);
            }
            // SAFETY: a live task with the handle's reference (`allocate`), given to the handle.
            let handle = unsafe { TaskHandle::from_reference(header) };
            // SAFETY: a live task, scheduled (`allocate`), listed: its first run.
            unsafe { queue::<C>(header) };
            Ok(handle)
        }
        Err(status) => {
            runtime.leave_work();
            Err(status)
        }
    }
}

/// Allocates a task for `future`, scheduled, with its work item, and a reference for its handle.
fn allocate<C: Client, F: Future<Output = ()> + Send + 'static>(
    future: F,
) -> Result<NonNull<Header>, NtError> {
    let device = C::state().runtime.device();
    let task = PoolBox::try_new::<C>(
        Task {
            header: Header {
                state: TaskState::new_scheduled(AtomicU64::new(0), 1),
                item: ptr::null_mut(),
                vtable: &Vtables::<C, F>::VTABLE,
                links: UnsafeCell::new(Links {
                    previous: ptr::null_mut(),
                    next: ptr::null_mut(),
                }),
            },
            future: UnsafeCell::new(MaybeUninit::uninit()),
        },
        C::TASK_TAG,
    )
    .inspect_err(|_| log!(C, DPFLTR_ERROR_LEVEL, "task: no pool for it"))?;
    // SAFETY: owned here, not shared yet.
    let place = unsafe { &*task.as_ptr() }.future.get();
    // SAFETY: the future's place, in the task just allocated, written once.
    unsafe { place.write(MaybeUninit::new(future)) };
    // SAFETY: the client's device object (registered: its work gate was entered); IRQL <=
    // DISPATCH_LEVEL.
    let item = unsafe { IoAllocateWorkItem(device) };
    if item.is_null() {
        log!(C, DPFLTR_ERROR_LEVEL, "task: IoAllocateWorkItem failed");
        // The future is dropped with the box (MaybeUninit: by hand).
        let task = task.into_raw();
        // SAFETY: owned here, never shared.
        let future = unsafe { future_of(task) };
        // SAFETY: its future is live and dropped once.
        unsafe { ptr::drop_in_place(future) };
        // SAFETY: from `into_raw` just above, with the task tag.
        drop(unsafe { PoolBox::from_raw::<C>(task, C::TASK_TAG) });
        return Err(NtError::INSUFFICIENT_RESOURCES);
    }
    let task = task.into_raw();
    // SAFETY: owned here, not shared yet.
    unsafe { (*task.as_ptr()).header.item = item };
    Ok(task.cast())
}

/// Drops a task that was never shared: its future, work item and memory (the work gate is left
/// last).
///
/// # Safety
/// `header` came from `allocate::<C, F>` and was never queued, listed or woken.
unsafe fn discard<C: Client, F>(header: NonNull<Header>) {
    // SAFETY: per the contract: the task is live.
    let future = unsafe { future_of(header.cast::<Task<F>>()) };
    // SAFETY: per the contract: its future is live, dropped once here.
    unsafe { ptr::drop_in_place(future) };
    // SAFETY: per the contract: the last reference, never queued.
    unsafe { free::<C, F>(header) };
}

/// The per-client, per-future functions of a task.
struct Vtables<C, F>(core::marker::PhantomData<(C, F)>);

impl<C: Client, F: Future<Output = ()> + Send + 'static> Vtables<C, F> {
    const VTABLE: TaskVtable = TaskVtable {
        poll: poll::<F>,
        drop_future: drop_future::<F>,
        queue: queue::<C>,
        free: free::<C, F>,
    };
}

/// # Safety
/// `header` is a `Task<F>` whose future is live, polled by its run alone.
unsafe fn poll<F: Future<Output = ()>>(header: NonNull<Header>, cx: &mut Context<'_>) -> Poll<()> {
    // SAFETY: per the contract: live.
    let future = unsafe { future_of(header.cast::<Task<F>>()) };
    // SAFETY: polled by this run alone: no other reference to the future.
    let future = unsafe { &mut *future };
    // SAFETY: the future never moves (in pool from spawn to its drop in place).
    unsafe { Pin::new_unchecked(future) }.poll(cx)
}

/// # Safety
/// As [`poll`]; the future is dropped once, after it completed.
unsafe fn drop_future<F>(header: NonNull<Header>) {
    // SAFETY: per the contract: live.
    let future = unsafe { future_of(header.cast::<Task<F>>()) };
    // SAFETY: per the contract: dropped once, after it completed.
    unsafe { ptr::drop_in_place(future) };
}

/// Queues the task's work item.
///
/// # Safety
/// `header` is a live task of client `C` that [`TaskState`] just scheduled (or a new one).
unsafe fn queue<C: Client>(header: NonNull<Header>) {
    // SAFETY: per the contract; `item` was set by `allocate`.
    let item = unsafe { (*header.as_ptr()).item };
    // SAFETY: the task's work item, not queued (scheduled by this caller alone), with this
    // crate's routine for `C` and the task; IRQL <= DISPATCH_LEVEL.
    unsafe {
        IoQueueWorkItem(
            item,
            Some(run::<C>),
            DelayedWorkQueue,
            header.as_ptr().cast(),
        );
    };
}

/// Frees a task whose last reference is gone (its future dropped or never to run), then leaves
/// the client's work gate: the last thing it does, which may let the unload go on.
///
/// # Safety
/// `header` came from `allocate::<C, F>`; the caller dropped its last reference; the future is
/// dropped; the work item is not queued.
unsafe fn free<C: Client, F>(header: NonNull<Header>) {
    // SAFETY: per the contract.
    let item = unsafe { (*header.as_ptr()).item };
    // SAFETY: the task, from `PoolBox::into_raw` with the task tag; its future is dropped
    // (MaybeUninit: dropping the box does not drop it again).
    drop(unsafe { PoolBox::from_raw::<C>(header.cast::<Task<F>>(), C::TASK_TAG) });
    // SAFETY: the task's work item, not queued; a routine may free its own work item; IRQL <=
    // DISPATCH_LEVEL.
    unsafe { IoFreeWorkItem(item) };
    C::state().runtime.leave_work();
}

/// `IO_WORKITEM_ROUTINE`: one run of a task — one poll.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the I/O manager with the context [`queue`] passed: a scheduled task of client `C`.
unsafe extern "system" fn run<C: Client>(_device: *mut DEVICE_OBJECT, context: PVOID) {
    let Some(header) = NonNull::new(context.cast::<Header>()) else {
        log!(C, DPFLTR_ERROR_LEVEL, "task: a run without its task");
        return;
    };
    // SAFETY: a scheduled task is live (its own reference is held until it completes).
    let task = unsafe { header.as_ref() };
    task.state.start_run();
    // The run's waker borrows the task's own reference: never dropped.
    // SAFETY: the data is a live task and the vtable the library's.
    let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw_waker(header)) });
    let mut cx = Context::from_waker(&waker);
    // SAFETY: the run polls alone (RUNNING); the future is live (not complete).
    let poll = unsafe { (task.vtable.poll)(header, &mut cx) };
    if poll.is_pending() {
        if task.state.end_run() == AfterPoll::Requeue {
            // SAFETY: scheduled again by `end_run`.
            unsafe { queue::<C>(header) };
        }
        // Nothing of the task is touched from here on: a wake may run it elsewhere already.
        return;
    }
    // SAFETY: completed, polled by this run alone: dropped once.
    unsafe { (task.vtable.drop_future)(header) };
    C::state().runtime.remove_task(header);
    task.state.complete();
    if task.state.drop_ref() {
        // SAFETY: the last reference; the future is dropped; the work item runs this routine
        // (not queued).
        unsafe { (task.vtable.free)(header) };
    }
}

/// Cancels every live task of the client: marks it and wakes it (the unload's first step for
/// tasks). IRQL <= `DISPATCH_LEVEL`.
pub(crate) fn cancel_all(list: &TaskList) {
    let mut next = list.head;
    while let Some(header) = NonNull::new(next) {
        // SAFETY: a listed task is live; the caller holds the list's lock.
        let task = unsafe { header.as_ref() };
        // SAFETY: as above.
        next = unsafe { (*task.links.get()).next };
        if task.state.cancel() {
            // SAFETY: scheduled just now by `cancel`.
            unsafe { (task.vtable.queue)(header) };
        }
    }
}

/// Inserts a new task in `list`. (The runtime holds the lock.)
pub(crate) fn list_insert(list: &mut TaskList, header: NonNull<Header>) {
    // SAFETY: a new task, not listed; the caller holds the lock.
    unsafe { list.push(header) };
}

/// Removes a completing task from `list`. (The runtime holds the lock.)
pub(crate) fn list_remove(list: &mut TaskList, header: NonNull<Header>) {
    // SAFETY: a listed task (every spawned task is, until it completes); under the lock.
    unsafe { list.remove(header) };
}

/// The type-erased task pointer a waker and the task list carry.
pub(crate) type TaskRef = NonNull<Header>;

/// The wakers of every task: one table (a static, so its address identifies the library's
/// wakers: [`is_cancelled`] compares it).
static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(waker_clone, waker_wake, waker_wake_by_ref, waker_drop);

fn raw_waker(header: NonNull<Header>) -> RawWaker {
    RawWaker::new(header.as_ptr().cast_const().cast(), &WAKER_VTABLE)
}

/// # Safety
/// `data` is a live task's header (a waker's reference holds it).
unsafe fn waker_clone(data: *const ()) -> RawWaker {
    // SAFETY: per the contract.
    let header = unsafe { &*data.cast::<Header>() };
    header.state.clone_ref();
    RawWaker::new(data, &WAKER_VTABLE)
}

/// # Safety
/// As [`waker_clone`]; the waker's reference goes.
unsafe fn waker_wake(data: *const ()) {
    // SAFETY: per the contract.
    unsafe { waker_wake_by_ref(data) };
    // SAFETY: per the contract.
    unsafe { waker_drop(data) };
}

/// # Safety
/// As [`waker_clone`].
unsafe fn waker_wake_by_ref(data: *const ()) {
    let header = NonNull::new(data.cast_mut().cast::<Header>());
    if let Some(header) = header {
        // SAFETY: per the contract.
        let task = unsafe { header.as_ref() };
        if task.state.wake() {
            // SAFETY: scheduled just now by `wake`.
            unsafe { (task.vtable.queue)(header) };
        }
    }
}

/// # Safety
/// As [`waker_clone`]; the waker's reference goes.
unsafe fn waker_drop(data: *const ()) {
    let header = NonNull::new(data.cast_mut().cast::<Header>());
    if let Some(header) = header {
        // SAFETY: per the contract.
        let task = unsafe { header.as_ref() };
        if task.state.drop_ref() {
            // SAFETY: the last reference: the task completed (its own reference went then), so
            // its future is dropped and its work item not queued.
            unsafe { (task.vtable.free)(header) };
        }
    }
}

/// Whether the task polling with `cx` is cancelled (its client's unload began). `false` outside a
/// task of the library (another executor's waker).
#[must_use]
pub fn is_cancelled(cx: &Context<'_>) -> bool {
    let waker = cx.waker();
    if !ptr::eq(waker.vtable(), &raw const WAKER_VTABLE) {
        return false;
    }
    // SAFETY: a waker of the library's: its data is a live task's header.
    let header = unsafe { &*waker.data().cast::<Header>() };
    header.state.is_cancelled()
}

/// A future that completes when the task awaiting it is cancelled (never, outside a task of the
/// library). For a task that waits for something the library does not end on cancellation.
pub fn cancelled() -> Cancelled {
    Cancelled(())
}

/// See [`cancelled`].
#[derive(Debug)]
#[must_use = "a future does nothing unless awaited"]
pub struct Cancelled(());

impl Future for Cancelled {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // The cancellation wakes every task, so a task pending here is polled again then.
        if is_cancelled(cx) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Gives the work item back once: the task is woken at once and runs again in a later work item
/// (for a task that works long without awaiting anything).
pub fn yield_now() -> YieldNow {
    YieldNow(false)
}

/// See [`yield_now`].
#[derive(Debug)]
#[must_use = "a future does nothing unless awaited"]
pub struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The live task count's ordering for the unload's check (see `Runtime::insert_task`).
pub(crate) const LIVE_ORDER: Ordering = Ordering::SeqCst;

/// Runs `future` to its end on the calling thread, waiting on a kernel event between polls: the
/// blocking form, **only for a caller that owns a `PASSIVE_LEVEL` thread** (a system thread of
/// the driver's, joined before its unload). Never in a work item or a task: a wait there holds a
/// shared worker thread ("System Worker Threads"), and the host model reports it. The future
/// is not a task: the unload does not cancel it (the thread's owner stops it first).
///
/// The waker's event is in pool (tag [`crate::Client::TASK_TAG`]), counted by its wakers: a
/// request that keeps a clone after the future ended (its completion routine still returning)
/// frees it last.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Errors
/// `STATUS_INSUFFICIENT_RESOURCES` when the event cannot be allocated (the future is dropped
/// unpolled).
pub fn block_on<C: Client, F: Future>(future: F) -> Result<F::Output, NtError> {
    let parker = PoolBox::try_new::<C>(
        Parker {
            refs: AtomicU64::new(1),
            event: UnsafeCell::new(crate::sys::KEVENT { Header: [0; 3] }),
            free: free_parker::<C>,
        },
        C::TASK_TAG,
    )
    .inspect_err(|_| log!(C, DPFLTR_ERROR_LEVEL, "block_on: no pool for its event"))?
    .into_raw();
    // SAFETY: live (this caller's reference).
    let event = unsafe { parker.as_ref() }.event.get();
    // SAFETY: an event in non-paged pool, before any wait.
    unsafe { crate::sys::KeInitializeEvent(event, crate::sys::SynchronizationEvent, 0) };
    // SAFETY: a parker with this caller's reference, which the ManuallyDrop keeps (dropped by
    // `parker_drop` below).
    let waker = ManuallyDrop::new(unsafe {
        Waker::from_raw(RawWaker::new(
            parker.as_ptr().cast_const().cast(),
            &PARKER_VTABLE,
        ))
    });
    let output = {
        let mut cx = Context::from_waker(&waker);
        let mut future = core::pin::pin!(future);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                break output;
            }
            // SAFETY: the parker's event, live while this caller holds its reference;
            // PASSIVE_LEVEL; no timeout: woken by the future's waker.
            let _ = unsafe {
                crate::sys::KeWaitForSingleObject(
                    event.cast(),
                    crate::sys::Executive,
                    crate::sys::KernelMode,
                    0,
                    ptr::null(),
                )
            };
        }
    };
    // SAFETY: this caller's reference, released once.
    unsafe { parker_drop(parker.as_ptr().cast_const().cast()) };
    Ok(output)
}

/// A blocked caller's event and its count of wakers (and the caller's own reference).
struct Parker {
    refs: AtomicU64,
    event: UnsafeCell<crate::sys::KEVENT>,
    /// Frees it (knows the client's pool).
    free: unsafe fn(NonNull<Parker>),
}

/// # Safety
/// `parker` came from `block_on::<C, _>`'s allocation; its last reference is gone.
unsafe fn free_parker<C: Client>(parker: NonNull<Parker>) {
    // SAFETY: per the contract: from `PoolBox::into_raw` with the task tag.
    drop(unsafe { PoolBox::from_raw::<C>(parker, C::TASK_TAG) });
}

/// The wakers of [`block_on`]: they set the caller's event.
static PARKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(parker_clone, parker_wake, parker_wake_by_ref, parker_drop);

/// # Safety
/// `data` is a live parker (a reference holds it).
unsafe fn parker_clone(data: *const ()) -> RawWaker {
    // SAFETY: per the contract.
    let parker = unsafe { &*data.cast::<Parker>() };
    parker.refs.fetch_add(1, Ordering::Relaxed);
    RawWaker::new(data, &PARKER_VTABLE)
}

/// # Safety
/// As [`parker_clone`]; the waker's reference goes.
unsafe fn parker_wake(data: *const ()) {
    // SAFETY: per the contract.
    unsafe { parker_wake_by_ref(data) };
    // SAFETY: per the contract.
    unsafe { parker_drop(data) };
}

/// # Safety
/// As [`parker_clone`].
unsafe fn parker_wake_by_ref(data: *const ()) {
    // SAFETY: per the contract.
    let parker = unsafe { &*data.cast::<Parker>() };
    // SAFETY: the parker's initialised event; IRQL <= DISPATCH_LEVEL with Wait FALSE.
    let _ = unsafe { crate::sys::KeSetEvent(parker.event.get(), 0, 0) };
}

/// # Safety
/// As [`parker_clone`]; the waker's reference goes.
unsafe fn parker_drop(data: *const ()) {
    let Some(parker) = NonNull::new(data.cast_mut().cast::<Parker>()) else {
        return;
    };
    // SAFETY: per the contract.
    let shared = unsafe { parker.as_ref() };
    if shared.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
        // SAFETY: the last reference: nobody waits on or sets the event any more.
        unsafe { (shared.free)(parker) };
    }
}
