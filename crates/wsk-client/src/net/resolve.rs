//! Name resolution: an address literal (IPv4 or IPv6) needs no resolver; a name goes to the
//! provider's `WskGetAddressInfo` (WSK 1.1 and later: a binding attached at 1.0 answers
//! `STATUS_NOT_SUPPORTED`, as Wine's provider, whose dispatch says 1.0, must).
//!
//! The address list comes back as a chain of `ADDRINFOEXW` the provider allocated; it is read
//! defensively ([`addresses_from_chain`]): at most [`MAX_CHAIN`] entries (a chain that loops ends
//! there), entries without an address or whose length is too short for their family skipped,
//! families other than IPv4 and IPv6 skipped; then freed with `WskFreeAddressInfo`.
//!
//! [`resolve`] is a future (a task awaits it); [`resolve_blocking`] waits, for a caller that owns
//! a `PASSIVE_LEVEL` thread.
//!
//! IRQL: [`resolve`] and [`resolve_blocking`] at `PASSIVE_LEVEL` (`WskGetAddressInfo`'s); the rest
//! is pure, any IRQL.

use core::future::Future;
use core::mem::size_of;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::pin::Pin;
use core::ptr;
use core::task::{Context, Poll};

use crate::client::Client;
use crate::irp::{self, Op, Outcome};
use crate::log::log;
use crate::pool::PoolBox;
use crate::provider::BindingRef;
use crate::status::{NtError, NtStatus};
use crate::sys::{
    ADDRINFOEXW, AF_INET, AF_INET6, EPROCESS, ETHREAD, GUID, IRP, NS_ALL, NTSTATUS, PWSK_CLIENT,
    SOCKADDR_IN, SOCKADDR_IN6, UNICODE_STRING,
};
use crate::time::Timeout;
use crate::work::{self, Work};

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
    fn one(address: SocketAddr) -> Self {
        let mut out = Self::default();
        out.push(address);
        out
    }

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

/// `host` as an address literal with `port`: IPv4 (four decimal octets) or IPv6 (RFC 4291 text:
/// eight groups of 1 to 4 hex digits, one `::` for a run of zero groups, an IPv4 address as the
/// last 32 bits; no brackets, no zone). A literal never needs the provider's resolver (which a
/// WSK 1.0 provider does not have). Names go to the resolver. (Hand-written parsers: `core::net`'s
/// brings panic paths into a kernel image.)
#[must_use]
pub fn parse_literal(host: &str, port: u16) -> Option<SocketAddr> {
    let bytes = host.as_bytes();
    if let Some(octets) = parse_ipv4(bytes, true) {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port));
    }
    let groups = parse_ipv6(bytes)?;
    Some(SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(groups),
        port,
        0,
        0,
    )))
}

/// Four decimal octets; `leading_zeros`: whether `010` reads as 10 (a `Host` value: the README's
/// choice) or is refused (inside an IPv6 literal, as RFC 4291 and `core::net` read it).
fn parse_ipv4(text: &[u8], leading_zeros: bool) -> Option<[u8; 4]> {
    let mut octets = [0u8; 4];
    // Bytes, not `str::split('.')`: a char pattern's searcher has a panic path of its own.
    let mut parts = text.split(|&b| b == b'.');
    for octet in &mut octets {
        let digits = parts.next()?;
        if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        if !leading_zeros && digits.len() > 1 && digits.first() == Some(&b'0') {
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
    Some(octets)
}

/// An IPv6 literal's eight groups (see [`parse_literal`]).
fn parse_ipv6(text: &[u8]) -> Option<[u16; 8]> {
    let double = text.windows(2).position(|pair| pair == b"::");
    let (head, tail) = match double {
        Some(at) => (text.get(..at)?, Some(text.get(at + 2..)?)),
        None => (text, None),
    };
    let mut groups = [0u16; 8];
    // Without `::` the head is the whole address (an IPv4 ending allowed); with it, the head may
    // not end in IPv4, and the `::` stands for one zero group at least.
    let head_len = parse_groups(head, &mut groups, tail.is_none())?;
    let Some(tail) = tail else {
        return (head_len == 8).then_some(groups);
    };
    let mut back = [0u16; 8];
    let tail_len = parse_groups(tail, &mut back, true)?;
    if head_len + tail_len > 7 {
        return None;
    }
    let start = 8 - tail_len;
    for (slot, group) in groups.get_mut(start..)?.iter_mut().zip(back) {
        *slot = group;
    }
    Some(groups)
}

/// `text` as `:`-separated groups into `out`: how many (an empty `text` is none). An IPv4
/// address may be the last part when `ipv4_last` (two groups).
fn parse_groups(text: &[u8], out: &mut [u16; 8], ipv4_last: bool) -> Option<usize> {
    if text.is_empty() {
        return Some(0);
    }
    let mut count = 0;
    let mut parts = text.split(|&b| b == b':').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        if last && ipv4_last && part.contains(&b'.') {
            let [a, b, c, d] = parse_ipv4(part, false)?;
            *out.get_mut(count)? = u16::from_be_bytes([a, b]);
            *out.get_mut(count + 1)? = u16::from_be_bytes([c, d]);
            return Some(count + 2);
        }
        if part.is_empty() || part.len() > 4 {
            return None;
        }
        let mut value = 0u16;
        for digit in part {
            let nibble = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                b'A'..=b'F' => digit - b'A' + 10,
                _ => return None,
            };
            value = (value << 4) | u16::from(nibble);
        }
        *out.get_mut(count)? = value;
        count += 1;
    }
    Some(count)
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

/// `host` checked for the provider's resolver: ASCII, 1 to [`MAX_HOST`] characters (logged).
fn check_name<C: Client>(host: &str) -> Result<(), NtError> {
    if host.is_empty() || host.len() > MAX_HOST || !host.is_ascii() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "resolve: the host name is empty, too long or not ASCII"
        );
        return Err(NtError::INVALID_PARAMETER);
    }
    Ok(())
}

/// The provider's `WskGetAddressInfo` and `WskFreeAddressInfo` (WSK 1.1), or why not (logged).
fn resolver<C: Client>(
    reference: &BindingRef<C>,
) -> Result<(GetAddressInfo, FreeAddressInfo), NtError> {
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
    Ok((get, free))
}

type GetAddressInfo = unsafe extern "system" fn(
    PWSK_CLIENT,
    *mut UNICODE_STRING,
    *mut UNICODE_STRING,
    u32,
    *mut GUID,
    *mut ADDRINFOEXW,
    *mut *mut ADDRINFOEXW,
    *mut EPROCESS,
    *mut ETHREAD,
    *mut IRP,
) -> NTSTATUS;
type FreeAddressInfo = unsafe extern "system" fn(PWSK_CLIENT, *mut ADDRINFOEXW);

/// `host` in UTF-16, in pool (tag `C::NAME_TAG`), for the provider's resolver.
struct Name {
    /// Held for `node` (freed with the name).
    #[allow(dead_code)]
    units: PoolBox<[u16; MAX_HOST]>,
    /// The counted string over `units` (which stay where they are: in pool).
    node: UNICODE_STRING,
}

// SAFETY: `node` points into `units`, which moves with it (the pool block does not move).
unsafe impl Send for Name {}

impl Name {
    fn new<C: Client>(host: &str) -> Result<Self, NtError> {
        let units = PoolBox::try_new::<C>([0u16; MAX_HOST], C::NAME_TAG)?;
        // SAFETY: owned here; a plain array.
        let array = unsafe { &mut *units.as_ptr() };
        for (unit, byte) in array.iter_mut().zip(host.bytes()) {
            *unit = u16::from(byte);
        }
        #[allow(clippy::cast_possible_truncation)] // at most 510 bytes (checked by the caller)
        let bytes = (host.len() * 2) as u16;
        let node = UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: array.as_mut_ptr(),
        };
        Ok(Self { units, node })
    }
}

/// The provider's answer, read into addresses; the chain freed with `free`.
///
/// # Safety
/// `chain` is NULL or the chain the provider returned for a completed request of `reference`'s
/// binding, not freed yet; `free` is that provider's `WskFreeAddressInfo`.
unsafe fn answer<C: Client>(
    status: NtStatus,
    chain: *mut ADDRINFOEXW,
    port: u16,
    free: FreeAddressInfo,
    reference: &BindingRef<C>,
) -> Result<Addresses, NtError> {
    // SAFETY: per the contract (a failed request leaves no chain to read: NULL, or ignored).
    let addresses = unsafe { addresses_from_chain(chain, port) };
    if !chain.is_null() {
        // SAFETY: the provider's own chain, freed once with its own function.
        unsafe { free(reference.client(), chain) };
    }
    if let Err(status) = status.into_result() {
        log!(
            C,
            DPFLTR_ERROR_LEVEL,
            "resolve: WskGetAddressInfo failed: 0x%08X",
            status.bits()
        );
        return Err(status);
    }
    if addresses.is_empty() {
        log!(C, DPFLTR_ERROR_LEVEL, "resolve: no IPv4 or IPv6 address");
        return Err(NtError::UNSUCCESSFUL);
    }
    Ok(addresses)
}

/// Resolves `host` (ASCII, at most [`MAX_HOST`] characters) to addresses with `port`: a literal
/// at once, a name through `WskGetAddressInfo` — the waited form, **only for a caller that owns a
/// `PASSIVE_LEVEL` thread** (see [`crate::task::block_on`]); a task awaits [`resolve`].
///
/// IRQL: `PASSIVE_LEVEL`.
///
/// # Errors
/// As [`resolve`].
pub fn resolve_blocking<C: Client>(
    reference: &BindingRef<C>,
    host: &str,
    port: u16,
    timeout: Timeout,
) -> Result<Addresses, NtError> {
    if let Some(address) = parse_literal(host, port) {
        return Ok(Addresses::one(address));
    }
    check_name::<C>(host)?;
    let (get, free) = resolver(reference)?;
    let mut name = Name::new::<C>(host)?;
    let mut result: *mut ADDRINFOEXW = ptr::null_mut();
    let (status, _) = irp::call(reference, timeout, |reference, irp| {
        // SAFETY: the provider's WskGetAddressInfo (1.1), with its client, a counted name and an
        // out-pointer that outlive the request (waited for to the end); no service, name space
        // NS_ALL, no provider or hints, the request's IRP.
        unsafe {
            get(
                reference.client(),
                &raw mut name.node,
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
    // SAFETY: the chain the provider returned for this request, with its own free function.
    unsafe { answer(status, result, port, free, reference) }
}

/// Resolves `host` (ASCII, at most [`MAX_HOST`] characters) to addresses with `port`: a literal
/// at once, a name through `WskGetAddressInfo`, completed by the request's routine. A `Resolve`
/// dropped before the answer cancels the request; a chain the provider returns for it then is
/// freed by a work item allocated with the request (`WskFreeAddressInfo` is `PASSIVE_LEVEL`).
///
/// IRQL: `PASSIVE_LEVEL` (`WskGetAddressInfo`'s).
///
/// # Errors
/// `STATUS_INVALID_PARAMETER` for an empty, too long or non-ASCII name; `STATUS_NOT_SUPPORTED`
/// below WSK 1.1; the provider's status; `STATUS_NOT_FOUND`-like statuses as it answers; an
/// empty list is `STATUS_UNSUCCESSFUL`.
pub fn resolve<C: Client>(reference: &BindingRef<C>, host: &str, port: u16) -> Resolve<C> {
    if let Some(address) = parse_literal(host, port) {
        return Resolve::ready(Ok(Addresses::one(address)));
    }
    let prepared = check_name::<C>(host)
        .and_then(|()| resolver(reference))
        .and_then(|(get, free)| {
            let name = Name::new::<C>(host)?;
            let orphan = work::Prepared::<C, _>::new(FreeOrphan::<C> {
                chain: ptr::null_mut(),
                free,
                reference: None,
            })?;
            Ok((get, free, name, orphan))
        });
    let (get, free, name, orphan) = match prepared {
        Ok(prepared) => prepared,
        Err(status) => return Resolve::ready(Err(status)),
    };
    let resolving = Resolving {
        name,
        chain: ptr::null_mut(),
        free,
        orphan: reference.try_clone().ok().map(|own| (orphan, own)),
    };
    let op = irp::start_or_orphan(
        reference,
        resolving,
        |reference, resolving, irp| {
            // SAFETY: as in `resolve_blocking`; the name and the out-pointer are the request's,
            // in pool until its routine ran.
            unsafe {
                get(
                    reference.client(),
                    &raw mut resolving.name.node,
                    ptr::null_mut(),
                    NS_ALL,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    &raw mut resolving.chain,
                    ptr::null_mut(),
                    ptr::null_mut(),
                    irp,
                )
            }
        },
        orphaned::<C>,
    );
    Resolve {
        op: Some(op),
        ready: None,
        port,
    }
}

/// What a resolution owns until the provider answered.
struct Resolving<C: Client> {
    name: Name,
    /// The provider's answer (its out-pointer).
    chain: *mut ADDRINFOEXW,
    free: FreeAddressInfo,
    /// The work item that frees a chain made for nobody, and its binding reference.
    orphan: Option<Orphan<C>>,
}

/// The work item that frees a chain made for nobody, with the reference it frees it through.
type Orphan<C> = (work::Prepared<C, FreeOrphan<C>>, BindingRef<C>);

// SAFETY: the chain is the provider's, usable from any thread; the rest is Send.
unsafe impl<C: Client> Send for Resolving<C> {}

/// Frees a chain the provider made for a dropped [`Resolve`] (at `PASSIVE_LEVEL`).
struct FreeOrphan<C: Client> {
    chain: *mut ADDRINFOEXW,
    free: FreeAddressInfo,
    reference: Option<BindingRef<C>>,
}

// SAFETY: as for `Resolving`.
unsafe impl<C: Client> Send for FreeOrphan<C> {}

impl<C: Client> Work for FreeOrphan<C> {
    fn run(self) {
        if let (false, Some(reference)) = (self.chain.is_null(), self.reference) {
            log!(
                C,
                DPFLTR_WARNING_LEVEL,
                "resolve: an answer nobody waits for; freeing it"
            );
            // SAFETY: the provider's chain for a completed request, freed once, with its own
            // function, through the binding the reference keeps.
            unsafe { (self.free)(reference.client(), self.chain) };
        }
    }
}

/// `Resolving`'s fate when its `Resolve` was dropped: a chain the provider made is freed from
/// the work item allocated for that (queueing it cannot fail). Runs where the request is freed
/// (its completion routine: <= `DISPATCH_LEVEL`).
fn orphaned<C: Client>(resolving: Resolving<C>, _: NtStatus, _: usize) {
    let Resolving { chain, orphan, .. } = resolving;
    if let (false, Some((work, own))) = (chain.is_null(), orphan) {
        work.queue_with(|work| {
            work.chain = chain;
            work.reference = Some(own);
        });
    }
}

/// A resolution in flight (or answered at once): see [`resolve`].
#[must_use = "a future does nothing unless awaited"]
pub struct Resolve<C: Client> {
    op: Option<Op<C, Resolving<C>>>,
    ready: Option<Result<Addresses, NtError>>,
    port: u16,
}

impl<C: Client> Resolve<C> {
    #[allow(clippy::large_types_passed_by_value)] // moved in, once
    fn ready(result: Result<Addresses, NtError>) -> Self {
        Self {
            op: None,
            ready: Some(result),
            port: 0,
        }
    }
}

impl<C: Client> Future for Resolve<C> {
    type Output = Result<Addresses, NtError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(op) = this.op.as_mut() else {
            return Poll::Ready(this.ready.take().unwrap_or(Err(NtError::UNSUCCESSFUL)));
        };
        let outcome = match Pin::new(op).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(outcome)) => outcome,
            Poll::Ready(Err((status, _))) => {
                this.op = None;
                log!(
                    C,
                    DPFLTR_ERROR_LEVEL,
                    "resolve: WskGetAddressInfo not requested: 0x%08X",
                    status.bits()
                );
                return Poll::Ready(Err(status));
            }
        };
        this.op = None;
        let Outcome { status, owned, .. } = outcome;
        let Resolving {
            chain,
            free,
            orphan,
            name,
        } = owned;
        drop(name);
        // Answered: the orphan's work item is not needed (dropped: freed unqueued); its reference
        // is the binding kept for the free.
        let Some((work, reference)) = orphan else {
            return Poll::Ready(Err(NtError::INVALID_DEVICE_STATE));
        };
        drop(work);
        // SAFETY: the chain the provider returned for this request, with its own free function.
        let result = unsafe { answer(status, chain, this.port, free, &reference) };
        Poll::Ready(result)
    }
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
        assert!(parse_literal("localhost", 7).is_none());
        // IPv6 literals are parsed here too (a WSK 1.0 provider has no resolver).
        for (text, shown) in [
            ("::1", "[::1]:7"),
            ("::", "[::]:7"),
            ("fe80::1:2", "[fe80::1:2]:7"),
            ("1:2:3:4:5:6:7:8", "[1:2:3:4:5:6:7:8]:7"),
            ("1:2:3:4:5:6:7::", "[1:2:3:4:5:6:7:0]:7"),
            ("::2:3:4:5:6:7:8", "[0:2:3:4:5:6:7:8]:7"),
            ("::ffff:192.0.2.1", "[::ffff:192.0.2.1]:7"),
            ("64:ff9b::192.0.2.1", "[64:ff9b::c000:201]:7"),
            ("1:2:3:4:5:6:1.2.3.4", "[1:2:3:4:5:6:102:304]:7"),
            ("ABCD:ef01::", "[abcd:ef01::]:7"),
        ] {
            assert_eq!(
                parse_literal(text, 7).map(|a| a.to_string()).as_deref(),
                Some(shown),
                "{text}"
            );
        }
        for bad in [
            "1.2.3",
            "1.2.3.4.5",
            "256.0.0.1",
            "1..2.3",
            "1.2.3.x",
            "1234.1.1.1",
            "",
            ":",
            ":::",
            "1::2::3",
            ":1::",
            "1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "12345::",
            "g::",
            "1.2.3.4::",
            "::01.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "[::1]",
            "fe80::1%1",
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
