//! Windows' image lifetime, emulated where Wine 8 differs (every variant: it is Windows'
//! behaviour, not a feature of one provider).
//!
//! On Windows a driver image stays loaded while one of its work item routines or
//! `IoSetCompletionRoutineEx` completion routines is queued or running: `IoQueueWorkItem`
//! references the work item's device object until the routine has returned ("prevents the
//! associated device object, and therefore the driver, from being unloaded while the work item is
//! queued or running"), `IoSetCompletionRoutineEx` does the same for its routine, and the image
//! goes only with its last device object. So a routine may let its driver's unload go on (the
//! library's work items leave the client's work gate as their last action) and then return.
//! Wine's winedevice.exe instead `FreeLibrary()`s the image as soon as `DriverUnload` returns,
//! whatever the device objects' references, and a thread still returning through the routine's
//! last instructions faults on execute in the unmapped image ("Unhandled page fault on execute
//! access to 0000000180xxxxxx"). Wine 8's `IoSetCompletionRoutineEx` is only a stub (a call
//! aborts the process).
//!
//! What this module does, in the winedevice.exe process that loads this NETIO.SYS:
//! - [`install`], once, at this image's load: pins this image (`LdrAddRefDll` with
//!   `LDR_ADDREF_DLL_PIN`: its routines below must outlive every client), registers an unload
//!   watch (`LdrRegisterDllNotification`), and patches Wine's `IoSetCompletionRoutineEx` stub
//!   with a jump to an emulation of Windows' one;
//! - [`pin_client`], at each client registration (`NmrRegisterClient`, `WskRegister`): finds the
//!   client's image from a pointer into it (`RtlPcToFileHeader`) and points its import address
//!   table entries for `ntoskrnl.exe!IoQueueWorkItem` at [`queue_work_item`]: the driver's own
//!   import — the shipped image, unchanged — reaches the emulation;
//! - [`queue_work_item`] takes a module reference on the image of the routine (`LdrAddRefDll`)
//!   and queues Wine's `IoQueueWorkItem` with a routine of this image, which calls the driver's,
//!   holds the reference [`HOLD_MS`] more, then drops it (`LdrUnloadDll`): Wine's `FreeLibrary`
//!   after `DriverUnload` then leaves the image mapped, and the last reference unloads it;
//! - the `IoSetCompletionRoutineEx` emulation takes the same module reference (and a reference
//!   on the device object, as Windows) until the driver's completion routine has returned;
//! - the unload watch logs `netio-provider: ERROR: ...` when an image is unloaded while one of
//!   its routines is counted in flight — which the references above make impossible. The hold
//!   keeps the close work item (the one whose return lets the unload go on) counted until the
//!   unload is over, so an emulation that takes no reference is caught at every stop, not only
//!   on the rare stop that loses the race.
//!
//! A step that fails logs `netio-provider: ERROR: ...` (the Wine tests fail on those lines);
//! nothing falls back silently. `netio-provider: image pinning: ...` lines say what was
//! installed, one per client registration and one per queued work item.

use core::ffi::{CStr, c_void};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use crate::abi::{
    DEVICE_OBJECT, ExAllocatePoolWithTag, ExFreePoolWithTag, IO_WORKITEM, IRP, IoQueueWorkItem,
    NTSTATUS, NonPagedPool, PIO_COMPLETION_ROUTINE, PIO_WORKITEM_ROUTINE, PVOID,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, WORK_QUEUE_TYPE,
};
use crate::hex;
use crate::loader::{self, DllNotificationData};

#[link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")]
unsafe extern "system" {
    fn ObfReferenceObject(Object: PVOID) -> isize;
    fn ObfDereferenceObject(Object: PVOID) -> isize;
    fn KeDelayExecutionThread(WaitMode: i8, Alertable: u8, Interval: *const i64) -> NTSTATUS;
}

/// How long a work item's image stays referenced after its routine returned: longer than the
/// rest of an unload takes once the routine let it go on (deregistration and teardown, a few
/// milliseconds here), so that the unload watch sees an unreferenced unload every time. Only a
/// thread-pool thread waits; the driver does not.
pub(crate) const HOLD_MS: u32 = 1000;
/// [`HOLD_MS`] as a relative `KeDelayExecutionThread` interval (negative, 100 ns units).
const HOLD: i64 = -(HOLD_MS as i64) * 10_000;
/// `KPROCESSOR_MODE::KernelMode`.
const KERNEL_MODE: i8 = 0;
/// The pool tags of the emulation's records.
const WORK_TAG: u32 = u32::from_le_bytes(*b"PinW");
const COMPLETION_TAG: u32 = u32::from_le_bytes(*b"PinC");

// ---------------------------------------------------------------------------------------------
// Installation.

/// This image's base, once pinned.
static OWN: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
/// Wine's `IoQueueWorkItem`: the value of a client's import address table entry to patch.
static REAL_QUEUE_WORK_ITEM: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// `ntoskrnl.exe`, NUL-terminated UTF-16.
const NTOSKRNL: &[u8] = b"ntoskrnl.exe";
static NTOSKRNL_W: [u16; NTOSKRNL.len() + 1] = loader::wide(NTOSKRNL);

/// Pins this image, registers the unload watch, patches `IoSetCompletionRoutineEx` and finds
/// Wine's `IoQueueWorkItem`; once per process. Called at this image's load (its entry point,
/// under the loader lock, before any client runs) and again, as a no-op, at each registration.
pub(crate) fn install() {
    if INSTALLED.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(own) = loader::image_of((install as fn()) as *const c_void) else {
        log!("ERROR: image pinning: RtlPcToFileHeader found no image for NETIO.SYS");
        return;
    };
    // SAFETY: this loaded image's base.
    let status = unsafe { loader::LdrAddRefDll(loader::LDR_ADDREF_DLL_PIN, own) };
    if status != STATUS_SUCCESS {
        log!(
            "ERROR: image pinning: LdrAddRefDll(PIN, NETIO.SYS) 0x%08X",
            hex(status)
        );
        return;
    }
    OWN.store(own, Ordering::Release);
    let mut cookie: PVOID = ptr::null_mut();
    // SAFETY: a callback of this image (pinned: it outlives the registration), no context, an
    // out-pointer.
    let status = unsafe {
        loader::LdrRegisterDllNotification(0, on_dll_notification, ptr::null_mut(), &raw mut cookie)
    };
    if status != STATUS_SUCCESS {
        log!(
            "ERROR: image pinning: LdrRegisterDllNotification 0x%08X",
            hex(status)
        );
        return;
    }
    let Ok(ntoskrnl) = loader::module(&NTOSKRNL_W, c"ntoskrnl.exe") else {
        return;
    };
    let Ok(queue) = loader::export(ntoskrnl, c"ntoskrnl.exe", c"IoQueueWorkItem") else {
        return;
    };
    REAL_QUEUE_WORK_ITEM.store(queue, Ordering::Release);
    if patch_set_completion_routine_ex(ntoskrnl).is_err() {
        return;
    }
    log!(
        "image pinning: NETIO.SYS %p pinned, unload watch on, work item images held %u ms past their routine",
        own,
        HOLD_MS
    );
}

/// Points the import address table entries for `IoQueueWorkItem` of the image holding
/// `pointer` (the client's `what`, a static of its image) at [`queue_work_item`]. Called at
/// each client registration, before the client can queue a work item (it queues only once
/// registered); entries already patched are counted, not written again.
pub(crate) fn pin_client(pointer: *const c_void, what: &CStr) {
    install();
    let real = REAL_QUEUE_WORK_ITEM.load(Ordering::Acquire);
    if real.is_null() {
        log!("ERROR: image pinning: not installed (see above): the client's image is not pinned");
        return;
    }
    let Some(image) = loader::image_of(pointer) else {
        log!(
            "ERROR: image pinning: no loaded image holds the client's %s %p",
            what.as_ptr(),
            pointer
        );
        return;
    };
    if image == OWN.load(Ordering::Acquire) {
        log!(
            "ERROR: image pinning: the client's %s %p is in NETIO.SYS itself",
            what.as_ptr(),
            pointer
        );
        return;
    }
    if watch(image).is_none() {
        return;
    }
    let mut size = 0u32;
    // SAFETY: a loaded image's base (mapped as an image), an out-pointer.
    let table = unsafe {
        loader::RtlImageDirectoryEntryToData(
            image,
            1,
            loader::IMAGE_DIRECTORY_ENTRY_IAT,
            &raw mut size,
        )
    }
    .cast::<usize>();
    if table.is_null() || size == 0 {
        log!(
            "ERROR: image pinning: client image %p has no import address table",
            image
        );
        return;
    }
    let wrapper = queue_work_item as *const () as usize;
    let mut patched = 0u32;
    for index in 0..size as usize / core::mem::size_of::<usize>() {
        let entry = table.wrapping_add(index);
        // SAFETY: an entry of the image's import address table (its directory's extent),
        // aligned; the loader wrote it before the image ran.
        let value = unsafe { entry.read_volatile() };
        if value == real as usize {
            // The client queues no work item before it is registered: nobody reads the entry.
            if loader::write_over(entry.cast(), &wrapper.to_ne_bytes(), loader::PAGE_READWRITE)
                .is_err()
            {
                return;
            }
            patched += 1;
        } else if value == wrapper {
            patched += 1;
        }
    }
    log!(
        "image pinning: client image %p (its %s): %u IoQueueWorkItem import(s) now keep it loaded until their routines return",
        image,
        what.as_ptr(),
        patched
    );
}

// ---------------------------------------------------------------------------------------------
// The module references, and the unload watch.

/// An image whose routines are counted while queued or running.
struct Watched {
    image: AtomicPtr<c_void>,
    in_flight: AtomicU32,
}

/// How many images can be watched at once (one client per winedevice.exe, as a rule).
const WATCHED_IMAGES: usize = 8;

static WATCHED: [Watched; WATCHED_IMAGES] = {
    // A `const` item is the way to repeat a non-`Copy` value in an array initialiser; each
    // element is a fresh copy of it, never shared.
    #[allow(clippy::declare_interior_mutable_const)]
    const FREE: Watched = Watched {
        image: AtomicPtr::new(ptr::null_mut()),
        in_flight: AtomicU32::new(0),
    };
    [FREE; WATCHED_IMAGES]
};
/// Serialises the claims of [`WATCHED`] slots (lookups need no lock: a slot, once claimed, keeps
/// its image).
static CLAIMING: AtomicBool = AtomicBool::new(false);

fn watched(image: PVOID) -> Option<&'static Watched> {
    WATCHED
        .iter()
        .find(|w| w.image.load(Ordering::Acquire) == image)
}

/// The watch slot of `image`, claimed if it has none.
fn watch(image: PVOID) -> Option<&'static Watched> {
    if let Some(found) = watched(image) {
        return Some(found);
    }
    while CLAIMING
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let claimed = watched(image).or_else(|| {
        let free = WATCHED
            .iter()
            .find(|w| w.image.load(Ordering::Acquire).is_null())?;
        free.image.store(image, Ordering::Release);
        Some(free)
    });
    CLAIMING.store(false, Ordering::Release);
    if claimed.is_none() {
        log!(
            "ERROR: image pinning: no free watch slot for image %p",
            image
        );
    }
    claimed
}

/// Takes a module reference on the image holding `routine` and counts the routine in flight;
/// the image's base, or NULL (logged as an error) when it could not.
fn pin(routine: *const c_void, what: &CStr) -> PVOID {
    let Some(image) = loader::image_of(routine) else {
        log!(
            "ERROR: image pinning: no loaded image holds the %s %p",
            what.as_ptr(),
            routine
        );
        return ptr::null_mut();
    };
    let Some(watched) = watch(image) else {
        return ptr::null_mut();
    };
    // SAFETY: a loaded image's base; a reference this module drops once, in `unpin`.
    let status = unsafe { loader::LdrAddRefDll(0, image) };
    if status != STATUS_SUCCESS {
        log!(
            "ERROR: image pinning: LdrAddRefDll(%p) for the %s %p: 0x%08X",
            image,
            what.as_ptr(),
            routine,
            hex(status)
        );
        return ptr::null_mut();
    }
    watched.in_flight.fetch_add(1, Ordering::AcqRel);
    image
}

/// Drops what [`pin`] took for a routine of `image` (NULL: nothing was taken).
fn unpin(image: PVOID) {
    if image.is_null() {
        return;
    }
    // Not counted any more before the reference goes: its own last reference may unload it.
    if let Some(watched) = watched(image) {
        watched.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
    // SAFETY: the reference `pin` took on this image, dropped once.
    let status = unsafe { loader::LdrUnloadDll(image) };
    if status != STATUS_SUCCESS {
        log!(
            "ERROR: image pinning: LdrUnloadDll(%p) 0x%08X",
            image,
            hex(status)
        );
    }
}

/// The unload watch (`LdrRegisterDllNotification`; loader lock held): an image unloaded with a
/// routine counted in flight is an error. Not at process exit, where modules are detached with
/// everything still referenced.
unsafe extern "system" fn on_dll_notification(
    Reason: u32,
    Data: *const DllNotificationData,
    _Context: PVOID,
) {
    if Reason != loader::LDR_DLL_NOTIFICATION_REASON_UNLOADED || Data.is_null() {
        return;
    }
    // SAFETY: no arguments; reads the loader's flag.
    if unsafe { loader::RtlDllShutdownInProgress() } != 0 {
        return;
    }
    // SAFETY: the loader's notification data, valid during the call.
    let image = unsafe { (*Data).dll_base };
    let Some(watched) = watched(image) else {
        return;
    };
    let in_flight = watched.in_flight.load(Ordering::Acquire);
    if in_flight == 0 {
        log!(
            "image pinning: image %p unloaded, none of its routines in flight",
            image
        );
    } else {
        log!(
            "ERROR: image pinning: image %p unloaded while %u of its work item or completion routines were queued, running or held: not referenced",
            image,
            in_flight
        );
    }
}

// ---------------------------------------------------------------------------------------------
// IoQueueWorkItem.

/// A queued work item's record, in pool: the driver's routine and context, and the image
/// [`pin`] referenced for it.
#[repr(C)]
struct PinnedWork {
    routine: unsafe extern "system" fn(DeviceObject: *mut DEVICE_OBJECT, Context: PVOID),
    context: PVOID,
    image: PVOID,
}

/// `IoQueueWorkItem`, as a patched client's import reaches it: Wine's, with the routine's image
/// referenced until [`run_pinned_work`] has run the routine.
///
/// # Safety
/// As the C function.
unsafe extern "system" fn queue_work_item(
    IoWorkItem: *mut IO_WORKITEM,
    WorkerRoutine: PIO_WORKITEM_ROUTINE,
    QueueType: WORK_QUEUE_TYPE,
    Context: PVOID,
) {
    let Some(routine) = WorkerRoutine else {
        log!("ERROR: image pinning: IoQueueWorkItem without a routine");
        // SAFETY: the caller's arguments, as it passed them.
        unsafe { IoQueueWorkItem(IoWorkItem, WorkerRoutine, QueueType, Context) };
        return;
    };
    // SAFETY: a plain non-paged allocation.
    let record = unsafe {
        ExAllocatePoolWithTag(NonPagedPool, core::mem::size_of::<PinnedWork>(), WORK_TAG)
    }
    .cast::<PinnedWork>();
    let image = if record.is_null() {
        log!("ERROR: image pinning: no pool for a work item's record");
        ptr::null_mut()
    } else {
        pin((routine as *const ()).cast(), c"work item routine")
    };
    if image.is_null() {
        if !record.is_null() {
            // SAFETY: allocated above with WORK_TAG, unused.
            unsafe { ExFreePoolWithTag(record.cast(), WORK_TAG) };
        }
        // Unpinned, and logged as an error above: the test fails.
        // SAFETY: the caller's arguments, as it passed them.
        unsafe { IoQueueWorkItem(IoWorkItem, WorkerRoutine, QueueType, Context) };
        return;
    }
    // SAFETY: fresh pool of the right size.
    unsafe {
        record.write(PinnedWork {
            routine,
            context: Context,
            image,
        });
    };
    log!(
        "image pinning: work item routine %p queued, its image %p referenced",
        routine as *const (),
        image
    );
    // SAFETY: the caller's work item and queue type, with this image's routine (pinned) and
    // the record it takes back.
    unsafe { IoQueueWorkItem(IoWorkItem, Some(run_pinned_work), QueueType, record.cast()) };
}

/// The routine [`queue_work_item`] queues: the driver's, then [`HOLD_MS`], then its image's
/// reference goes.
///
/// # Safety
/// Called by Wine's thread pool with the record `queue_work_item` queued.
unsafe extern "system" fn run_pinned_work(DeviceObject: *mut DEVICE_OBJECT, Context: PVOID) {
    let record = Context.cast::<PinnedWork>();
    // SAFETY: the record `queue_work_item` wrote, read once.
    let PinnedWork {
        routine,
        context,
        image,
    } = unsafe { record.read() };
    // SAFETY: allocated with WORK_TAG, freed once (this routine runs once per queueing).
    unsafe { ExFreePoolWithTag(record.cast(), WORK_TAG) };
    // SAFETY: the driver's routine with its context, as it queued them; its image is referenced.
    unsafe { routine(DeviceObject, context) };
    let hold = HOLD;
    // SAFETY: a relative interval; a thread-pool thread may wait.
    let _ = unsafe { KeDelayExecutionThread(KERNEL_MODE, 0, &raw const hold) };
    unpin(image);
}

// ---------------------------------------------------------------------------------------------
// IoSetCompletionRoutineEx, which Wine 8's ntoskrnl.exe only stubs (a call aborts the process).
// Windows' implementation, emulated: a context in pool holds the driver's routine, a reference on
// its device object and one on its image; the IRP's next stack location gets a routine of this
// image that calls the driver's, then drops them. Patched over Wine's stub at load, so the
// driver's own import reaches it.

/// `IRP.Tail.Overlay.CurrentStackLocation` (wsk-sys's layout, offset-tested there).
const IRP_CURRENT_STACK_LOCATION: usize = core::mem::offset_of!(crate::abi::IRP, Tail)
    + core::mem::offset_of!(crate::abi::IRP_TAIL_OVERLAY, CurrentStackLocation);
/// `sizeof(IO_STACK_LOCATION)` and the offsets of `Control`, `CompletionRoutine`, `Context`
/// in it.
const STACK_LOCATION_SIZE: usize = core::mem::size_of::<crate::abi::IO_STACK_LOCATION>();
const SL_CONTROL: usize = core::mem::offset_of!(crate::abi::IO_STACK_LOCATION, Control);
const SL_COMPLETION_ROUTINE: usize =
    core::mem::offset_of!(crate::abi::IO_STACK_LOCATION, CompletionRoutine);
const SL_CONTEXT: usize = core::mem::offset_of!(crate::abi::IO_STACK_LOCATION, Context);
const SL_INVOKE_ON_CANCEL: u8 = 0x20;
const SL_INVOKE_ON_SUCCESS: u8 = 0x40;
const SL_INVOKE_ON_ERROR: u8 = 0x80;

#[repr(C)]
struct SafeContext {
    routine: PIO_COMPLETION_ROUTINE,
    context: PVOID,
    device: *mut DEVICE_OBJECT,
    image: PVOID,
}

unsafe extern "system" fn unload_safe_completion(
    DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
    Context: PVOID,
) -> NTSTATUS {
    let safe = Context.cast::<SafeContext>();
    // SAFETY: the context `set_completion_routine_ex` allocated for this IRP, read once.
    let SafeContext {
        routine,
        context,
        device,
        image,
    } = unsafe { safe.read() };
    // SAFETY: allocated with COMPLETION_TAG, freed once (this routine runs once per IRP).
    unsafe { ExFreePoolWithTag(safe.cast(), COMPLETION_TAG) };
    let status = match routine {
        // SAFETY: the driver's completion routine with its context, as it asked.
        Some(routine) => unsafe { routine(DeviceObject, Irp, context) },
        None => STATUS_SUCCESS,
    };
    // SAFETY: the reference taken in `set_completion_routine_ex`; the driver's routine has
    // returned.
    unsafe { ObfDereferenceObject(device.cast()) };
    unpin(image);
    status
}

/// `IoSetCompletionRoutineEx`.
#[allow(clippy::cast_ptr_alignment)] // the IRP's fields are read and written unaligned
unsafe extern "system" fn set_completion_routine_ex(
    DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
    CompletionRoutine: PIO_COMPLETION_ROUTINE,
    Context: PVOID,
    InvokeOnSuccess: u8,
    InvokeOnError: u8,
    InvokeOnCancel: u8,
) -> NTSTATUS {
    if DeviceObject.is_null() || Irp.is_null() {
        log!("ERROR: IoSetCompletionRoutineEx: NULL device object or IRP");
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    // SAFETY: a plain non-paged allocation.
    let safe = unsafe {
        ExAllocatePoolWithTag(
            NonPagedPool,
            core::mem::size_of::<SafeContext>(),
            COMPLETION_TAG,
        )
    }
    .cast::<SafeContext>();
    if safe.is_null() {
        log!("ERROR: IoSetCompletionRoutineEx: no pool");
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    let image = match CompletionRoutine {
        Some(routine) => pin((routine as *const ()).cast(), c"completion routine"),
        None => ptr::null_mut(),
    };
    // SAFETY: the caller's device object, alive while the caller holds it.
    unsafe { ObfReferenceObject(DeviceObject.cast()) };
    // SAFETY: fresh pool of the right size.
    unsafe {
        safe.write(SafeContext {
            routine: CompletionRoutine,
            context: Context,
            device: DeviceObject,
            image,
        });
    };
    // An IRP from IoAllocateIrp: its current-location pointer is past the last stack
    // location, so the next one is one below it.
    let field = Irp
        .cast::<u8>()
        .wrapping_add(IRP_CURRENT_STACK_LOCATION)
        .cast::<*mut u8>();
    // SAFETY: a field of the live IRP (8-aligned in it; read unaligned all the same).
    let current = unsafe { field.read_unaligned() };
    let next = current.wrapping_sub(STACK_LOCATION_SIZE);
    let mut control = 0;
    if InvokeOnSuccess != 0 {
        control |= SL_INVOKE_ON_SUCCESS;
    }
    if InvokeOnError != 0 {
        control |= SL_INVOKE_ON_ERROR;
    }
    if InvokeOnCancel != 0 {
        control |= SL_INVOKE_ON_CANCEL;
    }
    let routine: PIO_COMPLETION_ROUTINE = Some(unload_safe_completion);
    let routine_field = next
        .wrapping_add(SL_COMPLETION_ROUTINE)
        .cast::<PIO_COMPLETION_ROUTINE>();
    // SAFETY: the next stack location of the IRP, inside its allocation.
    unsafe { routine_field.write_unaligned(routine) };
    let context_field = next.wrapping_add(SL_CONTEXT).cast::<PVOID>();
    // SAFETY: as above.
    unsafe { context_field.write_unaligned(safe.cast()) };
    // SAFETY: as above.
    unsafe { next.wrapping_add(SL_CONTROL).write(control) };
    STATUS_SUCCESS
}

/// Replaces Wine's `IoSetCompletionRoutineEx` stub in ntoskrnl.exe (at `ntoskrnl`) with a jump
/// to [`set_completion_routine_ex`]. Called once, at this image's load (before any client runs).
fn patch_set_completion_routine_ex(ntoskrnl: PVOID) -> Result<(), NTSTATUS> {
    let stub = loader::export(ntoskrnl, c"ntoskrnl.exe", c"IoSetCompletionRoutineEx")?;
    let target = set_completion_routine_ex as *const () as usize;
    // mov rax, imm64; jmp rax
    let mut code = [0x48, 0xB8, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xE0];
    for (slot, byte) in code.iter_mut().skip(2).zip(target.to_le_bytes()) {
        *slot = byte;
    }
    // Nothing calls the stub before a client runs.
    loader::write_over(stub.cast(), &code, loader::PAGE_EXECUTE_READWRITE)?;
    log!(
        "Wine's IoSetCompletionRoutineEx stub %p now runs an emulation of Windows'",
        stub
    );
    Ok(())
}
