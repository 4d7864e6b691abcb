//! WSK requests: an IRP of the client, its completion routine, and the binding reference it holds
//! until it completes — the plumbing every WSK call that takes an IRP needs.
//!
//! A request (`prepare`) allocates the IRP (`IoAllocateIrp`) and sets the completion routine with
//! `IoSetCompletionRoutineEx` on the client's device object, which "ensures that the driver is not
//! unloaded while the completion routine runs" (its Remarks): the routine may drop the last binding
//! reference and let the unload go on, and the I/O manager keeps the image until it has returned.
//! The routine returns `STATUS_MORE_PROCESSING_REQUIRED` (the IRP is the client's, not a driver
//! stack's). The last of the request's two owners (routine, submitter) frees the IRP and its
//! context *before* the completion gets the reference: once the last reference goes, a detach
//! completes and an unload may return, with nothing of the request left in pool.
//!
//! A WSK function that completes at once still completes its IRP; one that only pretends to exist
//! (Wine's stubs answer `STATUS_NOT_IMPLEMENTED`) returns without completing it. So: when the call
//! returned `STATUS_PENDING`, the completion routine reports the result; when it returned anything
//! else and the routine has not run, the IRP's stack location tells whether the provider took it:
//! if it did, it completes it later, like a pending one; if not, the client *sends* it to its own
//! device object (`IoCallDriver`), whose dispatch routine (`dispatch_own`, the library's
//! `IRP_MJ_INTERNAL_DEVICE_CONTROL`) completes it with that answer. So an IRP is completed only
//! by the driver it was sent to (Driver Verifier's I/O verification), the routine runs — and the
//! I/O manager frees `IoSetCompletionRoutineEx`'s context — as for any other request. An IRP with
//! a routine set is never freed without it having run: that context would leak.
//!
//! The routine is set when the request is made, just before its WSK call; `Prepared` (crate
//! private) makes one in advance — pool, IRP and routine — for an operation that must not fail for
//! want of memory when it comes (a socket's close), and unused, it is sent to the client's own
//! device the same way and freed. Embedder code never runs in a completion routine: the library's
//! completions only let their reference go (no new WSK call there: the WSK IRP page).
//!
//! [`call`] is the synchronous form, for `PASSIVE_LEVEL`: it waits on an event, with a timeout
//! after which it cancels the IRP (`IoCancelIrp`) and waits a little longer; a request that still
//! does not complete gets its caller's last resort (a socket closes itself: providers complete a
//! socket's pending requests when it closes — Wine's ignores `IoCancelIrp`), and is waited for to
//! the end: the memory a request borrows (addresses, buffers) must outlive it.
//!
//! IRQL: `Prepared::submit` at <= `DISPATCH_LEVEL` (the WSK function called has its own limit);
//! `Completion::complete` at <= `DISPATCH_LEVEL`; [`call`] at `PASSIVE_LEVEL`.

use core::cell::UnsafeCell;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

mod op;

pub(crate) use op::{Kept, Op, Outcome, drop_orphan, start_held, start_or_orphan};

use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::provider::BindingRef;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    DEVICE_OBJECT, Executive, IO_NO_INCREMENT, IO_STATUS_BLOCK, IRP,
    IRP_MJ_INTERNAL_DEVICE_CONTROL, IoAllocateIrp, IoCancelIrp, IoFreeIrp,
    IoGetNextIrpStackLocation, IoReuseIrp, IoSetCompletionRoutineEx, IofCallDriver,
    IofCompleteRequest, KEVENT, KeClearEvent, KeInitializeEvent, KeSetEvent, KeWaitForSingleObject,
    KernelMode, NTSTATUS, NotificationEvent, PVOID, STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_SUCCESS, STATUS_TIMEOUT,
};
use crate::time::{Duration, Timeout};

/// What a request does once the provider completed it: the library's own (crate private, so that
/// no embedder code runs in a completion routine).
pub(crate) trait Completion<C: Client>: Send + 'static {
    /// The request ended with `status` and `information` (`IoStatus`). IRQL <= `DISPATCH_LEVEL`,
    /// in the completion routine (or in `submit`'s caller when the IRP completed before the WSK
    /// function returned); must not block. `reference` is the request's binding reference: keep
    /// it (a socket's) or let it go. The request is freed before this runs, so the reference may
    /// be the binding's last.
    fn complete(self, reference: BindingRef<C>, status: NtStatus, information: usize);
}

/// The asynchronous form's two owners — the completion routine and the submitter — each set
/// their bit when they are done with it; the one that finds the other's bit already set frees it.
/// The waited form's routine sets only COMPLETED (then the event, its last touch of the request):
/// the waiter, which always waits for the end, frees it.
const COMPLETED: u32 = 1;
const RELEASED: u32 = 2;

/// A request's context in pool: the IRP, its reference (the asynchronous form's; the waited form
/// borrows its caller's, which outlives the request) and what to do at completion. Shared by
/// its two owners through `&Request`: every field they write is an `UnsafeCell` (written by one
/// owner at a time, as the protocol above orders) or atomic.
struct Request<C: Client, F> {
    /// Set once by `prepare`, before the request is shared.
    irp: *mut IRP,
    reference: UnsafeCell<Option<BindingRef<C>>>,
    completion: UnsafeCell<Option<F>>,
    /// [`call`]'s form: the routine wakes a waiter instead of delivering to a completion. Written
    /// only while one owner holds the request alone (before its IRP is handed over).
    waited: bool,
    state: AtomicU32,
    /// For [`call`]: the routine stores the result, sets COMPLETED, then the event — the last
    /// thing it does with the request, which the woken waiter frees.
    event: UnsafeCell<KEVENT>,
    result: UnsafeCell<(NTSTATUS, usize)>,
}

impl<C: Client, F> Request<C, F> {
    /// Takes the reference and the completion (the one owner that delivers does this once).
    ///
    /// # Safety
    /// Only the owner that delivers calls it, once.
    unsafe fn take_parts(&self) -> (Option<BindingRef<C>>, Option<F>) {
        // SAFETY: per the contract, no other access to these cells now.
        let reference = unsafe { (*self.reference.get()).take() };
        // SAFETY: as above.
        let completion = unsafe { (*self.completion.get()).take() };
        (reference, completion)
    }
}

/// Allocates the request, its IRP, and sets the completion routine.
fn prepare<C: Client, F: Completion<C>>() -> Result<NonNull<Request<C, F>>, NtError> {
    let request = allocate::<C, F>()?;
    if let Err(status) = arm(request, false) {
        // SAFETY: just allocated, its IRP without a routine and sent nowhere; owned here alone.
        unsafe { free(request) };
        return Err(status);
    }
    Ok(request)
}

/// Allocates the request and its IRP (no routine yet), its event initialised.
fn allocate<C: Client, F>() -> Result<NonNull<Request<C, F>>, NtError> {
    if C::state().runtime.device().is_null() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "request: the client is not registered"
        );
        return Err(NtError::INVALID_DEVICE_STATE);
    }
    let request = PoolBox::try_new::<C>(
        Request {
            irp: core::ptr::null_mut(),
            waited: false,
            reference: UnsafeCell::new(None),
            completion: UnsafeCell::new(None),
            state: AtomicU32::new(0),
            event: UnsafeCell::new(KEVENT { Header: [0; 3] }),
            result: UnsafeCell::new((0, 0)),
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
    // SAFETY: the request is owned here and nobody else sees it yet.
    unsafe { (*raw).irp = irp };
    // SAFETY: as above; shared only through `&` from now on.
    let shared = unsafe { &*raw };
    // SAFETY: an event in the request's non-paged pool, before anything can wait on it.
    unsafe { KeInitializeEvent(shared.event.get(), NotificationEvent, 0) };
    Ok(request.into_raw())
}

/// Makes a request ready for a use: when it was used before (`reuse`), its IRP reinitialized
/// (`IoReuseIrp`), its event cleared and its state reset; then its completion routine set
/// (`IoSetCompletionRoutineEx`, on the client's device object: every use of a non-PnP driver's
/// IRP, Static Driver Verifier's `IoSetCompletionRoutineNonPnpDriver` rule). A failure leaves the
/// IRP without a routine (logged).
fn arm<C: Client, F: Completion<C>>(
    request: NonNull<Request<C, F>>,
    reuse: bool,
) -> Result<(), NtError> {
    // SAFETY: owned by the caller alone (no use in flight); shared only through `&`.
    let shared = unsafe { request.as_ref() };
    let irp = shared.irp;
    if reuse {
        // SAFETY: the request's IRP, not pending: its last use ended (its routine ran); IRQL <=
        // DISPATCH_LEVEL.
        unsafe { IoReuseIrp(irp, STATUS_SUCCESS) };
        // SAFETY: the request's initialised event, which nothing waits on between uses.
        unsafe { KeClearEvent(shared.event.get()) };
        shared.state.store(0, Ordering::Release);
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
    // SAFETY: the client's device object (live from registration to the end of the unload,
    // which waits for every request: each holds a binding reference or its caller's), an IRP
    // without a routine, this crate's routine for `C` and `F`, and the request it takes back;
    // IRQL <= DISPATCH_LEVEL.
    let status = NtStatus::from_raw(unsafe {
        IoSetCompletionRoutineEx(
            device,
            irp,
            Some(complete_request::<C, F>),
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

/// Frees a request and its IRP (not pending: completed, or never sent).
///
/// # Safety
/// `request` came from `prepare::<C, F>` and its last owner is the caller.
unsafe fn free<C: Client, F>(request: NonNull<Request<C, F>>) {
    // SAFETY: per the contract: `prepare` gave it up with `into_raw`, with `C::REQUEST_TAG`.
    let request = unsafe { PoolBox::from_raw::<C>(request, C::REQUEST_TAG) };
    // SAFETY: owned here; `irp` was set by `prepare` and never written again.
    let irp = unsafe { (*request.as_ptr()).irp };
    // SAFETY: the request's IRP, not pending (per the contract).
    unsafe { IoFreeIrp(irp) };
    drop(request);
}

/// Sets `bit` in the request's state; `true` when the other owner was done already (the caller
/// then frees it).
///
/// # Safety
/// `request` is live and the caller is one of its two owners, done with it but for this.
unsafe fn last_owner<C: Client, F>(request: NonNull<Request<C, F>>, bit: u32) -> bool {
    // SAFETY: per the contract.
    let previous = unsafe { (*request.as_ptr()).state.fetch_or(bit, Ordering::AcqRel) };
    previous & (COMPLETED | RELEASED) & !bit != 0
}

/// Frees a completed request of the asynchronous form, then hands its result and reference to its
/// completion. Freeing first matters: the reference may be the binding's last, and once it goes a
/// detach completes and an unload may return — nothing of the request may be left by then.
///
/// # Safety
/// `request` came from `prepare::<C, F>`, its IRP completed (the result is stored), and its last
/// owner is the caller.
unsafe fn deliver<C: Client, F: Completion<C>>(request: NonNull<Request<C, F>>) {
    // SAFETY: live until the `free` below; the last owner's alone.
    let shared = unsafe { request.as_ref() };
    // SAFETY: the last owner takes the parts, once.
    let (reference, completion) = unsafe { shared.take_parts() };
    // SAFETY: the completion routine stored it before setting COMPLETED.
    let (status, information) = unsafe { shared.result.get().read() };
    // SAFETY: per the contract.
    unsafe { free(request) };
    if let (Some(reference), Some(completion)) = (reference, completion) {
        completion.complete(reference, NtStatus::from_raw(status), information);
    }
}

/// Sends a request's IRP that no provider took — one a stub answered without completing, or one
/// never used — to the client's own device object (`IoCallDriver`), whose dispatch routine
/// ([`dispatch_own`]) completes it with `status`: the request's routine runs inside this call, and
/// the I/O manager frees `IoSetCompletionRoutineEx`'s context. Returns `false`, touching nothing,
/// when the IRP's stack location was consumed: a provider took it, and completes it itself.
///
/// IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `irp` is a request's IRP (set up by `prepare`): not pending, its routine not run.
pub(crate) unsafe fn send_to_self<C: Client>(irp: *mut IRP, status: NtStatus) -> bool {
    // SAFETY: per the contract: the IRP is this caller's alone while no provider holds it.
    let fields = unsafe { &*irp };
    if fields.CurrentLocation != fields.StackCount + 1 {
        return false;
    }
    // SAFETY: as above.
    unsafe {
        (*irp).IoStatus = IO_STATUS_BLOCK {
            Status: status.raw(),
            Padding: 0,
            Information: 0,
        };
    };
    // SAFETY: as above; untaken, so a location (the routine's) is below the current one.
    let next = unsafe { IoGetNextIrpStackLocation(irp) };
    // SAFETY: that location is the request's own; nobody else reads it before the call below.
    unsafe { (*next).MajorFunction = IRP_MJ_INTERNAL_DEVICE_CONTROL };
    // SAFETY: the client's device object (live: see `prepare`), whose driver's
    // IRP_MJ_INTERNAL_DEVICE_CONTROL is `dispatch_own` (`Registration::register`); the IRP has
    // the location the call consumes; IRQL <= DISPATCH_LEVEL.
    let _ = unsafe { IofCallDriver(C::state().runtime.device(), irp) };
    true
}

/// `DRIVER_DISPATCH` of `IRP_MJ_INTERNAL_DEVICE_CONTROL` for the driver object of a client's
/// device (installed by `Registration::register`): completes a request's IRP that
/// [`send_to_self`] sent with the status set in it. The driver it was sent to completes it.
///
/// IRQL: the sender's, <= `DISPATCH_LEVEL`.
///
/// # Safety
/// Called by the I/O manager (`IoCallDriver`) with an IRP sent to one of the driver's devices.
pub(crate) unsafe extern "system" fn dispatch_own(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the IRP sent to this driver, live for the call.
    let status = unsafe { (*irp).IoStatus.Status };
    // SAFETY: as above; completed once, by the driver it was sent to; IRQL <= DISPATCH_LEVEL.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
    status
}

/// A request made in advance — its pool block, IRP and completion routine — for one later
/// operation, which then cannot fail for want of memory: [`Prepared::submit`] or
/// [`Prepared::call_or`]. Dropped unused, its IRP is sent to the client's own device, which
/// completes it (`STATUS_CANCELLED`, nothing delivered), and it is freed. Made only while the
/// client is registered, and kept no longer than a binding reference of its user (a socket's).
///
/// IRQL: [`Prepared::new`], [`Prepared::submit`] and dropping at <= `DISPATCH_LEVEL`;
/// [`Prepared::call_or`] at `PASSIVE_LEVEL`.
pub(crate) struct Prepared<C: Client, F: Completion<C>> {
    // INVARIANT: a request from `prepare`, owned by this value alone: its IRP was never handed
    // over and its routine has not run.
    request: NonNull<Request<C, F>>,
}

// SAFETY: the request is in pool, owned by this value alone; what it will hold is `Send`.
unsafe impl<C: Client, F: Completion<C>> Send for Prepared<C, F> {}

impl<C: Client, F: Completion<C>> Prepared<C, F> {
    /// Prepares a request.
    ///
    /// # Errors
    /// The client is not registered, no pool for its context, no IRP, or
    /// `IoSetCompletionRoutineEx` failed (logged).
    pub(crate) fn new() -> Result<Self, NtError> {
        // INVARIANT: just prepared, owned here.
        prepare::<C, F>().map(|request| Self { request })
    }

    /// Gives the request up to one of the two forms below.
    fn into_request(self) -> NonNull<Request<C, F>> {
        ManuallyDrop::new(self).request
    }

    /// The raw form, to keep in an `AtomicPtr` (a socket's close, taken by its first closer).
    pub(crate) fn into_raw(self) -> NonNull<()> {
        self.into_request().cast()
    }

    /// Back from [`Prepared::into_raw`].
    ///
    /// # Safety
    /// `raw` came from `into_raw` of a `Prepared<C, F>` and is taken back once.
    pub(crate) unsafe fn from_raw(raw: NonNull<()>) -> Self {
        // INVARIANT: as it was when given up.
        Self {
            request: raw.cast(),
        }
    }

    /// Submits the request: `call` gets the reference and the IRP and calls the WSK function; the
    /// result goes to `completion` (with the reference), once. Cannot fail.
    ///
    /// IRQL <= `DISPATCH_LEVEL` (and whatever the WSK function needs).
    pub(crate) fn submit(
        self,
        reference: BindingRef<C>,
        completion: F,
        call: impl FnOnce(&BindingRef<C>, *mut IRP) -> NTSTATUS,
    ) {
        let request = self.into_request();
        // SAFETY: live while this submitter owns it (until it releases below).
        let shared = unsafe { request.as_ref() };
        // SAFETY: owned here alone (its IRP not handed over): nobody else reads the cells.
        unsafe { *shared.reference.get() = Some(reference) };
        // SAFETY: as above.
        unsafe { *shared.completion.get() = Some(completion) };
        let irp = shared.irp;
        // SAFETY: the reference is taken only by the owner that delivers, which cannot be the
        // routine before the call below hands the IRP over; the submitter reads it during the
        // call.
        let reference = unsafe { (*shared.reference.get()).as_ref() };
        let status = match reference {
            Some(reference) => NtStatus::from_raw(call(reference, irp)),
            None => NtStatus::UNSUCCESSFUL,
        };
        // Not pending: the provider completed the IRP before returning (the routine has run), or
        // it is a stub that never will: then the answer is the result, and the IRP is completed
        // with it by the client's own device.
        let completed = shared.state.load(Ordering::Acquire) & COMPLETED != 0;
        if status != NtStatus::PENDING && !completed {
            // SAFETY: not pending, routine not run.
            let sent = unsafe { send_to_self::<C>(irp, status) };
            log_uncompleted::<C>(status, sent);
        }
        // SAFETY: an owner, done with it.
        if unsafe { last_owner(request, RELEASED) } {
            // SAFETY: the routine completed the IRP already: the last owner delivers.
            unsafe { deliver(request) };
        }
    }

    /// Calls a WSK function with the request and waits for its result: `(status, information)`;
    /// see [`call_or`]. Cannot fail.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    pub(crate) fn call_or(
        self,
        reference: &BindingRef<C>,
        timeout: Timeout,
        call: impl FnOnce(&BindingRef<C>, *mut IRP) -> NTSTATUS,
        stuck: impl FnOnce(),
    ) -> (NtStatus, usize) {
        let request = self.into_request();
        // SAFETY: prepared (armed) and owned here alone.
        let result = unsafe { wait_for(request, reference, timeout, call, stuck) };
        // SAFETY: the routine is done with it (it set the event); the waiter is its last owner.
        unsafe { free(request) };
        result
    }
}

/// The waited form's use of an armed request: calls the WSK function and waits for its result,
/// `(status, information)`; see [`call_or`]. Returns once the routine set the event (its last
/// touch of the request, which is then the caller's alone again).
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Safety
/// `request` was armed for this use ([`arm`]) and the caller owns it alone.
unsafe fn wait_for<C: Client, F>(
    request: NonNull<Request<C, F>>,
    reference: &BindingRef<C>,
    timeout: Timeout,
    call: impl FnOnce(&BindingRef<C>, *mut IRP) -> NTSTATUS,
    stuck: impl FnOnce(),
) -> (NtStatus, usize) {
    // SAFETY: owned here alone (its IRP not handed over): `waited` may be written.
    unsafe { (*request.as_ptr()).waited = true };
    // SAFETY: live while this waiter owns it.
    let shared = unsafe { request.as_ref() };
    let irp = shared.irp;
    let status = NtStatus::from_raw(call(reference, irp));
    if status != NtStatus::PENDING && shared.state.load(Ordering::Acquire) & COMPLETED == 0 {
        // SAFETY: not pending, routine not run.
        let sent = unsafe { send_to_self::<C>(irp, status) };
        log_uncompleted::<C>(status, sent);
    }
    // Not pending: completed inside the call (by the provider, or by the client's device), the
    // event is set (a provider that took the IRP completes it later, like a pending one);
    // the IRP's IoStatus, which the routine stored, is the result (the information — a
    // socket, a byte count — is only there). Either way the request is the waiter's again only
    // once the routine has set the event: its last touch of it.
    if !wait(shared, timeout) {
        // SAFETY: the request's IRP, still pending; IRQL <= DISPATCH_LEVEL.
        let _ = unsafe { IoCancelIrp(irp) };
        log!(C, DPFLTR_WARNING_LEVEL, "request: timed out, cancelled");
        if !wait(shared, Timeout::After(AFTER_CANCEL)) {
            log!(
                C,
                DPFLTR_WARNING_LEVEL,
                "request: not completed after cancel; last resort, then waiting for it"
            );
            stuck();
            let _ = wait(shared, Timeout::Never);
        }
    }
    // SAFETY: the event is set after the result is stored.
    let (status, information) = unsafe { shared.result.get().read() };
    (NtStatus::from_raw(status), information)
}

/// A waited request kept for reuse by a socket's blocking operations (issue 20): made at the
/// first, reinitialized for each later one, freed with the socket. A blocking operation of the
/// socket while another is waited for on another thread gets a one-time request.
///
/// # Invariants
/// `request` is NULL or a request from [`allocate`] of this keeper's alone, with no use in flight
/// unless `busy` is held, and only the holder of `busy` touches it.
pub(crate) struct KeptWaited<C: Client> {
    request: AtomicPtr<Request<C, Waiter>>,
    busy: AtomicBool,
}

// SAFETY: the request is in pool; it is used by one thread at a time (`busy`).
unsafe impl<C: Client> Send for KeptWaited<C> {}
// SAFETY: as above.
unsafe impl<C: Client> Sync for KeptWaited<C> {}

impl<C: Client> KeptWaited<C> {
    /// No request yet (made at the first use).
    pub(crate) const fn new() -> Self {
        // INVARIANT: NULL.
        Self {
            request: AtomicPtr::new(core::ptr::null_mut()),
            busy: AtomicBool::new(false),
        }
    }

    /// [`call_or`] with the kept request (a one-time one while it is busy).
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    ///
    /// # Errors
    /// As [`call`].
    pub(crate) fn call_or(
        &self,
        reference: &BindingRef<C>,
        timeout: Timeout,
        call: impl FnOnce(&BindingRef<C>, *mut IRP) -> NTSTATUS,
        stuck: impl FnOnce(),
    ) -> Result<(NtStatus, usize), NtError> {
        if self.busy.swap(true, Ordering::Acquire) {
            return call_or(reference, timeout, call, stuck);
        }
        let result = self.call_kept(reference, timeout, call, stuck);
        self.busy.store(false, Ordering::Release);
        result
    }

    /// The use of the kept request, `busy` held.
    fn call_kept(
        &self,
        reference: &BindingRef<C>,
        timeout: Timeout,
        call: impl FnOnce(&BindingRef<C>, *mut IRP) -> NTSTATUS,
        stuck: impl FnOnce(),
    ) -> Result<(NtStatus, usize), NtError> {
        let kept = NonNull::new(self.request.load(Ordering::Relaxed));
        let reuse = kept.is_some();
        let request = if let Some(request) = kept {
            request
        } else {
            let request = allocate::<C, Waiter>()?;
            // INVARIANT: this keeper's, `busy` held.
            self.request.store(request.as_ptr(), Ordering::Relaxed);
            request
        };
        arm(request, reuse)?;
        // SAFETY: armed for this use; `busy` is held, so it is this caller's alone.
        Ok(unsafe { wait_for(request, reference, timeout, call, stuck) })
    }

    /// Frees the kept request (no use is in flight: `&mut`). Idempotent. IRQL <=
    /// `DISPATCH_LEVEL`.
    pub(crate) fn release(&mut self) {
        let request = self.request.swap(core::ptr::null_mut(), Ordering::Relaxed);
        if let Some(request) = NonNull::new(request) {
            // SAFETY: by the type invariant this keeper's alone, its last use over (its routine
            // set the event: its last touch), its IRP without a routine.
            unsafe { free(request) };
        }
    }
}

impl<C: Client> Drop for KeptWaited<C> {
    fn drop(&mut self) {
        self.release();
    }
}

impl<C: Client, F: Completion<C>> Drop for Prepared<C, F> {
    /// An unused request: its IRP is sent to the client's own device, which completes it (its
    /// routine runs and delivers nothing: the request holds no reference or completion), and it
    /// is freed. IRQL <= `DISPATCH_LEVEL`.
    fn drop(&mut self) {
        let request = self.request;
        // SAFETY: by the type invariant, a live request owned here.
        let irp = unsafe { request.as_ref() }.irp;
        // SAFETY: by the type invariant: never handed over (so untaken: always sent), routine not
        // run.
        let _sent = unsafe { send_to_self::<C>(irp, NtStatus::CANCELLED) };
        // SAFETY: an owner, done with it (the routine, the other, ran inside the call above).
        if unsafe { last_owner(request, RELEASED) } {
            // SAFETY: both owners done; nothing to deliver.
            unsafe { deliver(request) };
        }
    }
}

/// A provider answered without completing the request's IRP: `sent` to the client's own device
/// (untaken), or taken (the provider completes it later).
pub(crate) fn log_uncompleted<C: Client>(status: NtStatus, sent: bool) {
    if sent {
        log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "request: answered 0x%08X without taking its IRP; completed by the client's device",
            status.bits()
        );
    } else {
        log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "request: answered 0x%08X but kept its IRP; waiting for its completion",
            status.bits()
        );
    }
}

/// `IO_COMPLETION_ROUTINE` of every request.
///
/// IRQL <= `DISPATCH_LEVEL`. Runs with the I/O manager's reference on the client's device object
/// (`IoSetCompletionRoutineEx`), so whatever it lets go may be the image's last work.
///
/// # Safety
/// Called by the I/O manager for an IRP `prepare` set up, with its request as the context.
unsafe extern "system" fn complete_request<C: Client, F: Completion<C>>(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    let Some(request) = NonNull::new(context.cast::<Request<C, F>>()) else {
        return STATUS_MORE_PROCESSING_REQUIRED;
    };
    // SAFETY: live: this routine is an owner until it sets COMPLETED (asynchronous form) or the
    // event (waited form).
    let shared = unsafe { request.as_ref() };
    // SAFETY: the IRP being completed: its IoStatus is final.
    let io_status = unsafe { (*irp).IoStatus };
    let (status, information) = (io_status.Status, io_status.Information);
    // SAFETY: the other owner reads the result only after COMPLETED (or the event).
    unsafe { shared.result.get().write((status, information)) };
    if shared.waited {
        // Waited form (its caller's reference, no completion): COMPLETED, then wake the waiter,
        // which frees the request — nothing of it is touched after the event. A waiter that
        // goes on (to an unload, say) finds it freed already.
        shared.state.fetch_or(COMPLETED, Ordering::AcqRel);
        // SAFETY: the waiter's event, initialised by `prepare`; IRQL <= DISPATCH_LEVEL.
        let _ = unsafe { KeSetEvent(shared.event.get(), 0, 0) };
    } else {
        // Asynchronous form: the last of its two owners delivers.
        // SAFETY: an owner, done with it (`shared` is not touched again unless this is the last).
        if unsafe { last_owner(request, COMPLETED) } {
            // SAFETY: the submitter let go already: the last owner of a completed request.
            unsafe { deliver(request) };
        }
    }
    // The IRP is the client's, not a driver stack's: the I/O manager must not touch it again.
    STATUS_MORE_PROCESSING_REQUIRED
}

/// No completion: the synchronous form's marker type.
struct Waiter;

impl<C: Client> Completion<C> for Waiter {
    fn complete(self, _reference: BindingRef<C>, _status: NtStatus, _information: usize) {}
}

/// How long [`call`] waits after cancelling a request that timed out.
const AFTER_CANCEL: Duration = Duration::from_secs(1);

/// Calls a WSK function with a request and waits for its result: `(status, information)`.
///
/// `timeout`: how long to wait; [`Timeout::Never`] waits until the provider completes.
/// On timeout the IRP is cancelled; if it still does not complete within a second, `stuck` runs
/// (close the socket, say) and the wait goes on until the provider completes the IRP.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// The request borrows `reference` (the caller's, which outlives it: the call returns only once
/// the request has ended), so it works during a detach or the unload too.
///
/// # Errors
/// The request could not be prepared (no pool, no IRP, or `IoSetCompletionRoutineEx` failed; logged).
pub fn call<C: Client>(
    reference: &BindingRef<C>,
    timeout: Timeout,
    call: impl FnOnce(&BindingRef<C>, *mut IRP) -> NTSTATUS,
) -> Result<(NtStatus, usize), NtError> {
    call_or(reference, timeout, call, || {})
}

/// [`call`], with `stuck` as the last resort for a request that a cancel did not complete.
///
/// # Errors
/// As [`call`].
pub fn call_or<C: Client>(
    reference: &BindingRef<C>,
    timeout: Timeout,
    call: impl FnOnce(&BindingRef<C>, *mut IRP) -> NTSTATUS,
    stuck: impl FnOnce(),
) -> Result<(NtStatus, usize), NtError> {
    // The caller's reference outlives the request: it is waited for to the end.
    Ok(Prepared::<C, Waiter>::new()?.call_or(reference, timeout, call, stuck))
}

/// Waits for the request's event; `false` on timeout. `PASSIVE_LEVEL`.
fn wait<C: Client, F>(request: &Request<C, F>, timeout: Timeout) -> bool {
    // The kernel's relative form (negative), or NULL for no limit.
    let relative = timeout.relative_100ns();
    let timeout = relative.unwrap_or(0);
    let timeout_ptr = if relative.is_some() {
        &raw const timeout
    } else {
        core::ptr::null()
    };
    // SAFETY: the request's initialised event, live while the waiter owns it; PASSIVE_LEVEL;
    // `timeout_ptr` is NULL or valid for the call.
    let status = unsafe {
        KeWaitForSingleObject(
            request.event.get().cast(),
            Executive,
            KernelMode,
            0,
            timeout_ptr,
        )
    };
    status != STATUS_TIMEOUT
}
