//! The model's IRPs (`IoAllocateIrp`, `IoSetCompletionRoutineEx`, `IoCancelIrp`, `IoReuseIrp`,
//! `IoFreeIrp`) and
//! how the model's provider completes them: the completion routine runs on the completing thread,
//! holding the device object `IoSetCompletionRoutineEx` named (as the I/O manager does), and must
//! return `STATUS_MORE_PROCESSING_REQUIRED` for an IRP the driver allocated itself.

use wsk_sys::{
    DEVICE_OBJECT, IRP, NTSTATUS, PIO_COMPLETION_ROUTINE, PVOID, STATUS_MORE_PROCESSING_REQUIRED,
};

use crate::Status;
use crate::image::{self, Guard};
use crate::state::{self, Event};

/// An IRP of the driver.
pub(crate) struct Irp {
    /// The routine, its context and the device object it holds while it runs.
    pub completion: Option<(usize, usize, usize)>,
    /// Who holds it: the driver, the provider, the driver it was sent to; or completed.
    pub stage: Stage,
    /// `IoCancelIrp` was called while pending.
    pub cancelled: bool,
    pub _memory: Box<[u64; IRP_WORDS]>,
}

/// Where an IRP of the driver is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The driver's: allocated (perhaps with a routine set), sent nowhere yet.
    Allocated,
    /// Handed to the provider and not completed yet (pending).
    Provider,
    /// Sent to a device of the driver with `IofCallDriver`, not completed yet: the driver may
    /// complete it (it is the driver it was sent to).
    Sent,
    /// Completed (its routine ran): completing it again is a rule broken.
    Completed,
}

/// The model's IRP memory: the 0xD0-byte IRP and room for 2 stack locations of 0x48 bytes.
const IRP_WORDS: usize = (0xD0 + 2 * 0x48) / 8;
/// `sizeof(IRP)`, `sizeof(IO_STACK_LOCATION)` (x64).
const IRP_SIZE: usize = 0xD0;
const STACK_LOCATION_SIZE: usize = 0x48;

/// `IoAllocateIrp`: zeroed memory, `Type` `IO_TYPE_IRP`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoAllocateIrp(StackSize: i8, _ChargeQuota: u8) -> *mut IRP {
    state::with(|s| {
        let injected = image::driver_calls(s, "IoAllocateIrp").is_some();
        let nth = s.nth_fails(crate::Failable::Irp);
        let fail = s.failing_irps > 0 || nth || injected;
        s.failing_irps = s.failing_irps.saturating_sub(1);
        s.events.push(Event::IoAllocateIrp { ok: !fail });
        if !(1..=2).contains(&StackSize) {
            s.violation(format!(
                "IoAllocateIrp with {StackSize} stack locations (the model has room for 1 or 2)"
            ));
        }
        if fail {
            return std::ptr::null_mut();
        }
        let mut memory = Box::new([0u64; IRP_WORDS]);
        let address = memory.as_mut_ptr() as usize;
        let irp = address as *mut IRP;
        let stack = usize::try_from(StackSize.clamp(1, 2)).unwrap_or(1);
        // SAFETY: the model's memory, large enough for the IRP and its stack locations.
        let irp = unsafe { &mut *irp };
        irp.Type = 6; // IO_TYPE_IRP
        irp.StackCount = StackSize;
        irp.CurrentLocation = StackSize + 1;
        // One past the last location: the first IoSetNextIrpStackLocation makes it current.
        irp.Tail.Overlay.CurrentStackLocation =
            (address + IRP_SIZE + stack * STACK_LOCATION_SIZE) as *mut _;
        s.irps.insert(
            address,
            Irp {
                completion: None,
                stage: Stage::Allocated,
                cancelled: false,
                _memory: memory,
            },
        );
        address as *mut IRP
    })
}

/// `IoSetCompletionRoutineEx`: references the device object until the routine has returned.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoSetCompletionRoutineEx(
    DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
    CompletionRoutine: PIO_COMPLETION_ROUTINE,
    Context: PVOID,
    _InvokeOnSuccess: u8,
    _InvokeOnError: u8,
    _InvokeOnCancel: u8,
) -> NTSTATUS {
    let (device, irp) = (DeviceObject as usize, Irp as usize);
    state::with(|s| {
        let injected = image::driver_calls(s, "IoSetCompletionRoutineEx");
        if let Some(status) = injected.or_else(|| s.completion_routine_failure.take()) {
            return status.raw();
        }
        let Some(routine) = CompletionRoutine else {
            s.violation("IoSetCompletionRoutineEx without a routine".into());
            return Status::INVALID_PARAMETER.raw();
        };
        if s.devices.get(&device).is_none_or(|d| d.deleted) {
            s.violation("IoSetCompletionRoutineEx on a device object that is not live".into());
            return Status::INVALID_PARAMETER.raw();
        }
        match s.irps.get_mut(&irp) {
            Some(i) if i.stage != Stage::Provider => {
                let twice = i.completion.is_some();
                let unreused = i.stage == Stage::Completed;
                i.completion = Some((routine as usize, Context as usize, device));
                if twice {
                    s.violation("IoSetCompletionRoutineEx twice on one IRP".into());
                }
                if unreused {
                    // IoCompleteRequest used its stack location: IoReuseIrp makes it new.
                    s.violation(
                        "IoSetCompletionRoutineEx on a completed IRP not reinitialized \
                         (IoReuseIrp)"
                            .into(),
                    );
                }
            }
            _ => {
                s.violation(
                    "IoSetCompletionRoutineEx on an IRP that is not the driver's or is pending"
                        .into(),
                );
                return Status::INVALID_PARAMETER.raw();
            }
        }
        if let Some(d) = s.devices.get_mut(&device) {
            d.refs += 1;
        }
        Status::SUCCESS.raw()
    })
}

/// `IoCancelIrp`: marks it; the model's provider completes a cancelled request with
/// `STATUS_CANCELLED` when it supports cancelling it.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoCancelIrp(Irp: *mut IRP) -> u8 {
    let pending = state::with(|s| {
        image::driver_calls(s, "IoCancelIrp");
        s.events.push(Event::IoCancelIrp);
        match s.irps.get_mut(&(Irp as usize)) {
            Some(i) if i.stage == Stage::Provider => {
                i.cancelled = true;
                true
            }
            _ => false,
        }
    });
    if pending {
        crate::socket::cancel(Irp as usize);
    }
    u8::from(pending)
}

/// `IoFreeIrp`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoFreeIrp(Irp: *mut IRP) {
    state::with(|s| {
        image::driver_calls(s, "IoFreeIrp");
        match s.irps.get(&(Irp as usize)) {
            None => s.violation(format!("IoFreeIrp of {Irp:p}: not an IRP of the driver")),
            Some(i) if i.stage == Stage::Provider => {
                s.violation(format!("IoFreeIrp of {Irp:p} while it is pending"));
            }
            Some(i) => {
                if let Some((_, _, device)) = i.completion {
                    // Freed without completion: Windows frees IoSetCompletionRoutineEx's context
                    // (and drops its device reference) only when the routine runs.
                    s.violation(format!(
                        "IoFreeIrp of {Irp:p}, whose completion routine never ran: \
                         IoSetCompletionRoutineEx's context leaks (complete the IRP instead)"
                    ));
                    crate::io::release_device(s, device);
                }
                s.irps.remove(&(Irp as usize));
            }
        }
    });
}

/// `IoReuseIrp`: an IRP of the driver that is not pending and whose routine ran (or was never
/// set) is made as `IoAllocateIrp` left it — no stack location current, its locations and
/// `Cancel` cleared — with `IoStatus.Status` set to `Iostatus`.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoReuseIrp(Irp: *mut IRP, Iostatus: NTSTATUS) {
    let address = Irp as usize;
    state::with(|s| {
        image::driver_calls(s, "IoReuseIrp");
        let Some(i) = s.irps.get_mut(&address) else {
            s.violation(format!("IoReuseIrp of {Irp:p}: not an IRP of the driver"));
            return;
        };
        let held = matches!(i.stage, Stage::Provider | Stage::Sent);
        let unrun = if held {
            None
        } else {
            i.stage = Stage::Allocated;
            i.cancelled = false;
            i.completion.take()
        };
        if held {
            s.violation(format!(
                "IoReuseIrp of {Irp:p} while a provider or driver holds it (not completed)"
            ));
            return;
        }
        if let Some((_, _, device)) = unrun {
            // The routine never ran: IoSetCompletionRoutineEx's context (and its reference on
            // the device object) would leak, as with IoFreeIrp.
            s.violation(format!(
                "IoReuseIrp of {Irp:p}, whose completion routine never ran: \
                 IoSetCompletionRoutineEx's context leaks"
            ));
            crate::io::release_device(s, device);
        }
        // SAFETY: the model's IRP memory, not held by anyone else (checked above).
        let irp = unsafe { &mut *Irp };
        let count = irp.StackCount;
        let stack = usize::try_from(count.clamp(1, 2)).unwrap_or(1);
        irp.CurrentLocation = count + 1;
        irp.Tail.Overlay.CurrentStackLocation =
            (address + IRP_SIZE + stack * STACK_LOCATION_SIZE) as *mut _;
        irp.Cancel = 0;
        irp.IoStatus = wsk_sys::IO_STATUS_BLOCK {
            Status: Iostatus,
            Padding: 0,
            Information: 0,
        };
        // SAFETY: the stack locations follow the IRP in the model's memory.
        unsafe {
            core::ptr::write_bytes(
                (address + IRP_SIZE) as *mut u8,
                0,
                stack * STACK_LOCATION_SIZE,
            );
        }
    });
}

/// The provider takes an IRP: it must be the driver's, with a completion routine, not pending.
pub(crate) fn begin(irp: *mut IRP) -> bool {
    state::with(|s| begin_locked(s, irp))
}

/// [`begin`] under the state lock the caller holds: so that a provider publishes an IRP it keeps
/// (a pending receive or accept) in the same step as it takes it, and no other thread completes
/// it before it is taken.
pub(crate) fn begin_locked(s: &mut crate::state::State, irp: *mut IRP) -> bool {
    match s.irps.get_mut(&(irp as usize)) {
        Some(i) if i.stage != Stage::Provider && i.completion.is_some() => {
            i.stage = Stage::Provider;
            true
        }
        _ => {
            s.violation(format!("the provider got IRP {irp:p}: not the driver's, pending, or without completion routine"));
            false
        }
    }
}

/// Completes `irp` with `status` and `information`: runs its completion routine here.
pub(crate) fn complete(irp: *mut IRP, status: Status, information: usize) {
    let routine = state::with(|s| {
        let i = s.irps.get_mut(&(irp as usize))?;
        i.stage = Stage::Completed;
        i.completion.take()
    });
    let Some((routine, context, device)) = routine else {
        state::with(|s| s.violation(format!("completing IRP {irp:p}, which is not pending")));
        return;
    };
    // SAFETY: the IRP's memory is the model's, live until IoFreeIrp (which the routine may call).
    unsafe {
        (*irp).IoStatus = wsk_sys::IO_STATUS_BLOCK {
            Status: status.raw(),
            Padding: 0,
            Information: information,
        };
    }
    run_routine(irp, routine, context, device);
}

/// `IofCompleteRequest`: legal for an IRP sent to the driver (`IofCallDriver` to one of its
/// devices, which made the routine's stack location current), at that location; its routine runs
/// here, in the call.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IofCompleteRequest(Irp: *mut IRP, _PriorityBoost: i8) {
    let address = Irp as usize;
    let routine = state::with(|s| {
        image::driver_calls(s, "IofCompleteRequest");
        let Some(i) = s.irps.get_mut(&address) else {
            s.violation(format!(
                "IofCompleteRequest of {Irp:p}: not an IRP of the driver"
            ));
            return None;
        };
        if i.stage == Stage::Provider {
            s.violation(format!(
                "IofCompleteRequest of {Irp:p} while the provider has it"
            ));
            return None;
        }
        if i.stage == Stage::Completed {
            // Driver Verifier: bug check 0x44, MULTIPLE_IRP_COMPLETE_REQUESTS.
            s.violation(format!(
                "IofCompleteRequest of {Irp:p}, which was already completed: an IRP is completed \
                 once (MULTIPLE_IRP_COMPLETE_REQUESTS)"
            ));
            return None;
        }
        let sent = std::mem::replace(&mut i.stage, Stage::Completed) == Stage::Sent;
        let completion = i.completion.take();
        if !sent {
            // Driver Verifier's I/O verification: an IRP is completed by the driver it was sent
            // to (IoCallDriver), never by one that only allocated it.
            s.violation(format!(
                "IofCompleteRequest of {Irp:p}, which was never sent to the driver (IoCallDriver): \
                 only the driver an IRP was sent to completes it"
            ));
        }
        // SAFETY: the model's IRP memory.
        let irp = unsafe { &*Irp };
        let (count, location, current) = (
            irp.StackCount,
            irp.CurrentLocation,
            irp.Tail.Overlay.CurrentStackLocation as usize,
        );
        let expected = address
            + IRP_SIZE
            + usize::try_from(location - 1).unwrap_or(usize::MAX) * STACK_LOCATION_SIZE;
        if location != count || current != expected {
            s.violation(format!(
                "IofCompleteRequest of {Irp:p} at stack location {location} of {count} \
                 (IoSetNextIrpStackLocation once makes the routine's location current)"
            ));
        }
        if irp.IoStatus.Status == Status::PENDING.raw() {
            s.violation(format!("IofCompleteRequest of {Irp:p} with STATUS_PENDING"));
        }
        if completion.is_none() {
            s.violation(format!(
                "IofCompleteRequest of {Irp:p}, which has no completion routine"
            ));
        }
        completion
    });
    if let Some((routine, context, device)) = routine {
        run_routine(Irp, routine, context, device);
    }
}

/// `IofCallDriver` to a device object of the driver (the model's provider is not a driver): moves
/// the IRP to its next stack location and calls the driver's dispatch routine for that
/// location's major function, in the caller's context.
///
/// # Safety
/// As the C function.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IofCallDriver(
    DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
) -> NTSTATUS {
    let address = Irp as usize;
    let dispatch = state::with(|s| {
        image::driver_calls(s, "IofCallDriver");
        let driver = match s.devices.get(&(DeviceObject as usize)) {
            Some(d) if !d.deleted => d.driver,
            _ => {
                s.violation(format!(
                    "IofCallDriver to {DeviceObject:p}: not a live device object"
                ));
                return None;
            }
        };
        let Some(i) = s.irps.get_mut(&address) else {
            s.violation(format!(
                "IofCallDriver of {Irp:p}: not an IRP of the driver"
            ));
            return None;
        };
        if matches!(i.stage, Stage::Provider | Stage::Sent) {
            s.violation(format!(
                "IofCallDriver of {Irp:p}, which a provider or driver holds"
            ));
            return None;
        }
        // SAFETY: the model's IRP memory.
        let irp = unsafe { &mut *Irp };
        if irp.CurrentLocation <= 1 {
            // NO_MORE_IRP_STACK_LOCATIONS.
            s.violation(format!("IofCallDriver of {Irp:p}: no stack location left"));
            return None;
        }
        i.stage = Stage::Sent;
        irp.CurrentLocation -= 1;
        // SAFETY: a location below the current one, in the model's IRP memory.
        irp.Tail.Overlay.CurrentStackLocation =
            unsafe { irp.Tail.Overlay.CurrentStackLocation.sub(1) };
        // SAFETY: as above.
        let stack = unsafe { &mut *irp.Tail.Overlay.CurrentStackLocation };
        stack.DeviceObject = DeviceObject;
        // SAFETY: the driver object the session handed to DriverEntry, live for the session.
        let routine = unsafe { (*(driver as *const wsk_sys::DRIVER_OBJECT)).MajorFunction }
            .get(usize::from(stack.MajorFunction))
            .copied()
            .filter(|r| !r.is_null());
        if routine.is_none() {
            s.violation(format!(
                "IofCallDriver of {Irp:p}: the driver has no dispatch routine for major function {}",
                stack.MajorFunction
            ));
        }
        routine
    });
    let Some(routine) = dispatch else {
        return Status::INVALID_PARAMETER.raw();
    };
    // SAFETY: a DRIVER_DISPATCH the driver put in its MajorFunction table.
    let routine: unsafe extern "system" fn(*mut DEVICE_OBJECT, *mut IRP) -> NTSTATUS =
        unsafe { std::mem::transmute::<PVOID, _>(routine) };
    // SAFETY: the driver's own dispatch routine with its device object and the IRP sent to it.
    unsafe { routine(DeviceObject, Irp) }
}

std::thread_local! {
    /// This thread runs a completion routine of the driver's.
    static IN_ROUTINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread runs one of the driver's completion routines: where it must start no new
/// WSK call ("Using IRPs with Winsock Kernel Functions").
pub(crate) fn in_completion_routine() -> bool {
    IN_ROUTINE.with(std::cell::Cell::get)
}

/// Runs an IRP's completion routine, holding the device object `IoSetCompletionRoutineEx` named.
fn run_routine(irp: *mut IRP, routine: usize, context: usize, device: usize) {
    // SAFETY: the routine the driver set with IoSetCompletionRoutineEx.
    let routine: unsafe extern "system" fn(*mut DEVICE_OBJECT, *mut IRP, PVOID) -> NTSTATUS =
        unsafe { std::mem::transmute::<usize, _>(routine) };
    let irql = state::with(|s| crate::irql::callback(s, "CompletionRoutine"));
    let outer = IN_ROUTINE.with(|r| r.replace(true));
    let answer = image::run(Guard::Device(device), || {
        // SAFETY: the driver's routine, with its device object, the IRP and its context.
        crate::irql::at(irql, || unsafe {
            routine(device as *mut DEVICE_OBJECT, irp, context as PVOID)
        })
    });
    IN_ROUTINE.with(|r| r.set(outer));
    state::with(|s| {
        if answer != STATUS_MORE_PROCESSING_REQUIRED {
            s.violation(format!(
                "completion routine of IRP {irp:p} returned {:?}: the I/O manager would go on completing a driver-allocated IRP",
                Status::from_raw(answer)
            ));
        }
        crate::io::release_device(s, device);
    });
}
