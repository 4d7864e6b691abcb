//! The asynchronous form of a request: [`Op`], a future driven by the request's completion
//! routine (issue 17: no thread waits for WSK).
//!
//! A request owns what the WSK call borrows — the `Buffer` and its `WSK_BUF`, an address — in its
//! pool block (`T`), so that dropping a pending `Op` is sound: the drop cancels the IRP
//! (`IoCancelIrp`), and the request keeps `T` alive until its completion routine has run, then
//! frees it; a drop never waits. A completed `Op` hands `T` back with the result.
//!
//! Two owners, the `Op` and the completion routine, each set their bit when done; the last one
//! frees the IRP and the pool block, then drops the request's binding reference (the binding's
//! last, maybe: nothing of the request is left by then). The routine stores the result, sets
//! `READY`, wakes the future through an [`AtomicWaker`] (lock-free: a routine at
//! `DISPATCH_LEVEL` never waits for the task it interrupted), and only then lets go. A task that
//! is cancelled (the unload began) cancels its pending request's IRP once, at its next poll, and
//! goes on waiting for the completion: the provider completes a cancelled IRP (and every IRP of
//! a socket being closed).
//!
//! IRQL: [`start_or_orphan`], [`start_held`] and polling at <= `DISPATCH_LEVEL` (the WSK function called has its own limit);
//! the completion routine at <= `DISPATCH_LEVEL`; dropping at <= `DISPATCH_LEVEL`.

use core::cell::UnsafeCell;
use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use core::task::{Context, Poll};

use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::provider::BindingRef;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    DEVICE_OBJECT, IRP, IoAllocateIrp, IoCancelIrp, IoFreeIrp, IoSetCompletionRoutineEx, NTSTATUS,
    PVOID, STATUS_MORE_PROCESSING_REQUIRED,
};
use crate::task;
use crate::task::atomic_waker::{AtomicWaker, Slot};

/// The result is stored (the routine ran up to its wake).
const READY: u32 = 1;
/// The completion routine is done with the request.
const ROUTINE_DONE: u32 = 2;
/// The `Op` is done with it (took the result, or was dropped).
const OP_DONE: u32 = 4;
/// The `Op` cancelled the IRP (once).
const CANCEL_SENT: u32 = 8;

/// A request of the asynchronous form in pool (tag `C::REQUEST_TAG`).
struct Request<C: Client, T> {
    /// Set once before the request is shared.
    irp: *mut IRP,
    state: AtomicU32,
    waker: AtomicWaker<AtomicU64, Slot>,
    /// Written by the routine before `READY`; read by the `Op` after.
    result: UnsafeCell<(NTSTATUS, usize)>,
    /// What the call borrows: the `Op`'s after `READY`, else the last owner's.
    owned: UnsafeCell<Option<T>>,
    /// The request's binding reference: dropped by the last owner, after the free.
    reference: UnsafeCell<Option<BindingRef<C>>>,
    /// What becomes of `owned` when the `Op` was dropped before the result: given the result
    /// (a socket made for nobody must be closed). Runs where the last owner frees the request:
    /// in the completion routine (<= `DISPATCH_LEVEL`, no WSK call there) or the `Op`'s drop.
    orphaned: fn(T, NtStatus, usize),
}

impl<C: Client, T> Request<C, T> {
    /// What the call borrows.
    ///
    /// # Safety
    /// The caller's access is exclusive, as the owner protocol orders it (before the IRP is
    /// handed over; the `Op` after `READY`; the last owner).
    #[allow(clippy::mut_from_ref)] // an UnsafeCell, under the owner protocol
    unsafe fn owned(&self) -> &mut Option<T> {
        // SAFETY: per the contract.
        unsafe { &mut *self.owned.get() }
    }

    /// The request's reference.
    ///
    /// # Safety
    /// As [`Request::owned`].
    #[allow(clippy::mut_from_ref)] // an UnsafeCell, under the owner protocol
    unsafe fn reference(&self) -> &mut Option<BindingRef<C>> {
        // SAFETY: per the contract.
        unsafe { &mut *self.reference.get() }
    }

    /// The result the routine stored.
    ///
    /// # Safety
    /// After `READY` (or by the last owner).
    unsafe fn result(&self) -> (NTSTATUS, usize) {
        // SAFETY: per the contract: written before READY, never again.
        unsafe { self.result.get().read() }
    }
}

/// What a completed request gives back.
pub(crate) struct Outcome<T> {
    /// The IRP's `IoStatus.Status` (or, for a provider that answered without completing an IRP
    /// it did not take, its answer).
    pub status: NtStatus,
    /// `IoStatus.Information` (a socket, a byte count).
    pub information: usize,
    /// What the call borrowed.
    pub owned: T,
}

/// A request in flight, or one that could not be made (then `failed` says why, with what it
/// would have borrowed).
///
/// # Invariants
/// `request`, while `Some`, is a live request of which this `Op` is an owner (`OP_DONE` not set).
pub(crate) struct Op<C: Client, T> {
    request: Option<NonNull<Request<C, T>>>,
    failed: Option<(NtError, T)>,
    /// Whether a cancelled task's poll cancels the IRP (all but a disconnect).
    cancel_with_task: bool,
}

impl<C: Client, T> Op<C, T> {
    /// An operation that could not be requested: it is ready at once with `status` and `owned`.
    pub(crate) fn failed(status: NtError, owned: T) -> Self {
        Self {
            request: None,
            failed: Some((status, owned)),
            cancel_with_task: true,
        }
    }

    /// The request is not cancelled when its task is (its caller bounds it: a disconnect in
    /// [`crate::timer::grace`]); dropping the `Op` still cancels it.
    pub(crate) fn outlasting_cancel(mut self) -> Self {
        self.cancel_with_task = false;
        self
    }
}

// SAFETY: the request is in pool, shared with its completion routine only through atomics and
// the owner protocol; `T` and the reference are Send.
unsafe impl<C: Client, T: Send> Send for Op<C, T> {}

impl<C: Client, T> Unpin for Op<C, T> {}

/// Makes a request: allocates it (with `owned` and its own reference, cloned from `reference`),
/// its IRP and completion routine, and calls the WSK function (`call`, given the reference, what
/// the request owns — in pool, where it stays until the routine ran — and the IRP); `orphaned`
/// gets what the request owns when its `Op` was dropped before the result (and the result).
///
/// IRQL <= `DISPATCH_LEVEL` (and whatever the WSK function needs).
pub(crate) fn start_or_orphan<C: Client, T: Send + 'static>(
    reference: &BindingRef<C>,
    owned: T,
    call: impl FnOnce(&BindingRef<C>, &mut T, *mut IRP) -> NTSTATUS,
    orphaned: fn(T, NtStatus, usize),
) -> Op<C, T> {
    match reference.try_clone() {
        Ok(reference) => start_with(reference, owned, call, orphaned),
        Err(error) => Op::failed(NtError::from(error), owned),
    }
}

/// [`start_or_orphan`] through an open socket, whose own reference keeps its binding: the request's
/// reference is made from it and never refused, even once a detach or the unload began (a
/// socket's operations go on until it is closed, as the waited forms' do).
pub(crate) fn start_held<C: Client, T: Send + 'static>(
    socket_reference: &BindingRef<C>,
    owned: T,
    call: impl FnOnce(&BindingRef<C>, &mut T, *mut IRP) -> NTSTATUS,
    orphaned: fn(T, NtStatus, usize),
) -> Op<C, T> {
    start_with(socket_reference.clone_held(), owned, call, orphaned)
}

/// The `orphaned` of a request whose result nobody needs once its `Op` is gone: what it owned is
/// dropped.
pub(crate) fn drop_orphan<T>(owned: T, _status: NtStatus, _information: usize) {
    drop(owned);
}

/// [`start_or_orphan`] with the request's own reference made already.
fn start_with<C: Client, T: Send + 'static>(
    reference: BindingRef<C>,
    owned: T,
    call: impl FnOnce(&BindingRef<C>, &mut T, *mut IRP) -> NTSTATUS,
    orphaned: fn(T, NtStatus, usize),
) -> Op<C, T> {
    let failed = Op::failed;
    let request = match prepare::<C, T>(owned, reference, orphaned) {
        Ok(request) => request,
        Err((status, owned)) => return failed(status, owned),
    };
    // SAFETY: live: this caller is an owner (the Op it returns).
    let shared = unsafe { request.as_ref() };
    let irp = shared.irp;
    // SAFETY: before the IRP is handed over nobody else reads these cells; `owned` stays in
    // pool (the request's) while the provider may use what the call gives it.
    let reference = unsafe { shared.reference() };
    // SAFETY: as above (another cell).
    let owned = unsafe { shared.owned() };
    let status = match (reference.as_ref(), owned.as_mut()) {
        (Some(reference), Some(owned)) => NtStatus::from_raw(call(reference, owned, irp)),
        _ => NtStatus::UNSUCCESSFUL,
    };
    if status != NtStatus::PENDING && shared.state.load(Ordering::Acquire) & READY == 0 {
        // Not pending and not completed: a stub's answer (sent to the client's own device, which
        // completes it now) or a provider that took the IRP and completes it later.
        // SAFETY: not pending, routine not run.
        let sent = unsafe { super::send_to_self::<C>(irp, status) };
        super::log_uncompleted::<C>(status, sent);
    }
    // INVARIANT: prepared, and this Op is its owner.
    Op {
        request: Some(request),
        failed: None,
        cancel_with_task: true,
    }
}

/// Allocates the request, its IRP, and sets the completion routine; then moves `owned` and
/// `reference` in. On failure, `owned` comes back (the reference is dropped here).
fn prepare<C: Client, T: Send + 'static>(
    owned: T,
    reference: BindingRef<C>,
    orphaned: fn(T, NtStatus, usize),
) -> Result<NonNull<Request<C, T>>, (NtError, T)> {
    let device = C::state().runtime.device();
    if device.is_null() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "request: the client is not registered"
        );
        return Err((NtError::INVALID_DEVICE_STATE, owned));
    }
    let request = PoolBox::try_new::<C>(
        Request::<C, T> {
            irp: core::ptr::null_mut(),
            state: AtomicU32::new(0),
            waker: AtomicWaker::with(AtomicU64::new(0), Slot::new()),
            result: UnsafeCell::new((0, 0)),
            owned: UnsafeCell::new(None),
            reference: UnsafeCell::new(None),
            orphaned,
        },
        C::REQUEST_TAG,
    );
    let request = match request {
        Ok(request) => request,
        Err(status) => {
            log!(C, DPFLTR_ERROR_LEVEL, "request: no pool for its context");
            return Err((status, owned));
        }
    };
    // SAFETY: IRQL <= DISPATCH_LEVEL; one stack location (the provider's), no quota.
    let irp = unsafe { IoAllocateIrp(1, 0) };
    if irp.is_null() {
        log!(C, DPFLTR_ERROR_LEVEL, "request: IoAllocateIrp failed");
        return Err((NtError::INSUFFICIENT_RESOURCES, owned));
    }
    let raw = request.as_ptr();
    // SAFETY: the client's device object (live from registration to the end of the unload, which
    // waits for the request's reference), a fresh IRP, this module's routine for `C` and `T` and
    // the request it takes back; IRQL <= DISPATCH_LEVEL.
    let status = NtStatus::from_raw(unsafe {
        IoSetCompletionRoutineEx(device, irp, Some(complete::<C, T>), raw.cast(), 1, 1, 1)
    });
    if let Err(status) = status.into_result() {
        // SAFETY: the IRP allocated above, never sent anywhere.
        unsafe { IoFreeIrp(irp) };
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "request: IoSetCompletionRoutineEx failed: 0x%08X",
            status.bits()
        );
        return Err((status, owned));
    }
    // SAFETY: owned here, not shared yet (the IRP is not handed over).
    unsafe { (*raw).irp = irp };
    // SAFETY: as above.
    let shared = unsafe { &*raw };
    // SAFETY: as above: exclusive.
    unsafe { *shared.owned() = Some(owned) };
    // SAFETY: as above.
    unsafe { *shared.reference() = Some(reference) };
    Ok(request.into_raw())
}

/// Sets `bit` (the caller's: `ROUTINE_DONE` or `OP_DONE`); `true` when the other owner was done
/// already: the caller frees the request.
///
/// # Safety
/// `request` is live and the caller is the owner `bit` names, done with it but for this.
unsafe fn last_owner<C: Client, T>(request: NonNull<Request<C, T>>, bit: u32) -> bool {
    // SAFETY: per the contract.
    let previous = unsafe { request.as_ref() }
        .state
        .fetch_or(bit, Ordering::AcqRel);
    previous & (ROUTINE_DONE | OP_DONE) & !bit != 0
}

/// Frees a request both owners are done with: what it still owns (a dropped `Op`'s, given to its
/// `orphaned` with the result), its IRP and pool block — then its reference, last.
///
/// # Safety
/// `request` came from `prepare::<C, T>`; both owners are done, the routine ran (the result is
/// stored); the caller frees it once.
unsafe fn free<C: Client, T>(request: NonNull<Request<C, T>>) {
    // SAFETY: per the contract: from `PoolBox::into_raw` with the request tag.
    let request = unsafe { PoolBox::from_raw::<C>(request, C::REQUEST_TAG) };
    // SAFETY: owned here alone.
    let shared = unsafe { &*request.as_ptr() };
    let (irp, orphaned) = (shared.irp, shared.orphaned);
    // SAFETY: the last owner's alone.
    let reference = unsafe { shared.reference() }.take();
    // SAFETY: as above.
    let owned = unsafe { shared.owned() }.take();
    // SAFETY: the routine stored the result before it let go.
    let (status, information) = unsafe { shared.result() };
    // SAFETY: the request's IRP, completed (its routine ran), never to be touched again.
    unsafe { IoFreeIrp(irp) };
    drop(request);
    if let Some(owned) = owned {
        orphaned(owned, NtStatus::from_raw(status), information);
    }
    drop(reference);
}

impl<C: Client, T> Future for Op<C, T> {
    type Output = Result<Outcome<T>, (NtError, T)>;

    /// Ready once the completion routine stored the result. In a cancelled task, cancels the
    /// IRP once and keeps waiting for its completion.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(request) = this.request else {
            // Not requested: the reason, once. (Polled again after its end: never ready.)
            return match this.failed.take() {
                Some((status, owned)) => Poll::Ready(Err((status, owned))),
                None => Poll::Pending,
            };
        };
        // SAFETY: live: this Op is an owner until it sets OP_DONE.
        let shared = unsafe { request.as_ref() };
        if shared.state.load(Ordering::Acquire) & READY == 0 {
            if this.cancel_with_task
                && task::is_cancelled(cx)
                && shared.state.fetch_or(CANCEL_SENT, Ordering::AcqRel) & CANCEL_SENT == 0
            {
                // SAFETY: the request's IRP, alive while this owner is not done; IRQL <=
                // DISPATCH_LEVEL.
                let _ = unsafe { IoCancelIrp(shared.irp) };
                log!(
                    C,
                    DPFLTR_INFO_LEVEL,
                    "request: cancelled (the task is cancelled)"
                );
            }
            shared.waker.register(cx.waker());
            if shared.state.load(Ordering::Acquire) & READY == 0 {
                return Poll::Pending;
            }
        }
        // SAFETY: READY: the routine stored the result.
        let (status, information) = unsafe { shared.result() };
        // SAFETY: READY: the routine touches `owned` no more (only a last owner does, and this
        // Op is not done).
        let owned = unsafe { shared.owned() }.take();
        this.request = None;
        // SAFETY: this owner is done with it.
        if unsafe { last_owner(request, OP_DONE) } {
            // SAFETY: both done: the last owner frees.
            unsafe { free(request) };
        }
        match owned {
            Some(owned) => Poll::Ready(Ok(Outcome {
                status: NtStatus::from_raw(status),
                information,
                owned,
            })),
            // Never: `owned` is set before the request is shared and taken here only.
            None => Poll::Pending,
        }
    }
}

impl<C: Client, T> Drop for Op<C, T> {
    /// A pending request: its IRP is cancelled, and the request (with what it owns) is freed by
    /// its completion routine — or here, if that ran already. Never waits.
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        // SAFETY: live: this Op is an owner until it sets OP_DONE.
        let shared = unsafe { request.as_ref() };
        let state = shared.state.fetch_or(CANCEL_SENT, Ordering::AcqRel);
        if state & (READY | CANCEL_SENT) == 0 {
            // SAFETY: the request's IRP, alive while this owner is not done; IRQL <=
            // DISPATCH_LEVEL.
            let _ = unsafe { IoCancelIrp(shared.irp) };
        }
        // SAFETY: this owner is done with it.
        if unsafe { last_owner(request, OP_DONE) } {
            // SAFETY: both done: the last owner frees.
            unsafe { free(request) };
        }
    }
}

/// `IO_COMPLETION_ROUTINE` of an asynchronous request: stores the result, wakes the `Op`, lets
/// go (and frees the request when the `Op` is gone).
///
/// IRQL <= `DISPATCH_LEVEL`. Runs with the I/O manager's reference on the client's device object
/// (`IoSetCompletionRoutineEx`), so the reference it may drop may be the image's last work.
///
/// # Safety
/// Called by the I/O manager for an IRP `prepare` set up, with its request as the context.
unsafe extern "system" fn complete<C: Client, T>(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    let Some(request) = NonNull::new(context.cast::<Request<C, T>>()) else {
        return STATUS_MORE_PROCESSING_REQUIRED;
    };
    // SAFETY: live: this routine is an owner until it sets ROUTINE_DONE.
    let shared = unsafe { request.as_ref() };
    // SAFETY: the IRP being completed: its IoStatus is final.
    let io_status = unsafe { (*irp).IoStatus };
    // SAFETY: the Op reads the result only after READY.
    unsafe {
        shared
            .result
            .get()
            .write((io_status.Status, io_status.Information));
    };
    shared.state.fetch_or(READY, Ordering::AcqRel);
    shared.waker.wake();
    // SAFETY: this owner is done with it.
    if unsafe { last_owner(request, ROUTINE_DONE) } {
        // SAFETY: both done (the Op was dropped): the last owner frees.
        unsafe { free(request) };
    }
    // The IRP is the client's, not a driver stack's: the I/O manager must not touch it again.
    STATUS_MORE_PROCESSING_REQUIRED
}
