//! Name resolution: an IPv4 literal needs no resolver; a name (or an IPv6 literal) goes to the
//! provider's `WskGetAddressInfo` (WSK 1.1 and later: a binding attached at 1.0 answers
//! `STATUS_NOT_SUPPORTED`, as Wine's provider, whose dispatch says 1.0, must).
//!
//! The address list comes back as a chain of `ADDRINFOEXW` the provider allocated; it is read
//! defensively ([`addresses_from_chain`]): at most [`MAX_CHAIN`] entries (a chain that loops ends
//! there), entries without an address or whose length is too short for their family skipped,
//! families other than IPv4 and IPv6 skipped; then freed with `WskFreeAddressInfo`.
//!
//! IRQL: [`resolve`] at `PASSIVE_LEVEL` (it waits); the rest is pure, any IRQL.

use core::mem::size_of;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::ptr;

use crate::client::Client;
use crate::irp;
use crate::log::log;
use crate::pool::PoolBox;
use crate::provider::BindingRef;
use crate::status::NtError;
use crate::sys::{
    ADDRINFOEXW, AF_INET, AF_INET6, NS_ALL, SOCKADDR_IN, SOCKADDR_IN6, UNICODE_STRING,
};
use crate::time::Timeout;

/// The most addresses a resolution returns.
pub const MAX_ADDRESSES: usize = 8;
/// The most chain entries read (a looping chain stops here).
pub const MAX_CHAIN: usize = 64;
/// The longest host name, in UTF-16 units.
pub const MAX_HOST: usize = 255;

/// Up to [`MAX_ADDRESSES`] socket addresses, in the provider's order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    list: [Option<SocketAddr>; MAX_ADDRESSES],
    len: usize,
}

impl Addresses {
    fn push(&mut self, address: SocketAddr) {
        if let Some(slot) = self.list.get_mut(self.len) {
            *slot = Some(address);
            self.len += 1;
        }
    }

    /// The addresses.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.list.iter().take(self.len).filter_map(|a| *a)
    }

    /// How many there are.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `host` as an IPv4 literal (four decimal octets) with `port`. Other forms — IPv6 literals
/// included — go to the provider's resolver, which understands them too. (A hand-written parser:
/// `core::net`'s brings panic paths into a kernel image.)
#[must_use]
pub fn parse_literal(host: &str, port: u16) -> Option<SocketAddr> {
    let mut octets = [0u8; 4];
    // Bytes, not `str::split('.')`: a char pattern's searcher has a panic path of its own.
    let mut parts = host.as_bytes().split(|&b| b == b'.');
    for octet in &mut octets {
        let digits = parts.next()?;
        if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value = digits
            .iter()
            .fold(0u16, |value, digit| value * 10 + u16::from(digit - b'0'));
        *octet = u8::try_from(value).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
}

/// The addresses of an `ADDRINFOEXW` chain, with `port` (the chain's come without a service).
///
/// # Safety
/// `head` is NULL or points at a chain of `ADDRINFOEXW` whose non-NULL `ai_next` and `ai_addr`
/// pointers are readable for an `ADDRINFOEXW` and for `ai_addrlen` bytes respectively (what a
/// provider hands out; the values themselves may be anything).
#[must_use]
pub unsafe fn addresses_from_chain(head: *const ADDRINFOEXW, port: u16) -> Addresses {
    let mut out = Addresses::default();
    let mut entry = head;
    for _ in 0..MAX_CHAIN {
        // SAFETY: per the contract, NULL or a readable entry.
        let Some(info) = (unsafe { entry.as_ref() }) else {
            break;
        };
        // SAFETY: per the contract, `ai_addr` is readable for `ai_addrlen` bytes.
        if let Some(address) = unsafe { sockaddr(info.ai_addr.cast::<u8>(), info.ai_addrlen, port) }
        {
            out.push(address);
        }
        entry = info.ai_next;
    }
    out
}

/// One `SOCKADDR` of `length` bytes, when it is a whole IPv4 or IPv6 address.
///
/// # Safety
/// `address` is NULL or readable for `length` bytes.
unsafe fn sockaddr(address: *const u8, length: usize, port: u16) -> Option<SocketAddr> {
    if address.is_null() || length < size_of::<u16>() {
        return None;
    }
    // SAFETY: readable for at least 2 bytes (checked above); unaligned.
    let family = unsafe { address.cast::<u16>().read_unaligned() };
    if family == AF_INET && length >= size_of::<SOCKADDR_IN>() {
        // SAFETY: readable for a whole SOCKADDR_IN (checked above); unaligned.
        let v4 = unsafe { address.cast::<SOCKADDR_IN>().read_unaligned() };
        return Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(v4.sin_addr),
            port,
        )));
    }
    if family == AF_INET6 && length >= size_of::<SOCKADDR_IN6>() {
        // SAFETY: readable for a whole SOCKADDR_IN6 (checked above); unaligned.
        let v6 = unsafe { address.cast::<SOCKADDR_IN6>().read_unaligned() };
        return Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(v6.sin6_addr),
            port,
            u32::from_be(v6.sin6_flowinfo),
            v6.sin6_scope_id,
        )));
    }
    None
}

/// Resolves `host` (ASCII, at most [`MAX_HOST`] characters) to addresses with `port`: a literal
/// at once, a name through `WskGetAddressInfo`.
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Errors
/// `STATUS_INVALID_PARAMETER` for an empty, too long or non-ASCII name; `STATUS_NOT_SUPPORTED`
/// below WSK 1.1; the provider's status; `STATUS_NOT_FOUND`-like statuses as it answers; an
/// empty list is `STATUS_UNSUCCESSFUL`.
pub fn resolve<C: Client>(
    reference: &BindingRef<C>,
    host: &str,
    port: u16,
    timeout: Timeout,
) -> Result<Addresses, NtError> {
    if let Some(address) = parse_literal(host, port) {
        let mut out = Addresses::default();
        out.push(address);
        return Ok(out);
    }
    if host.is_empty() || host.len() > MAX_HOST || !host.is_ascii() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "resolve: the host name is empty, too long or not ASCII"
        );
        return Err(NtError::INVALID_PARAMETER);
    }
    reference.ensure_open().map_err(NtError::from)?;
    let (Some(get), Some(free)) = (reference.get_address_info(), reference.free_address_info())
    else {
        log!(
            C,
            DPFLTR_WARNING_LEVEL,
            "resolve: the provider is below WSK 1.1 (no WskGetAddressInfo)"
        );
        return Err(NtError::NOT_SUPPORTED);
    };
    let name = PoolBox::try_new::<C>([0u16; MAX_HOST], C::NAME_TAG)?;
    // SAFETY: owned here; a plain array.
    let units = unsafe { &mut *name.as_ptr() };
    for (unit, byte) in units.iter_mut().zip(host.bytes()) {
        *unit = u16::from(byte);
    }
    #[allow(clippy::cast_possible_truncation)] // at most 510 bytes
    let bytes = (host.len() * 2) as u16;
    let mut node = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: units.as_mut_ptr(),
    };
    let mut result: *mut ADDRINFOEXW = ptr::null_mut();
    let (status, _) = irp::call(reference, timeout, |reference, irp| {
        // SAFETY: the provider's WskGetAddressInfo (1.1), with its client, a counted name and an
        // out-pointer that outlive the request (waited for to the end); no service, name space
        // NS_ALL, no provider or hints, the request's IRP.
        unsafe {
            get(
                reference.client(),
                &raw mut node,
                ptr::null_mut(),
                NS_ALL,
                ptr::null_mut(),
                ptr::null_mut(),
                &raw mut result,
                ptr::null_mut(),
                ptr::null_mut(),
                irp,
            )
        }
    })?;
    drop(name);
    if let Err(status) = status.into_result() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "resolve: WskGetAddressInfo failed: 0x%08X",
            status.bits()
        );
        return Err(status);
    }
    // SAFETY: the chain the provider returned for this request.
    let addresses = unsafe { addresses_from_chain(result, port) };
    if !result.is_null() {
        // SAFETY: the provider's own chain, freed once with its own function.
        unsafe { free(reference.client(), result) };
    }
    if addresses.is_empty() {
        log!(C, DPFLTR_ERROR_LEVEL, "resolve: no IPv4 or IPv6 address");
        return Err(NtError::UNSUCCESSFUL);
    }
    Ok(addresses)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::string::{String, ToString};
    use std::vec::Vec;

    use super::{MAX_CHAIN, addresses_from_chain, parse_literal};
    use crate::sys::{ADDRINFOEXW, AF_INET, AF_INET6, SOCKADDR_IN, SOCKADDR_IN6};

    fn entry(addr: *mut u8, len: usize) -> ADDRINFOEXW {
        ADDRINFOEXW {
            ai_flags: 0,
            ai_family: 0,
            ai_socktype: 0,
            ai_protocol: 0,
            ai_addrlen: len,
            ai_canonname: core::ptr::null_mut(),
            ai_addr: addr.cast(),
            ai_blob: core::ptr::null_mut(),
            ai_bloblen: 0,
            ai_provider: core::ptr::null_mut(),
            ai_next: core::ptr::null_mut(),
        }
    }

    #[test]
    fn literals_parse() {
        assert_eq!(
            parse_literal("127.0.0.1", 7).unwrap().to_string(),
            "127.0.0.1:7"
        );
        assert!(
            parse_literal("::1", 7).is_none(),
            "IPv6 literals go to the resolver"
        );
        assert!(parse_literal("localhost", 7).is_none());
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "1..2.3",
            "1.2.3.x",
            "1234.1.1.1",
            "",
        ] {
            assert!(parse_literal(bad, 7).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_hostile_chain_is_read_safely() {
        let mut v4 = SOCKADDR_IN {
            sin_family: AF_INET,
            sin_port: 0,
            sin_addr: [10, 0, 0, 1],
            sin_zero: [0; 8],
        };
        let mut v6 = SOCKADDR_IN6 {
            sin6_family: AF_INET6,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: [0; 16],
            sin6_scope_id: 0,
        };
        let mut entries = [
            entry(core::ptr::null_mut(), 16), // NULL address
            entry((&raw mut v4).cast(), 8),   // too short for IPv4
            entry((&raw mut v4).cast(), 16),  // good
            entry((&raw mut v6).cast(), 16),  // too short for IPv6
            entry((&raw mut v6).cast(), 28),  // good
        ];
        let count = entries.len();
        let base = entries.as_mut_ptr();
        for i in 0..count {
            // The last one loops back to the first.
            let next = if i + 1 == count { 0 } else { i + 1 };
            let next = base.wrapping_add(next);
            let entry = base.wrapping_add(i);
            // SAFETY: an entry within the array, written through the one raw pointer.
            unsafe { (*entry).ai_next = next };
        }
        // SAFETY: every pointer is into the arrays above, readable for the lengths given (the
        // short lengths are shorter than the objects).
        let found = unsafe { addresses_from_chain(base, 80) };
        let list: Vec<String> = found.iter().map(|a| a.to_string()).collect();
        // The loop ends after MAX_CHAIN entries, each round of 5 giving 2 addresses; the list
        // keeps the first 8.
        assert!(MAX_CHAIN / count * 2 >= 8);
        assert_eq!(found.len(), 8);
        assert_eq!(list[..2], ["10.0.0.1:80", "[::]:80"]);
    }
}
