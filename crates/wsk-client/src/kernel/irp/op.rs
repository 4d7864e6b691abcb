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
//! `READY`, takes the future's waker from an [`AtomicWaker`] (lock-free: a routine at
//! `DISPATCH_LEVEL` never waits for the task it interrupted), lets go, and only then wakes it. A task that
//! is cancelled (the unload began) cancels its pending request's IRP once, at its next poll, and
//! goes on waiting for the completion: the provider completes a cancelled IRP (and every IRP of
//! a socket being closed).
//!
//! A request is used once and freed, or **kept** ([`Kept`], issue 20): a socket keeps one per
//! kind of operation it has in flight (its send, its receive), made at the first use and reused
//! for every later one, so that a connected socket's steady state allocates nothing of its own.
//! Between uses the IRP is reinitialized (`IoReuseIrp`) and its routine set again
//! (`IoSetCompletionRoutineEx`, as every use of a non-PnP driver's IRP: Static Driver Verifier's
//! `IoSetCompletionRoutineNonPnpDriver` rule). The end of a use (the last of its two owners) does
//! what the free of a one-time request does, but gives a kept request back to its keeper instead
//! of freeing it; the keeper frees it when it goes (the socket's close), or leaves that to the use
//! in flight. A use that finds the kept request busy (a second send while one is in flight) makes
//! a one-time request as before.
//!
//! IRQL: [`start_or_orphan`], [`start_held`], [`Kept::start`] and polling at <= `DISPATCH_LEVEL`
//! (the WSK function called has its own limit); the completion routine at <= `DISPATCH_LEVEL`;
//! dropping at <= `DISPATCH_LEVEL`.

use core::cell::UnsafeCell;
use core::future::Future;
use core::pin::Pin;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use core::task::{Context, Poll};

use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::provider::BindingRef;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    DEVICE_OBJECT, IRP, IoAllocateIrp, IoCancelIrp, IoFreeIrp, IoReuseIrp,
    IoSetCompletionRoutineEx, NTSTATUS, PVOID, STATUS_MORE_PROCESSING_REQUIRED, STATUS_SUCCESS,
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
/// A use is in flight (a kept request's: set by its keeper when it starts one).
const IN_USE: u32 = 16;
/// The request is kept by a [`Kept`] for reuse: the end of a use does not free it. The bits above
/// are a use's, cleared together when it ends.
const KEPT: u32 = 32;

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
    /// (a socket made for nobody must be closed). Runs where the last owner ends the use: in the
    /// completion routine (<= `DISPATCH_LEVEL`, no WSK call there) or the `Op`'s drop. Written
    /// with `owned`, by the one who starts a use.
    orphaned: UnsafeCell<fn(T, NtStatus, usize)>,
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

    /// What becomes of an orphan.
    ///
    /// # Safety
    /// As [`Request::owned`].
    #[allow(clippy::mut_from_ref)] // an UnsafeCell, under the owner protocol
    unsafe fn orphaned(&self) -> &mut fn(T, NtStatus, usize) {
        // SAFETY: per the contract.
        unsafe { &mut *self.orphaned.get() }
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

/// [`start_or_orphan`] with the request's own reference made already: a one-time request.
fn start_with<C: Client, T: Send + 'static>(
    reference: BindingRef<C>,
    owned: T,
    call: impl FnOnce(&BindingRef<C>, &mut T, *mut IRP) -> NTSTATUS,
    orphaned: fn(T, NtStatus, usize),
) -> Op<C, T> {
    let request = match allocate::<C, T>(0) {
        Ok(request) => request,
        Err(status) => return Op::failed(status, owned),
    };
    if let Err(status) = arm(request, false) {
        // SAFETY: just allocated, never used: its IRP has no routine and was sent nowhere.
        unsafe { free_block(request) };
        return Op::failed(status, owned);
    }
    // SAFETY: allocated and armed here, owned by this caller alone.
    unsafe { begin(request, reference, owned, call, orphaned) }
}

/// Calls the WSK function with an armed request that this caller owns alone (a one-time request
/// just made, or a kept one whose use it started): moves `owned`, `orphaned` and `reference` in,
/// calls, and returns the `Op` that owns the use with the completion routine.
///
/// # Safety
/// `request` came from [`allocate`], was armed by [`arm`], and nobody else uses it (no use in
/// flight).
unsafe fn begin<C: Client, T: Send + 'static>(
    request: NonNull<Request<C, T>>,
    reference: BindingRef<C>,
    owned: T,
    call: impl FnOnce(&BindingRef<C>, &mut T, *mut IRP) -> NTSTATUS,
    orphaned: fn(T, NtStatus, usize),
) -> Op<C, T> {
    // SAFETY: live: this caller is an owner (the Op it returns).
    let shared = unsafe { request.as_ref() };
    let irp = shared.irp;
    // SAFETY: before the IRP is handed over nobody else reads these cells; `owned` stays in
    // pool (the request's) while the provider may use what the call gives it.
    unsafe { *shared.orphaned() = orphaned };
    // SAFETY: as above (another cell).
    let reference = unsafe { shared.reference() }.insert(reference);
    // SAFETY: as above (another cell).
    let owned = unsafe { shared.owned() }.insert(owned);
    let status = NtStatus::from_raw(call(reference, owned, irp));
    if status != NtStatus::PENDING && shared.state.load(Ordering::Acquire) & READY == 0 {
        // Not pending and not completed: a stub's answer (sent to the client's own device, which
        // completes it now) or a provider that took the IRP and completes it later.
        // SAFETY: not pending, routine not run.
        let sent = unsafe { super::send_to_self::<C>(irp, status) };
        super::log_uncompleted::<C>(status, sent);
    }
    // INVARIANT: armed, and this Op is its owner.
    Op {
        request: Some(request),
        failed: None,
        cancel_with_task: true,
    }
}

/// Allocates a request (with `state`: [`KEPT`] for a keeper's) and its IRP, without a routine.
fn allocate<C: Client, T: Send + 'static>(state: u32) -> Result<NonNull<Request<C, T>>, NtError> {
    if C::state().runtime.device().is_null() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "request: the client is not registered"
        );
        return Err(NtError::INVALID_DEVICE_STATE);
    }
    let request = PoolBox::try_new::<C>(
        Request::<C, T> {
            irp: core::ptr::null_mut(),
            state: AtomicU32::new(state),
            waker: AtomicWaker::with(AtomicU64::new(0), Slot::new()),
            result: UnsafeCell::new((0, 0)),
            owned: UnsafeCell::new(None),
            reference: UnsafeCell::new(None),
            orphaned: UnsafeCell::new(drop_orphan::<T>),
        },
        C::REQUEST_TAG,
    )
    .inspect_err(|_| log!(C, DPFLTR_ERROR_LEVEL, "request: no pool for its context"))?;
    // SAFETY: IRQL <= DISPATCH_LEVEL; one stack location (the provider's), no quota.
    let irp = unsafe { IoAllocateIrp(1, 0) };
    if irp.is_null() {
        log!(C, DPFLTR_ERROR_LEVEL, "request: IoAllocateIrp failed");
        return Err(NtError::INSUFFICIENT_RESOURCES);
    }
    let raw = request.as_ptr();
    // SAFETY: owned here, not shared yet.
    unsafe { (*raw).irp = irp };
    Ok(request.into_raw())
}

/// Makes a request's IRP ready for a use: reinitialized first when it was used before (`reuse`:
/// `IoReuseIrp`), then its completion routine set (`IoSetCompletionRoutineEx`, on the client's
/// device object). A failure leaves the IRP without a routine (logged).
fn arm<C: Client, T>(request: NonNull<Request<C, T>>, reuse: bool) -> Result<(), NtError> {
    // SAFETY: the caller owns the request alone (no use in flight); `irp` never changes.
    let irp = unsafe { request.as_ref() }.irp;
    if reuse {
        // SAFETY: the request's IRP, not pending: its last use ended (its routine ran); IRQL <=
        // DISPATCH_LEVEL.
        unsafe { IoReuseIrp(irp, STATUS_SUCCESS) };
    }
    let device = C::state().runtime.device();
    if device.is_null() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "request: the client is not registered"
        );
        return Err(NtError::INVALID_DEVICE_STATE);
    }
    // SAFETY: the client's device object (live from registration to the end of the unload, which
    // waits for the request's reference), an IRP with no routine set, this module's routine for
    // `C` and `T` and the request it takes back; IRQL <= DISPATCH_LEVEL.
    let status = NtStatus::from_raw(unsafe {
        IoSetCompletionRoutineEx(
            device,
            irp,
            Some(complete::<C, T>),
            request.as_ptr().cast(),
            1,
            1,
            1,
        )
    });
    status.into_result().map(|_| ()).inspect_err(|status| {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "request: IoSetCompletionRoutineEx failed: 0x%08X",
            status.bits()
        );
    })
}

/// Frees a request's IRP and pool block.
///
/// # Safety
/// `request` came from [`allocate::<C, T>`]; no use is in flight (its IRP is not pending and has
/// no routine set) and nothing is left in its cells; nobody touches it again.
unsafe fn free_block<C: Client, T>(request: NonNull<Request<C, T>>) {
    // SAFETY: per the contract: from `PoolBox::into_raw` with the request tag.
    let request = unsafe { PoolBox::from_raw::<C>(request, C::REQUEST_TAG) };
    // SAFETY: owned here alone; `irp` set by `allocate`.
    let irp = unsafe { (*request.as_ptr()).irp };
    // SAFETY: the request's IRP, not pending, never to be touched again.
    unsafe { IoFreeIrp(irp) };
    drop(request);
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

/// Ends a use both owners are done with: takes out what the request still holds (a dropped
/// `Op`'s, given to its `orphaned` with the result), then gives a kept request back to its keeper
/// (idle again) or frees a one-time one (and a kept one whose keeper went), then drops the use's
/// reference, last.
///
/// # Safety
/// `request` came from [`allocate::<C, T>`]; both owners of the use are done, the routine ran
/// (the result is stored); the caller ends it once, and touches it no more.
unsafe fn end_use<C: Client, T>(request: NonNull<Request<C, T>>) {
    // SAFETY: live until given back or freed below; the last owner's alone.
    let shared = unsafe { request.as_ref() };
    // SAFETY: the last owner's alone.
    let reference = unsafe { shared.reference() }.take();
    // SAFETY: as above.
    let owned = unsafe { shared.owned() }.take();
    // SAFETY: as above.
    let orphaned = unsafe { *shared.orphaned() };
    // SAFETY: the routine stored the result before it let go.
    let (status, information) = unsafe { shared.result() };
    // A waker registered after the routine's wake (the Op saw READY on its second look) is not
    // left for the next use to wake.
    let waker = shared.waker.take();
    // The use's bits go at once: from here on a kept request is its keeper's again (which may
    // start the next use, or free it), and nothing of it is touched here.
    let previous = shared.state.fetch_and(KEPT, Ordering::AcqRel);
    if previous & KEPT == 0 {
        // SAFETY: a one-time request, or a kept one whose keeper let go while this use was in
        // flight: the last owner, its cells emptied above.
        unsafe { free_block(request) };
    }
    drop(waker);
    if let Some(owned) = owned {
        orphaned(owned, NtStatus::from_raw(status), information);
    }
    drop(reference);
}

/// A kept request taken for a use, and whether it was used before.
type Acquired<C, T> = (NonNull<Request<C, T>>, bool);

/// A request kept for reuse by its owner (a socket, for its sends or its receives): made at the
/// first use, reinitialized for each later one, freed when the keeper goes — at once when no use
/// is in flight, else by the end of that use. See the module.
///
/// # Invariants
/// `request` is NULL or a request from [`allocate`] with [`KEPT`] set, which this keeper alone
/// clears.
pub(crate) struct Kept<C: Client, T> {
    request: AtomicPtr<Request<C, T>>,
}

// SAFETY: the request is in pool and shared only through atomics and the owner protocol; what
// it holds (`T`, the reference) is Send.
unsafe impl<C: Client, T: Send> Send for Kept<C, T> {}
// SAFETY: as above: `start` takes the request by an atomic compare-exchange.
unsafe impl<C: Client, T: Send> Sync for Kept<C, T> {}

impl<C: Client, T: Send + 'static> Kept<C, T> {
    /// No request yet (made at the first use).
    pub(crate) const fn new() -> Self {
        // INVARIANT: NULL.
        Self {
            request: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// [`start_held`] with the kept request when it is idle (made now if this is the first use),
    /// else with a one-time request.
    pub(crate) fn start(
        &self,
        socket_reference: &BindingRef<C>,
        owned: T,
        call: impl FnOnce(&BindingRef<C>, &mut T, *mut IRP) -> NTSTATUS,
        orphaned: fn(T, NtStatus, usize),
    ) -> Op<C, T> {
        let (request, reuse) = match self.acquire() {
            Ok(Some(acquired)) => acquired,
            Ok(None) => return start_held(socket_reference, owned, call, orphaned),
            Err(status) => return Op::failed(status, owned),
        };
        if let Err(status) = arm(request, reuse) {
            // Idle again, its IRP without a routine: the next use arms it anew.
            // SAFETY: kept (by the type invariant) and this use's alone.
            unsafe { request.as_ref() }
                .state
                .store(KEPT, Ordering::Release);
            return Op::failed(status, owned);
        }
        // SAFETY: armed, and this use's alone (IN_USE taken by `acquire`).
        unsafe {
            begin(
                request,
                socket_reference.clone_held(),
                owned,
                call,
                orphaned,
            )
        }
    }

    /// Takes the kept request for a use (`IN_USE`), with whether it was used before; `None` when
    /// a use of it is in flight.
    fn acquire(&self) -> Result<Option<Acquired<C, T>>, NtError> {
        let Some(request) = NonNull::new(self.request.load(Ordering::Acquire)) else {
            let request = allocate::<C, T>(KEPT | IN_USE)?;
            if self
                .request
                .compare_exchange(
                    core::ptr::null_mut(),
                    request.as_ptr(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                // Another use made one meanwhile: this one goes one-time.
                // SAFETY: just allocated, never used or shared.
                unsafe { free_block(request) };
                return Ok(None);
            }
            // INVARIANT: KEPT, taken for this use already.
            return Ok(Some((request, false)));
        };
        // SAFETY: by the type invariant a live kept request (freed only by this keeper's drop,
        // or by a use after that).
        let state = &unsafe { request.as_ref() }.state;
        Ok(state
            .compare_exchange(KEPT, KEPT | IN_USE, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| (request, true)))
    }
}

impl<C: Client, T> Kept<C, T> {
    /// Lets the kept request go: freed now when idle, else by the end of the use in flight.
    /// Idempotent (the drop calls it again). `&mut`: no use starts meanwhile. IRQL <=
    /// `DISPATCH_LEVEL`.
    pub(crate) fn release(&mut self) {
        let Some(request) =
            NonNull::new(self.request.swap(core::ptr::null_mut(), Ordering::Relaxed))
        else {
            return;
        };
        // SAFETY: by the type invariant a live kept request; this keeper clears KEPT, once (the
        // pointer is taken).
        let previous = unsafe { request.as_ref() }
            .state
            .fetch_and(!KEPT, Ordering::AcqRel);
        if previous & IN_USE == 0 {
            // SAFETY: idle (no use in flight, so its IRP has no routine and its cells are empty),
            // and no use can start now (the keeper let it go): the last owner.
            unsafe { free_block(request) };
        }
    }
}

impl<C: Client, T> Drop for Kept<C, T> {
    fn drop(&mut self) {
        self.release();
    }
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
            // SAFETY: both done: the last owner ends the use.
            unsafe { end_use(request) };
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
            // SAFETY: both done: the last owner ends the use.
            unsafe { end_use(request) };
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
/// Called by the I/O manager for an IRP [`arm`] set up, with its request as the context.
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
    // The waker is taken before this owner lets go and woken after: so the woken task finds the
    // use ended (its Op the last owner), and its next operation the kept request idle. (A
    // registration after the take sees READY on its second look: no wake is lost.)
    let waker = shared.waker.take();
    // SAFETY: this owner is done with it.
    if unsafe { last_owner(request, ROUTINE_DONE) } {
        // SAFETY: both done (the Op was dropped): the last owner ends the use.
        unsafe { end_use(request) };
    }
    if let Some(waker) = waker {
        waker.wake();
    }
    // The IRP is the client's, not a driver stack's: the I/O manager must not touch it again.
    STATUS_MORE_PROCESSING_REQUIRED
}
