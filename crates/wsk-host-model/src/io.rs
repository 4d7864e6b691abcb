//! The model's I/O manager: device objects and work items.
//!
//! A device object holds the driver image (see `image.rs`); a queued work item holds its device
//! object until the routine has returned, as `IoQueueWorkItem` does.

use wsk_sys::{
    DEVICE_OBJECT, DRIVER_OBJECT, IO_WORKITEM, NTSTATUS, PIO_WORKITEM_ROUTINE, PVOID,
    UNICODE_STRING, WORK_QUEUE_TYPE,
};

use crate::Status;
use crate::image::{self, Guard};
use crate::state::{self, Event, State};

/// A device object of the driver.
pub(crate) struct Device {
    /// `IoDeleteDevice` was called.
    pub deleted: bool,
    /// References: the creation (until deleted) and each running work item.
    pub refs: usize,
    /// Its driver object (whose dispatch routines `IofCallDriver` calls).
    pub driver: usize,
    /// The object's memory (opaque to the driver).
    pub _memory: Box<[u64; 8]>,
}

/// A work item.
pub(crate) struct WorkItem {
    pub device: usize,
    pub queued: bool,
    pub _memory: Box<[u64; 4]>,
}

pub(crate) fn release_device(s: &mut State, device: usize) {
    let gone = match s.devices.get_mut(&device) {
        Some(d) => {
            d.refs -= 1;
            d.refs == 0
        }
        None => false,
    };
    if gone {
        s.devices.remove(&device);
        s.image.devices -= 1;
        image::settle(s);
    }
}

/// `IoCreateDevice`: an unnamed device object of the driver (names are not modelled).
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoCreateDevice(
    DriverObject: *mut DRIVER_OBJECT,
    DeviceExtensionSize: u32,
    DeviceName: *const UNICODE_STRING,
    _DeviceType: u32,
    _DeviceCharacteristics: u32,
    _Exclusive: u8,
    DeviceObject: *mut *mut DEVICE_OBJECT,
) -> NTSTATUS {
    let created = state::with(|s| {
        let injected = image::driver_calls(s, "IoCreateDevice");
        if let Some(status) = injected.or(s.create_device_failure) {
            s.events.push(Event::IoCreateDevice { status });
            return Err(status);
        }
        if DeviceExtensionSize != 0 || !DeviceName.is_null() {
            s.violation(
                "IoCreateDevice: the model only makes unnamed devices without extension".into(),
            );
        }
        let memory = Box::new([0u64; 8]);
        let address = memory.as_ptr() as usize;
        s.devices.insert(
            address,
            Device {
                deleted: false,
                refs: 1,
                driver: DriverObject as usize,
                _memory: memory,
            },
        );
        s.image.devices += 1;
        s.events.push(Event::IoCreateDevice {
            status: Status::SUCCESS,
        });
        Ok(address)
    });
    match created {
        Ok(address) => {
            // SAFETY: per the contract, a valid out-pointer.
            unsafe { DeviceObject.write(address as *mut DEVICE_OBJECT) };
            Status::SUCCESS.raw()
        }
        Err(status) => status.raw(),
    }
}

/// `IoDeleteDevice`: the object goes once its last reference (a running work item) is gone.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoDeleteDevice(DeviceObject: *mut DEVICE_OBJECT) {
    let device = DeviceObject as usize;
    state::with(|s| {
        image::driver_calls(s, "IoDeleteDevice");
        s.events.push(Event::IoDeleteDevice);
        if s.work_items.values().any(|w| w.device == device) {
            s.violation("IoDeleteDevice with work items of the device still allocated".into());
        }
        match s.devices.get_mut(&device) {
            Some(d) if !d.deleted => d.deleted = true,
            _ => {
                s.violation(format!(
                    "IoDeleteDevice on {device:#x}: not a live device object"
                ));
                return;
            }
        }
        release_device(s, device);
    });
}

/// `IoAllocateWorkItem`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoAllocateWorkItem(
    DeviceObject: *mut DEVICE_OBJECT,
) -> *mut IO_WORKITEM {
    let device = DeviceObject as usize;
    state::with(|s| {
        let injected = image::driver_calls(s, "IoAllocateWorkItem").is_some();
        if s.devices.get(&device).is_none_or(|d| d.deleted) {
            s.violation(format!(
                "IoAllocateWorkItem on {device:#x}: not a live device object"
            ));
            return std::ptr::null_mut();
        }
        let nth = s.nth_fails(crate::Failable::WorkItem);
        let fail = s.failing_work_items > 0 || nth || injected;
        s.failing_work_items = s.failing_work_items.saturating_sub(1);
        s.events.push(Event::IoAllocateWorkItem { ok: !fail });
        if fail {
            return std::ptr::null_mut();
        }
        let memory = Box::new([0u64; 4]);
        let address = memory.as_ptr() as usize;
        s.work_items.insert(
            address,
            WorkItem {
                device,
                queued: false,
                _memory: memory,
            },
        );
        address as *mut IO_WORKITEM
    })
}

/// `IoQueueWorkItem`: runs the routine on a worker thread, holding the device object meanwhile.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoQueueWorkItem(
    IoWorkItem: *mut IO_WORKITEM,
    WorkerRoutine: PIO_WORKITEM_ROUTINE,
    _QueueType: WORK_QUEUE_TYPE,
    Context: PVOID,
) {
    let item = IoWorkItem as usize;
    let context = Context as usize;
    let queued = state::with(|s| {
        image::driver_calls(s, "IoQueueWorkItem");
        s.events.push(Event::IoQueueWorkItem);
        let Some(routine) = WorkerRoutine else {
            s.violation("IoQueueWorkItem without a routine".into());
            return None;
        };
        let Some(w) = s.work_items.get_mut(&item) else {
            s.violation(format!(
                "IoQueueWorkItem on {item:#x}: not an allocated work item"
            ));
            return None;
        };
        if w.queued {
            s.violation(format!("IoQueueWorkItem on {item:#x}: already queued"));
            return None;
        }
        w.queued = true;
        let device = w.device;
        if let Some(d) = s.devices.get_mut(&device) {
            d.refs += 1;
        }
        s.running_work_items += 1;
        Some((routine, device))
    });
    let Some((routine, device)) = queued else {
        return;
    };
    // The model's fixed order: a work item queued inside an NMR callback starts once the
    // callbacks running have returned (Windows may run it at once on another processor; both
    // orders are legal, and the gate's protocol is model-checked for every interleaving in
    // crates/wsk-client/tests/loom_gate.rs). Tests then see one order every time.
    let after_callbacks = crate::nmr::inside_callback();
    std::thread::spawn(move || {
        if after_callbacks {
            let _ = state::wait_for(crate::WAIT_LIMIT, |s| s.nmr_callbacks_running == 0);
        }
        // The I/O manager marks the item free to queue again before calling the routine.
        state::with(|s| {
            if let Some(w) = s.work_items.get_mut(&item) {
                w.queued = false;
            }
        });
        let irql = state::with(|s| crate::irql::callback(s, "WorkItemRoutine"));
        IN_WORK_ITEM.with(|w| w.set(true));
        image::run(Guard::Device(device), || {
            // SAFETY: the driver's routine, with the item's device object and its context.
            crate::irql::at(irql, || unsafe {
                routine(device as *mut DEVICE_OBJECT, context as PVOID);
            });
        });
        IN_WORK_ITEM.with(|w| w.set(false));
        state::with(|s| {
            s.running_work_items -= 1;
            release_device(s, device);
        });
    });
    // A DPC that queues a work item (a timer waking a task) wakes someone from a context nothing
    // holds the image for: the DPC is made slow to return (timer.rs).
    crate::timer::note_wake_in_dpc();
}

std::thread_local! {
    /// This thread runs a work item routine of the driver's.
    static IN_WORK_ITEM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records a wait of `what` in a work item routine, when the session checks that work items are
/// short: "System Worker Threads" — a work item routine that waits (for the network, a timer, a
/// provider) holds a thread of a small shared pool, "and the system can deadlock".
pub(crate) fn check_short_work_item(s: &mut State, what: &str) {
    if IN_WORK_ITEM.with(std::cell::Cell::get) {
        s.violation(format!(
            "{what} waits inside a work item routine: work items must be short (System Worker \
             Threads)"
        ));
    }
}

/// `IoFreeWorkItem`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoFreeWorkItem(IoWorkItem: *mut IO_WORKITEM) {
    let item = IoWorkItem as usize;
    state::with(|s| {
        image::driver_calls(s, "IoFreeWorkItem");
        match s.work_items.get(&item) {
            None => s.violation(format!(
                "IoFreeWorkItem on {item:#x}: not an allocated work item"
            )),
            Some(w) if w.queued => {
                s.violation(format!("IoFreeWorkItem on {item:#x} while it is queued"));
            }
            Some(_) => {
                s.work_items.remove(&item);
            }
        }
    });
}
