//! Pool allocation: one tag per purpose, `ExAllocatePool2` where the system has it, the right
//! non-paged pool type for the running Windows version, and a count of live allocations per client
//! that a driver reports at unload.
//!
//! `ExAllocatePool2` exists from Windows 10 2004 on. Importing it statically would stop the driver
//! from loading on Windows 7 to 10 1909 (and on Wine), so [`select`] looks it up once, at
//! `PASSIVE_LEVEL` at the top of `DriverEntry` (where the WDK's `ExInitializeDriverRuntime` is
//! called), and otherwise falls back to `ExAllocatePoolWithTag`. An allocation or a registration
//! before the selection fails cleanly. The fallback's pool type
//! is `NonPagedPoolNx` from Windows 8 (6.2) on and `NonPagedPool` before, where `NonPagedPoolNx`
//! does not exist ("NX Pool Compatibility Issues"): the `RtlGetVersion` form of the WDK's
//! `ExInitializeDriverRuntime(DrvRtPoolNxOptIn)`.
//!
//! IRQL: allocation and free at <= `DISPATCH_LEVEL` (non-paged pool); [`select`] at
//! `PASSIVE_LEVEL`; the rest at any IRQL.

use core::ffi::c_void;
use core::mem::{ManuallyDrop, MaybeUninit, align_of, size_of};
use core::ops::{Deref, DerefMut};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicUsize, Ordering};

use crate::client::Client;
use crate::log::log;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    ExAllocatePoolWithTag, ExFreePoolWithTag, MmGetSystemRoutineAddress, NonPagedPool,
    NonPagedPoolNx, PFN_EX_ALLOCATE_POOL2, POOL_FLAG_NON_PAGED, POOL_TYPE, RTL_OSVERSIONINFOW,
    RtlGetVersion, UNICODE_STRING,
};

/// A pool tag: four characters, shown by poolmon and `!poolused` in memory order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolTag(u32);

/// Whether every tag of `library` and `own` differs from every other: one tag per purpose, so
/// that a leak (or `!poolused`) names what leaked. For a compile-time check of a driver's tags
/// against the library's ([`crate::Client::LIBRARY_TAGS`]).
#[must_use]
pub const fn distinct(library: &[PoolTag], own: &[PoolTag]) -> bool {
    /// The `i`-th tag of `library` followed by `own` (`i` below their total length).
    #[allow(clippy::indexing_slicing)] // `i` is below the total, so in one of the two
    const fn at(library: &[PoolTag], own: &[PoolTag], i: usize) -> u32 {
        if i < library.len() {
            library[i].0
        } else {
            own[i - library.len()].0
        }
    }
    let total = library.len() + own.len();
    let mut i = 0;
    while i < total {
        let mut j = i + 1;
        while j < total {
            if at(library, own, i) == at(library, own, j) {
                return false;
            }
            j += 1;
        }
        i += 1;
    }
    true
}

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

    /// This tag with its fourth character replaced: a tag of the same family for another purpose.
    #[must_use]
    pub const fn with_last(self, last: u8) -> Self {
        let [a, b, c, _] = self.0.to_le_bytes();
        Self::new([a, b, c, last])
    }
}

/// Which pool routine a client uses, chosen by [`select`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocator {
    /// `ExAllocatePool2(POOL_FLAG_NON_PAGED)`: Windows 10 2004 and later.
    Pool2,
    /// `ExAllocatePoolWithTag(NonPagedPoolNx)`: Windows 8 to 10 1909.
    PoolWithTagNx,
    /// `ExAllocatePoolWithTag(NonPagedPool)`: before Windows 8.
    PoolWithTag,
}

/// A client's pool state: the allocator chosen at registration and the live allocation count.
pub struct PoolState {
    /// `ExAllocatePool2`, or NULL when the system does not export it (or before `select`).
    allocate_pool2: AtomicPtr<c_void>,
    /// The `POOL_TYPE` of the `ExAllocatePoolWithTag` fallback.
    pool_type: AtomicI32,
    /// Allocations made through this state and not yet freed.
    live: AtomicUsize,
    /// [`select`] ran.
    selected: AtomicBool,
}

/// `L"ExAllocatePool2"` with its terminating NUL, as the WDK's `RTL_CONSTANT_STRING` lays it out:
/// the `UNICODE_STRING`'s `Length` counts the 15 characters, its `MaximumLength` the NUL too.
/// (The NUL also keeps the size of the image's read-only data a multiple of 4: lld-link appends
/// the export directory right after it, unaligned otherwise, and the image check rejects that.)
static POOL2_NAME: [u16; 16] = ascii_to_utf16(*b"ExAllocatePool2\0");

/// Widens ASCII to UTF-16 at compile time (an index out of range would fail the build, not run):
/// the name of a routine to look up with `MmGetSystemRoutineAddress`, as `ExAllocatePool2` here.
#[allow(clippy::indexing_slicing)]
#[must_use]
pub const fn ascii_to_utf16<const N: usize>(ascii: [u8; N]) -> [u16; N] {
    let mut wide = [0u16; N];
    let mut i = 0;
    while i < N {
        wide[i] = ascii[i] as u16;
        i += 1;
    }
    wide
}

/// The non-paged pool type for Windows `major.minor`: `NonPagedPoolNx` from 6.2 (Windows 8) on.
#[must_use]
pub const fn non_paged_pool_type(major: u32, minor: u32) -> POOL_TYPE {
    if major > 6 || (major == 6 && minor >= 2) {
        NonPagedPoolNx
    } else {
        NonPagedPool
    }
}

impl PoolState {
    /// Nothing selected, nothing allocated.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            allocate_pool2: AtomicPtr::new(ptr::null_mut()),
            pool_type: AtomicI32::new(NonPagedPool),
            live: AtomicUsize::new(0),
            selected: AtomicBool::new(false),
        }
    }

    /// Whether [`select`] ran for this state.
    #[must_use]
    pub fn is_selected(&self) -> bool {
        self.selected.load(Ordering::Acquire)
    }

    /// Looks up `ExAllocatePool2` and the Windows version, and remembers which allocator to use.
    ///
    /// IRQL: `PASSIVE_LEVEL` (`MmGetSystemRoutineAddress`, `RtlGetVersion`).
    fn select(&self) -> Allocator {
        #[allow(clippy::cast_possible_truncation)] // 32 bytes
        const BUFFER_BYTES: u16 = (POOL2_NAME.len() * size_of::<u16>()) as u16;
        // The characters, without the NUL (one UTF-16 unit, 2 bytes).
        const NAME_BYTES: u16 = BUFFER_BYTES - 2;
        #[allow(clippy::cast_possible_truncation)] // 276 bytes
        const VERSION_BYTES: u32 = size_of::<RTL_OSVERSIONINFOW>() as u32;
        // Only the size is set: RtlGetVersion fills in the rest, and only the two fields it
        // wrote are read. (Zeroing the 276 bytes first cost a memset call of ~80 instructions,
        // a third of what DriverEntry executes.)
        let mut version = MaybeUninit::<RTL_OSVERSIONINFOW>::uninit();
        let info = version.as_mut_ptr();
        // SAFETY: `info` points at the local above; the place is a field of it, named through the
        // raw pointer, creating no reference to the uninitialised rest.
        let size = unsafe { &raw mut (*info).dwOSVersionInfoSize };
        // SAFETY: `size` is the aligned, writable field of the local just named.
        unsafe { size.write(VERSION_BYTES) };
        // SAFETY: PASSIVE_LEVEL; `info` is a writable RTL_OSVERSIONINFOW-sized local with its
        // size field set, which is all RtlGetVersion reads.
        let status = NtStatus::from_raw(unsafe { RtlGetVersion(info) });
        // RtlGetVersion always succeeds; should it not, assume the older, safe pool type.
        let pool_type = if status.is_success() {
            // SAFETY: a successful RtlGetVersion wrote the structure, this field included.
            let major = unsafe { (*info).dwMajorVersion };
            // SAFETY: as above.
            let minor = unsafe { (*info).dwMinorVersion };
            non_paged_pool_type(major, minor)
        } else {
            NonPagedPool
        };
        self.pool_type.store(pool_type, Ordering::Release);
        let name = UNICODE_STRING {
            Length: NAME_BYTES,
            MaximumLength: BUFFER_BYTES,
            Buffer: POOL2_NAME.as_ptr().cast_mut(),
        };
        // SAFETY: `name` is a valid counted string over a static buffer, at PASSIVE_LEVEL; the
        // routine only reads it.
        let routine = unsafe { MmGetSystemRoutineAddress(&raw const name) };
        self.allocate_pool2.store(routine, Ordering::Release);
        self.selected.store(true, Ordering::Release);
        self.allocator()
    }

    /// The allocator chosen by [`select`] (`PoolWithTag` before it ran).
    #[must_use]
    pub fn allocator(&self) -> Allocator {
        if !self.allocate_pool2.load(Ordering::Acquire).is_null() {
            Allocator::Pool2
        } else if self.pool_type.load(Ordering::Acquire) == NonPagedPoolNx {
            Allocator::PoolWithTagNx
        } else {
            Allocator::PoolWithTag
        }
    }

    /// The number of live allocations made through this state.
    #[must_use]
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Allocates `size` bytes of non-paged pool (not necessarily zeroed); `None` when the pool
    /// fails or the allocator was never selected.
    ///
    /// IRQL <= `DISPATCH_LEVEL`.
    fn allocate(&self, size: usize, tag: PoolTag) -> Option<NonNull<u8>> {
        if !self.is_selected() {
            return None;
        }
        let pool2 = self.allocate_pool2.load(Ordering::Acquire);
        let memory = if pool2.is_null() {
            let pool_type = self.pool_type.load(Ordering::Acquire);
            // SAFETY: non-paged pool may be requested at IRQL <= DISPATCH_LEVEL; the size is
            // non-zero; the type exists on this system (see `select`).
            unsafe { ExAllocatePoolWithTag(pool_type, size, tag.raw()) }
        } else {
            // SAFETY: `pool2` is what MmGetSystemRoutineAddress returned for "ExAllocatePool2",
            // whose signature is PFN_EX_ALLOCATE_POOL2; function and data pointers have one size.
            let allocate: PFN_EX_ALLOCATE_POOL2 = unsafe { core::mem::transmute(pool2) };
            // SAFETY: as above, at IRQL <= DISPATCH_LEVEL for POOL_FLAG_NON_PAGED.
            unsafe { allocate(POOL_FLAG_NON_PAGED, size, tag.raw()) }
        };
        let memory = NonNull::new(memory.cast::<u8>())?;
        self.live.fetch_add(1, Ordering::AcqRel);
        Some(memory)
    }

    /// Allocates `size` bytes (for [`crate::buffer::Buffer`]); `None` as [`PoolState::allocate`].
    pub(crate) fn allocate_bytes(&self, size: usize, tag: PoolTag) -> Option<NonNull<u8>> {
        self.allocate(size, tag)
    }

    /// Frees what [`PoolState::allocate_bytes`] returned.
    ///
    /// # Safety
    /// As [`PoolState::free`].
    pub(crate) unsafe fn free_bytes(&self, memory: NonNull<u8>, tag: PoolTag) {
        // SAFETY: per this function's contract.
        unsafe { self.free(memory, tag) };
    }

    /// Frees what [`PoolState::allocate`] returned, with the same tag.
    ///
    /// IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Safety
    /// `memory` came from `self.allocate` with `tag` and is not used afterwards.
    unsafe fn free(&self, memory: NonNull<u8>, tag: PoolTag) {
        // SAFETY: per this function's contract.
        unsafe { ExFreePoolWithTag(memory.as_ptr().cast(), tag.raw()) };
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Chooses client `C`'s pool routine and type for this system (see the module docs) and logs the
/// choice. Call it at the top of `DriverEntry`, before any [`PoolBox`] and before
/// [`crate::Registration::register`].
///
/// IRQL: `PASSIVE_LEVEL`.
#[allow(clippy::must_use_candidate)] // the choice is logged; callers rarely need it
pub fn select<C: Client>() -> Allocator {
    let allocator = C::state().pool.select();
    match allocator {
        Allocator::Pool2 => log!(C, DPFLTR_INFO_LEVEL, "pool: ExAllocatePool2"),
        Allocator::PoolWithTagNx => log!(
            C,
            DPFLTR_INFO_LEVEL,
            "pool: ExAllocatePoolWithTag(NonPagedPoolNx) fallback"
        ),
        Allocator::PoolWithTag => log!(
            C,
            DPFLTR_INFO_LEVEL,
            "pool: ExAllocatePoolWithTag(NonPagedPool) fallback, before Windows 8"
        ),
    }
    allocator
}

impl Default for PoolState {
    fn default() -> Self {
        Self::new()
    }
}

/// An owned `T` in non-paged pool, counted in a client's [`PoolState`] and freed with its tag when
/// dropped.
///
/// It hands out raw pointers only (no `Deref`): the binding context is written by NMR and read by
/// other threads while it is owned here, so no Rust reference to the whole value is ever created.
pub struct PoolBox<T> {
    // INVARIANT: points at a live, initialised `T` allocated by `pool.allocate` with `tag`.
    ptr: NonNull<T>,
    tag: PoolTag,
    pool: &'static PoolState,
}

impl<T> PoolBox<T> {
    /// Allocates non-paged pool for a `T` with `tag`, counted for client `C`, and moves `value`
    /// into it (the whole value is written: no zeroing needed).
    ///
    /// IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// `STATUS_INSUFFICIENT_RESOURCES` when the pool allocation fails;
    /// `STATUS_INVALID_DEVICE_STATE` (and a log line) when [`select`] never ran for `C`.
    pub fn try_new<C: Client>(value: T, tag: PoolTag) -> Result<Self, NtError> {
        const {
            // Pool blocks are 16-byte aligned on x64.
            assert!(align_of::<T>() <= 16 && size_of::<T>() > 0);
        };
        let pool = &C::state().pool;
        if !pool.is_selected() {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "pool: allocation before wsk_client::pool::select"
            );
            return Err(NtError::INVALID_DEVICE_STATE);
        }
        let memory = pool
            .allocate(size_of::<T>(), tag)
            .ok_or(NtError::INSUFFICIENT_RESOURCES)?;
        let ptr = memory.cast::<T>();
        // SAFETY: `ptr` is a fresh, suitably aligned allocation of `size_of::<T>()` bytes.
        unsafe { ptr.as_ptr().write(value) };
        // INVARIANT: allocated with `tag` and initialised just above.
        Ok(Self { ptr, tag, pool })
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
    /// `ptr` came from `PoolBox::<T>::into_raw` of a box made by `try_new::<C>` with `tag`, and
    /// nothing else owns it.
    #[must_use]
    pub unsafe fn from_raw<C: Client>(ptr: NonNull<T>, tag: PoolTag) -> Self {
        // INVARIANT: per the caller's contract.
        Self {
            ptr,
            tag,
            pool: &C::state().pool,
        }
    }
}

impl<T> Drop for PoolBox<T> {
    /// IRQL <= `DISPATCH_LEVEL`.
    fn drop(&mut self) {
        // SAFETY: by the type invariant the value is live and initialised, and owned here.
        unsafe { ptr::drop_in_place(self.ptr.as_ptr()) };
        // SAFETY: by the type invariant, allocated by `self.pool.allocate` with `self.tag`.
        unsafe { self.pool.free(self.ptr.cast(), self.tag) };
    }
}

// SAFETY: non-paged pool is not tied to a thread; the box owns its `T` like `Box<T>` does.
unsafe impl<T: Send> Send for PoolBox<T> {}
// SAFETY: `&PoolBox<T>` only hands out the address, as `&Box<T>` would a `&T`.
unsafe impl<T: Sync> Sync for PoolBox<T> {}

/// An owned `T` in non-paged pool that only Rust code reaches: a [`PoolBox`] that never hands out
/// its address, so it can be borrowed safely ([`Deref`], [`DerefMut`]). What a driver keeps in
/// pool of its own (a task's large parameters, a driver's context), with a tag of its own.
///
/// # Invariants
/// The box's address is never given out: every access goes through `&self` or `&mut self`.
pub struct Owned<T>(PoolBox<T>);

impl<T> Owned<T> {
    /// As [`PoolBox::try_new`].
    ///
    /// IRQL <= `DISPATCH_LEVEL`.
    ///
    /// # Errors
    /// As [`PoolBox::try_new`].
    pub fn try_new<C: Client>(value: T, tag: PoolTag) -> Result<Self, NtError> {
        PoolBox::try_new::<C>(value, tag).map(Self)
    }
}

impl<T> Deref for Owned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: live and initialised (`PoolBox`'s invariant), reached only through this
        // borrow of its owner (the invariant), so no `&mut T` exists meanwhile.
        unsafe { &*self.0.as_ptr() }
    }
}

impl<T> DerefMut for Owned<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: live and initialised (`PoolBox`'s invariant), reached only through this
        // exclusive borrow of its owner (the invariant).
        unsafe { &mut *self.0.as_ptr() }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use crate::binding::BindingSlot;
    use crate::{Client, ClientState, NtError, PoolTag, RegisterError, Registration, WskVersion};

    use super::{PoolBox, distinct};

    #[test]
    fn the_library_tags_are_one_per_purpose_and_collisions_are_found() {
        assert!(distinct(&Unselected::LIBRARY_TAGS, &[]));
        let own = PoolTag::new(*b"UnsX");
        assert!(distinct(&Unselected::LIBRARY_TAGS, &[own]));
        // A driver tag equal to the buffers' (the echo driver's context had it once).
        assert!(!distinct(
            &Unselected::LIBRARY_TAGS,
            &[Unselected::BUFFER_TAG]
        ));
        assert!(!distinct(&[], &[own, own]));
        assert!(!distinct(&[own], &[PoolTag::new(*b"UnsY"), own]));
    }

    /// A client whose pool nobody selected.
    struct Unselected;

    static STATE: ClientState<[BindingSlot; 1]> = ClientState::new();

    impl Client for Unselected {
        const NAME: &'static core::ffi::CStr = c"unselected";
        const MODULE_ID: crate::sys::GUID = crate::guid(0x7E57_0000_0000_0000_0000_0000_0000_0002);
        const POOL_TAG: PoolTag = PoolTag::new(*b"WskU");
        const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_0];
        fn state() -> &'static ClientState {
            &STATE
        }
    }

    #[test]
    fn nothing_is_allocated_or_registered_before_select() {
        let session = wsk_host_model::session();
        assert_eq!(
            PoolBox::try_new::<Unselected>(0_u32, Unselected::POOL_TAG).err(),
            Some(NtError::INVALID_DEVICE_STATE)
        );
        let mut driver = wsk_host_model::zeroed_driver_object();
        assert_eq!(
            Registration::<Unselected>::register(&mut driver).err(),
            Some(RegisterError::Failed(NtError::INVALID_DEVICE_STATE))
        );
        let log = session.log();
        assert_eq!(
            log,
            [
                "unselected: pool: allocation before wsk_client::pool::select",
                "unselected: register: call wsk_client::pool::select first (at the top of DriverEntry)"
            ]
        );
        assert!(session.events().is_empty(), "{:?}", session.events());
    }
}
