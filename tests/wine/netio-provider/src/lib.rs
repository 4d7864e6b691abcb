//! A test NETIO.SYS for Wine: a minimal Network Module Registrar that plays the WSK provider, so
//! that `wsk_attach.sys` can be loaded with Wine's real `sc.exe` / winedevice.exe (Wine's own
//! netio.sys only stubs the `Nmr*` functions).
//!
//! What it does, per NMR client registration (up to [`MAX_CLIENTS`] at once):
//! - `NmrRegisterClient` checks the client characteristics, calls the client's
//!   `ClientAttachProvider` with the provider's `NPI_REGISTRATION_INSTANCE` (NPI
//!   `NPI_WSK_INTERFACE_ID`, `WSK_PROVIDER_CHARACTERISTICS` 1.0-1.1) *before* it writes the
//!   out-handle, as Windows may;
//! - `NmrClientAttachProvider` (only valid during that attach call) answers per variant: `wsk11`
//!   accepts 1.1 and 1.0, `noif11` answers `STATUS_NOINTERFACE` to 1.1 and accepts 1.0; on
//!   success it writes a `WSK_CLIENT` pointer and a `WSK_PROVIDER_DISPATCH` of that version
//!   (its own logging stubs; `bridge` accepts like `wsk11` and writes Wine's real provider
//!   instead, see the `bridge` module);
//! - `NmrDeregisterClient` calls `ClientDetachProvider`; on `STATUS_SUCCESS` it calls
//!   `ClientCleanupBindingContext` at once; on `STATUS_PENDING` it returns without blocking (it may
//!   run at `DISPATCH_LEVEL`), and `NmrWaitForClientDeregisterComplete` (`PASSIVE_LEVEL`) waits on a
//!   kernel event that `NmrClientDetachProviderComplete` sets, then cleans up. It always returns
//!   `STATUS_PENDING`, as Windows does;
//! - `NmrWaitForClientDeregisterComplete` returns once the cleanup ran.
//!
//! In every variant it also keeps Windows' image lifetime where Wine 8 does not (the `lifetime`
//! module): a client's image stays loaded while one of its work item routines or
//! `IoSetCompletionRoutineEx` completion routines is queued or running (Wine's winedevice.exe
//! unloads a driver image as soon as `DriverUnload` returns), Wine's `IoSetCompletionRoutineEx`
//! stub is replaced with an emulation of Windows', and an image unloaded with such a routine in
//! flight is logged as an error. The registration functions (`NmrRegisterClient`, the bridge's
//! `WskRegister`) install it for the client's image.
//!
//! Everything it sees is logged with `DbgPrintEx` (component 77), every line prefixed
//! `netio-provider: `. A breach of the NMR rules by the client is logged as
//! `netio-provider: ERROR: ...`, which the Wine test treats as a failure.
//!
//! The ABI declarations are the driver's own (`crates/wsk-sys`). They declare the `Nmr*` functions
//! as raw-dylib imports from NETIO.SYS; this crate *defines* functions of the same names with
//! `#[unsafe(no_mangle)]` in the crate root and never calls the imported ones.

#![no_std]
#![allow(non_snake_case)]
// The bridge variant hands out Wine's provider: its own stub dispatch goes unused there.
#![cfg_attr(feature = "bridge", allow(dead_code))]

#[cfg(any(
    all(feature = "wsk11", feature = "noif11"),
    all(feature = "wsk11", feature = "bridge"),
    all(feature = "noif11", feature = "bridge"),
    not(any(feature = "wsk11", feature = "noif11", feature = "bridge"))
))]
compile_error!("enable exactly one variant feature: wsk11, noif11 or bridge");

use wsk_sys as abi;

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use abi::{
    ADDRESS_FAMILY, ADDRINFOEXW, DRIVER_OBJECT, EPROCESS, ETHREAD, GUID, HANDLE, IRP, MIT_GUID,
    NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_MODULEID_u, NPI_REGISTRATION_INSTANCE,
    NPI_WSK_INTERFACE_ID, NPIID, NTSTATUS, PVOID, PWSK_CLIENT, SECURITY_DESCRIPTOR, SOCKADDR,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOINTERFACE, STATUS_PENDING,
    STATUS_SUCCESS, STATUS_UNSUCCESSFUL, UNICODE_STRING, WSK_CLIENT_DISPATCH,
    WSK_PROVIDER_CHARACTERISTICS, WSK_PROVIDER_DISPATCH,
};

// ---------------------------------------------------------------------------------------------
// Kernel pieces this test provider needs beyond the driver's ABI (wdm.h; ntoskrnl.exe).

/// `KEVENT` (x64): a `DISPATCHER_HEADER`, 24 bytes, 8-aligned. Opaque here.
#[repr(C, align(8))]
#[allow(clippy::upper_case_acronyms)] // the C name
struct KEVENT([u64; 3]);

/// `EVENT_TYPE::NotificationEvent`.
const NOTIFICATION_EVENT: i32 = 0;
/// `KWAIT_REASON::Executive`.
const EXECUTIVE: i32 = 0;
/// `KPROCESSOR_MODE::KernelMode`.
const KERNEL_MODE: i8 = 0;
/// `STATUS_NOT_IMPLEMENTED`.
#[allow(clippy::cast_possible_wrap)]
const STATUS_NOT_IMPLEMENTED: NTSTATUS = 0xC000_0002_u32 as NTSTATUS;
/// How long `NmrWaitForClientDeregisterComplete` waits for `NmrClientDetachProviderComplete`
/// before it gives up and reports it: 10 s, relative (negative), in 100 ns units.
const DETACH_COMPLETE_TIMEOUT: i64 = -10 * 10_000_000;

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    fn KeInitializeEvent(Event: *mut KEVENT, Type: i32, State: u8);
    fn KeSetEvent(Event: *mut KEVENT, Increment: i32, Wait: u8) -> i32;
    fn KeWaitForSingleObject(
        Object: *mut c_void,
        WaitReason: i32,
        WaitMode: i8,
        Alertable: u8,
        Timeout: *const i64,
    ) -> NTSTATUS;
}

// ---------------------------------------------------------------------------------------------
// Logging.

/// `log!("format %u", value)`: one `DbgPrintEx` line, prefixed `netio-provider: `. C format.
macro_rules! log {
    ($format:literal $(, $arg:expr)* $(,)?) => {{
        // SAFETY: a NUL-terminated literal whose conversions match the arguments' C types.
        let _ = unsafe {
            crate::abi::DbgPrintEx(
                crate::abi::DPFLTR_IHVDRIVER_ID,
                crate::abi::DPFLTR_INFO_LEVEL,
                concat!("netio-provider: ", $format, "\n\0").as_ptr().cast(),
                $($arg),*
            )
        };
    }};
}

#[allow(clippy::cast_sign_loss)]
const fn hex(status: NTSTATUS) -> u32 {
    status as u32
}

// The loader (ntdll) and Windows' image lifetime, emulated (every variant).
mod lifetime;
mod loader;

// ---------------------------------------------------------------------------------------------
// The variant.

const WSK_1_0: u16 = abi::MAKE_WSK_VERSION(1, 0);
const WSK_1_1: u16 = abi::MAKE_WSK_VERSION(1, 1);

#[cfg(feature = "wsk11")]
const VARIANT: &str = "wsk11\0";
#[cfg(feature = "noif11")]
const VARIANT: &str = "noif11\0";
#[cfg(feature = "bridge")]
const VARIANT: &str = "bridge\0";

/// Whether this variant accepts an attach at `version`.
const fn accepts(version: u16) -> bool {
    if cfg!(feature = "noif11") {
        version == WSK_1_0
    } else {
        version == WSK_1_0 || version == WSK_1_1
    }
}

// ---------------------------------------------------------------------------------------------
// The bridge variant: the client gets Wine's real WSK provider.

/// The `bridge` variant hands an attaching client Wine's own WSK provider — its `WSK_CLIENT` and
/// a copy of its `WSK_PROVIDER_DISPATCH` — captured through `WskRegister` /
/// `WskCaptureProviderNPI` of Wine's builtin netio.sys, which the test copies into the prefix as
/// `system32/drivers/wnetio.sys` (this NETIO.SYS replaces `netio.sys`, so the builtin one is
/// reached under another name). The copy says the version the client attached at (Wine's says
/// 1.0 although its 1.1 members, `WskGetAddressInfo` included, work), so a 1.1 client resolves
/// names through Wine's real resolver. One bridged binding at a time; released at cleanup.
#[cfg(feature = "bridge")]
mod bridge {
    use core::cell::UnsafeCell;
    use core::mem::MaybeUninit;
    use core::ptr;
    use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

    use crate::abi::{
        NTSTATUS, PVOID, PWSK_CLIENT, STATUS_SUCCESS, STATUS_UNSUCCESSFUL, WSK_CLIENT_DISPATCH,
        WSK_CLIENT_NPI, WSK_NO_WAIT, WSK_PROVIDER_DISPATCH, WSK_PROVIDER_NPI, WSK_REGISTRATION,
    };
    use crate::hex;
    use crate::loader::{self, LdrLoadDll};

    // Wine's netio.sys is reached under another name, loaded at run time: a static import of
    // `WskRegister` & co. from wnetio.sys would collide with wsk-sys's declarations of the same
    // names from NETIO.SYS (the linker takes the first, and this image *is* NETIO.SYS).

    /// Where the test puts Wine's own netio.sys (a bare name is not searched for in `drivers`).
    const PATH: &[u8] = b"C:\\windows\\system32\\drivers\\wnetio.sys";

    /// [`PATH`] in UTF-16, NUL-terminated (Wine's `LdrLoadDll` reads the buffer as a C string).
    static PATH_W: [u16; PATH.len() + 1] = loader::wide(PATH);

    type Register =
        unsafe extern "system" fn(*const WSK_CLIENT_NPI, *mut WSK_REGISTRATION) -> NTSTATUS;
    type Capture =
        unsafe extern "system" fn(*mut WSK_REGISTRATION, u32, *mut WSK_PROVIDER_NPI) -> NTSTATUS;
    type Release = unsafe extern "system" fn(*mut WSK_REGISTRATION);

    /// Wine's four `WskRegister` functions.
    #[derive(Clone, Copy)]
    pub(crate) struct Functions {
        pub(crate) register: Register,
        pub(crate) capture: Capture,
        pub(crate) release: Release,
        pub(crate) deregister: Release,
    }

    /// The loaded functions, cached (loading twice is harmless: the loader counts references).
    static CACHE: AtomicPtr<Functions> = AtomicPtr::new(ptr::null_mut());
    static CACHED: Cached = Cached(UnsafeCell::new(MaybeUninit::uninit()));
    struct Cached(UnsafeCell<MaybeUninit<Functions>>);
    // SAFETY: written once by the CACHING winner, read only after it is published in CACHE.
    unsafe impl Sync for Cached {}
    static CACHING: AtomicBool = AtomicBool::new(false);

    /// Wine's `WskRegister` family, loaded from wnetio.sys on first use.
    pub(crate) fn functions() -> Result<Functions, NTSTATUS> {
        let cached = CACHE.load(Ordering::Acquire);
        if !cached.is_null() {
            // SAFETY: published once, initialised, never written again.
            return Ok(unsafe { cached.read() });
        }
        let loaded = load()?;
        if !CACHING.swap(true, Ordering::AcqRel) {
            // SAFETY: the one caller that won CACHING writes the cell, before publishing it.
            unsafe { (*CACHED.0.get()).write(loaded) };
            CACHE.store(CACHED.0.get().cast(), Ordering::Release);
        }
        Ok(loaded)
    }

    fn load() -> Result<Functions, NTSTATUS> {
        let name = loader::unicode(&PATH_W);
        let mut base: PVOID = ptr::null_mut();
        // SAFETY: no search path, no flags, a counted full path, an out-pointer.
        let status =
            unsafe { LdrLoadDll(ptr::null(), ptr::null_mut(), &raw const name, &raw mut base) };
        if status != STATUS_SUCCESS || base.is_null() {
            log!("ERROR: bridge: LdrLoadDll(wnetio.sys) 0x%08X", hex(status));
            return Err(STATUS_UNSUCCESSFUL);
        }
        let export = |name| loader::export(base, c"wnetio.sys", name);
        let (register, capture, release, deregister) = (
            export(c"WskRegister")?,
            export(c"WskCaptureProviderNPI")?,
            export(c"WskReleaseProviderNPI")?,
            export(c"WskDeregister")?,
        );
        Ok(Functions {
            // SAFETY: Wine's export of that name, with the documented signature.
            register: unsafe { core::mem::transmute::<PVOID, Register>(register) },
            // SAFETY: as above.
            capture: unsafe { core::mem::transmute::<PVOID, Capture>(capture) },
            // SAFETY: as above.
            release: unsafe { core::mem::transmute::<PVOID, Release>(release) },
            // SAFETY: as above.
            deregister: unsafe { core::mem::transmute::<PVOID, Release>(deregister) },
        })
    }

    /// The one bridged binding's state: written only by the owner of [`OPEN`].
    struct State {
        registration: UnsafeCell<WSK_REGISTRATION>,
        client_npi: UnsafeCell<WSK_CLIENT_NPI>,
        dispatch: UnsafeCell<MaybeUninit<WSK_PROVIDER_DISPATCH>>,
    }

    // SAFETY: the cells are written only by whoever set OPEN (open, then close), one at a time.
    unsafe impl Sync for State {}

    static STATE: State = State {
        registration: UnsafeCell::new(WSK_REGISTRATION {
            ReservedRegistrationState: 0,
            ReservedRegistrationContext: ptr::null_mut(),
            ReservedRegistrationLock: 0,
        }),
        client_npi: UnsafeCell::new(WSK_CLIENT_NPI {
            ClientContext: ptr::null_mut(),
            Dispatch: ptr::null(),
        }),
        dispatch: UnsafeCell::new(MaybeUninit::uninit()),
    };

    /// A bridged binding is open (registered and captured).
    static OPEN: AtomicBool = AtomicBool::new(false);

    /// Registers with Wine's provider as the client (its dispatch), captures it, and returns its
    /// `WSK_CLIENT` and a dispatch copy that says `version`.
    pub(crate) fn open(
        client_dispatch: *const WSK_CLIENT_DISPATCH,
        version: u16,
    ) -> Result<(PWSK_CLIENT, *const WSK_PROVIDER_DISPATCH), NTSTATUS> {
        if OPEN.swap(true, Ordering::AcqRel) {
            log!("ERROR: bridge: a second binding while one is bridged");
            return Err(STATUS_UNSUCCESSFUL);
        }
        let functions = match functions() {
            Ok(functions) => functions,
            Err(status) => {
                OPEN.store(false, Ordering::Release);
                return Err(status);
            }
        };
        // SAFETY: OPEN is this caller's: nobody else touches the state.
        unsafe {
            STATE.client_npi.get().write(WSK_CLIENT_NPI {
                ClientContext: ptr::null_mut(),
                Dispatch: client_dispatch,
            });
        };
        // SAFETY: the client NPI and registration above, which outlive the registration.
        let status =
            unsafe { (functions.register)(STATE.client_npi.get(), STATE.registration.get()) };
        if status != STATUS_SUCCESS {
            OPEN.store(false, Ordering::Release);
            return Err(status);
        }
        let mut npi = WSK_PROVIDER_NPI {
            Client: ptr::null_mut(),
            Dispatch: ptr::null(),
        };
        // SAFETY: the registration WskRegister initialised; no wait (Wine's is ready at once).
        let status =
            unsafe { (functions.capture)(STATE.registration.get(), WSK_NO_WAIT, &raw mut npi) };
        if status != STATUS_SUCCESS || npi.Dispatch.is_null() {
            // SAFETY: registered above, nothing captured.
            unsafe { (functions.deregister)(STATE.registration.get()) };
            OPEN.store(false, Ordering::Release);
            return Err(if status == STATUS_SUCCESS {
                STATUS_UNSUCCESSFUL
            } else {
                status
            });
        }
        // SAFETY: the provider's dispatch table, valid while captured.
        let mut table = unsafe { npi.Dispatch.read() };
        let theirs = table.Version;
        table.Version = version;
        // SAFETY: OPEN is this caller's.
        unsafe { (*STATE.dispatch.get()).write(table) };
        log!(
            "bridge: Wine's WSK provider captured: WSK_CLIENT %p, dispatch %p (Version 0x%04X), handed out as 0x%04X",
            npi.Client,
            npi.Dispatch,
            u32::from(theirs),
            u32::from(version),
        );
        Ok((npi.Client, STATE.dispatch.get().cast()))
    }

    /// Releases and deregisters the bridged binding, if any.
    pub(crate) fn close() {
        if !OPEN.load(Ordering::Acquire) {
            return;
        }
        // `open` loaded them: cached.
        let Ok(functions) = functions() else {
            return;
        };
        // SAFETY: captured once by `open`.
        unsafe { (functions.release)(STATE.registration.get()) };
        // SAFETY: registered by `open`; the capture is released.
        unsafe { (functions.deregister)(STATE.registration.get()) };
        OPEN.store(false, Ordering::Release);
        log!("bridge: Wine's WSK provider released and deregistered");
    }
}

// ---------------------------------------------------------------------------------------------
// The provider's registration: statics, as NMR keeps pointers to them.

static PROVIDER_NPI_ID: NPIID = NPI_WSK_INTERFACE_ID;

/// {8F0C2E51-6A3B-4D7E-9C1A-5B2D3E4F6A70}: this test provider's module id.
static PROVIDER_MODULE_ID: NPI_MODULEID = NPI_MODULEID {
    Length: 24,
    Type: MIT_GUID,
    u: NPI_MODULEID_u {
        Guid: GUID {
            Data1: 0x8F0C_2E51,
            Data2: 0x6A3B,
            Data3: 0x4D7E,
            Data4: [0x9C, 0x1A, 0x5B, 0x2D, 0x3E, 0x4F, 0x6A, 0x70],
        },
    },
};

static PROVIDER_CHARACTERISTICS: WSK_PROVIDER_CHARACTERISTICS = WSK_PROVIDER_CHARACTERISTICS {
    HighestVersion: WSK_1_1,
    LowestVersion: WSK_1_0,
};

/// Raw pointers inside: a newtype to put it in a static.
#[repr(transparent)]
struct Instance(NPI_REGISTRATION_INSTANCE);
// SAFETY: immutable, and its pointers lead only to immutable statics.
unsafe impl Sync for Instance {}

static PROVIDER_INSTANCE: Instance = Instance(NPI_REGISTRATION_INSTANCE {
    Version: 0,
    Size: 40,
    NpiId: &raw const PROVIDER_NPI_ID,
    ModuleId: &raw const PROVIDER_MODULE_ID,
    Number: 0,
    NpiSpecificCharacteristics: (&raw const PROVIDER_CHARACTERISTICS).cast(),
});

/// The provider dispatch handed out at WSK 1.1 (all six members) and at 1.0 (the 1.1 members
/// NULL: a 1.0 client must not read them anyway).
static DISPATCH_1_1: WSK_PROVIDER_DISPATCH = dispatch(WSK_1_1);
static DISPATCH_1_0: WSK_PROVIDER_DISPATCH = dispatch(WSK_1_0);

const fn dispatch(version: u16) -> WSK_PROVIDER_DISPATCH {
    let v11 = version >= WSK_1_1;
    WSK_PROVIDER_DISPATCH {
        Version: version,
        Reserved: 0,
        WskSocket: Some(WskSocket),
        WskSocketConnect: Some(WskSocketConnect),
        WskControlClient: Some(WskControlClient),
        WskGetAddressInfo: if v11 { Some(WskGetAddressInfo) } else { None },
        WskFreeAddressInfo: if v11 { Some(WskFreeAddressInfo) } else { None },
        WskGetNameInfo: if v11 { Some(WskGetNameInfo) } else { None },
    }
}

// ---------------------------------------------------------------------------------------------
// Client registrations and their (single) binding.

/// How many NMR clients may be registered at once.
const MAX_CLIENTS: usize = 4;

// Registration states.
const R_FREE: u32 = 0;
const R_REGISTERING: u32 = 1;
const R_REGISTERED: u32 = 2;
const R_DEREGISTERING: u32 = 3;

// Binding states.
const B_NONE: u32 = 0;
/// Inside `ClientAttachProvider`: `NmrClientAttachProvider` may be called.
const B_OFFERED: u32 = 1;
/// `NmrClientAttachProvider` succeeded; `ClientAttachProvider` has not returned yet.
const B_ACCEPTED: u32 = 2;
const B_ATTACHED: u32 = 3;
/// Inside `ClientDetachProvider`.
const B_DETACHING: u32 = 4;
/// `ClientDetachProvider` returned `STATUS_PENDING`.
const B_DETACH_PENDING: u32 = 5;
const B_DETACHED: u32 = 6;
const B_CLEANED: u32 = 7;

/// The `WSK_CLIENT` the provider hands out: its address is the handle; the magic is checked by
/// the dispatch stubs.
#[repr(C)]
struct WskClient {
    magic: u32,
}
const WSK_CLIENT_MAGIC: u32 = u32::from_le_bytes(*b"WskC");

#[repr(C)]
struct Binding {
    state: AtomicU32,
    client_binding_context: AtomicPtr<c_void>,
    version: AtomicU32,
    /// Set by `NmrClientDetachProviderComplete`.
    detach_completed: AtomicBool,
    detach_event: UnsafeCell<KEVENT>,
    wsk_client: WskClient,
}

#[repr(C)]
struct Registration {
    state: AtomicU32,
    characteristics: AtomicPtr<NPI_CLIENT_CHARACTERISTICS>,
    client_context: AtomicPtr<c_void>,
    binding: Binding,
}

struct Registrations([Registration; MAX_CLIENTS]);
// SAFETY: the state words are atomics; the KEVENT is only touched through the Ke* functions,
// which synchronise themselves.
unsafe impl Sync for Registrations {}

static REGISTRATIONS: Registrations = {
    // A `const` item is the way to repeat a non-`Copy` value in an array initialiser; each
    // element is a fresh copy of it, never shared.
    #[allow(clippy::declare_interior_mutable_const)]
    const FREE: Registration = Registration {
        state: AtomicU32::new(R_FREE),
        characteristics: AtomicPtr::new(ptr::null_mut()),
        client_context: AtomicPtr::new(ptr::null_mut()),
        binding: Binding {
            state: AtomicU32::new(B_NONE),
            client_binding_context: AtomicPtr::new(ptr::null_mut()),
            version: AtomicU32::new(0),
            detach_completed: AtomicBool::new(false),
            detach_event: UnsafeCell::new(KEVENT([0; 3])),
            wsk_client: WskClient {
                magic: WSK_CLIENT_MAGIC,
            },
        },
    };
    Registrations([FREE; MAX_CLIENTS])
};

/// The registration whose handle (its address) is `handle`.
fn registration(handle: HANDLE) -> Option<&'static Registration> {
    REGISTRATIONS
        .0
        .iter()
        .find(|r| ptr::eq(ptr::from_ref(*r).cast::<c_void>(), handle))
}

/// The binding whose NMR binding handle (its address) is `handle`.
fn binding(handle: HANDLE) -> Option<&'static Binding> {
    REGISTRATIONS
        .0
        .iter()
        .map(|r| &r.binding)
        .find(|b| ptr::eq(ptr::from_ref(*b).cast::<c_void>(), handle))
}

fn binding_handle(binding: &'static Binding) -> HANDLE {
    ptr::from_ref(binding).cast_mut().cast()
}

fn version_parts(version: u16) -> (u32, u32) {
    (u32::from(version >> 8), u32::from(version & 0xff))
}

/// The client's characteristics, as stored at registration.
fn characteristics(registration: &Registration) -> &'static NPI_CLIENT_CHARACTERISTICS {
    // SAFETY: stored by NmrRegisterClient after validation; the client keeps them valid until
    // NmrWaitForClientDeregisterComplete returns (an NMR rule), and only then is the slot freed.
    unsafe { &*registration.characteristics.load(Ordering::Acquire) }
}

// ---------------------------------------------------------------------------------------------
// The NMR client-side exports.

/// Whether a WSK client's characteristics (`npi_is_wsk`: its NPI is WSK's) are what NMR accepts.
fn characteristics_valid(chars: &NPI_CLIENT_CHARACTERISTICS, npi_is_wsk: bool) -> bool {
    let instance = &chars.ClientRegistrationInstance;
    chars.Version == 0
        && usize::from(chars.Length) >= core::mem::size_of::<NPI_CLIENT_CHARACTERISTICS>()
        && instance.Version == 0
        && usize::from(instance.Size) >= core::mem::size_of::<NPI_REGISTRATION_INSTANCE>()
        && chars.ClientDetachProvider.is_some()
        && !instance.ModuleId.is_null()
        && npi_is_wsk
}

/// `NmrRegisterClient`.
///
/// # Safety
/// Called by a kernel driver with valid characteristics (kept valid until deregistration
/// completes) and a valid out-pointer.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrRegisterClient(
    ClientCharacteristics: *const NPI_CLIENT_CHARACTERISTICS,
    ClientContext: PVOID,
    NmrClientHandle: *mut HANDLE,
) -> NTSTATUS {
    log!(
        "NmrRegisterClient(characteristics %p, context %p, out %p) variant %s",
        ClientCharacteristics,
        ClientContext,
        NmrClientHandle,
        VARIANT.as_ptr(),
    );
    // SAFETY: NULL or valid, per the caller's contract.
    let Some(chars) = (unsafe { ClientCharacteristics.as_ref() }) else {
        log!("ERROR: NmrRegisterClient: NULL characteristics");
        return STATUS_INVALID_PARAMETER;
    };
    if NmrClientHandle.is_null() {
        log!("ERROR: NmrRegisterClient: NULL out-handle pointer");
        return STATUS_INVALID_PARAMETER;
    }
    let instance = &chars.ClientRegistrationInstance;
    // SAFETY: a non-NULL NpiId points at a GUID (the client's static).
    let npi_is_wsk = unsafe { instance.NpiId.as_ref() } == Some(&NPI_WSK_INTERFACE_ID);
    log!(
        "client characteristics: Version %u Length %u, instance Version %u Size %u Number %u, NPI is WSK: %u",
        u32::from(chars.Version),
        u32::from(chars.Length),
        u32::from(instance.Version),
        u32::from(instance.Size),
        instance.Number,
        u32::from(npi_is_wsk),
    );
    let Some(attach) = chars.ClientAttachProvider else {
        log!("ERROR: NmrRegisterClient: no ClientAttachProvider");
        return STATUS_INVALID_PARAMETER;
    };
    if !characteristics_valid(chars, npi_is_wsk) {
        log!("ERROR: NmrRegisterClient: invalid client characteristics");
        return STATUS_INVALID_PARAMETER;
    }
    lifetime::pin_client(ClientCharacteristics.cast(), c"NPI_CLIENT_CHARACTERISTICS");

    let Some(reg) = REGISTRATIONS.0.iter().find(|r| {
        r.state
            .compare_exchange(R_FREE, R_REGISTERING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }) else {
        log!("ERROR: NmrRegisterClient: too many registered clients");
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    reg.characteristics
        .store(ClientCharacteristics.cast_mut(), Ordering::Release);
    reg.client_context.store(ClientContext, Ordering::Release);
    let b = &reg.binding;
    b.client_binding_context
        .store(ptr::null_mut(), Ordering::Release);
    b.version.store(0, Ordering::Release);
    b.detach_completed.store(false, Ordering::Release);
    // SAFETY: the slot is reserved by this call; nobody waits on its event now.
    unsafe { KeInitializeEvent(b.detach_event.get(), NOTIFICATION_EVENT, 0) };
    b.state.store(B_OFFERED, Ordering::Release);

    let (hi_major, hi_minor) = version_parts(PROVIDER_CHARACTERISTICS.HighestVersion);
    let (lo_major, lo_minor) = version_parts(PROVIDER_CHARACTERISTICS.LowestVersion);
    log!(
        "offering WSK %u.%u-%u.%u, binding %p: calling ClientAttachProvider before writing the handle",
        lo_major,
        lo_minor,
        hi_major,
        hi_minor,
        binding_handle(b),
    );
    // SAFETY: the client's attach callback, with the binding handle, its context and the
    // provider's static registration instance.
    let status = unsafe {
        attach(
            binding_handle(b),
            ClientContext,
            &raw const PROVIDER_INSTANCE.0,
        )
    };
    log!("ClientAttachProvider returned 0x%08X", hex(status));
    let accepted = b.state.load(Ordering::Acquire) == B_ACCEPTED;
    if status == STATUS_SUCCESS && accepted {
        b.state.store(B_ATTACHED, Ordering::Release);
        // Stored widened from a u16 (WSK_CLIENT_DISPATCH::Version): the cast gives it back.
        #[allow(clippy::cast_possible_truncation)]
        let (major, minor) = version_parts(b.version.load(Ordering::Acquire) as u16);
        log!("binding attached at WSK %u.%u", major, minor);
    } else if status == STATUS_SUCCESS {
        log!(
            "ERROR: ClientAttachProvider returned STATUS_SUCCESS without a successful NmrClientAttachProvider"
        );
        b.state.store(B_NONE, Ordering::Release);
    } else if accepted {
        log!("ERROR: ClientAttachProvider failed after NmrClientAttachProvider succeeded");
        b.state.store(B_NONE, Ordering::Release);
    } else {
        log!("client did not attach");
        b.state.store(B_NONE, Ordering::Release);
    }
    reg.state.store(R_REGISTERED, Ordering::Release);
    let handle: HANDLE = ptr::from_ref(reg).cast_mut().cast();
    // SAFETY: checked non-NULL above; valid per the caller's contract.
    unsafe { NmrClientHandle.write(handle) };
    log!("NmrRegisterClient: handle %p, STATUS_SUCCESS", handle);
    STATUS_SUCCESS
}

/// `NmrClientAttachProvider`: valid only while the client's `ClientAttachProvider` runs.
///
/// # Safety
/// Called by a kernel driver with a binding handle NMR gave it and valid pointers.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrClientAttachProvider(
    NmrBindingHandle: HANDLE,
    ClientBindingContext: PVOID,
    ClientDispatch: *const c_void,
    ProviderBindingContext: *mut PVOID,
    ProviderDispatch: *mut *const c_void,
) -> NTSTATUS {
    let Some(b) = binding(NmrBindingHandle) else {
        log!(
            "ERROR: NmrClientAttachProvider: unknown binding handle %p",
            NmrBindingHandle
        );
        return STATUS_INVALID_PARAMETER;
    };
    let state = b.state.load(Ordering::Acquire);
    if state != B_OFFERED {
        log!(
            "ERROR: NmrClientAttachProvider outside ClientAttachProvider (binding state %u)",
            state
        );
        return STATUS_INVALID_PARAMETER;
    }
    if ClientDispatch.is_null() || ProviderBindingContext.is_null() || ProviderDispatch.is_null() {
        log!("ERROR: NmrClientAttachProvider: NULL dispatch or out-pointer");
        return STATUS_INVALID_PARAMETER;
    }
    if ClientBindingContext.is_null() {
        log!("ERROR: NmrClientAttachProvider: NULL client binding context");
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: checked non-NULL; a WSK client passes a WSK_CLIENT_DISPATCH.
    let version = unsafe {
        ClientDispatch
            .cast::<WSK_CLIENT_DISPATCH>()
            .read_unaligned()
    }
    .Version;
    let (major, minor) = version_parts(version);
    log!(
        "NmrClientAttachProvider(binding %p, client context %p): client asks for WSK %u.%u",
        NmrBindingHandle,
        ClientBindingContext,
        major,
        minor,
    );
    if !accepts(version) {
        log!(
            "NmrClientAttachProvider: WSK %u.%u refused: STATUS_NOINTERFACE",
            major,
            minor
        );
        return STATUS_NOINTERFACE;
    }
    #[cfg(not(feature = "bridge"))]
    let (client, dispatch): (PWSK_CLIENT, *const WSK_PROVIDER_DISPATCH) = (
        (&raw const b.wsk_client).cast_mut().cast(),
        if version == WSK_1_1 {
            &raw const DISPATCH_1_1
        } else {
            &raw const DISPATCH_1_0
        },
    );
    #[cfg(feature = "bridge")]
    let (client, dispatch) = match bridge::open(ClientDispatch.cast(), version) {
        Ok(provider) => provider,
        Err(status) => {
            log!(
                "ERROR: bridge: Wine's WSK provider not captured: 0x%08X",
                hex(status)
            );
            return status;
        }
    };
    // SAFETY: checked non-NULL; the client's out-pointers (fields of its binding context).
    unsafe { ProviderBindingContext.write(client) };
    // SAFETY: as above.
    unsafe { ProviderDispatch.write(dispatch.cast()) };
    b.client_binding_context
        .store(ClientBindingContext, Ordering::Release);
    b.version.store(u32::from(version), Ordering::Release);
    b.state.store(B_ACCEPTED, Ordering::Release);
    log!(
        "NmrClientAttachProvider: accepted WSK %u.%u, WSK_CLIENT %p, dispatch %p",
        major,
        minor,
        client,
        dispatch,
    );
    STATUS_SUCCESS
}

/// Calls the client's `ClientCleanupBindingContext` for a detached binding.
fn cleanup(reg: &'static Registration) {
    let b = &reg.binding;
    let context = b.client_binding_context.load(Ordering::Acquire);
    match characteristics(reg).ClientCleanupBindingContext {
        Some(cleanup) => {
            log!("calling ClientCleanupBindingContext(%p)", context);
            // SAFETY: the client's callback, once, after both sides detached.
            unsafe { cleanup(context) };
            log!("ClientCleanupBindingContext returned: binding cleaned up");
        }
        None => log!("no ClientCleanupBindingContext: binding cleaned up"),
    }
    // The client is done with the provider: give Wine's back.
    #[cfg(feature = "bridge")]
    bridge::close();
    b.state.store(B_CLEANED, Ordering::Release);
}

/// `NmrDeregisterClient`: detach (and, unless the detach is pending, clean up) the client's
/// binding; returns `STATUS_PENDING` like Windows. Never blocks.
///
/// # Safety
/// Called by a kernel driver with the handle `NmrRegisterClient` returned.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrDeregisterClient(NmrClientHandle: HANDLE) -> NTSTATUS {
    log!("NmrDeregisterClient(handle %p)", NmrClientHandle);
    let Some(reg) = registration(NmrClientHandle) else {
        log!("ERROR: NmrDeregisterClient: unknown handle");
        return STATUS_INVALID_PARAMETER;
    };
    if reg
        .state
        .compare_exchange(
            R_REGISTERED,
            R_DEREGISTERING,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        log!("ERROR: NmrDeregisterClient: handle not registered (deregistered twice?)");
        return STATUS_INVALID_PARAMETER;
    }
    let b = &reg.binding;
    if b.state.load(Ordering::Acquire) != B_ATTACHED {
        log!("NmrDeregisterClient: no binding to detach");
        return STATUS_PENDING;
    }
    b.state.store(B_DETACHING, Ordering::Release);
    let context = b.client_binding_context.load(Ordering::Acquire);
    let chars = characteristics(reg);
    let status = match chars.ClientDetachProvider {
        Some(detach) => {
            log!("calling ClientDetachProvider(%p)", context);
            // SAFETY: the client's detach callback, once, with its binding context.
            unsafe { detach(context) }
        }
        None => STATUS_SUCCESS,
    };
    log!("ClientDetachProvider returned 0x%08X", hex(status));
    if status == STATUS_PENDING {
        b.state.store(B_DETACH_PENDING, Ordering::Release);
        log!(
            "detach pending: NmrWaitForClientDeregisterComplete waits for NmrClientDetachProviderComplete"
        );
        return STATUS_PENDING;
    }
    if status != STATUS_SUCCESS {
        log!("ERROR: ClientDetachProvider returned neither STATUS_SUCCESS nor STATUS_PENDING");
    }
    if b.detach_completed.load(Ordering::Acquire) {
        log!(
            "ERROR: NmrClientDetachProviderComplete was called, but ClientDetachProvider returned STATUS_SUCCESS"
        );
    }
    b.state.store(B_DETACHED, Ordering::Release);
    cleanup(reg);
    log!("NmrDeregisterClient: STATUS_PENDING");
    STATUS_PENDING
}

/// `NmrClientDetachProviderComplete`: completes a detach that returned (or is about to return)
/// `STATUS_PENDING`.
///
/// # Safety
/// Called by a kernel driver with a binding handle NMR gave it.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrClientDetachProviderComplete(NmrBindingHandle: HANDLE) {
    log!(
        "NmrClientDetachProviderComplete(binding %p)",
        NmrBindingHandle
    );
    let Some(b) = binding(NmrBindingHandle) else {
        log!("ERROR: NmrClientDetachProviderComplete: unknown binding handle");
        return;
    };
    let state = b.state.load(Ordering::Acquire);
    if state != B_DETACHING && state != B_DETACH_PENDING {
        log!(
            "ERROR: NmrClientDetachProviderComplete while no detach is pending (binding state %u)",
            state
        );
        return;
    }
    if b.detach_completed.swap(true, Ordering::AcqRel) {
        log!("ERROR: NmrClientDetachProviderComplete called twice");
        return;
    }
    // SAFETY: the binding's event, initialised at registration.
    unsafe { KeSetEvent(b.detach_event.get(), 0, 0) };
}

/// `NmrWaitForClientDeregisterComplete`: returns once the client's binding is cleaned up.
///
/// # Safety
/// Called by a kernel driver at `PASSIVE_LEVEL` with a handle it deregistered.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn NmrWaitForClientDeregisterComplete(
    NmrClientHandle: HANDLE,
) -> NTSTATUS {
    log!(
        "NmrWaitForClientDeregisterComplete(handle %p)",
        NmrClientHandle
    );
    let Some(reg) = registration(NmrClientHandle) else {
        log!("ERROR: NmrWaitForClientDeregisterComplete: unknown handle");
        return STATUS_INVALID_PARAMETER;
    };
    if reg.state.load(Ordering::Acquire) != R_DEREGISTERING {
        log!("ERROR: NmrWaitForClientDeregisterComplete before NmrDeregisterClient");
        return STATUS_INVALID_PARAMETER;
    }
    let b = &reg.binding;
    let mut result = STATUS_SUCCESS;
    if b.state.load(Ordering::Acquire) == B_DETACH_PENDING {
        log!("waiting for NmrClientDetachProviderComplete");
        let timeout = DETACH_COMPLETE_TIMEOUT;
        // SAFETY: PASSIVE_LEVEL; the binding's initialised event; a valid relative timeout.
        let status = unsafe {
            KeWaitForSingleObject(
                b.detach_event.get().cast(),
                EXECUTIVE,
                KERNEL_MODE,
                0,
                &raw const timeout,
            )
        };
        log!("detach-complete wait returned 0x%08X", hex(status));
        if status == STATUS_SUCCESS && b.detach_completed.load(Ordering::Acquire) {
            b.state.store(B_DETACHED, Ordering::Release);
            cleanup(reg);
        } else {
            log!("ERROR: NmrClientDetachProviderComplete never came: binding not cleaned up");
            result = STATUS_UNSUCCESSFUL;
        }
    }
    let state = b.state.load(Ordering::Acquire);
    if state != B_NONE && state != B_CLEANED {
        log!("ERROR: deregistration ends with binding state %u", state);
    }
    b.state.store(B_NONE, Ordering::Release);
    reg.characteristics
        .store(ptr::null_mut(), Ordering::Release);
    reg.client_context.store(ptr::null_mut(), Ordering::Release);
    reg.state.store(R_FREE, Ordering::Release);
    log!(
        "NmrWaitForClientDeregisterComplete: deregistration complete, 0x%08X",
        hex(result)
    );
    result
}

// ---------------------------------------------------------------------------------------------
// The WSK provider dispatch: stubs that log (the standalone driver makes no WSK call).

fn check_client(name: &core::ffi::CStr, client: PWSK_CLIENT) {
    // SAFETY: the client passes back the WSK_CLIENT this provider handed out; the magic check
    // reads four bytes of it.
    let ok =
        !client.is_null() && unsafe { client.cast::<WskClient>().read() }.magic == WSK_CLIENT_MAGIC;
    log!(
        "%s(WSK_CLIENT %p): not implemented, WSK_CLIENT valid: %u",
        name.as_ptr(),
        client,
        u32::from(ok)
    );
}

unsafe extern "system" fn WskSocket(
    Client: PWSK_CLIENT,
    _AddressFamily: ADDRESS_FAMILY,
    _SocketType: u16,
    _Protocol: u32,
    _Flags: u32,
    _SocketContext: PVOID,
    _Dispatch: *const c_void,
    _OwningProcess: *mut EPROCESS,
    _OwningThread: *mut ETHREAD,
    _SecurityDescriptor: *mut SECURITY_DESCRIPTOR,
    _Irp: *mut IRP,
) -> NTSTATUS {
    check_client(c"WskSocket", Client);
    STATUS_NOT_IMPLEMENTED
}

unsafe extern "system" fn WskSocketConnect(
    Client: PWSK_CLIENT,
    _SocketType: u16,
    _Protocol: u32,
    _LocalAddress: *mut SOCKADDR,
    _RemoteAddress: *mut SOCKADDR,
    _Flags: u32,
    _SocketContext: PVOID,
    _Dispatch: *const c_void,
    _OwningProcess: *mut EPROCESS,
    _OwningThread: *mut ETHREAD,
    _SecurityDescriptor: *mut SECURITY_DESCRIPTOR,
    _Irp: *mut IRP,
) -> NTSTATUS {
    check_client(c"WskSocketConnect", Client);
    STATUS_NOT_IMPLEMENTED
}

unsafe extern "system" fn WskControlClient(
    Client: PWSK_CLIENT,
    _ControlCode: u32,
    _InputSize: usize,
    _InputBuffer: PVOID,
    _OutputSize: usize,
    _OutputBuffer: PVOID,
    _OutputSizeReturned: *mut usize,
    _Irp: *mut IRP,
) -> NTSTATUS {
    check_client(c"WskControlClient", Client);
    STATUS_NOT_IMPLEMENTED
}

unsafe extern "system" fn WskGetAddressInfo(
    Client: PWSK_CLIENT,
    _NodeName: *mut UNICODE_STRING,
    _ServiceName: *mut UNICODE_STRING,
    _NameSpace: u32,
    _Provider: *mut GUID,
    _Hints: *mut ADDRINFOEXW,
    _Result: *mut *mut ADDRINFOEXW,
    _OwningProcess: *mut EPROCESS,
    _OwningThread: *mut ETHREAD,
    _Irp: *mut IRP,
) -> NTSTATUS {
    check_client(c"WskGetAddressInfo", Client);
    STATUS_NOT_IMPLEMENTED
}

unsafe extern "system" fn WskFreeAddressInfo(Client: PWSK_CLIENT, _AddrInfo: *mut ADDRINFOEXW) {
    check_client(c"WskFreeAddressInfo", Client);
}

unsafe extern "system" fn WskGetNameInfo(
    Client: PWSK_CLIENT,
    _SockAddr: *mut SOCKADDR,
    _SockAddrLength: u32,
    _NodeName: *mut UNICODE_STRING,
    _ServiceName: *mut UNICODE_STRING,
    _Flags: u32,
    _OwningProcess: *mut EPROCESS,
    _OwningThread: *mut ETHREAD,
    _Irp: *mut IRP,
) -> NTSTATUS {
    check_client(c"WskGetNameInfo", Client);
    STATUS_NOT_IMPLEMENTED
}

// ---------------------------------------------------------------------------------------------
// The bridge variant's WskRegister family: Wine's own, passed through, so that a WskRegister
// client gets Wine's provider with this image's IoSetCompletionRoutineEx in place.

/// `WskRegister`, passed to Wine's netio.sys.
///
/// # Safety
/// As the C function.
#[cfg(feature = "bridge")]
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskRegister(
    WskClientNpi: *const abi::WSK_CLIENT_NPI,
    WskRegistration: *mut abi::WSK_REGISTRATION,
) -> NTSTATUS {
    // SAFETY: NULL or the caller's client NPI, valid during the call.
    if let Some(npi) = unsafe { WskClientNpi.as_ref() } {
        // Its dispatch is a static of the client's image: as in NmrRegisterClient.
        lifetime::pin_client(npi.Dispatch.cast(), c"WSK_CLIENT_DISPATCH");
    }
    match bridge::functions() {
        Ok(functions) => {
            // SAFETY: the caller's arguments, as it passed them.
            let status = unsafe { (functions.register)(WskClientNpi, WskRegistration) };
            log!(
                "bridge: WskRegister passed to Wine's netio.sys: 0x%08X",
                hex(status)
            );
            status
        }
        Err(status) => status,
    }
}

/// `WskCaptureProviderNPI`, passed to Wine's netio.sys.
///
/// # Safety
/// As the C function.
#[cfg(feature = "bridge")]
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskCaptureProviderNPI(
    WskRegistration: *mut abi::WSK_REGISTRATION,
    WaitTimeout: u32,
    WskProviderNpi: *mut abi::WSK_PROVIDER_NPI,
) -> NTSTATUS {
    match bridge::functions() {
        // SAFETY: the caller's arguments, as it passed them.
        Ok(functions) => unsafe {
            (functions.capture)(WskRegistration, WaitTimeout, WskProviderNpi)
        },
        Err(status) => status,
    }
}

/// `WskReleaseProviderNPI`, passed to Wine's netio.sys.
///
/// # Safety
/// As the C function.
#[cfg(feature = "bridge")]
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskReleaseProviderNPI(WskRegistration: *mut abi::WSK_REGISTRATION) {
    if let Ok(functions) = bridge::functions() {
        // SAFETY: the caller's argument, as it passed it.
        unsafe { (functions.release)(WskRegistration) };
    }
}

/// `WskDeregister`, passed to Wine's netio.sys.
///
/// # Safety
/// As the C function.
#[cfg(feature = "bridge")]
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WskDeregister(WskRegistration: *mut abi::WSK_REGISTRATION) {
    if let Ok(functions) = bridge::functions() {
        // SAFETY: the caller's argument, as it passed it.
        unsafe { (functions.deregister)(WskRegistration) };
    }
}

// ---------------------------------------------------------------------------------------------
// Image glue.

/// The image entry point: installs the image lifetime emulation ([`lifetime::install`], once;
/// the first registration would install it too).
///
/// Every variant imports `ntdll.dll` (the loader functions of [`loader`]), and Wine's loader
/// then treats the image as an ordinary DLL and calls this as `DllMain` (at process and thread
/// attach and detach), whose `FALSE` fails the load (`STATUS_DLL_INIT_FAILED`): it answers 1,
/// which is `TRUE` for `DllMain` and a success status for `DriverEntry` alike.
///
/// # Safety
/// Called by the loader.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn DriverEntry(
    _DriverObject: *mut DRIVER_OBJECT,
    _RegistryPath: *const UNICODE_STRING,
) -> NTSTATUS {
    log!("DriverEntry (variant %s)", VARIANT.as_ptr());
    lifetime::install();
    1
}

/// `DllInitialize` of an export driver: logged, nothing to do.
///
/// # Safety
/// Called by the I/O manager.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DllInitialize(_RegistryPath: *const UNICODE_STRING) -> NTSTATUS {
    log!("DllInitialize (variant %s)", VARIANT.as_ptr());
    STATUS_SUCCESS
}

/// `DllUnload` of an export driver: logged, nothing to do.
///
/// # Safety
/// Called by the I/O manager.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DllUnload() -> NTSTATUS {
    log!("DllUnload");
    STATUS_SUCCESS
}

// The panic handler (bug check "RPNC") and `_fltused`: the drivers' runtime crate.
extern crate wsk_rt as _;
