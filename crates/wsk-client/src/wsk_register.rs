//! The `WskRegister` backend: the helper layer Microsoft recommends over raw NMR
//! ("Registering a Winsock Kernel Application"), behind the same API as the NMR backend —
//! [`crate::provider::BindingRef`]s, [`crate::Client::on_detach`] and the unload order.
//!
//! `Registration::register` calls `register`: `WskRegister` with the client's highest version
//! and one `WskCaptureProviderNPI` with `WSK_NO_WAIT`; a capture answered `STATUS_NOINTERFACE`
//! (the provider does not support that version) re-registers with the next version. It does not
//! call `WskQueryProviderCharacteristics`: the capture's answer says the same, and Wine's
//! netio.sys exports that function as an unimplemented stub whose first call kills the driver's
//! host process. It never blocks `DriverEntry` (a capture that waits there can deadlock the boot)
//! and never waits in a work item ("System Worker Threads": work items must be short): when the
//! provider is not ready, a task of the client ([`crate::task`]) tries `WSK_NO_WAIT` again at
//! once, then every [`CAPTURE_RETRY`] ([`crate::timer::sleep`]), until it succeeds, fails for
//! good, or the unload cancels it — a machine whose WSK subsystem never comes (safe mode, an early boot start) costs
//! a timer, not a worker thread. (The other way the issue allowed, a system thread of the
//! client's that waits with a timeout and is joined at the unload, would hold a thread for as
//! long as the subsystem is missing.) The captured NPI becomes the client's one binding. The
//! unload (`deregister`) releases it (`WskReleaseProviderNPI`) and calls `WskDeregister`, which
//! returns once every socket is closed: by then every reference is gone.
//!
//! IRQL: `PASSIVE_LEVEL` throughout (the capture task runs at `PASSIVE_LEVEL`).

use core::cell::UnsafeCell;
use core::future::Future;
use core::pin::Pin;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use core::task::{Context, Poll};

use crate::binding::{self, BindingContext};
use crate::client::Client;
use crate::log::log;
use crate::pool::PoolBox;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    WSK_CLIENT_NPI, WSK_NO_WAIT, WSK_PROVIDER_NPI, WSK_REGISTRATION, WskCaptureProviderNPI,
    WskDeregister, WskRegister, WskReleaseProviderNPI,
};
use crate::task;
use crate::time::Duration;
use crate::timer;
use crate::version::{Dispatch, WskVersion};

/// How long the capture task waits between two tries (`WSK_NO_WAIT` each).
pub const CAPTURE_RETRY: Duration = Duration::from_secs(1);

/// The backend's state, inside the client's [`crate::runtime::Runtime`].
pub struct WskRegisterState {
    /// `WSK_REGISTRATION`: must stay allocated until `WskDeregister` returns (a static here).
    registration: UnsafeCell<WSK_REGISTRATION>,
    /// `WSK_CLIENT_NPI`: what `WskRegister` registered; must stay valid while registered.
    npi: UnsafeCell<WSK_CLIENT_NPI>,
    /// `WskRegister` succeeded and `WskDeregister` was not called yet.
    registered: AtomicBool,
    /// Which of the client's versions is registered (an index into `Client::VERSIONS`).
    version_index: AtomicUsize,
    /// The provider NPI is captured (one `WskReleaseProviderNPI` owed).
    captured: AtomicBool,
    /// The binding made from the captured NPI.
    binding: AtomicPtr<BindingContext>,
}

// SAFETY: the UnsafeCells are written only while registering and deregistering (`PASSIVE_LEVEL`,
// from `Registration`, never concurrently with each other — the capture task that also uses
// them is waited for before `deregister`), and otherwise only passed to the WSK registration
// functions, which synchronise themselves.
unsafe impl Sync for WskRegisterState {}

impl WskRegisterState {
    pub(crate) const fn new() -> Self {
        Self {
            registration: UnsafeCell::new(WSK_REGISTRATION {
                ReservedRegistrationState: 0,
                ReservedRegistrationContext: ptr::null_mut(),
                ReservedRegistrationLock: 0,
            }),
            npi: UnsafeCell::new(WSK_CLIENT_NPI {
                ClientContext: ptr::null_mut(),
                Dispatch: ptr::null(),
            }),
            registered: AtomicBool::new(false),
            version_index: AtomicUsize::new(0),
            captured: AtomicBool::new(false),
            binding: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

fn state<C: Client>() -> &'static WskRegisterState {
    &C::state().runtime.wsk
}

/// `WskRegister` with the client dispatch of `C::VERSIONS[index]`.
fn register_version<C: Client>(index: usize) -> Result<(), NtError> {
    let wsk = state::<C>();
    let Some(dispatch) = Dispatch::<C>::TABLES.get(index) else {
        return Err(NtError::NOINTERFACE);
    };
    // SAFETY: PASSIVE_LEVEL, not registered: nothing else reads the NPI now.
    unsafe {
        wsk.npi.get().write(WSK_CLIENT_NPI {
            ClientContext: ptr::from_ref(C::state())
                .cast::<core::ffi::c_void>()
                .cast_mut(),
            Dispatch: dispatch,
        });
    };
    // SAFETY: PASSIVE_LEVEL; the NPI and the registration are in the client's static state,
    // valid until WskDeregister returns.
    let status = NtStatus::from_raw(unsafe { WskRegister(wsk.npi.get(), wsk.registration.get()) });
    let version = C::VERSIONS.get(index).copied().unwrap_or(WskVersion::V1_0);
    log!(
        C,
        DPFLTR_INFO_LEVEL,
        "WskRegister with WSK %u.%u: 0x%08X",
        u32::from(version.major()),
        u32::from(version.minor()),
        status.bits()
    );
    status.into_result()?;
    wsk.registered.store(true, Ordering::Release);
    wsk.version_index.store(index, Ordering::Release);
    Ok(())
}

/// `WskDeregister`, once. Blocks until every captured NPI is released and every socket closed.
fn deregister_once<C: Client>() {
    let wsk = state::<C>();
    if wsk.registered.swap(false, Ordering::AcqRel) {
        // SAFETY: PASSIVE_LEVEL; the registration WskRegister initialised, deregistered once.
        unsafe { WskDeregister(wsk.registration.get()) };
    }
}

/// Registers client `C` through `WskRegister` and captures the provider if it is ready; else
/// spawns the capture task. The runtime is started.
///
/// # Errors
/// The status of `WskRegister`, or of spawning the capture task (nothing stays registered).
pub(crate) fn register<C: Client>() -> Result<(), NtError> {
    register_version::<C>(0)?;
    match capture::<C>() {
        Capture::Done => Ok(()),
        Capture::Failed(status) => {
            deregister_once::<C>();
            Err(status)
        }
        Capture::NotReady => {
            log!(
                C,
                DPFLTR_INFO_LEVEL,
                "WSK provider not ready (0x%08X): capturing from a task, every %u ms",
                NtStatus::DEVICE_NOT_READY.bits(),
                u32::try_from(CAPTURE_RETRY.as_millis()).unwrap_or(u32::MAX)
            );
            if let Err(status) = task::spawn::<C, _>(capture_later::<C>()) {
                deregister_once::<C>();
                return Err(status);
            }
            Ok(())
        }
    }
}

enum Capture {
    Done,
    NotReady,
    Failed(NtError),
}

/// One `WskCaptureProviderNPI` with `WSK_NO_WAIT` (it never blocks), with the version fallback on
/// `STATUS_NOINTERFACE`.
fn capture<C: Client>() -> Capture {
    let wsk = state::<C>();
    loop {
        let mut npi = WSK_PROVIDER_NPI {
            Client: ptr::null_mut(),
            Dispatch: ptr::null(),
        };
        // SAFETY: a registered registration; a valid out-pointer; no wait (WSK_NO_WAIT).
        let status = NtStatus::from_raw(unsafe {
            WskCaptureProviderNPI(wsk.registration.get(), WSK_NO_WAIT, &raw mut npi)
        });
        if status == NtStatus::SUCCESS {
            wsk.captured.store(true, Ordering::Release);
            return match attach_captured::<C>(npi) {
                Ok(()) => Capture::Done,
                Err(status) => Capture::Failed(status),
            };
        }
        if status == NtStatus::DEVICE_NOT_READY {
            return Capture::NotReady;
        }
        if status == NtStatus::NOINTERFACE {
            let next = wsk.version_index.load(Ordering::Acquire) + 1;
            if next < C::VERSIONS.len() {
                log!(
                    C,
                    DPFLTR_WARNING_LEVEL,
                    "WskCaptureProviderNPI: STATUS_NOINTERFACE, falling back"
                );
                deregister_once::<C>();
                if let Err(status) = register_version::<C>(next) {
                    return Capture::Failed(status);
                }
                continue;
            }
        }
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "WskCaptureProviderNPI failed: 0x%08X",
            status.bits()
        );
        // An answer none of the documented ones (a success code other than STATUS_SUCCESS,
        // say) is a failure too: the capture gave no NPI.
        return Capture::Failed(NtError::new(status).unwrap_or(NtError::UNSUCCESSFUL));
    }
}

/// Makes the captured NPI the client's binding.
fn attach_captured<C: Client>(npi: WSK_PROVIDER_NPI) -> Result<(), NtError> {
    let wsk = state::<C>();
    let registered = C::VERSIONS
        .get(wsk.version_index.load(Ordering::Acquire))
        .copied()
        .unwrap_or(WskVersion::V1_0);
    let Some(dispatch) = NonNull::new(npi.Dispatch.cast_mut()) else {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "WskCaptureProviderNPI returned no dispatch"
        );
        release_capture::<C>();
        return Err(NtError::UNSUCCESSFUL);
    };
    // SAFETY: the provider's dispatch, valid while captured; `Version` is its first member.
    let provider_version = WskVersion::from_raw(unsafe { (*dispatch.as_ptr()).Version });
    // The provider's table says which members it has; never use more than it says.
    let version = registered.min(provider_version);
    let Some(slot) = binding::reserve(&C::state().slots, ptr::null_mut()) else {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "capture: every binding slot is in use"
        );
        release_capture::<C>();
        return Err(NtError::INSUFFICIENT_RESOURCES);
    };
    let mut context = BindingContext::new(ptr::null_mut(), slot);
    context.wsk_client = npi.Client;
    context.provider_dispatch = npi.Dispatch.cast();
    context.version = version;
    let context = match PoolBox::try_new::<C>(context, C::POOL_TAG) {
        Ok(context) => context,
        Err(status) => {
            slot.free();
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "capture: no pool for the binding context"
            );
            release_capture::<C>();
            return Err(status);
        }
    };
    slot.publish(context.as_ptr());
    wsk.binding
        .store(context.into_raw().as_ptr(), Ordering::Release);
    let opened = slot.open();
    log!(
        C,
        DPFLTR_INFO_LEVEL,
        "captured the WSK provider NPI, attached at WSK %u.%u%s",
        u32::from(version.major()),
        u32::from(version.minor()),
        if opened { c"" } else { c" (unloading)" }
    );
    Ok(())
}

/// `WskReleaseProviderNPI`, once per capture.
fn release_capture<C: Client>() {
    let wsk = state::<C>();
    if wsk.captured.swap(false, Ordering::AcqRel) {
        // SAFETY: a captured NPI of this registration, released once; IRQL <= DISPATCH_LEVEL.
        unsafe { WskReleaseProviderNPI(wsk.registration.get()) };
    }
}

/// The capture task: `WSK_NO_WAIT` at once (the subsystem may have come since `DriverEntry`),
/// then every [`CAPTURE_RETRY`], until the capture is done, fails for good, or the unload cancels
/// the task. (Written by hand, as every future of the library.)
struct CaptureLater<C: Client> {
    sleep: timer::Sleep<C>,
    /// `sleep` is the wait before the next try (else: try now).
    waiting: bool,
}

fn capture_later<C: Client>() -> CaptureLater<C> {
    CaptureLater {
        sleep: timer::sleep::<C>(CAPTURE_RETRY),
        waiting: false,
    }
}

impl<C: Client> Future for CaptureLater<C> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `sleep` is pinned with `self` (structural): it is never moved out, only
        // replaced in place by `Pin::set`, which drops the old one where it is; `waiting` is a
        // plain flag, not pinned.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: as above.
        let mut sleep = unsafe { Pin::new_unchecked(&mut this.sleep) };
        loop {
            if this.waiting {
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => {
                        log!(C, DPFLTR_INFO_LEVEL, "capture: given up, the unload began");
                        return Poll::Ready(());
                    }
                    Poll::Ready(Ok(())) => this.waiting = false,
                }
            }
            match capture::<C>() {
                Capture::NotReady => {
                    sleep.set(timer::sleep::<C>(CAPTURE_RETRY));
                    this.waiting = true;
                }
                Capture::Done | Capture::Failed(_) => return Poll::Ready(()),
            }
        }
    }
}

/// Step 4 of the unload for this backend: detach the binding (idle by now: every reference is
/// gone), free it, release the NPI, `WskDeregister`.
///
/// IRQL: `PASSIVE_LEVEL`.
pub(crate) fn deregister<C: Client>() -> NtStatus {
    let wsk = state::<C>();
    if let Some(context) = NonNull::new(wsk.binding.swap(ptr::null_mut(), Ordering::AcqRel)) {
        // SAFETY: the context `attach_captured` gave up with `into_raw`, made by
        // `PoolBox::try_new::<C>` with `C::POOL_TAG`; no reference is left to use it.
        let context = unsafe { PoolBox::from_raw::<C>(context, C::POOL_TAG) };
        // SAFETY: the context is owned here; its slot field is never written after attach.
        let slot = unsafe { (*context.as_ptr()).slot };
        // Idle by now: the detach ends at once (there is no NMR detach to complete).
        let _ = slot.begin_detach().end::<C>();
        slot.free();
        drop(context);
        log!(
            C,
            DPFLTR_INFO_LEVEL,
            "WskReleaseProviderNPI: binding context freed"
        );
    }
    release_capture::<C>();
    deregister_once::<C>();
    log!(C, DPFLTR_INFO_LEVEL, "WskDeregister returned");
    NtStatus::SUCCESS
}
