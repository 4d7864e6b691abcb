//! Work items: run code of the client at `PASSIVE_LEVEL` in a system worker thread, in a context
//! its unload waits for.
//!
//! [`queue`] allocates an `IO_WORKITEM` on the client's device object (`IoAllocateWorkItem`) and
//! queues it (`IoQueueWorkItem`, whose Remarks say it "prevents the associated device object, and
//! therefore the driver, from being unloaded while the work item is queued or running"). The
//! routine runs [`Work::run`], frees what `queue` allocated, and leaves the client's work gate as
//! its last action: the unload waits for every queued item, and the I/O manager keeps the image
//! until the routine has returned. So a work item may drop the last [`crate::provider::BindingRef`]
//! of the client, or do anything else that lets the unload go on.
//!
//! [`Prepared`] allocates the same in advance, for a path that must not fail (a stop): its
//! `queue` cannot fail.
//!
//! Queue only from a context the unload waits for (as for dropping a reference, see
//! [`crate::provider`]): a request refused because the unload began is counted for an instant in
//! the work gate, and its release may be the last one the unload waits for.
//!
//! IRQL: [`queue`] and [`Prepared`]'s methods at <= `DISPATCH_LEVEL`; [`Work::run`] at
//! `PASSIVE_LEVEL`.

use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;

use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::runtime::Unavailable;
use crate::status::NtError;
use crate::sys::{
    DEVICE_OBJECT, DelayedWorkQueue, IO_WORKITEM, IoAllocateWorkItem, IoFreeWorkItem,
    IoQueueWorkItem, PVOID,
};

/// Something to do in a work item.
pub trait Work: Send + 'static {
    /// Does it. `PASSIVE_LEVEL`, in a system worker thread; may wait.
    fn run(self);
}

/// A work item's context in pool: the `IO_WORKITEM` and the work.
struct Job<W> {
    item: *mut IO_WORKITEM,
    work: Option<W>,
}

/// Queues `work` to run in a work item of client `C` (allocated now: [`Prepared`] for a path that
/// must not fail for want of memory).
///
/// IRQL <= `DISPATCH_LEVEL`.
///
/// # Errors
/// `STATUS_INVALID_DEVICE_STATE` when the client is not registered or its unload has begun;
/// `STATUS_INSUFFICIENT_RESOURCES` when the context or the work item cannot be allocated. The work
/// is dropped then, in the caller's context.
pub fn queue<C: Client, W: Work>(work: W) -> Result<(), NtError> {
    Prepared::<C, W>::new(work)?.queue();
    Ok(())
}

/// A work item allocated in advance — its context and its `IO_WORKITEM` — so that queueing it
/// later cannot fail: what a stop path needs (a close that must happen even when memory is
/// short). It counts as outstanding work from [`Prepared::new`] on: the unload waits until it is
/// queued and has run, or dropped (which frees it without running `W`), so keep it no longer
/// than until [`crate::Client::on_detach`] says the unload began.
///
/// IRQL: every method at <= `DISPATCH_LEVEL`.
pub struct Prepared<C: Client, W: Work> {
    // INVARIANT: a job from `PoolBox::into_raw` with `C::WORK_ITEM_TAG`, its `item` allocated, the
    // client's work gate entered for it; owned by this value until `queue` or drop.
    job: NonNull<Job<W>>,
    _client: PhantomData<C>,
}

// SAFETY: the job is owned by the value; `W` is `Send`; the work item may be queued from any
// thread.
unsafe impl<C: Client, W: Work> Send for Prepared<C, W> {}

impl<C: Client, W: Work> Prepared<C, W> {
    /// Allocates the work item for `work`.
    ///
    /// # Errors
    /// As [`queue`]; `work` is dropped then.
    pub fn new(work: W) -> Result<Self, NtError> {
        let runtime = &C::state().runtime;
        if let Err(reason) = runtime.enter_work() {
            log_refused::<C>(reason);
            return Err(NtError::INVALID_DEVICE_STATE);
        }
        match allocate::<C, W>(Some(work)) {
            // INVARIANT: allocated, the work gate entered for it.
            Ok(job) => Ok(Self {
                job,
                _client: PhantomData,
            }),
            Err(status) => {
                runtime.leave_work();
                Err(status)
            }
        }
    }

    /// Queues the work item; it cannot fail (everything was allocated, the work counted).
    pub fn queue(self) {
        let job = ManuallyDrop::new(self).job;
        // SAFETY: the job is live and owned (the invariant), its work set and counted.
        unsafe { queue_job::<C, W>(job) };
    }

    /// Sets what the work will do (`set` changes it in place), then queues it; cannot fail.
    /// For work whose details are known only when it is queued (a socket made for a request
    /// nobody waits for any more: its close).
    pub fn queue_with(self, set: impl FnOnce(&mut W)) {
        // SAFETY: the job is owned here (the invariant: not queued), its work set.
        if let Some(work) = unsafe { (*self.job.as_ptr()).work.as_mut() } {
            set(work);
        }
        self.queue();
    }

    /// The raw form, to keep in an `AtomicPtr` (a static the stop path takes it from).
    #[must_use]
    pub fn into_raw(self) -> NonNull<()> {
        ManuallyDrop::new(self).job.cast()
    }

    /// Back from [`Prepared::into_raw`].
    ///
    /// # Safety
    /// `raw` came from `into_raw` of a `Prepared<C, W>` and is taken back once.
    #[must_use]
    pub unsafe fn from_raw(raw: NonNull<()>) -> Self {
        Self {
            job: raw.cast(),
            _client: PhantomData,
        }
    }
}

impl<C: Client, W: Work> Drop for Prepared<C, W> {
    /// Frees the work item unqueued (`W` is dropped without running).
    fn drop(&mut self) {
        // SAFETY: the invariant: owned, allocated by `allocate`, never queued.
        unsafe { free::<C, W>(self.job) };
        C::state().runtime.leave_work();
    }
}

/// A work item allocated in advance whose work is given when it is queued, and which counts as
/// outstanding work only from then on: for a notice the library may or may not send (a
/// binding's detach notice, allocated with the binding so that sending it cannot fail for want of
/// memory). Queueing it is refused once the unload has begun (the unload tells the client
/// itself); dropping it frees it.
///
/// IRQL: every method at <= `DISPATCH_LEVEL`.
pub(crate) struct Reserved<C: Client, W: Work> {
    // INVARIANT: a job from `allocate` without work, owned by this value until `queue` or drop;
    // not counted in the work gate.
    job: NonNull<Job<W>>,
    _client: PhantomData<C>,
}

// SAFETY: as for `Prepared`.
unsafe impl<C: Client, W: Work> Send for Reserved<C, W> {}

impl<C: Client, W: Work> Reserved<C, W> {
    /// Allocates the work item (its context and `IO_WORKITEM`).
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` (logged).
    pub(crate) fn new() -> Result<Self, NtError> {
        // INVARIANT: allocated without work, not counted.
        allocate::<C, W>(None).map(|job| Self {
            job,
            _client: PhantomData,
        })
    }

    /// Queues `work` in the reserved work item. `Err` (the work item freed, `work` dropped) when
    /// the client is not registered or its unload has begun: the caller says what that means.
    pub(crate) fn queue(self, work: W) -> Result<(), NtError> {
        if C::state().runtime.enter_work().is_err() {
            return Err(NtError::INVALID_DEVICE_STATE);
        }
        let job = ManuallyDrop::new(self).job;
        // SAFETY: owned here (the invariant); the work item is not queued, so nothing else reads
        // the job.
        unsafe { (*job.as_ptr()).work = Some(work) };
        // SAFETY: live and owned, its work set and counted just above.
        unsafe { queue_job::<C, W>(job) };
        Ok(())
    }

    /// The raw form, to keep in an `AtomicPtr`.
    #[must_use]
    pub(crate) fn into_raw(self) -> NonNull<()> {
        ManuallyDrop::new(self).job.cast()
    }

    /// Back from [`Reserved::into_raw`].
    ///
    /// # Safety
    /// `raw` came from `into_raw` of a `Reserved<C, W>` and is taken back once.
    #[must_use]
    pub(crate) unsafe fn from_raw(raw: NonNull<()>) -> Self {
        Self {
            job: raw.cast(),
            _client: PhantomData,
        }
    }
}

impl<C: Client, W: Work> Drop for Reserved<C, W> {
    /// Frees the work item unqueued.
    fn drop(&mut self) {
        // SAFETY: the invariant: owned, allocated by `allocate`, never queued.
        unsafe { free::<C, W>(self.job) };
    }
}

fn log_refused<C: Client>(reason: Unavailable) {
    log!(
        C,
        DPFLTR_WARNING_LEVEL,
        "work item refused: %s",
        match reason {
            Unavailable::NotRegistered => c"not registered",
            Unavailable::Unloading => c"unloading",
        }
    );
}

/// Allocates a job (its context in pool and its `IO_WORKITEM` on the client's device object).
///
/// The client is registered (its device object exists) from `Registration::register` to the end
/// of its unload, and every caller runs in between.
fn allocate<C: Client, W: Work>(work: Option<W>) -> Result<NonNull<Job<W>>, NtError> {
    let job = PoolBox::try_new::<C>(
        Job {
            item: core::ptr::null_mut(),
            work,
        },
        C::WORK_ITEM_TAG,
    )
    .inspect_err(|_| log!(C, DPFLTR_ERROR_LEVEL, "work item: no pool for its context"))?;
    // SAFETY: the client's device object (see above); IRQL <= DISPATCH_LEVEL.
    let item = unsafe { IoAllocateWorkItem(C::state().runtime.device()) };
    if item.is_null() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "work item: IoAllocateWorkItem failed"
        );
        return Err(NtError::INSUFFICIENT_RESOURCES);
    }
    // SAFETY: owned here, initialised; `item` is set once, before the job is shared.
    unsafe { (*job.as_ptr()).item = item };
    Ok(job.into_raw())
}

/// Frees a job that was never queued.
///
/// # Safety
/// `job` came from `allocate::<C, W>`, was never queued, and is freed once.
unsafe fn free<C: Client, W>(job: NonNull<Job<W>>) {
    // SAFETY: per the contract: from `PoolBox::into_raw` with the work-item tag.
    let job = unsafe { PoolBox::from_raw::<C>(job, C::WORK_ITEM_TAG) };
    // SAFETY: owned; set by `allocate`.
    let item = unsafe { (*job.as_ptr()).item };
    drop(job);
    // SAFETY: allocated by `allocate`, never queued; IRQL <= DISPATCH_LEVEL.
    unsafe { IoFreeWorkItem(item) };
}

/// Queues a job; [`run_job`] takes it back.
///
/// # Safety
/// `job` came from `allocate::<C, W>`, holds its work, is counted in the work gate, and is queued
/// once (ownership passes to the routine).
unsafe fn queue_job<C: Client, W: Work>(job: NonNull<Job<W>>) {
    // SAFETY: live and owned per the contract; `item` was set by `allocate`.
    let item = unsafe { (*job.as_ptr()).item };
    // SAFETY: a work item of the client's device object, queued once, with this crate's routine
    // for `C` and `W` and the job it takes back; IRQL <= DISPATCH_LEVEL.
    unsafe {
        IoQueueWorkItem(
            item,
            Some(run_job::<C, W>),
            DelayedWorkQueue,
            job.as_ptr().cast(),
        );
    };
}

/// `IO_WORKITEM_ROUTINE`: runs the job, frees it and its work item, and leaves the work gate last.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// Called by the I/O manager with the context `queue` passed: a `Job<W>` given up by
/// `PoolBox::into_raw`, made by `PoolBox::try_new::<C>` with `C::WORK_ITEM_TAG`.
unsafe extern "system" fn run_job<C: Client, W: Work>(_device: *mut DEVICE_OBJECT, context: PVOID) {
    let Some(job) = NonNull::new(context.cast::<Job<W>>()) else {
        log!(C, DPFLTR_ERROR_LEVEL, "work item: NULL context");
        return;
    };
    // SAFETY: per this function's contract.
    let job = unsafe { PoolBox::from_raw::<C>(job, C::WORK_ITEM_TAG) };
    let raw = job.as_ptr();
    // SAFETY: the job is owned here; `queue` set its work item.
    let item = unsafe { (*raw).item };
    // SAFETY: as above; nothing else reaches the job.
    let work = unsafe { (*raw).work.take() };
    drop(job);
    if let Some(work) = work {
        work.run();
    }
    // SAFETY: the work item `queue` allocated; a routine may free its own work item.
    unsafe { IoFreeWorkItem(item) };
    // Last: this may let the unload go on; the I/O manager holds the image until we return.
    C::state().runtime.leave_work();
}

/// A unit `Work` for closures (boxed in the job, so no allocation of its own).
pub struct Closure<F>(pub F);

impl<F: FnOnce() + Send + 'static> Work for Closure<F> {
    fn run(self) {
        (self.0)();
    }
}
