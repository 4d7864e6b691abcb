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
//! IRQL: [`queue`] at <= `DISPATCH_LEVEL`; [`Work::run`] at `PASSIVE_LEVEL`.

use core::ptr::NonNull;

use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::runtime::Unavailable;
use crate::status::NtStatus;
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

/// Queues `work` to run in a work item of client `C`.
///
/// IRQL <= `DISPATCH_LEVEL`.
///
/// # Errors
/// `STATUS_INVALID_DEVICE_STATE` when the client is not registered or its unload has begun;
/// `STATUS_INSUFFICIENT_RESOURCES` when the context or the work item cannot be allocated. The work
/// is dropped then, in the caller's context.
pub fn queue<C: Client, W: Work>(work: W) -> Result<(), NtStatus> {
    let runtime = &C::state().runtime;
    if let Err(reason) = runtime.enter_work() {
        log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "work item refused: %s",
            match reason {
                Unavailable::NotRegistered => c"not registered",
                Unavailable::Unloading => c"unloading",
            }
            .as_ptr()
        );
        return Err(NtStatus::INVALID_DEVICE_STATE);
    }
    let job = match PoolBox::try_new::<C>(
        Job {
            item: core::ptr::null_mut(),
            work: Some(work),
        },
        C::WORK_ITEM_TAG,
    ) {
        Ok(job) => job,
        Err(status) => {
            runtime.leave_work();
            log!(C, DPFLTR_ERROR_LEVEL, "work item: no pool for its context");
            return Err(status);
        }
    };
    // SAFETY: the client's device object, live while the client is registered (the work gate
    // entered above keeps the unload from deleting it); IRQL <= DISPATCH_LEVEL.
    let item = unsafe { IoAllocateWorkItem(runtime.device()) };
    if item.is_null() {
        drop(job);
        runtime.leave_work();
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "work item: IoAllocateWorkItem failed"
        );
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    // SAFETY: the job is owned here and nothing else sees it yet.
    unsafe { (*job.as_ptr()).item = item };
    let context = job.into_raw();
    // SAFETY: a fresh work item of the client's device object; the routine is this crate's
    // trampoline for `C` and `W`, and `context` the job it takes back; IRQL <= DISPATCH_LEVEL.
    unsafe {
        IoQueueWorkItem(
            item,
            Some(run_job::<C, W>),
            DelayedWorkQueue,
            context.as_ptr().cast(),
        );
    };
    Ok(())
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
