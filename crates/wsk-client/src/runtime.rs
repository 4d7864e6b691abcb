//! The client's run-time objects from registration to unload: its device object (which holds the
//! driver image while the I/O manager runs the client's work items), the client-wide [`Gate`]s that
//! count binding references and queued work items, and the events the unload waits on.
//!
//! Why a device object: Windows unmaps a driver image once `DriverUnload` has returned and the last
//! reference to the driver object is gone. A device object references its driver object until it
//! is deleted and released (`IoCreateDevice` and `IoDeleteDevice`, wdm.h); `IoQueueWorkItem`
//! "prevents the associated device object, and therefore the driver, from being unloaded while the
//! work item is queued or running" (its Remarks). So code that runs in a work item of this client
//! can be the last code of the image to run: the I/O manager, not the image, drops the last
//! reference after it returns.
//!
//! IRQL: starting, stopping and the unload's waits at `PASSIVE_LEVEL`; the enter/leave functions
//! at <= `DISPATCH_LEVEL`, non-blocking.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};

use crate::client::Client;
use crate::gate::{Close, Gate, Generation, Leave, Refused};
use crate::log::log;
use crate::status::NtStatus;
use crate::sys::{
    DEVICE_OBJECT, DRIVER_OBJECT, Executive, FILE_DEVICE_SECURE_OPEN, FILE_DEVICE_UNKNOWN,
    IoCreateDevice, IoDeleteDevice, KEVENT, KeInitializeEvent, KeSetEvent, KeWaitForSingleObject,
    KernelMode, NotificationEvent, STATUS_TIMEOUT,
};

/// How long one wait of the unload lasts before it logs what it still waits for and waits again.
const DRAIN_LOG_INTERVAL_100NS: i64 = -50_000_000; // 5 s, relative

/// The client's run-time state (inside [`crate::ClientState`]).
pub struct Runtime {
    /// The client's device object; NULL when not registered.
    device: AtomicPtr<DEVICE_OBJECT>,
    /// Every live binding reference is inside; closed when the unload begins.
    references: Gate,
    /// Every queued or running work item of the client is inside; closed when the unload begins.
    work: Gate,
    /// The generations of the two gates' reservations (see [`Gate::reserve`]).
    references_generation: AtomicU64,
    work_generation: AtomicU64,
    /// Set by the last reference released after the unload closed `references`.
    references_drained: UnsafeCell<KEVENT>,
    /// Set by the last work item finished after the unload closed `work`.
    work_drained: UnsafeCell<KEVENT>,
    /// The unload began (the embedder was notified once).
    unloading: AtomicBool,
    /// The `WskRegister` backend's state (unused by the NMR backend).
    pub(crate) wsk: crate::wsk_register::WskRegisterState,
}

// SAFETY: the atomics and gates are thread-safe; the two KEVENTs are only passed to Ke* routines,
// which synchronise access to them themselves, after `start` initialised them (before any other
// thread can reach them: nothing enters the gates before they are opened there).
unsafe impl Sync for Runtime {}

/// Why a reference or a work item could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// The client is not registered.
    NotRegistered,
    /// The client's unload has begun.
    Unloading,
}

impl Runtime {
    pub(crate) const fn new() -> Self {
        Self {
            device: AtomicPtr::new(ptr::null_mut()),
            references: Gate::new(),
            work: Gate::new(),
            references_generation: AtomicU64::new(0),
            work_generation: AtomicU64::new(0),
            references_drained: UnsafeCell::new(KEVENT { Header: [0; 3] }),
            work_drained: UnsafeCell::new(KEVENT { Header: [0; 3] }),
            unloading: AtomicBool::new(false),
            wsk: crate::wsk_register::WskRegisterState::new(),
        }
    }

    /// The client's device object (NULL before registration and after unload).
    pub(crate) fn device(&self) -> *mut DEVICE_OBJECT {
        self.device.load(Ordering::Acquire)
    }

    /// Creates the device object, initialises the events and opens the gates.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    pub(crate) fn start<C: Client>(&self, driver: *mut DRIVER_OBJECT) -> Result<(), NtStatus> {
        let (Some(references), Some(work)) = (self.references.reserve(), self.work.reserve())
        else {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "register: the client is registered already"
            );
            return Err(NtStatus::INVALID_DEVICE_STATE);
        };
        self.references_generation
            .store(references.raw(), Ordering::Release);
        self.work_generation.store(work.raw(), Ordering::Release);
        let mut device: *mut DEVICE_OBJECT = ptr::null_mut();
        // SAFETY: PASSIVE_LEVEL; `driver` is the caller's DRIVER_OBJECT (DriverEntry's); an
        // unnamed device without extension; `device` is a valid out-pointer.
        let status = NtStatus::from_raw(unsafe {
            IoCreateDevice(
                driver,
                0,
                ptr::null(),
                FILE_DEVICE_UNKNOWN,
                FILE_DEVICE_SECURE_OPEN,
                0,
                &raw mut device,
            )
        });
        if let Err(status) = status.into_result() {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "register: IoCreateDevice failed: 0x%08X",
                status.bits()
            );
            self.references.free(references);
            self.work.free(work);
            return Err(status);
        }
        self.device.store(device, Ordering::Release);
        // SAFETY: the events are in static, non-paged memory and nothing uses them yet (the gates
        // are not open); PASSIVE_LEVEL.
        unsafe { KeInitializeEvent(self.references_drained.get(), NotificationEvent, 0) };
        // SAFETY: as above.
        unsafe { KeInitializeEvent(self.work_drained.get(), NotificationEvent, 0) };
        self.unloading.store(false, Ordering::Release);
        let opened = self.references.open(references) && self.work.open(work);
        debug_assert!(opened, "gates reserved just above");
        Ok(())
    }

    /// Enters the reference gate (a new binding reference).
    pub(crate) fn enter_reference(&self) -> Result<(), Unavailable> {
        self.references.enter().map_err(refused)
    }

    /// Leaves the reference gate; the last reference after the unload began wakes the unload.
    pub(crate) fn leave_reference(&self) {
        if self.references.leave() == Leave::LastOfClosing {
            // SAFETY: initialised by `start`; IRQL <= DISPATCH_LEVEL with Wait FALSE.
            let _ = unsafe { KeSetEvent(self.references_drained.get(), 0, 0) };
        }
    }

    /// Enters the work gate (a work item about to be queued).
    pub(crate) fn enter_work(&self) -> Result<(), Unavailable> {
        self.work.enter().map_err(refused)
    }

    /// Leaves the work gate: the last thing a work item of the client does (it runs under the
    /// I/O manager's reference on the device object, so the image stays while it returns).
    pub(crate) fn leave_work(&self) {
        if self.work.leave() == Leave::LastOfClosing {
            // SAFETY: initialised by `start`; IRQL <= DISPATCH_LEVEL with Wait FALSE.
            let _ = unsafe { KeSetEvent(self.work_drained.get(), 0, 0) };
        }
    }

    /// Whether the unload has begun.
    pub(crate) fn is_unloading(&self) -> bool {
        self.unloading.load(Ordering::Acquire)
    }

    /// Begins the unload: no new reference from now on. Returns how many are still live.
    pub(crate) fn close_references(&self) -> u32 {
        self.unloading.store(true, Ordering::Release);
        count(self.references.close())
    }

    /// No new work item from now on. Returns how many are queued or running.
    pub(crate) fn close_work(&self) -> u32 {
        count(self.work.close())
    }

    /// Waits until the `references` counted by [`Runtime::close_references`] are released,
    /// logging every 5 s while it lasts.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    pub(crate) fn wait_references<C: Client>(&self, references: u32) {
        if references > 0 {
            wait_logged::<C>(self.references_drained.get(), c"reference(s)", references);
        }
    }

    /// Waits until the `work` items counted by [`Runtime::close_work`] have finished.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    pub(crate) fn wait_work<C: Client>(&self, work: u32) {
        if work > 0 {
            wait_logged::<C>(self.work_drained.get(), c"work item(s)", work);
        }
    }

    /// Deletes the device object and frees the gates for a later registration.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    pub(crate) fn stop(&self) {
        let device = self.device.swap(ptr::null_mut(), Ordering::AcqRel);
        if !device.is_null() {
            // SAFETY: the device object `start` created, deleted once; PASSIVE_LEVEL. The object
            // (and the image) stays until the I/O manager's last reference is gone.
            unsafe { IoDeleteDevice(device) };
        }
        self.references.free(Generation::from_raw(
            self.references_generation.load(Ordering::Acquire),
        ));
        self.work.free(Generation::from_raw(
            self.work_generation.load(Ordering::Acquire),
        ));
    }
}

fn count(close: Close) -> u32 {
    match close {
        Close::Idle => 0,
        Close::Pending(count) => count,
    }
}

fn refused(refused: Refused) -> Unavailable {
    match refused {
        Refused::Free => Unavailable::NotRegistered,
        Refused::Closed | Refused::Full => Unavailable::Unloading,
    }
}

/// Waits for `event`, logging every 5 s.
fn wait_logged<C: Client>(event: *mut KEVENT, what: &core::ffi::CStr, count: u32) {
    log!(
        C,
        DPFLTR_INFO_LEVEL,
        "unload: waiting for %u %s",
        count,
        what.as_ptr()
    );
    loop {
        let timeout = DRAIN_LOG_INTERVAL_100NS;
        // SAFETY: an initialised event in static memory; PASSIVE_LEVEL; `timeout` is a valid
        // relative LARGE_INTEGER for the duration of the call.
        let status = unsafe {
            KeWaitForSingleObject(event.cast(), Executive, KernelMode, 0, &raw const timeout)
        };
        if status != STATUS_TIMEOUT {
            return;
        }
        log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "unload: still waiting for %s",
            what.as_ptr()
        );
    }
}
