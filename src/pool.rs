//! Pool allocation: one tag per purpose, `ExAllocatePool2` where the system has it, and a count of
//! live allocations that the driver reports at unload.
//!
//! `ExAllocatePool2` exists from Windows 10 2004 on. Importing it statically would stop the driver
//! from loading on Windows 7 to 10 1909 (and on Wine), so [`select_allocator`] looks it up once, at
//! `DriverEntry`, and otherwise falls back to `ExAllocatePoolWithTag(NonPagedPoolNx)` plus zeroing.
//!
//! IRQL: allocation and free at <= `DISPATCH_LEVEL` (non-paged pool); [`select_allocator`] at
//! `PASSIVE_LEVEL`; the rest at any IRQL.

use core::ffi::c_void;
use core::mem::{ManuallyDrop, align_of, size_of};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::abi::{
    ExAllocatePoolWithTag, ExFreePoolWithTag, MmGetSystemRoutineAddress, NonPagedPoolNx,
    PFN_EX_ALLOCATE_POOL2, POOL_FLAG_NON_PAGED, UNICODE_STRING,
};
use crate::status::NtStatus;

/// A pool tag: four characters, shown by poolmon and `!poolused` in memory order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolTag(u32);

impl PoolTag {
    /// The tag whose four bytes, in memory order, are `chars` (`*b"WskA"` shows as `WskA`).
    #[must_use]
    pub const fn new(chars: [u8; 4]) -> Self {
        Self(u32::from_le_bytes(chars))
    }

    /// The `ULONG` the pool functions take.
    #[must_use]
    pub const fn raw(self) -> u32 {
        self.0
    }
}

/// The tag of the binding context, the driver's only pool allocation.
pub const BINDING_CONTEXT_TAG: PoolTag = PoolTag::new(*b"WskA");

/// Which pool routine the driver uses, chosen once by [`select_allocator`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// `ExAllocatePool2(POOL_FLAG_NON_PAGED)`: Windows 10 2004 and later; zeroes.
    Pool2,
    /// `ExAllocatePoolWithTag(NonPagedPoolNx)` and explicit zeroing: older systems.
    PoolWithTag,
}

/// `ExAllocatePool2`, or NULL when the system does not export it.
static ALLOCATE_POOL2: AtomicPtr<c_void> = AtomicPtr::new(ptr::null_mut());
/// Allocations made by this module and not yet freed.
static LIVE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// `L"ExAllocatePool2"`, without the terminating NUL (`UNICODE_STRING` is counted).
static POOL2_NAME: [u16; 15] = ascii_to_utf16(*b"ExAllocatePool2");

/// Widens ASCII to UTF-16 at compile time (an index out of range would fail the build, not run).
#[allow(clippy::indexing_slicing)]
const fn ascii_to_utf16<const N: usize>(ascii: [u8; N]) -> [u16; N] {
    let mut wide = [0u16; N];
    let mut i = 0;
    while i < N {
        wide[i] = ascii[i] as u16;
        i += 1;
    }
    wide
}

/// Looks up `ExAllocatePool2` and remembers which allocator to use.
///
/// IRQL: `PASSIVE_LEVEL` (`MmGetSystemRoutineAddress`). Called from `DriverEntry`, before any
/// allocation can happen.
pub fn select_allocator() -> Allocator {
    #[allow(clippy::cast_possible_truncation)] // 30 bytes
    const NAME_BYTES: u16 = (POOL2_NAME.len() * size_of::<u16>()) as u16;
    let name = UNICODE_STRING {
        Length: NAME_BYTES,
        MaximumLength: NAME_BYTES,
        Buffer: POOL2_NAME.as_ptr().cast_mut(),
    };
    // SAFETY: `name` is a valid counted string over a static buffer, at PASSIVE_LEVEL; the routine
    // only reads it.
    let routine = unsafe { MmGetSystemRoutineAddress(&raw const name) };
    ALLOCATE_POOL2.store(routine, Ordering::Release);
    current_allocator()
}

/// The allocator chosen by [`select_allocator`] (`PoolWithTag` before it ran). Any IRQL.
#[must_use]
pub fn current_allocator() -> Allocator {
    if ALLOCATE_POOL2.load(Ordering::Acquire).is_null() {
        Allocator::PoolWithTag
    } else {
        Allocator::Pool2
    }
}

/// The number of live allocations made through this module. Any IRQL.
#[must_use]
pub fn live_allocations() -> usize {
    LIVE_ALLOCATIONS.load(Ordering::Acquire)
}

/// Allocates `size` zeroed bytes of non-paged, non-executable pool.
///
/// IRQL <= `DISPATCH_LEVEL`.
fn allocate_zeroed(size: usize, tag: PoolTag) -> Option<NonNull<u8>> {
    let pool2 = ALLOCATE_POOL2.load(Ordering::Acquire);
    let memory = if pool2.is_null() {
        // SAFETY: non-paged pool may be requested at IRQL <= DISPATCH_LEVEL; the size is non-zero.
        let memory = unsafe { ExAllocatePoolWithTag(NonPagedPoolNx, size, tag.raw()) };
        let memory = NonNull::new(memory.cast::<u8>())?;
        // SAFETY: `memory` is a fresh allocation of `size` bytes that nothing else can see yet.
        unsafe { ptr::write_bytes(memory.as_ptr(), 0, size) };
        memory
    } else {
        // SAFETY: `pool2` is what MmGetSystemRoutineAddress returned for "ExAllocatePool2", whose
        // signature is PFN_EX_ALLOCATE_POOL2; function and data pointers have the same size.
        let allocate: PFN_EX_ALLOCATE_POOL2 = unsafe { core::mem::transmute(pool2) };
        // SAFETY: as above, at IRQL <= DISPATCH_LEVEL for POOL_FLAG_NON_PAGED.
        let memory = unsafe { allocate(POOL_FLAG_NON_PAGED, size, tag.raw()) };
        NonNull::new(memory.cast::<u8>())?
    };
    LIVE_ALLOCATIONS.fetch_add(1, Ordering::AcqRel);
    Some(memory)
}

/// Frees what [`allocate_zeroed`] returned, with the same tag.
///
/// IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `memory` came from [`allocate_zeroed`] with `tag` and is not used afterwards.
unsafe fn free(memory: NonNull<u8>, tag: PoolTag) {
    // SAFETY: per this function's contract.
    unsafe { ExFreePoolWithTag(memory.as_ptr().cast(), tag.raw()) };
    LIVE_ALLOCATIONS.fetch_sub(1, Ordering::AcqRel);
}

/// An owned `T` in non-paged pool, freed with its tag when dropped.
///
/// It hands out raw pointers only (no `Deref`): the binding context is written by NMR and read by
/// other threads while it is owned here, so no Rust reference to the whole value is ever created.
pub struct PoolBox<T> {
    // INVARIANT: points at a live, initialised `T` allocated by `allocate_zeroed` with `tag`.
    ptr: NonNull<T>,
    tag: PoolTag,
}

impl<T> PoolBox<T> {
    /// Allocates zeroed pool for a `T` and moves `value` into it.
    ///
    /// IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the pool allocation fails.
    pub fn try_new(value: T, tag: PoolTag) -> Result<Self, NtStatus> {
        const {
            // Pool blocks are 16-byte aligned on x64.
            assert!(align_of::<T>() <= 16 && size_of::<T>() > 0);
        };
        let memory =
            allocate_zeroed(size_of::<T>(), tag).ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        let ptr = memory.cast::<T>();
        // SAFETY: `ptr` is a fresh, suitably aligned allocation of `size_of::<T>()` bytes.
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: allocated with `tag` and initialised just above.
        Ok(Self { ptr, tag })
    }

    /// The value's address.
    #[must_use]
    pub const fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    /// Gives up ownership without touching the memory; [`PoolBox::from_raw`] takes it back.
    #[must_use]
    pub fn into_raw(self) -> NonNull<T> {
        ManuallyDrop::new(self).ptr
    }

    /// Takes back ownership of a value given up by [`PoolBox::into_raw`].
    ///
    /// # Safety
    /// `ptr` came from `PoolBox::<T>::into_raw` of a box with `tag`, and nothing else owns it.
    #[must_use]
    pub const unsafe fn from_raw(ptr: NonNull<T>, tag: PoolTag) -> Self {
        // INVARIANT: per the caller's contract.
        Self { ptr, tag }
    }
}

impl<T> Drop for PoolBox<T> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the value is live and initialised, and owned here.
        unsafe { ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: by the type invariant, allocated by `allocate_zeroed` with `self.tag`.
        unsafe { free(self.ptr.cast(), self.tag) };
    }
}
