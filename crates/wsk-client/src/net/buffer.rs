//! [`Buffer`]: bytes in non-paged pool with the MDL that describes them, for `WskSend` and
//! `WskReceive` (`WSK_BUF`). The `WSK_BUF` a buffer hands out never claims more bytes than the
//! buffer (and its MDL) holds: a longer `WSK_BUF` makes the provider read or write past the MDL,
//! which bugchecks Windows.
//!
//! IRQL: creating and dropping at <= `DISPATCH_LEVEL` (non-paged pool, `IoAllocateMdl`,
//! `MmBuildMdlForNonPagedPool`, `IoFreeMdl`).

use core::ptr::NonNull;

use crate::client::Client;
use crate::log::log;
use crate::pool::{PoolState, PoolTag};
use crate::status::NtError;
use crate::sys::{IoAllocateMdl, IoFreeMdl, MDL, MmBuildMdlForNonPagedPool, WSK_BUF};

/// Non-paged bytes of client `C` with their MDL.
pub struct Buffer {
    // INVARIANT: `capacity` bytes of non-paged pool from `pool` with `tag`, described by `mdl`.
    memory: NonNull<u8>,
    capacity: usize,
    mdl: NonNull<MDL>,
    tag: PoolTag,
    pool: &'static PoolState,
}

// SAFETY: pool memory and its MDL are not tied to a thread.
unsafe impl Send for Buffer {}

impl Buffer {
    /// The largest capacity: what one MDL can describe, 4 GiB − `PAGE_SIZE` (`IoAllocateMdl`'s
    /// Remarks).
    pub const MAX_CAPACITY: usize = 0xFFFF_F000;

    /// A zeroed buffer of `capacity` bytes (1 to [`Buffer::MAX_CAPACITY`]), tagged
    /// `C::BUFFER_TAG`.
    ///
    /// # Errors
    /// `STATUS_INVALID_PARAMETER` for a capacity of 0 or above [`Buffer::MAX_CAPACITY`] (logged);
    /// `STATUS_INSUFFICIENT_RESOURCES` when the pool or the MDL cannot be allocated.
    pub fn new<C: Client>(capacity: usize) -> Result<Self, NtError> {
        let length = match u32::try_from(capacity) {
            Ok(length) if length > 0 && capacity <= Self::MAX_CAPACITY => length,
            _ => {
                log!(
                    C,
                    DPFLTR_ERROR_LEVEL,
                    "buffer: a capacity of 0x%llX bytes is not 1 to 0xFFFFF000",
                    capacity as u64
                );
                return Err(NtError::INVALID_PARAMETER);
            }
        };
        let pool = &C::state().pool;
        let tag = C::BUFFER_TAG;
        let memory = pool.allocate_bytes(capacity, tag).ok_or_else(|| {
            log!(
                C,
                DPFLTR_ERROR_LEVEL,
                "buffer: no pool for %u bytes",
                length
            );
            NtError::INSUFFICIENT_RESOURCES
        })?;
        // SAFETY: `capacity` fresh bytes nobody else sees.
        unsafe { memory.as_ptr().write_bytes(0, capacity) };
        // SAFETY: a non-paged buffer of `length` bytes; no IRP; IRQL <= DISPATCH_LEVEL.
        let mdl =
            unsafe { IoAllocateMdl(memory.as_ptr().cast(), length, 0, 0, core::ptr::null_mut()) };
        let Some(mdl) = NonNull::new(mdl) else {
            // SAFETY: allocated just above with `tag`, not used afterwards.
            unsafe { pool.free_bytes(memory, tag) };
            log!(C, DPFLTR_ERROR_LEVEL, "buffer: IoAllocateMdl failed");
            return Err(NtError::INSUFFICIENT_RESOURCES);
        };
        // SAFETY: the MDL of a non-paged buffer; IRQL <= DISPATCH_LEVEL.
        unsafe { MmBuildMdlForNonPagedPool(mdl.as_ptr()) };
        // INVARIANT: as built above.
        Ok(Self {
            memory,
            capacity,
            mdl,
            tag,
            pool,
        })
    }

    /// The bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: by the type invariant, `capacity` initialised bytes owned by `self`.
        unsafe { core::slice::from_raw_parts(self.memory.as_ptr(), self.capacity) }
    }

    /// The bytes, to fill.
    #[must_use]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably through `self`.
        unsafe { core::slice::from_raw_parts_mut(self.memory.as_ptr(), self.capacity) }
    }

    /// How many bytes it holds.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// A `WSK_BUF` of the first `length` bytes — never more than the buffer holds.
    #[must_use]
    pub fn wsk_buf(&self, length: usize) -> WSK_BUF {
        WSK_BUF {
            Mdl: self.mdl.as_ptr(),
            Offset: 0,
            Length: length.min(self.capacity),
        }
    }
}

impl Drop for Buffer {
    /// IRQL <= `DISPATCH_LEVEL`.
    fn drop(&mut self) {
        // SAFETY: by the type invariant, the buffer's MDL; freed once.
        unsafe { IoFreeMdl(self.mdl.as_ptr()) };
        // SAFETY: by the type invariant, allocated from `pool` with `tag`; not used afterwards.
        unsafe { self.pool.free_bytes(self.memory, self.tag) };
    }
}
