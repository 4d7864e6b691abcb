//! A provider's receive indication, read defensively: the `WSK_DATA_INDICATION` list a
//! `WskReceiveEvent` hands over, each entry a `WSK_BUF` over a chain of the provider's MDLs. The
//! list is walked twice — once to check it, once to copy — and never trusted: at most
//! [`MAX_INDICATIONS`] entries and [`MAX_MDLS`] MDLs per entry (a list or chain that loops stops
//! there), every `WSK_BUF` within the bytes its MDLs describe, every MDL mapped, and the total
//! equal to the `BytesIndicated` the provider gave. A list that is not all of that is
//! [`Malformed`]: the caller takes none of it (`STATUS_DATA_NOT_ACCEPTED`: the transport keeps the
//! data for a `WskReceive`).
//!
//! The bytes of an MDL are reached through `map` ([`system_address`] in a driver: what
//! `MmGetSystemAddressForMdlSafe` does), so that the walk is checked on the host and fuzzed.
//!
//! IRQL: any (the walk reads memory the provider mapped); [`system_address`] <= `DISPATCH_LEVEL`.

use core::ptr;

use crate::sys::{
    MDL, MDL_MAPPED_TO_SYSTEM_VA, MDL_SOURCE_IS_NONPAGED_POOL, MdlMappingNoExecute, MmCached,
    MmMapLockedPagesSpecifyCache, NormalPagePriority, WSK_DATA_INDICATION,
};

/// The most entries of an indication list read.
pub const MAX_INDICATIONS: usize = 64;
/// The most MDLs of one entry's chain read.
pub const MAX_MDLS: usize = 64;

/// Why an indication list is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// More than [`MAX_INDICATIONS`] entries, or an entry over more than [`MAX_MDLS`] MDLs.
    TooLong,
    /// A `WSK_BUF` (its offset and length) past the bytes its MDLs describe, or without an MDL.
    PastMdl,
    /// An MDL whose pages could not be mapped.
    Unmapped,
    /// The entries' lengths do not add up to what the provider said it indicated.
    CountMismatch,
}

/// A mapping of a provider's MDL: its first byte (`ByteCount` bytes from there), or NULL.
pub type Map<'m> = &'m dyn Fn(*mut MDL) -> *const u8;

/// What `MmGetSystemAddressForMdlSafe(Mdl, NormalPagePriority | MdlMappingNoExecute)` returns:
/// `MappedSystemVa` for an MDL mapped already or of non-paged pool, else a new mapping (NULL when
/// the system cannot make one). IRQL <= `DISPATCH_LEVEL`.
///
/// # Safety
/// `mdl` is a valid MDL describing locked pages (a provider's indication).
#[must_use]
pub unsafe fn system_address(mdl: *mut MDL) -> *const u8 {
    // SAFETY: per the contract, a valid MDL (read as a copy of its fields).
    let header = unsafe { mdl.read() };
    if header.MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
        return header.MappedSystemVa.cast_const().cast();
    }
    // SAFETY: a valid MDL of locked pages, KernelMode (0), no bug check on failure; IRQL <=
    // DISPATCH_LEVEL.
    unsafe {
        MmMapLockedPagesSpecifyCache(
            mdl,
            0,
            MmCached,
            ptr::null_mut(),
            0,
            NormalPagePriority | MdlMappingNoExecute,
        )
    }
    .cast_const()
    .cast()
}

/// One pass over the list: `visit(bytes)` for each run of bytes in order, until it returns
/// `false`. Returns the total the list describes.
///
/// # Safety
/// As [`copy_indicated`].
unsafe fn walk(
    list: *const WSK_DATA_INDICATION,
    map: Map<'_>,
    mut visit: impl FnMut(&[u8]) -> bool,
) -> Result<usize, Malformed> {
    let mut total = 0usize;
    let mut entry = list;
    let mut entries = 0;
    let mut going = true;
    while !entry.is_null() {
        entries += 1;
        if entries > MAX_INDICATIONS {
            return Err(Malformed::TooLong);
        }
        // SAFETY: per the contract, a readable WSK_DATA_INDICATION of the provider's list.
        let WSK_DATA_INDICATION {
            Next: next,
            Buffer: buffer,
        } = unsafe { entry.read() };
        let mut left = buffer.Length;
        let mut skip = buffer.Offset as usize;
        let mut mdl = buffer.Mdl;
        let mut mdls = 0;
        if left > 0 && mdl.is_null() {
            return Err(Malformed::PastMdl);
        }
        while left > 0 {
            if mdl.is_null() {
                return Err(Malformed::PastMdl);
            }
            mdls += 1;
            if mdls > MAX_MDLS {
                return Err(Malformed::TooLong);
            }
            // SAFETY: per the contract, a readable MDL of the provider's chain.
            let header = unsafe { mdl.read() };
            let (count, following) = (header.ByteCount as usize, header.Next);
            if skip >= count {
                // The offset is into the first MDL only.
                return Err(Malformed::PastMdl);
            }
            let take = left.min(count - skip);
            let base = map(mdl);
            if base.is_null() {
                return Err(Malformed::Unmapped);
            }
            if going {
                // SAFETY: per the contract, a mapped MDL's `ByteCount` bytes are readable from
                // `base`; `skip + take <= count`.
                let bytes = unsafe { core::slice::from_raw_parts(base.wrapping_add(skip), take) };
                going = visit(bytes);
            }
            left -= take;
            skip = 0;
            mdl = following;
            total = total.checked_add(take).ok_or(Malformed::CountMismatch)?;
        }
        entry = next;
    }
    Ok(total)
}

/// Checks the indication `list` (`indicated` bytes, as the provider says), then copies its bytes
/// from `skip` on into `out` (`out.len()` of them, or all there are): the bytes copied.
///
/// # Errors
/// [`Malformed`]: nothing is copied.
///
/// # Safety
/// Every entry of `list` reachable through `Next` within [`MAX_INDICATIONS`] entries is readable,
/// as is every MDL of its chain within [`MAX_MDLS`]; `map` gives each such MDL's first byte, from
/// which `ByteCount` bytes are readable, or NULL. (What a provider hands a receive event.)
pub unsafe fn copy_indicated(
    list: *const WSK_DATA_INDICATION,
    indicated: usize,
    skip: usize,
    out: &mut [u8],
    map: Map<'_>,
) -> Result<usize, Malformed> {
    // SAFETY: per the contract; the first pass only checks.
    let total = unsafe { walk(list, map, |_| true) }?;
    if total != indicated {
        return Err(Malformed::CountMismatch);
    }
    let mut seen = 0usize;
    let mut copied = 0usize;
    // SAFETY: as above.
    unsafe {
        walk(list, map, |bytes| {
            // The part of this run at or after `skip`.
            let from = skip.saturating_sub(seen).min(bytes.len());
            seen += bytes.len();
            let run = bytes.get(from..).unwrap_or(&[]);
            let take = run.len().min(out.len() - copied);
            if let (Some(to), Some(source)) = (out.get_mut(copied..copied + take), run.get(..take))
            {
                to.copy_from_slice(source);
            }
            copied += take;
            copied < out.len()
        })
    }?;
    Ok(copied)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::sys::WSK_BUF;
    use std::boxed::Box;

    #[allow(clippy::unnecessary_box_returns)] // chained by address: each MDL stays where it is
    fn mdl(bytes: &[u8], next: *mut MDL) -> Box<MDL> {
        Box::new(MDL {
            Next: next,
            Size: 48,
            MdlFlags: MDL_SOURCE_IS_NONPAGED_POOL,
            Process: ptr::null_mut(),
            MappedSystemVa: bytes.as_ptr().cast_mut().cast(),
            StartVa: ptr::null_mut(),
            ByteCount: u32::try_from(bytes.len()).unwrap(),
            ByteOffset: 0,
        })
    }

    fn mapped(mdl: *mut MDL) -> *const u8 {
        // SAFETY: the tests' MDLs.
        unsafe { (*mdl).MappedSystemVa.cast_const().cast() }
    }

    #[test]
    fn a_list_over_chained_mdls_is_copied_in_order() {
        let (a, b, c) = (*b"hello, ", *b"indication", *b" list");
        let mut second = mdl(&b, ptr::null_mut());
        let mut first = mdl(&a, &raw mut *second);
        let mut third = mdl(&c, ptr::null_mut());
        let mut tail = WSK_DATA_INDICATION {
            Next: ptr::null_mut(),
            Buffer: WSK_BUF {
                Mdl: &raw mut *third,
                Offset: 0,
                Length: 5,
            },
        };
        // From the third byte of the first MDL, across into the second.
        let head = WSK_DATA_INDICATION {
            Next: &raw mut tail,
            Buffer: WSK_BUF {
                Mdl: &raw mut *first,
                Offset: 2,
                Length: 15,
            },
        };
        let mut out = [0u8; 64];
        // SAFETY: the tests' list.
        let n = unsafe { copy_indicated(&raw const head, 20, 0, &mut out, &mapped) };
        assert_eq!(n, Ok(20));
        assert_eq!(&out[..20], b"llo, indication list");
        // Less room than data: the first bytes, in order.
        let mut small = [0u8; 8];
        // SAFETY: as above.
        let n = unsafe { copy_indicated(&raw const head, 20, 0, &mut small, &mapped) };
        assert_eq!((n, &small), (Ok(8), b"llo, ind"));
        // From byte 8 on: the rest, across the second MDL into the second entry.
        let mut rest = [0u8; 16];
        // SAFETY: as above.
        let n = unsafe { copy_indicated(&raw const head, 20, 8, &mut rest, &mapped) };
        assert_eq!(n, Ok(12));
        assert_eq!(&rest[..12], b"ication list");
    }

    #[test]
    fn a_hostile_list_is_refused_whole() {
        let bytes = *b"0123456789";
        let mut one = mdl(&bytes, ptr::null_mut());
        let entry = |length, offset, mdl: *mut MDL| WSK_DATA_INDICATION {
            Next: ptr::null_mut(),
            Buffer: WSK_BUF {
                Mdl: mdl,
                Offset: offset,
                Length: length,
            },
        };
        let mut out = [0u8; 16];
        let mut check = |list: &WSK_DATA_INDICATION, indicated| {
            // SAFETY: the tests' lists.
            unsafe { copy_indicated(list, indicated, 0, &mut out, &mapped) }
        };
        assert_eq!(
            check(&entry(11, 0, &raw mut *one), 11),
            Err(Malformed::PastMdl)
        );
        assert_eq!(
            check(&entry(1, 10, &raw mut *one), 1),
            Err(Malformed::PastMdl)
        );
        assert_eq!(
            check(&entry(4, 0, ptr::null_mut()), 4),
            Err(Malformed::PastMdl)
        );
        assert_eq!(
            check(&entry(4, 0, &raw mut *one), 5),
            Err(Malformed::CountMismatch)
        );
        assert_eq!(check(&entry(0, 0, ptr::null_mut()), 0), Ok(0));
        // An MDL that cannot be mapped.
        let mut unmapped = mdl(&bytes, ptr::null_mut());
        unmapped.MappedSystemVa = ptr::null_mut();
        assert_eq!(
            check(&entry(4, 0, &raw mut *unmapped), 4),
            Err(Malformed::Unmapped)
        );
        // A list that loops: refused after MAX_INDICATIONS entries.
        let mut looping = entry(1, 0, &raw mut *one);
        looping.Next = &raw mut looping;
        assert_eq!(check(&looping, 1), Err(Malformed::TooLong));
        // An MDL chain that loops.
        let mut circle = mdl(&bytes, ptr::null_mut());
        circle.Next = &raw mut *circle;
        assert_eq!(
            check(&entry(10 * 65, 0, &raw mut *circle), 650),
            Err(Malformed::TooLong)
        );
    }
}
