//! The client's run-time objects from registration to unload: its device object (which holds the
//! driver image while the I/O manager runs the client's work items), the client-wide [`Gate`] that
//! counts queued work items, the count of binding slots the unload's sweep still waits for (the
//! references themselves are counted by their slots: [`crate::binding`]), and the events the
//! unload waits on.
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
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::binding::BindingSlot;
use crate::client::Client;
use crate::gate::{Close, Closer, Gate, Generation, Leave, Refused};
use crate::log::log;
use crate::spin_lock::SpinLock;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    DEVICE_OBJECT, DRIVER_OBJECT, Executive, FILE_DEVICE_SECURE_OPEN, FILE_DEVICE_UNKNOWN,
    IRP_MJ_INTERNAL_DEVICE_CONTROL, IoCreateDevice, IoDeleteDevice, KEVENT, KeInitializeEvent,
    KeSetEvent, KeWaitForSingleObject, KernelMode, NotificationEvent, STATUS_TIMEOUT,
};
use crate::task::{self, TaskList, TaskRef};
use crate::timer::TimerQueue;

/// How long one wait of the unload lasts before it logs what it still waits for and waits again.
const DRAIN_LOG_INTERVAL_100NS: i64 = -50_000_000; // 5 s, relative

/// The client's run-time state (inside [`crate::ClientState`]).
pub struct Runtime {
    /// The client's device object; NULL when not registered.
    device: AtomicPtr<DEVICE_OBJECT>,
    /// Every queued or running work item of the client is inside; closed when the unload begins.
    work: Gate,
    /// The generation of the work gate's reservation (see [`Gate::reserve`]).
    work_generation: AtomicU64,
    /// During the unload's sweep: the slots still holding references, plus one until the sweep
    /// has gone over every slot.
    sweeping: AtomicU32,
    /// Set when the last swept slot with references was left.
    references_drained: UnsafeCell<KEVENT>,
    /// Set by the last work item finished after the unload closed `work`.
    work_drained: UnsafeCell<KEVENT>,
    /// The unload began (the embedder was notified once).
    unloading: AtomicBool,
    /// The client's live tasks ([`crate::task`]), which the unload cancels.
    tasks: SpinLock<TaskList>,
    /// How many tasks are listed (or being listed): the unload takes the task lock only when
    /// there are some.
    live_tasks: AtomicUsize,
    /// The client's timer ([`crate::timer`]).
    pub(crate) timers: TimerQueue,
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
            work: Gate::new(),
            work_generation: AtomicU64::new(0),
            sweeping: AtomicU32::new(0),
            references_drained: UnsafeCell::new(KEVENT { Header: [0; 3] }),
            work_drained: UnsafeCell::new(KEVENT { Header: [0; 3] }),
            unloading: AtomicBool::new(false),
            tasks: SpinLock::new(TaskList::new()),
            live_tasks: AtomicUsize::new(0),
            timers: TimerQueue::new(),
            wsk: crate::wsk_register::WskRegisterState::new(),
        }
    }

    /// The client's device object (NULL before registration and after unload).
    pub(crate) fn device(&self) -> *mut DEVICE_OBJECT {
        self.device.load(Ordering::Acquire)
    }

    /// Whether the client is registered (from its start to the end of its unload).
    pub(crate) fn is_registered(&self) -> bool {
        self.work.is_reserved()
    }

    /// Creates the device object, initialises the events and opens the work gate.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    pub(crate) fn start<C: Client>(&self, driver: *mut DRIVER_OBJECT) -> Result<(), NtError> {
        let Some(work) = self.work.reserve() else {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "register: the client is registered already"
            );
            return Err(NtError::INVALID_DEVICE_STATE);
        };
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
            self.work.free(work);
            return Err(status);
        }
        self.device.store(device, Ordering::Release);
        // The library's dispatch routine: requests no provider took are sent to this device,
        // which completes them (`crate::irp`). The driver's own devices must not need this major
        // function (Registration::register says so).
        // SAFETY: the caller's DRIVER_OBJECT (DriverEntry's), written before any IRP can reach it.
        let table = unsafe { &mut (*driver).MajorFunction };
        if let Some(entry) = table.get_mut(usize::from(IRP_MJ_INTERNAL_DEVICE_CONTROL)) {
            *entry = crate::irp::dispatch_own as *mut core::ffi::c_void;
        }
        // SAFETY: the events are in static, non-paged memory and nothing uses them yet (the work
        // gate is not open, no sweep has begun); PASSIVE_LEVEL.
        unsafe { KeInitializeEvent(self.references_drained.get(), NotificationEvent, 0) };
        // SAFETY: as above.
        unsafe { KeInitializeEvent(self.work_drained.get(), NotificationEvent, 0) };
        self.unloading.store(false, task::LIVE_ORDER);
        let opened = self.work.open(work);
        debug_assert!(opened, "gate reserved just above");
        Ok(())
    }

    /// A swept slot's last reference is gone; the last such slot wakes the unload. IRQL <=
    /// `DISPATCH_LEVEL`.
    pub(crate) fn slot_drained(&self) {
        if self.sweeping.fetch_sub(1, Ordering::AcqRel) == 1 {
            // SAFETY: initialised by `start`; IRQL <= DISPATCH_LEVEL with Wait FALSE.
            let _ = unsafe { KeSetEvent(self.references_drained.get(), 0, 0) };
        }
    }

    /// Enters the work gate (a work item about to be queued).
    pub(crate) fn enter_work(&self) -> Result<(), Unavailable> {
        self.work.enter().map_err(|(refused_as, leave)| {
            // The refused entry left at once; its leave may be the last the unload waits for.
            self.work_left(leave);
            refused(refused_as)
        })
    }

    /// Leaves the work gate: the last thing a work item of the client does (it runs under the
    /// I/O manager's reference on the device object, so the image stays while it returns).
    pub(crate) fn leave_work(&self) {
        self.work_left(self.work.leave());
    }

    /// Acts on a leave of the work gate: the last one after the unload closed it wakes the unload.
    fn work_left(&self, leave: Leave) {
        if let Leave::LastOfClosing { .. } = leave {
            // SAFETY: initialised by `start`; IRQL <= DISPATCH_LEVEL with Wait FALSE.
            let _ = unsafe { KeSetEvent(self.work_drained.get(), 0, 0) };
        }
    }

    /// Whether the unload has begun.
    pub(crate) fn is_unloading(&self) -> bool {
        self.unloading.load(Ordering::Acquire)
    }

    /// Lists a new task, unless the unload has begun (then `Err`: the unload's cancellation
    /// would miss it). IRQL <= `DISPATCH_LEVEL`.
    ///
    /// With [`Runtime::cancel_tasks`]: the count goes up before the unload flag is read, and the
    /// unload sets the flag before it reads the count (all sequentially consistent), so either
    /// the unload sees the task counted and takes the lock (the task is listed by then, or sees
    /// the flag under the lock), or the spawn sees the flag.
    pub(crate) fn insert_task(&self, header: TaskRef) -> Result<(), ()> {
        self.live_tasks.fetch_add(1, task::LIVE_ORDER);
        let mut list = self.tasks.lock();
        if self.unloading.load(task::LIVE_ORDER) {
            drop(list);
            self.live_tasks.fetch_sub(1, task::LIVE_ORDER);
            return Err(());
        }
        task::list_insert(&mut list, header);
        Ok(())
    }

    /// Takes a completing task off the list. IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn remove_task(&self, header: TaskRef) {
        let mut list = self.tasks.lock();
        task::list_remove(&mut list, header);
        drop(list);
        self.live_tasks.fetch_sub(1, task::LIVE_ORDER);
    }

    /// The unload's cancellation of every live task (after [`Runtime::close_references`] set the
    /// unload flag). IRQL <= `DISPATCH_LEVEL`.
    pub(crate) fn cancel_tasks(&self) -> usize {
        let live = self.live_tasks.load(task::LIVE_ORDER);
        if live > 0 {
            task::cancel_all(&self.tasks.lock());
        }
        live
    }

    /// Begins the unload: sweeps every slot — no new reference or attach from now on. Returns
    /// how many references are still live, and whether the unload must wait for them.
    pub(crate) fn close_references(&self, slots: &[BindingSlot]) -> (u32, bool) {
        self.unloading.store(true, task::LIVE_ORDER);
        // Every slot is counted before the sweep, plus one: a slot drained at once (its last
        // reference leaving) cannot bring the count to zero, and wake the unload, while others
        // are still to be swept. The idle slots and the extra one go at the end, at once.
        #[allow(clippy::cast_possible_truncation)] // a handful of slots
        let all = slots.len() as u32;
        self.sweeping.store(all + 1, Ordering::Release);
        let (mut references, mut idle) = (0_u32, 0_u32);
        for slot in slots {
            match slot.sweep() {
                Close::Idle => idle += 1,
                Close::Pending(count) => references = references.saturating_add(count),
            }
        }
        let wait = self.sweeping.fetch_sub(idle + 1, Ordering::AcqRel) != idle + 1;
        (references, wait)
    }

    /// No new work item from now on. Returns how many are queued or running.
    pub(crate) fn close_work(&self) -> u32 {
        count(self.work.close(Closer::Owner))
    }

    /// Waits, when [`Runtime::close_references`] said so, until the `references` it counted are
    /// released, logging every 5 s while it lasts.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    pub(crate) fn wait_references<C: Client>(&self, wait: bool, references: u32) {
        if wait {
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

    /// Deletes the device object — unless `keep_device` (the deregistration failed: the device
    /// object keeps the image mapped for NMR's later calls, and is never deleted) — ends the sweep
    /// of `slots` and frees the work gate for a later registration.
    ///
    /// IRQL: `PASSIVE_LEVEL`.
    pub(crate) fn stop(&self, slots: &[BindingSlot], keep_device: bool) {
        let device = self.device.swap(ptr::null_mut(), Ordering::AcqRel);
        if !device.is_null() && !keep_device {
            // SAFETY: the device object `start` created, deleted once; PASSIVE_LEVEL. The object
            // (and the image) stays until the I/O manager's last reference is gone.
            unsafe { IoDeleteDevice(device) };
        }
        for slot in slots {
            slot.unsweep();
        }
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
        Refused::Closed | Refused::Swept | Refused::Full => Unavailable::Unloading,
    }
}

/// Waits for `event`, logging every 5 s.
fn wait_logged<C: Client>(event: *mut KEVENT, what: &core::ffi::CStr, count: u32) {
    log!(
        C,
        DPFLTR_INFO_LEVEL,
        "unload: waiting for %u %s",
        count,
        what
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
            what
        );
    }
}
