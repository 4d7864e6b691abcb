//! The rules the host model enforces (issue 16, item 4), each shown broken by a small, deliberately
//! wrong driver made of raw calls of the model's exports — declared by `wsk-sys`, as a driver's
//! imports are — and recorded by the model as exactly that rule, with a text a test can match.
//! Where it is cheap, the same sequence done right records nothing.
//!
//! Every callback here (completion, dispatch, work item, NMR client, `DriverEntry`/`DriverUnload`)
//! is an `extern "system"` function of the test's own, called by the model as Windows would call
//! a driver's; none of them asserts (an `extern "system"` function does not unwind: a panic there
//! aborts the test process).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use core::ffi::c_void;
use std::ptr::{self, null, null_mut};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};

use wsk_host_model::{ProviderConfig, ProviderId, Session, Status};
use wsk_sys::{
    AF_INET, DEVICE_OBJECT, DRIVER_OBJECT, DelayedWorkQueue, Executive, FILE_DEVICE_UNKNOWN, GUID,
    HANDLE, IO_NO_INCREMENT, IPPROTO_TCP, IRP, IRP_MJ_INTERNAL_DEVICE_CONTROL, IoAllocateIrp,
    IoAllocateWorkItem, IoCancelIrp, IoCreateDevice, IoDeleteDevice, IoFreeIrp, IoFreeWorkItem,
    IoGetNextIrpStackLocation, IoQueueWorkItem, IoReuseIrp, IoSetCompletionRoutineEx,
    IoSetNextIrpStackLocation, IofCallDriver, IofCompleteRequest, KEVENT, KEY_READ,
    KeInitializeEvent, KeWaitForSingleObject, KernelMode, MAKE_WSK_VERSION, MIT_GUID,
    NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_MODULEID_u, NPI_REGISTRATION_INSTANCE,
    NPI_WSK_INTERFACE_ID, NTSTATUS, NmrClientAttachProvider, NmrClientDetachProviderComplete,
    NmrDeregisterClient, NmrRegisterClient, NmrWaitForClientDeregisterComplete, NotificationEvent,
    OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, OBJECT_ATTRIBUTES, PVOID, SOCK_STREAM,
    STATUS_INVALID_PARAMETER, STATUS_MORE_PROCESSING_REQUIRED, STATUS_PENDING, STATUS_SUCCESS,
    UNICODE_STRING, WSK_CLIENT_DISPATCH, WSK_CLIENT_NPI, WSK_FLAG_CONNECTION_SOCKET, WSK_NO_WAIT,
    WSK_PROVIDER_DISPATCH, WSK_PROVIDER_NPI, WSK_REGISTRATION, WskCaptureProviderNPI,
    WskDeregister, WskRegister, ZwClose, ZwOpenKey,
};

// --- The pieces of a driver ----------------------------------------------------------------------

/// An `IO_COMPLETION_ROUTINE`.
type Routine = unsafe extern "system" fn(*mut DEVICE_OBJECT, *mut IRP, PVOID) -> NTSTATUS;
/// A `DRIVER_DISPATCH`.
type Dispatch = unsafe extern "system" fn(*mut DEVICE_OBJECT, *mut IRP) -> NTSTATUS;

/// `value` as a callback's context.
fn context<T>(value: &T) -> PVOID {
    ptr::from_ref(value).cast_mut().cast()
}

/// Asserts that the rules broken so far are exactly one, whose text contains `needle`, and
/// forgets it (the session's end check then passes).
fn assert_only_broken(session: &Session, needle: &str) {
    let violations = session.violations();
    assert!(
        violations.len() == 1 && violations[0].contains(needle),
        "expected exactly one rule broken, containing '{needle}'; recorded: {violations:#?}"
    );
    session.forget_violations();
}

/// Asserts that no rule was broken so far.
fn assert_none_broken(session: &Session) {
    let violations = session.violations();
    assert!(violations.is_empty(), "rules broken: {violations:#?}");
}

/// A device object of the session's driver (what `IoSetCompletionRoutineEx` and work items
/// hold).
fn create_device(session: &mut Session) -> *mut DEVICE_OBJECT {
    let driver: *mut DRIVER_OBJECT = session.driver_object();
    let mut device = null_mut();
    // SAFETY: PASSIVE_LEVEL; the session's driver object; an unnamed device without extension and
    // a valid out-pointer.
    let status = unsafe {
        IoCreateDevice(
            driver,
            0,
            null(),
            FILE_DEVICE_UNKNOWN,
            0,
            0,
            &raw mut device,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    device
}

fn delete_device(device: *mut DEVICE_OBJECT) {
    // SAFETY: a device object of the driver, created by `create_device`, deleted once.
    unsafe { IoDeleteDevice(device) };
}

/// A request of the driver's: an IRP of one stack location (the provider's) with `routine` set on
/// it by `IoSetCompletionRoutineEx`, holding `device` until the routine has run.
fn request(device: *mut DEVICE_OBJECT, routine: Routine, context: PVOID) -> *mut IRP {
    // SAFETY: PASSIVE_LEVEL; one stack location, no quota.
    let irp = unsafe { IoAllocateIrp(1, 0) };
    assert!(!irp.is_null());
    // SAFETY: a live device of the driver, its fresh IRP, a routine of the driver; the context
    // outlives the IRP (each test frees it before the context goes).
    let status = unsafe { IoSetCompletionRoutineEx(device, irp, Some(routine), context, 1, 1, 1) };
    assert_eq!(status, STATUS_SUCCESS);
    irp
}

/// A device object of the driver and a request on it whose routine counts its runs in `runs`.
fn counted_request(session: &mut Session, runs: &AtomicUsize) -> (*mut DEVICE_OBJECT, *mut IRP) {
    let device = create_device(session);
    (device, request(device, count_runs, context(runs)))
}

/// Frees the request's IRP, then its device object.
fn free_request(device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    free_irp(irp);
    delete_device(device);
}

fn free_irp(irp: *mut IRP) {
    // SAFETY: an IRP of the driver (the model records one still pending or never completed).
    unsafe { IoFreeIrp(irp) };
}

/// Sends `irp` to the driver's own `device` (`IRP_MJ_INTERNAL_DEVICE_CONTROL`, whose dispatch
/// routine the driver object is given as `dispatch`): how the library has a request that no
/// provider took completed by the driver it was sent to.
fn send_to_self(
    session: &mut Session,
    device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    dispatch: Dispatch,
) -> NTSTATUS {
    session.driver_object().MajorFunction[usize::from(IRP_MJ_INTERNAL_DEVICE_CONTROL)] =
        dispatch as PVOID;
    // SAFETY: the driver's IRP, sent nowhere yet: a location is below the current one.
    let next = unsafe { IoGetNextIrpStackLocation(irp) };
    // SAFETY: that location, in the IRP's memory.
    unsafe { (*next).MajorFunction = IRP_MJ_INTERNAL_DEVICE_CONTROL };
    // SAFETY: PASSIVE_LEVEL; a live device object of the driver and its IRP, not sent yet.
    unsafe { IofCallDriver(device, irp) }
}

/// Has `routine` run, with `context`, as a request's completion routine, the right way: the
/// request, on a device of the driver, is sent to the driver itself, whose dispatch routine
/// completes it; then frees both.
fn complete_with(session: &mut Session, routine: Routine, context: PVOID) {
    let device = create_device(session);
    let irp = request(device, routine, context);
    let status = send_to_self(session, device, irp, complete_once);
    assert_eq!(status, STATUS_SUCCESS);
    free_request(device, irp);
}

/// A completion routine that counts its runs in the `AtomicUsize` its context points at and
/// keeps the IRP (`STATUS_MORE_PROCESSING_REQUIRED`: the driver allocated it).
unsafe extern "system" fn count_runs(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the test's counter, which outlives the IRP.
    unsafe { &*context.cast::<AtomicUsize>() }.fetch_add(1, SeqCst);
    STATUS_MORE_PROCESSING_REQUIRED
}

/// The driver's `IRP_MJ_INTERNAL_DEVICE_CONTROL` done right: completes the IRP sent to it, once.
unsafe extern "system" fn complete_once(_device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the IRP sent to this driver, its own until it completes it.
    unsafe { (*irp).IoStatus.Status = STATUS_SUCCESS };
    // SAFETY: as above; IRQL <= DISPATCH_LEVEL.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
    STATUS_SUCCESS
}

/// Wrong: completes the IRP sent to it twice.
unsafe extern "system" fn complete_twice(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the IRP sent to this driver.
    let _ = unsafe { complete_once(device, irp) };
    // SAFETY: the same IRP, completed already: the rule broken.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
    STATUS_SUCCESS
}

// --- An NMR client -------------------------------------------------------------------------------

static NPI_ID: GUID = NPI_WSK_INTERFACE_ID;
static MODULE_ID: NPI_MODULEID = NPI_MODULEID {
    #[allow(clippy::cast_possible_truncation)]
    Length: size_of::<NPI_MODULEID>() as u16,
    Type: MIT_GUID,
    u: NPI_MODULEID_u {
        Guid: GUID {
            Data1: 0x5255_4C45, // "RULE"
            Data2: 0x0016,
            Data3: 0,
            Data4: [0; 8],
        },
    },
};
static CLIENT_DISPATCH: WSK_CLIENT_DISPATCH = WSK_CLIENT_DISPATCH {
    Version: MAKE_WSK_VERSION(1, 0),
    Reserved: 0,
    WskClientEvent: None,
};

/// What a test client's `ClientDetachProvider` does.
#[derive(Clone, Copy)]
enum Detach {
    /// Returns `STATUS_SUCCESS` (nothing in flight).
    Success,
    /// Returns `STATUS_PENDING`; the test completes the detach later.
    Pending,
    /// Wrong: calls `NmrClientDetachProviderComplete`, then returns `STATUS_PENDING`.
    CompleteInside,
    /// Wrong: returns a status NMR does not define for a detach.
    Answer(NTSTATUS),
}

/// A WSK client registered with NMR by raw calls: its characteristics, and what NMR and the
/// provider handed it. The registration's client context and its one binding's context.
struct NmrClient {
    characteristics: NPI_CLIENT_CHARACTERISTICS,
    detach: Detach,
    handle: AtomicPtr<c_void>,
    binding: AtomicPtr<c_void>,
    wsk_client: AtomicPtr<c_void>,
    dispatch: AtomicPtr<WSK_PROVIDER_DISPATCH>,
    cleaned_up: AtomicBool,
}

impl NmrClient {
    #[allow(clippy::unnecessary_box_returns)] // NMR keeps its address: it must not move
    fn new(detach: Detach) -> Box<Self> {
        Box::new(Self {
            characteristics: NPI_CLIENT_CHARACTERISTICS {
                Version: 0,
                Length: u16::try_from(size_of::<NPI_CLIENT_CHARACTERISTICS>()).unwrap(),
                ClientAttachProvider: Some(attach_provider),
                ClientDetachProvider: Some(detach_provider),
                ClientCleanupBindingContext: Some(cleanup_binding_context),
                ClientRegistrationInstance: NPI_REGISTRATION_INSTANCE {
                    Version: 0,
                    Size: u16::try_from(size_of::<NPI_REGISTRATION_INSTANCE>()).unwrap(),
                    NpiId: &raw const NPI_ID,
                    ModuleId: &raw const MODULE_ID,
                    Number: 0,
                    NpiSpecificCharacteristics: null(),
                },
            },
            detach,
            handle: AtomicPtr::new(null_mut()),
            binding: AtomicPtr::new(null_mut()),
            wsk_client: AtomicPtr::new(null_mut()),
            dispatch: AtomicPtr::new(null_mut()),
            cleaned_up: AtomicBool::new(false),
        })
    }

    /// `NmrRegisterClient`: NMR offers it every registered provider before this returns.
    fn register(&self) {
        assert_eq!(self.try_register(), STATUS_SUCCESS);
    }

    fn try_register(&self) -> NTSTATUS {
        let mut handle = null_mut();
        // SAFETY: PASSIVE_LEVEL; the characteristics and the context (this client) outlive the
        // registration: every test deregisters before it drops the client.
        let status = unsafe {
            NmrRegisterClient(
                &raw const self.characteristics,
                context(self),
                &raw mut handle,
            )
        };
        self.handle.store(handle, SeqCst);
        status
    }

    /// `NmrDeregisterClient` and, as it pends, `NmrWaitForClientDeregisterComplete`.
    fn deregister(&self) {
        assert_eq!(self.try_deregister(), STATUS_SUCCESS);
    }

    fn try_deregister(&self) -> NTSTATUS {
        let handle = self.handle.load(SeqCst);
        // SAFETY: PASSIVE_LEVEL; the handle NmrRegisterClient wrote.
        let status = unsafe { NmrDeregisterClient(handle) };
        if status != STATUS_PENDING {
            return status;
        }
        // SAFETY: PASSIVE_LEVEL; the client is deregistering.
        unsafe { NmrWaitForClientDeregisterComplete(handle) }
    }

    /// `NmrClientDetachProviderComplete` of its binding.
    fn complete_detach(&self) {
        // SAFETY: the binding handle NMR gave ClientAttachProvider.
        unsafe { NmrClientDetachProviderComplete(self.binding.load(SeqCst)) };
    }

    /// The provider dispatch `NmrClientAttachProvider` handed out.
    fn dispatch(&self) -> &WSK_PROVIDER_DISPATCH {
        let dispatch = self.dispatch.load(SeqCst);
        assert!(!dispatch.is_null(), "never attached");
        // SAFETY: the model's provider memory, live for the session.
        unsafe { &*dispatch }
    }

    /// `WskControlClient` through the binding (a control code the model does not look at).
    fn control_client(&self) -> NTSTATUS {
        let control = self.dispatch().WskControlClient.unwrap();
        // SAFETY: PASSIVE_LEVEL; the provider's function with its WSK_CLIENT, no buffers, no IRP.
        unsafe {
            control(
                self.wsk_client.load(SeqCst),
                0,
                0,
                null_mut(),
                0,
                null_mut(),
                null_mut(),
                null_mut(),
            )
        }
    }

    /// `WskSocket` of a TCP connection socket with `irp`.
    fn socket(&self, irp: *mut IRP) -> NTSTATUS {
        let socket = self.dispatch().WskSocket.unwrap();
        // SAFETY: PASSIVE_LEVEL; the provider's function with its WSK_CLIENT, no socket context
        // or dispatch, and an IRP of the driver with its completion routine set.
        unsafe {
            socket(
                self.wsk_client.load(SeqCst),
                AF_INET,
                SOCK_STREAM,
                IPPROTO_TCP,
                WSK_FLAG_CONNECTION_SOCKET,
                null_mut(),
                null(),
                null_mut(),
                null_mut(),
                null_mut(),
                irp,
            )
        }
    }
}

/// Registers a provider of `config`, then a client whose detach does as `detach` says: NMR
/// attaches them before this returns.
fn attached_client(
    session: &Session,
    config: ProviderConfig,
    detach: Detach,
) -> (ProviderId, Box<NmrClient>) {
    let provider = session.register_provider(config);
    let client = NmrClient::new(detach);
    client.register();
    (provider, client)
}

/// `ClientAttachProvider`: attaches to every provider offered, with itself as the binding context.
unsafe extern "system" fn attach_provider(
    binding: HANDLE,
    client_context: PVOID,
    _provider: *const NPI_REGISTRATION_INSTANCE,
) -> NTSTATUS {
    // SAFETY: the NmrClient the test registered, live until its deregistration completed.
    let client = unsafe { &*client_context.cast::<NmrClient>() };
    let (mut wsk_client, mut dispatch) = (null_mut(), null());
    // SAFETY: inside ClientAttachProvider, with its binding handle, a WSK client dispatch and two
    // out-pointers.
    let status = unsafe {
        NmrClientAttachProvider(
            binding,
            client_context,
            (&raw const CLIENT_DISPATCH).cast(),
            &raw mut wsk_client,
            &raw mut dispatch,
        )
    };
    if status == STATUS_SUCCESS {
        client.binding.store(binding, SeqCst);
        client.wsk_client.store(wsk_client, SeqCst);
        client.dispatch.store(dispatch.cast_mut().cast(), SeqCst);
    }
    status
}

/// `ClientDetachProvider`: as the client's [`Detach`] says.
unsafe extern "system" fn detach_provider(binding_context: PVOID) -> NTSTATUS {
    // SAFETY: the binding context ClientAttachProvider gave: the NmrClient, live.
    let client = unsafe { &*binding_context.cast::<NmrClient>() };
    match client.detach {
        Detach::Success => STATUS_SUCCESS,
        Detach::Pending => STATUS_PENDING,
        Detach::CompleteInside => {
            client.complete_detach();
            STATUS_PENDING
        }
        Detach::Answer(status) => status,
    }
}

/// `ClientCleanupBindingContext`.
unsafe extern "system" fn cleanup_binding_context(binding_context: PVOID) {
    // SAFETY: as for detach_provider.
    let client = unsafe { &*binding_context.cast::<NmrClient>() };
    client.cleaned_up.store(true, SeqCst);
}

// --- I/O rules -----------------------------------------------------------------------------------

/// Rule: only the driver an IRP was sent to (`IoCallDriver`) completes it. Driver Verifier's I/O
/// verification reports "completing an IRP that has never been forwarded via `IoCallDriver`"
/// (<https://learn.microsoft.com/windows-hardware/drivers/devtest/i-o-verification>). The wrong
/// driver runs the routine of a request no provider took by completing it itself
/// (`IoSetNextIrpStackLocation` + `IofCompleteRequest`: the library's old way).
#[test]
fn completing_an_irp_never_sent_to_the_driver_is_recorded() {
    let mut session = wsk_host_model::session();
    let runs = AtomicUsize::new(0);
    let (device, irp) = counted_request(&mut session, &runs);
    // SAFETY: the driver's IRP, one location below the current one.
    unsafe { IoSetNextIrpStackLocation(irp) };
    // SAFETY: the driver's IRP, not pending; PASSIVE_LEVEL.
    unsafe { IofCompleteRequest(irp, IO_NO_INCREMENT) };
    assert_eq!(runs.load(SeqCst), 1);
    assert_only_broken(
        &session,
        "which was never sent to the driver (IoCallDriver): only the driver an IRP was sent to \
         completes it",
    );
    free_request(device, irp);
}

/// The right way for rules 1–3 (I/O verification,
/// <https://learn.microsoft.com/windows-hardware/drivers/devtest/i-o-verification>): the driver
/// sends the IRP to its own device object with `IofCallDriver`; its dispatch routine
/// (`DRIVER_OBJECT.MajorFunction[IRP_MJ_INTERNAL_DEVICE_CONTROL]`) completes it once; the routine
/// runs; the IRP is freed after it ran. Nothing is recorded.
#[test]
fn an_irp_sent_to_the_driver_and_completed_once_by_it_breaks_no_rule() {
    let mut session = wsk_host_model::session();
    let runs = AtomicUsize::new(0);
    complete_with(&mut session, count_runs, context(&runs));
    assert_eq!(runs.load(SeqCst), 1);
    assert_none_broken(&session);
}

/// Rule: a routine set with `IoSetCompletionRoutineEx` must be made to run (through
/// `IoCallDriver`): the memory it allocated stays allocated until the routine runs, "otherwise,
/// the kernel will leak memory"
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-iosetcompletionroutineex>;
/// Static Driver Verifier's `CompletionRoutineRegistered` rule). The wrong driver frees an unused
/// prepared request's IRP.
#[test]
fn freeing_an_irp_whose_completion_routine_never_ran_is_recorded() {
    let mut session = wsk_host_model::session();
    let runs = AtomicUsize::new(0);
    let (device, irp) = counted_request(&mut session, &runs);
    free_irp(irp);
    assert_eq!(runs.load(SeqCst), 0);
    assert_only_broken(
        &session,
        "whose completion routine never ran: IoSetCompletionRoutineEx's context leaks",
    );
    delete_device(device);
}

/// Rule: an IRP is completed once. A second `IoCompleteRequest` of one IRP is bug check 0x44,
/// `MULTIPLE_IRP_COMPLETE_REQUESTS`
/// (<https://learn.microsoft.com/windows-hardware/drivers/debugger/bug-check-0x44--multiple-irp-complete-requests>).
/// The wrong driver's dispatch routine completes the IRP sent to it twice.
#[test]
fn completing_an_irp_twice_is_recorded() {
    let mut session = wsk_host_model::session();
    let runs = AtomicUsize::new(0);
    let (device, irp) = counted_request(&mut session, &runs);
    let _ = send_to_self(&mut session, device, irp, complete_twice);
    assert_eq!(
        runs.load(SeqCst),
        1,
        "the routine runs once, at the first completion"
    );
    assert_only_broken(
        &session,
        "which was already completed: an IRP is completed once (MULTIPLE_IRP_COMPLETE_REQUESTS)",
    );
    free_request(device, irp);
}

/// Rule: an IRP handed to a WSK function is the provider's until it completes it; the client frees
/// it only once its completion routine was called
/// (<https://learn.microsoft.com/windows-hardware/drivers/network/using-irps-with-winsock-kernel-functions>;
/// `IoFreeIrp` of a pending IRP is a use after free for the provider). The wrong driver frees the
/// IRP of a `WskSocket` still pending (the model's provider holds it until it is cancelled).
#[test]
fn freeing_an_irp_the_provider_holds_is_recorded() {
    let mut session = wsk_host_model::session();
    let config = ProviderConfig {
        socket_hangs_until_cancelled: true,
        ..ProviderConfig::default_wsk()
    };
    let (_, client) = attached_client(&session, config, Detach::Success);
    let runs = AtomicUsize::new(0);
    let (device, irp) = counted_request(&mut session, &runs);
    assert_eq!(client.socket(irp), STATUS_PENDING);
    free_irp(irp);
    assert_only_broken(&session, "while it is pending");
    // Now the right way: cancel, let the provider complete it, free it after its routine ran.
    // SAFETY: the driver's IRP, pending with the provider; PASSIVE_LEVEL.
    unsafe { IoCancelIrp(irp) };
    session.wait_work_items();
    assert_eq!(runs.load(SeqCst), 1);
    free_irp(irp);
    client.deregister();
    delete_device(device);
    assert_none_broken(&session);
}

/// Rule: an IRP is reinitialized for another use (`IoReuseIrp`) only once it is the driver's
/// again — completed, its routine run — never while the provider holds it
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioreuseirp> and its DDI
/// compliance rules `IoReuseIrp` and `IoReuseIrp2`;
/// <https://learn.microsoft.com/windows-hardware/drivers/kernel/reusing-irps>). The wrong driver
/// reuses the IRP of a `WskSocket` still pending.
#[test]
fn reusing_an_irp_the_provider_holds_is_recorded() {
    let mut session = wsk_host_model::session();
    let config = ProviderConfig {
        socket_hangs_until_cancelled: true,
        ..ProviderConfig::default_wsk()
    };
    let (_, client) = attached_client(&session, config, Detach::Success);
    let runs = AtomicUsize::new(0);
    let (device, irp) = counted_request(&mut session, &runs);
    assert_eq!(client.socket(irp), STATUS_PENDING);
    // SAFETY: the driver's IRP (pending: the rule broken on purpose); PASSIVE_LEVEL.
    unsafe { IoReuseIrp(irp, STATUS_SUCCESS) };
    assert_only_broken(&session, "while a provider or driver holds it");
    // SAFETY: the driver's IRP, pending with the provider; PASSIVE_LEVEL.
    unsafe { IoCancelIrp(irp) };
    session.wait_work_items();
    assert_eq!(runs.load(SeqCst), 1);
    free_irp(irp);
    client.deregister();
    delete_device(device);
    assert_none_broken(&session);
}

/// Rule: a completed IRP used again is reinitialized first (`IoReuseIrp`: its completion used
/// its stack location up), and its routine set again
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-ioreuseirp>,
/// <https://learn.microsoft.com/windows-hardware/drivers/kernel/reusing-irps>); and, as for
/// `IoFreeIrp`, not while a routine set with `IoSetCompletionRoutineEx` has not run (its context
/// would leak). The right driver reuses its IRP; the wrong one sets the routine of a completed
/// IRP again without `IoReuseIrp`, then reuses it with that routine never run.
#[test]
fn a_completed_irp_used_again_without_io_reuse_irp_is_recorded() {
    let mut session = wsk_host_model::session();
    let runs = AtomicUsize::new(0);
    let (device, irp) = counted_request(&mut session, &runs);
    let set_again = || {
        // SAFETY: a live device of the driver, its IRP (not pending), a routine of the driver
        // whose context outlives the IRP.
        unsafe { IoSetCompletionRoutineEx(device, irp, Some(count_runs), context(&runs), 1, 1, 1) }
    };
    let reuse = || {
        // SAFETY: the driver's IRP, not pending; PASSIVE_LEVEL.
        unsafe { IoReuseIrp(irp, STATUS_SUCCESS) };
    };
    // The right way: completed, reinitialized, its routine set, used again.
    let _ = send_to_self(&mut session, device, irp, complete_once);
    reuse();
    assert_eq!(set_again(), STATUS_SUCCESS);
    let _ = send_to_self(&mut session, device, irp, complete_once);
    assert_eq!(runs.load(SeqCst), 2);
    assert_none_broken(&session);
    // The wrong way: the routine set on the completed IRP as it is...
    assert_eq!(set_again(), STATUS_SUCCESS);
    assert_only_broken(&session, "not reinitialized (IoReuseIrp)");
    // ... and the IRP reused with that routine never run.
    reuse();
    assert_only_broken(&session, "whose completion routine never ran");
    free_request(device, irp);
    assert_none_broken(&session);
}

// --- NMR detach rules ----------------------------------------------------------------------------

/// Rule: a client calls `NmrClientDetachProviderComplete` only after its `ClientDetachProvider`
/// returned `STATUS_PENDING`
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nc-netioddk-npi_client_detach_provider_fn>).
/// The wrong driver completes the detach inside the callback (its last reference dropped there),
/// then returns `STATUS_PENDING`.
#[test]
fn completing_a_detach_inside_client_detach_provider_is_recorded() {
    let session = wsk_host_model::session();
    let (_, client) = attached_client(
        &session,
        ProviderConfig::default_wsk(),
        Detach::CompleteInside,
    );
    client.deregister();
    assert!(client.cleaned_up.load(SeqCst));
    assert_only_broken(
        &session,
        "NmrClientDetachProviderComplete inside ClientDetachProvider (only after it returned \
         STATUS_PENDING",
    );
}

/// Rule: `NmrClientDetachProviderComplete` only after `ClientDetachProvider` returned
/// `STATUS_PENDING`; after `STATUS_SUCCESS` the detach is over and NMR has cleaned the binding up
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nf-netioddk-nmrclientdetachprovidercomplete>).
/// The wrong driver returns `STATUS_SUCCESS`, then completes the detach all the same.
#[test]
fn completing_a_detach_that_returned_success_is_recorded() {
    let session = wsk_host_model::session();
    let (_, client) = attached_client(&session, ProviderConfig::default_wsk(), Detach::Success);
    client.deregister();
    assert!(client.cleaned_up.load(SeqCst));
    assert_none_broken(&session);
    client.complete_detach();
    assert_only_broken(
        &session,
        "whose ClientDetachProvider returned STATUS_SUCCESS (only after it returned \
         STATUS_PENDING",
    );
}

/// Rule: `ClientDetachProvider` returns `STATUS_SUCCESS` or `STATUS_PENDING`, the only two
/// statuses its page defines
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nc-netioddk-npi_client_detach_provider_fn>).
/// The wrong driver answers `STATUS_INVALID_PARAMETER` (the library's old answer to a NULL
/// context).
#[test]
fn a_detach_status_other_than_success_or_pending_is_recorded() {
    let session = wsk_host_model::session();
    let (_, client) = attached_client(
        &session,
        ProviderConfig::default_wsk(),
        Detach::Answer(STATUS_INVALID_PARAMETER),
    );
    client.deregister();
    assert_only_broken(
        &session,
        "ClientDetachProvider returned STATUS_INVALID_PARAMETER: only STATUS_SUCCESS or \
         STATUS_PENDING are defined",
    );
}

/// Rule: "After `ClientDetachProvider` has been called, the client module should not make any
/// more calls to any of the provider module's NPI functions"
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nc-netioddk-npi_client_detach_provider_fn>).
/// The wrong driver's detach pends, and it then calls `WskControlClient` through the binding.
#[test]
fn a_provider_call_after_the_detach_began_is_recorded() {
    let session = wsk_host_model::session();
    let (provider, client) =
        attached_client(&session, ProviderConfig::default_wsk(), Detach::Pending);
    assert_eq!(session.deregister_provider(provider), [Status::PENDING]);
    let _ = client.control_client();
    assert_only_broken(
        &session,
        "WskControlClient called through a binding whose detach began",
    );
    client.complete_detach();
    assert!(client.cleaned_up.load(SeqCst));
    client.deregister();
}

/// The right way for rules 5–8 (the detach callback's page,
/// <https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/nc-netioddk-npi_client_detach_provider_fn>):
/// provider calls while attached only; the detach returns `STATUS_PENDING` and is completed after
/// it returned; NMR then cleans the binding up. Nothing is recorded.
#[test]
fn a_pending_detach_completed_after_it_returned_breaks_no_rule() {
    let session = wsk_host_model::session();
    let (provider, client) =
        attached_client(&session, ProviderConfig::default_wsk(), Detach::Pending);
    assert_eq!(client.control_client(), STATUS_SUCCESS);
    assert_eq!(session.deregister_provider(provider), [Status::PENDING]);
    assert!(!client.cleaned_up.load(SeqCst));
    client.complete_detach();
    assert!(client.cleaned_up.load(SeqCst));
    client.deregister();
    assert_none_broken(&session);
}

// --- A WSK call inside a completion routine ------------------------------------------------------

/// A completion routine that starts a WSK call: `WskCaptureProviderNPI` (`WSK_NO_WAIT`, legal at
/// `DISPATCH_LEVEL` by its own page) on the `WSK_REGISTRATION` its context points at.
unsafe extern "system" fn capture_in_routine(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    let mut npi = WSK_PROVIDER_NPI {
        Client: null_mut(),
        Dispatch: null(),
    };
    // SAFETY: the test's registration, registered and live until WskDeregister; an out-pointer.
    let _ = unsafe { WskCaptureProviderNPI(context.cast(), WSK_NO_WAIT, &raw mut npi) };
    STATUS_MORE_PROCESSING_REQUIRED
}

/// Rule: a WSK client starts no new WSK call inside a completion routine
/// (<https://learn.microsoft.com/windows-hardware/drivers/network/using-irps-with-winsock-kernel-functions>).
/// The wrong driver's routine calls `WskCaptureProviderNPI`.
#[test]
fn a_wsk_call_inside_a_completion_routine_is_recorded() {
    let mut session = wsk_host_model::session();
    let npi = WSK_CLIENT_NPI {
        ClientContext: null_mut(),
        Dispatch: &raw const CLIENT_DISPATCH,
    };
    let mut registration = WSK_REGISTRATION {
        ReservedRegistrationState: 0,
        ReservedRegistrationContext: null_mut(),
        ReservedRegistrationLock: 0,
    };
    let registration = &raw mut registration;
    // SAFETY: PASSIVE_LEVEL; a client NPI and a registration that outlive the registration.
    let status = unsafe { WskRegister(&raw const npi, registration) };
    assert_eq!(status, STATUS_SUCCESS);
    complete_with(&mut session, capture_in_routine, registration.cast());
    assert_only_broken(
        &session,
        "WskCaptureProviderNPI called inside a completion routine: a WSK client starts no new \
         WSK call there",
    );
    // SAFETY: PASSIVE_LEVEL; registered above, nothing captured.
    unsafe { WskDeregister(registration) };
}

// --- Unloading with a client registered ----------------------------------------------------------

/// The client the `DriverEntry` below registers.
static ENTRY_CLIENT: AtomicPtr<NmrClient> = AtomicPtr::new(null_mut());

/// A `DriverEntry` that registers [`ENTRY_CLIENT`] and sets a `DriverUnload` that deregisters it
/// (`DEREGISTERS`) or, wrong, does not.
unsafe extern "system" fn entry_registers<const DEREGISTERS: bool>(
    driver: *mut DRIVER_OBJECT,
    _registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the test's client, live until the test ends (after the deregistration).
    let client = unsafe { &*ENTRY_CLIENT.load(SeqCst) };
    let status = client.try_register();
    if status != STATUS_SUCCESS {
        return status;
    }
    let unload: unsafe extern "system" fn(*mut DRIVER_OBJECT) = if DEREGISTERS {
        unload_deregisters
    } else {
        unload_forgets
    };
    // SAFETY: the driver object the I/O manager handed to DriverEntry.
    unsafe { (*driver).DriverUnload = Some(unload) };
    STATUS_SUCCESS
}

/// `DriverUnload` done right: deregisters the client and waits for the deregistration.
unsafe extern "system" fn unload_deregisters(_driver: *mut DRIVER_OBJECT) {
    // SAFETY: as in entry_registers.
    let _ = unsafe { &*ENTRY_CLIENT.load(SeqCst) }.try_deregister();
}

/// Wrong: returns with the client still registered.
unsafe extern "system" fn unload_forgets(_driver: *mut DRIVER_OBJECT) {}

/// Runs [`entry_registers`] and the `DriverUnload` it set (the client it registers is returned:
/// the caller keeps it until NMR is done with it); the image is unmapped after.
#[allow(clippy::unnecessary_box_returns)] // NMR keeps its address: it must not move
fn load_and_unload<const DEREGISTERS: bool>(session: &mut Session) -> Box<NmrClient> {
    let client = NmrClient::new(Detach::Success);
    ENTRY_CLIENT.store(ptr::from_ref(&*client).cast_mut(), SeqCst);
    let status = session.driver_entry(entry_registers::<DEREGISTERS>);
    assert_eq!(status, Status::SUCCESS);
    session.driver_unload();
    assert!(session.image_unmapped());
    client
}

/// Rule: "A client module must not return from its Unload function until after it has been
/// completely deregistered from the NMR"
/// (<https://learn.microsoft.com/windows-hardware/drivers/network/unloading-a-client-module>):
/// once `DriverUnload` returned and no device object holds the image, NMR would call into
/// unmapped memory. The wrong driver's unload forgets `NmrDeregisterClient`.
#[test]
fn unloading_with_a_client_registered_and_the_image_unmapped_is_recorded() {
    let mut session = wsk_host_model::session();
    let _client = load_and_unload::<false>(&mut session);
    assert_only_broken(
        &session,
        "DriverUnload returned with 1 NMR client(s) still registered and the image unmapped",
    );
    // What a shutdown would do; NMR's calls there are driver calls after the unload, recorded too.
    session.deregister_stuck_clients();
    session.forget_violations();
}

/// The right way for rule 10 (<https://learn.microsoft.com/windows-hardware/drivers/network/unloading-a-client-module>):
/// `DriverUnload` calls `NmrDeregisterClient` and `NmrWaitForClientDeregisterComplete` before it
/// returns. Nothing is recorded.
#[test]
fn unloading_after_the_deregistration_completed_breaks_no_rule() {
    let mut session = wsk_host_model::session();
    let _client = load_and_unload::<true>(&mut session);
    assert_none_broken(&session);
}

// --- Work items ----------------------------------------------------------------------------------

/// A work item routine that waits on an event of its own (never signalled) for the relative
/// timeout its context points at (100 ns units; 0: no wait, a poll).
unsafe extern "system" fn wait_in_work_item(_device: *mut DEVICE_OBJECT, context: PVOID) {
    let mut event = KEVENT { Header: [0; 3] };
    // SAFETY: an event on this stack.
    unsafe { KeInitializeEvent(&raw mut event, NotificationEvent, 0) };
    // SAFETY: the event above; the test's timeout, which outlives the work item.
    let _ = unsafe {
        KeWaitForSingleObject(
            (&raw mut event).cast(),
            Executive,
            KernelMode,
            0,
            context.cast::<i64>(),
        )
    };
}

/// Queues [`wait_in_work_item`] with `timeout` on a device of the driver, waits for it to end,
/// frees it.
fn run_waiting_work_item(session: &mut Session, timeout: i64) {
    let device = create_device(session);
    // SAFETY: PASSIVE_LEVEL; a live device object of the driver.
    let item = unsafe { IoAllocateWorkItem(device) };
    assert!(!item.is_null());
    // SAFETY: the item above, not queued; the routine's context (the timeout) outlives it: the
    // session waits for it below.
    unsafe {
        IoQueueWorkItem(
            item,
            Some(wait_in_work_item),
            DelayedWorkQueue,
            context(&timeout),
        );
    };
    session.wait_work_items();
    // SAFETY: the item, no longer queued (its routine returned).
    unsafe { IoFreeWorkItem(item) };
    delete_device(device);
}

/// Rule: work item routines run on a small pool of system worker threads and must be short: one
/// that waits holds a thread the system may need, "and the system can deadlock"
/// ("System Worker Threads",
/// <https://learn.microsoft.com/windows-hardware/drivers/kernel/system-worker-threads>). The wrong
/// driver's work item waits on an event with a non-zero timeout (1 ms).
#[test]
fn a_work_item_routine_that_waits_is_recorded() {
    let mut session = wsk_host_model::session();
    run_waiting_work_item(&mut session, -10_000);
    assert_only_broken(
        &session,
        "KeWaitForSingleObject waits inside a work item routine: work items must be short \
         (System Worker Threads)",
    );
}

/// The right way for rule 11
/// (<https://learn.microsoft.com/windows-hardware/drivers/kernel/system-worker-threads>): a work
/// item routine that only polls (a zero timeout) does not wait. Nothing is recorded.
#[test]
fn a_work_item_routine_that_only_polls_breaks_no_rule() {
    let mut session = wsk_host_model::session();
    run_waiting_work_item(&mut session, 0);
    assert_none_broken(&session);
}

// --- IRQL ----------------------------------------------------------------------------------------

/// The key the `DriverEntry` below opened.
static KEY: AtomicPtr<c_void> = AtomicPtr::new(null_mut());

/// A `DriverEntry` that opens its service key (as drivers do to read their parameters) and keeps
/// the handle in [`KEY`].
unsafe extern "system" fn entry_opens_its_key(
    driver: *mut DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    let attributes = OBJECT_ATTRIBUTES {
        Length: u32::try_from(size_of::<OBJECT_ATTRIBUTES>()).unwrap_or(0),
        RootDirectory: null_mut(),
        ObjectName: registry_path,
        Attributes: OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
        SecurityDescriptor: null_mut(),
        SecurityQualityOfService: null_mut(),
    };
    let mut key = null_mut();
    // SAFETY: PASSIVE_LEVEL; the registry path DriverEntry got, a valid out-pointer.
    let status = unsafe { ZwOpenKey(&raw mut key, KEY_READ, &raw const attributes) };
    KEY.store(key, SeqCst);
    // SAFETY: the driver object the I/O manager handed to DriverEntry.
    unsafe { (*driver).DriverUnload = Some(unload_forgets) };
    status
}

/// A completion routine that closes the handle its context is (`ZwClose`: `PASSIVE_LEVEL` only).
unsafe extern "system" fn close_in_routine(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the key the driver opened, closed once; at the routine's IRQL: the rule broken.
    let _ = unsafe { ZwClose(context) };
    STATUS_MORE_PROCESSING_REQUIRED
}

fn close_key() {
    // SAFETY: PASSIVE_LEVEL; the key DriverEntry opened, closed once.
    assert_eq!(unsafe { ZwClose(KEY.load(SeqCst)) }, STATUS_SUCCESS);
}

/// Rule: every function has a highest IRQL it may be called at — `ZwClose`'s is `PASSIVE_LEVEL`
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwclose>), and completion
/// routines run at up to `DISPATCH_LEVEL`
/// (<https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nc-wdm-io_completion_routine>),
/// where the model calls them; Driver Verifier stops on `IRQL_NOT_LESS_OR_EQUAL`. The wrong driver
/// closes its registry key in a completion routine.
#[test]
fn a_call_above_its_irql_limit_from_a_completion_routine_is_recorded() {
    let mut session = wsk_host_model::session();
    assert_eq!(session.driver_entry(entry_opens_its_key), Status::SUCCESS);
    complete_with(&mut session, close_in_routine, KEY.load(SeqCst));
    assert_only_broken(
        &session,
        "ZwClose called at DISPATCH_LEVEL: its limit is PASSIVE_LEVEL",
    );
    session.driver_unload();
}

/// The right way for rule 12 (<https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-zwclose>):
/// the completion routine only records its run; the key is closed at `PASSIVE_LEVEL`. Nothing is
/// recorded.
#[test]
fn a_passive_level_call_made_after_the_completion_routine_breaks_no_rule() {
    let mut session = wsk_host_model::session();
    assert_eq!(session.driver_entry(entry_opens_its_key), Status::SUCCESS);
    let runs = AtomicUsize::new(0);
    complete_with(&mut session, count_runs, context(&runs));
    assert_eq!(runs.load(SeqCst), 1);
    close_key();
    session.driver_unload();
    assert_none_broken(&session);
}
