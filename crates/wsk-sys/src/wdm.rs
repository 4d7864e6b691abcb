//! The ntoskrnl.exe subset the driver uses (`wdm.h`).

use core::ffi::{c_char, c_void};

use super::ntdef::{HANDLE, NTSTATUS, PVOID, UNICODE_STRING};

/// `POOL_TYPE` (an `enum` in C: 4 bytes).
pub type POOL_TYPE = i32;
/// Non-paged pool (executable): the only non-paged type before Windows 8.
pub const NonPagedPool: POOL_TYPE = 0;
/// Non-paged, non-executable pool: Windows 8 and later; what memory integrity (HVCI) wants.
pub const NonPagedPoolNx: POOL_TYPE = 512;
/// `POOL_FLAGS` for `ExAllocatePool2`.
pub type POOL_FLAGS = u64;
pub const POOL_FLAG_NON_PAGED: POOL_FLAGS = 0x0000_0000_0000_0040;

pub const DPFLTR_IHVDRIVER_ID: u32 = 77;
pub const DPFLTR_ERROR_LEVEL: u32 = 0;
pub const DPFLTR_WARNING_LEVEL: u32 = 1;
pub const DPFLTR_TRACE_LEVEL: u32 = 2;
pub const DPFLTR_INFO_LEVEL: u32 = 3;

/// `ExAllocatePool2` (Windows 10 2004 and later). Never imported statically: the driver looks it
/// up with `MmGetSystemRoutineAddress` so that it still loads on older systems.
pub type PFN_EX_ALLOCATE_POOL2 =
    unsafe extern "system" fn(Flags: POOL_FLAGS, NumberOfBytes: usize, Tag: u32) -> PVOID;

/// `LARGE_INTEGER` as a value (`QuadPart`): 8 bytes, 8-aligned on x64, returned in RAX.
pub type LARGE_INTEGER = i64;

/// `KeQueryPerformanceCounter`: any IRQL. Returns the performance counter; writes its frequency
/// (ticks per second) to `PerformanceFrequency` when that is not NULL. Never imported statically:
/// Windows exports it from ntoskrnl.exe (the HAL before), Wine 8 only from hal.dll, so a driver
/// that runs on both looks it up with `MmGetSystemRoutineAddress` (which searches both).
pub type PFN_KE_QUERY_PERFORMANCE_COUNTER =
    unsafe extern "system" fn(PerformanceFrequency: *mut LARGE_INTEGER) -> LARGE_INTEGER;

/// `RTL_OSVERSIONINFOW`: size 276.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RTL_OSVERSIONINFOW {
    pub dwOSVersionInfoSize: u32,
    pub dwMajorVersion: u32,
    pub dwMinorVersion: u32,
    pub dwBuildNumber: u32,
    pub dwPlatformId: u32,
    pub szCSDVersion: [u16; 128],
}

/// `DEVICE_OBJECT`: opaque here (the driver only passes it back to the I/O manager).
#[repr(C)]
pub struct DEVICE_OBJECT {
    _opaque: [u8; 0],
}
/// `DEVICE_TYPE` of a device object that is no particular kind of device.
pub const FILE_DEVICE_UNKNOWN: u32 = 0x0000_0022;
/// Device characteristic: the I/O manager checks the device's security on every open.
pub const FILE_DEVICE_SECURE_OPEN: u32 = 0x0000_0100;

/// `IO_WORKITEM`: opaque, allocated by `IoAllocateWorkItem`.
#[repr(C)]
pub struct IO_WORKITEM {
    _opaque: [u8; 0],
}
/// `WORK_QUEUE_TYPE` (an `enum` in C: 4 bytes).
pub type WORK_QUEUE_TYPE = i32;
pub const DelayedWorkQueue: WORK_QUEUE_TYPE = 1;
/// `IO_WORKITEM_ROUTINE`. `PASSIVE_LEVEL`, in a system worker thread.
pub type PIO_WORKITEM_ROUTINE =
    Option<unsafe extern "system" fn(DeviceObject: *mut DEVICE_OBJECT, Context: PVOID)>;

/// `KEVENT` (x64: a 24-byte `DISPATCHER_HEADER`), initialised by `KeInitializeEvent`; resident
/// (non-paged) memory.
#[repr(C, align(8))]
pub struct KEVENT {
    pub Header: [u64; 3],
}
/// `KIRQL`: an interrupt request level.
pub type KIRQL = u8;
pub const PASSIVE_LEVEL: KIRQL = 0;
pub const APC_LEVEL: KIRQL = 1;
pub const DISPATCH_LEVEL: KIRQL = 2;

/// `KSPIN_LOCK` (a `ULONG_PTR`), initialised to 0 (`KeInitializeSpinLock`); resident memory.
pub type KSPIN_LOCK = usize;

/// `KDPC` (x64: 0x40 bytes), initialised by `KeInitializeDpc`; resident memory. Opaque here: the
/// driver only passes it to the kernel.
#[repr(C, align(8))]
pub struct KDPC {
    pub Opaque: [u64; 8],
}
/// `KDEFERRED_ROUTINE`: a DPC's routine, called at `DISPATCH_LEVEL`.
pub type PKDEFERRED_ROUTINE = Option<
    unsafe extern "system" fn(
        Dpc: *mut KDPC,
        DeferredContext: PVOID,
        SystemArgument1: PVOID,
        SystemArgument2: PVOID,
    ),
>;

/// `KTIMER` (x64: a 24-byte `DISPATCHER_HEADER`, due time, list entry, DPC, processor, period:
/// 0x40 bytes), initialised by `KeInitializeTimer`; resident memory. Opaque here.
#[repr(C, align(8))]
pub struct KTIMER {
    pub Opaque: [u64; 8],
}

/// `EVENT_TYPE` (an `enum` in C: 4 bytes).
pub type EVENT_TYPE = i32;
pub const NotificationEvent: EVENT_TYPE = 0;
pub const SynchronizationEvent: EVENT_TYPE = 1;
/// `KWAIT_REASON` `Executive`.
pub const Executive: i32 = 0;
/// `KPROCESSOR_MODE` `KernelMode`.
pub const KernelMode: i8 = 0;

/// `IO_STATUS_BLOCK` (x64): size 16.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IO_STATUS_BLOCK {
    /// The `Status` member of the `Status`/`Pointer` union (the union is 8 bytes).
    pub Status: NTSTATUS,
    pub Padding: u32,
    pub Information: usize,
}

/// `IRP` (x64): size 0xD0, then `StackCount` `IO_STACK_LOCATION`s. The I/O manager allocates
/// it; a driver reads `IoStatus` and moves the stack location with
/// [`IoSetNextIrpStackLocation`]. `Tail` is declared as its `Overlay` view of the union.
#[repr(C)]
pub struct IRP {
    pub Type: i16,
    pub Size: u16,
    pub AllocationProcessorNumber: u16,
    pub Reserved: u16,
    pub MdlAddress: PVOID,
    pub Flags: u32,
    pub AssociatedIrp: PVOID,
    pub ThreadListEntry: [PVOID; 2],
    pub IoStatus: IO_STATUS_BLOCK,
    pub RequestorMode: i8,
    pub PendingReturned: u8,
    pub StackCount: i8,
    pub CurrentLocation: i8,
    pub Cancel: u8,
    pub CancelIrql: u8,
    pub ApcEnvironment: i8,
    pub AllocationFlags: u8,
    pub UserIosb: PVOID,
    pub UserEvent: PVOID,
    pub Overlay: [PVOID; 2],
    pub CancelRoutine: PVOID,
    pub UserBuffer: PVOID,
    pub Tail: IRP_TAIL,
}

/// `IRP::Tail` (x64): the union's `Overlay` member, then `ApcRest`: the rest of its largest
/// member, `Apc` (a `KAPC`, 0x58 bytes).
#[repr(C)]
pub struct IRP_TAIL {
    pub Overlay: IRP_TAIL_OVERLAY,
    pub ApcRest: [u8; 8],
}

/// `IRP::Tail.Overlay` (x64): size 0x50.
#[repr(C)]
pub struct IRP_TAIL_OVERLAY {
    pub DriverContext: [PVOID; 4],
    pub Thread: PVOID,
    pub AuxiliaryBuffer: PVOID,
    pub ListEntry: [PVOID; 2],
    /// The `CurrentStackLocation` member of its union with `PacketType`.
    pub CurrentStackLocation: *mut IO_STACK_LOCATION,
    pub OriginalFileObject: PVOID,
}

/// `IO_STACK_LOCATION` (x64): size 0x48; `Parameters` is a 32-byte union.
#[repr(C)]
pub struct IO_STACK_LOCATION {
    pub MajorFunction: u8,
    pub MinorFunction: u8,
    pub Flags: u8,
    pub Control: u8,
    pub Parameters: [PVOID; 4],
    pub DeviceObject: *mut DEVICE_OBJECT,
    pub FileObject: PVOID,
    pub CompletionRoutine: PIO_COMPLETION_ROUTINE,
    pub Context: PVOID,
}

/// `IO_NO_INCREMENT`: the priority boost of a completion that waited for nothing.
pub const IO_NO_INCREMENT: i8 = 0;

/// `IoSetNextIrpStackLocation` (the wdm.h inline): makes the next stack location the current
/// one — what a driver does before it completes, itself, an IRP it allocated and set a completion
/// routine in (that routine is in the next location).
///
/// # Safety
/// `Irp` is a valid IRP whose `CurrentLocation` is above 1 (a location is left below it).
pub unsafe fn IoSetNextIrpStackLocation(Irp: *mut IRP) {
    // SAFETY: per the contract, a valid IRP, the caller's alone while it does this.
    let irp = unsafe { &mut *Irp };
    irp.CurrentLocation -= 1;
    // SAFETY: per the contract a stack location is below the current one, in the same allocation.
    irp.Tail.Overlay.CurrentStackLocation = unsafe { irp.Tail.Overlay.CurrentStackLocation.sub(1) };
}

/// `IoGetNextIrpStackLocation` (the wdm.h inline): the stack location below the current one, the
/// one the driver an IRP is sent to (or a WSK provider) gets, where a completion routine is set.
///
/// # Safety
/// `Irp` is a valid IRP whose `CurrentLocation` is above 1.
#[must_use]
pub unsafe fn IoGetNextIrpStackLocation(Irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: per the contract, a valid IRP.
    let current = unsafe { (*Irp).Tail.Overlay.CurrentStackLocation };
    // SAFETY: per the contract a stack location is below the current one, in the same allocation.
    unsafe { current.sub(1) }
}

/// `IRP_MJ_INTERNAL_DEVICE_CONTROL`: the major function of an IRP a driver sends to one of its
/// own device objects (wsk-client: a request no provider completed, see its `irp` module).
pub const IRP_MJ_INTERNAL_DEVICE_CONTROL: u8 = 0x0F;

/// `DRIVER_DISPATCH`. Called in the sender's context, at its IRQL (<= `DISPATCH_LEVEL`).
pub type PDRIVER_DISPATCH =
    Option<unsafe extern "system" fn(DeviceObject: *mut DEVICE_OBJECT, Irp: *mut IRP) -> NTSTATUS>;

/// `IO_COMPLETION_ROUTINE`. IRQL <= `DISPATCH_LEVEL`.
pub type PIO_COMPLETION_ROUTINE = Option<
    unsafe extern "system" fn(
        DeviceObject: *mut DEVICE_OBJECT,
        Irp: *mut IRP,
        Context: PVOID,
    ) -> NTSTATUS,
>;

/// `OBJECT_ATTRIBUTES`: size 48.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OBJECT_ATTRIBUTES {
    pub Length: u32,
    pub RootDirectory: HANDLE,
    pub ObjectName: *const UNICODE_STRING,
    pub Attributes: u32,
    pub SecurityDescriptor: PVOID,
    pub SecurityQualityOfService: PVOID,
}
pub const OBJ_CASE_INSENSITIVE: u32 = 0x0000_0040;
pub const OBJ_KERNEL_HANDLE: u32 = 0x0000_0200;
/// `KEY_READ`.
pub const KEY_READ: u32 = 0x0002_0019;
/// `KEY_VALUE_INFORMATION_CLASS` `KeyValuePartialInformation`.
pub const KeyValuePartialInformation: i32 = 2;
/// `KEY_VALUE_PARTIAL_INFORMATION`: a 12-byte header, then `DataLength` bytes of data.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KEY_VALUE_PARTIAL_INFORMATION {
    pub TitleIndex: u32,
    pub Type: u32,
    pub DataLength: u32,
    pub Data: [u8; 1],
}
pub const REG_SZ: u32 = 1;
pub const REG_DWORD: u32 = 4;

/// `DRIVER_UNLOAD`.
pub type PDRIVER_UNLOAD = Option<unsafe extern "system" fn(DriverObject: *mut DRIVER_OBJECT)>;

/// `DRIVER_OBJECT` (x64 layout; size 0x150). Only `DriverUnload` is written by this driver.
#[repr(C)]
pub struct DRIVER_OBJECT {
    pub Type: i16,
    pub Size: i16,
    pub DeviceObject: PVOID,
    pub Flags: u32,
    pub DriverStart: PVOID,
    pub DriverSize: u32,
    pub DriverSection: PVOID,
    pub DriverExtension: PVOID,
    pub DriverName: UNICODE_STRING,
    pub HardwareDatabase: *mut UNICODE_STRING,
    pub FastIoDispatch: PVOID,
    pub DriverInit: PVOID,
    pub DriverStartIo: PVOID,
    pub DriverUnload: PDRIVER_UNLOAD,
    pub MajorFunction: [PVOID; 28],
}

#[cfg_attr(
    wsk_kernel,
    link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "system" {
    /// Any IRQL <= `DISPATCH_LEVEL` for non-paged pool. Does not zero the memory.
    pub fn ExAllocatePoolWithTag(PoolType: POOL_TYPE, NumberOfBytes: usize, Tag: u32) -> PVOID;
    /// IRQL <= `DISPATCH_LEVEL` for non-paged pool.
    pub fn ExFreePoolWithTag(P: PVOID, Tag: u32);
    /// `PASSIVE_LEVEL`.
    pub fn MmGetSystemRoutineAddress(SystemRoutineName: *const UNICODE_STRING) -> *mut c_void;
    /// `PASSIVE_LEVEL`. Always `STATUS_SUCCESS` (Windows 2000 and later).
    pub fn RtlGetVersion(lpVersionInformation: *mut RTL_OSVERSIONINFOW) -> NTSTATUS;
    /// `PASSIVE_LEVEL`. Creates a device object of `DriverObject` (which it references until the
    /// device object is deleted and its last reference dropped).
    pub fn IoCreateDevice(
        DriverObject: *mut DRIVER_OBJECT,
        DeviceExtensionSize: u32,
        DeviceName: *const UNICODE_STRING,
        DeviceType: u32,
        DeviceCharacteristics: u32,
        Exclusive: u8,
        DeviceObject: *mut *mut DEVICE_OBJECT,
    ) -> NTSTATUS;
    /// `PASSIVE_LEVEL`. The object goes away once its last reference is dropped.
    pub fn IoDeleteDevice(DeviceObject: *mut DEVICE_OBJECT);
    /// IRQL <= `DISPATCH_LEVEL`. NULL when out of memory.
    pub fn IoAllocateWorkItem(DeviceObject: *mut DEVICE_OBJECT) -> *mut IO_WORKITEM;
    /// IRQL <= `DISPATCH_LEVEL`. References the work item's device object until the routine has
    /// returned, which keeps the driver image loaded meanwhile.
    pub fn IoQueueWorkItem(
        IoWorkItem: *mut IO_WORKITEM,
        WorkerRoutine: PIO_WORKITEM_ROUTINE,
        QueueType: WORK_QUEUE_TYPE,
        Context: PVOID,
    );
    /// IRQL <= `DISPATCH_LEVEL`.
    pub fn IoFreeWorkItem(IoWorkItem: *mut IO_WORKITEM);
    /// IRQL <= `DISPATCH_LEVEL`.
    pub fn KeInitializeEvent(Event: *mut KEVENT, Type: EVENT_TYPE, State: u8);
    /// IRQL <= `DISPATCH_LEVEL` (with `Wait` FALSE). Returns the previous state.
    pub fn KeSetEvent(Event: *mut KEVENT, Increment: i32, Wait: u8) -> i32;
    /// IRQL <= `DISPATCH_LEVEL`.
    pub fn KeClearEvent(Event: *mut KEVENT);
    /// `PASSIVE_LEVEL` to wait (any `Timeout`); <= `DISPATCH_LEVEL` with a zero timeout.
    /// `Timeout`: NULL waits forever; negative is relative, in 100 ns units.
    /// Returns `STATUS_SUCCESS` when signalled, `STATUS_TIMEOUT` when the time ran out.
    pub fn KeWaitForSingleObject(
        Object: PVOID,
        WaitReason: i32,
        WaitMode: i8,
        Alertable: u8,
        Timeout: *const i64,
    ) -> NTSTATUS;
    /// IRQL <= `DISPATCH_LEVEL`. Raises to `DISPATCH_LEVEL`, acquires the lock, returns the IRQL
    /// before (`KeAcquireSpinLock` is this function on x64).
    pub fn KeAcquireSpinLockRaiseToDpc(SpinLock: *mut KSPIN_LOCK) -> KIRQL;
    /// `DISPATCH_LEVEL` (the lock held). Releases the lock and lowers to `NewIrql`.
    pub fn KeReleaseSpinLock(SpinLock: *mut KSPIN_LOCK, NewIrql: KIRQL);
    /// Any IRQL. Initialises a DPC object (not queued).
    pub fn KeInitializeDpc(
        Dpc: *mut KDPC,
        DeferredRoutine: PKDEFERRED_ROUTINE,
        DeferredContext: PVOID,
    );
    /// `PASSIVE_LEVEL`. Returns once every DPC queued on any processor, when it was called, has run.
    pub fn KeFlushQueuedDpcs();
    /// IRQL <= `DISPATCH_LEVEL`. Initialises a notification timer (not set).
    pub fn KeInitializeTimer(Timer: *mut KTIMER);
    /// IRQL <= `DISPATCH_LEVEL`. Sets the timer to expire at `DueTime` (negative: relative, in 100
    /// ns units) and then to queue `Dpc` (NULL: none); a set timer is reset. Returns TRUE when the
    /// timer was set already.
    pub fn KeSetTimer(Timer: *mut KTIMER, DueTime: LARGE_INTEGER, Dpc: *mut KDPC) -> u8;
    /// IRQL <= `DISPATCH_LEVEL`. Returns TRUE when the timer was set (it will not expire now);
    /// FALSE when it was not — its DPC may still be queued or running.
    pub fn KeCancelTimer(Timer: *mut KTIMER) -> u8;
    /// Any IRQL. The interrupt time: 100 ns units since the system started (not adjusted with the
    /// clock).
    pub fn KeQueryInterruptTime() -> u64;
    /// IRQL <= `DISPATCH_LEVEL`. NULL when out of memory. `StackSize` is a `CCHAR`.
    pub fn IoAllocateIrp(StackSize: i8, ChargeQuota: u8) -> *mut IRP;
    /// IRQL <= `DISPATCH_LEVEL`. The IRP must not be pending.
    pub fn IoFreeIrp(Irp: *mut IRP);
    /// IRQL <= `DISPATCH_LEVEL`. Reinitializes an IRP from `IoAllocateIrp` that is not pending
    /// (completed, its routine run) for another use: its stack locations cleared, none current,
    /// `IoStatus.Status` set to `Iostatus`; its allocation kept.
    pub fn IoReuseIrp(Irp: *mut IRP, Iostatus: NTSTATUS);
    /// IRQL <= `DISPATCH_LEVEL`. Returns TRUE when the IRP's cancel routine was called.
    pub fn IoCancelIrp(Irp: *mut IRP) -> u8;
    /// `IoCompleteRequest` (a wdm.h macro for this function). IRQL <= `DISPATCH_LEVEL`. Runs the
    /// completion routines from the IRP's current stack location up, with its `IoStatus`.
    pub fn IofCompleteRequest(Irp: *mut IRP, PriorityBoost: i8);
    /// `IoCallDriver` (a wdm.h macro for this function). IRQL <= `DISPATCH_LEVEL`. Makes the
    /// IRP's next stack location current and calls the dispatch routine of `DeviceObject`'s
    /// driver for its `MajorFunction`; returns what that returns.
    pub fn IofCallDriver(DeviceObject: *mut DEVICE_OBJECT, Irp: *mut IRP) -> NTSTATUS;
    /// IRQL <= `DISPATCH_LEVEL`. Sets `CompletionRoutine` in the IRP's next stack location and
    /// references `DeviceObject` until the routine has returned (`IoSetCompletionRoutineEx`,
    /// wdm.h: so the driver is not unloaded while its routine runs). Fails with
    /// `STATUS_INSUFFICIENT_RESOURCES`.
    pub fn IoSetCompletionRoutineEx(
        DeviceObject: *mut DEVICE_OBJECT,
        Irp: *mut IRP,
        CompletionRoutine: PIO_COMPLETION_ROUTINE,
        Context: PVOID,
        InvokeOnSuccess: u8,
        InvokeOnError: u8,
        InvokeOnCancel: u8,
    ) -> NTSTATUS;
    /// IRQL <= `DISPATCH_LEVEL`. NULL when out of memory.
    pub fn IoAllocateMdl(
        VirtualAddress: PVOID,
        Length: u32,
        SecondaryBuffer: u8,
        ChargeQuota: u8,
        Irp: *mut IRP,
    ) -> *mut crate::MDL;
    /// IRQL <= `DISPATCH_LEVEL`. Fills in the MDL of a non-paged buffer.
    pub fn MmBuildMdlForNonPagedPool(MemoryDescriptorList: *mut crate::MDL);
    /// IRQL <= `DISPATCH_LEVEL`.
    pub fn IoFreeMdl(Mdl: *mut crate::MDL);
    /// IRQL <= `DISPATCH_LEVEL` with `AccessMode` `KernelMode`. Maps an MDL's locked pages (the
    /// function behind `MmGetSystemAddressForMdlSafe`); NULL when it cannot.
    pub fn MmMapLockedPagesSpecifyCache(
        MemoryDescriptorList: *mut crate::MDL,
        AccessMode: i8,
        CacheType: i32,
        RequestedAddress: PVOID,
        BugCheckOnFailure: u32,
        Priority: u32,
    ) -> PVOID;
    /// `PASSIVE_LEVEL`.
    pub fn ZwOpenKey(
        KeyHandle: *mut HANDLE,
        DesiredAccess: u32,
        ObjectAttributes: *const OBJECT_ATTRIBUTES,
    ) -> NTSTATUS;
    /// `PASSIVE_LEVEL`. `STATUS_BUFFER_OVERFLOW`/`STATUS_BUFFER_TOO_SMALL` when `Length` is short.
    pub fn ZwQueryValueKey(
        KeyHandle: HANDLE,
        ValueName: *const UNICODE_STRING,
        KeyValueInformationClass: i32,
        KeyValueInformation: PVOID,
        Length: u32,
        ResultLength: *mut u32,
    ) -> NTSTATUS;
    /// `PASSIVE_LEVEL`.
    pub fn ZwClose(Handle: HANDLE) -> NTSTATUS;
    /// Any IRQL. Stops the system with a bug check; never returns.
    pub fn KeBugCheckEx(
        BugCheckCode: u32,
        BugCheckParameter1: usize,
        BugCheckParameter2: usize,
        BugCheckParameter3: usize,
        BugCheckParameter4: usize,
    ) -> !;
}

#[cfg_attr(
    wsk_kernel,
    link(name = "ntoskrnl.exe", kind = "raw-dylib", modifiers = "+verbatim")
)]
unsafe extern "C" {
    /// `__cdecl`, variadic. Any IRQL, as long as the format uses no Unicode conversion (`%wZ`,
    /// `%ws`, `%C`, `%S`), which this driver never does.
    pub fn DbgPrintEx(ComponentId: u32, Level: u32, Format: *const c_char, ...) -> u32;
}
