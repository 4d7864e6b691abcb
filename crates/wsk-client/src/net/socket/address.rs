//! Socket addresses in the provider's form: [`Sockaddr`], what the library hands a provider
//! (`WskBind`, `WskConnect`), and [`AddressSlot`], room for one the provider writes (`WskAccept`,
//! `WskGetLocalAddress`, `WskGetRemoteAddress`), read back only when its family is one the
//! library knows (anything else is the provider's error, answered cleanly).

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use core::ptr;

use crate::sys::{AF_INET, AF_INET6, SOCKADDR, SOCKADDR_IN, SOCKADDR_IN6, SOCKADDR_STORAGE};

/// A socket address in the provider's form.
#[repr(C)]
pub(super) enum Sockaddr {
    V4(SOCKADDR_IN),
    V6(SOCKADDR_IN6),
}

impl Sockaddr {
    pub(super) fn new(address: SocketAddr) -> Self {
        match address {
            SocketAddr::V4(a) => Self::V4(SOCKADDR_IN {
                sin_family: AF_INET,
                sin_port: a.port().to_be(),
                sin_addr: a.ip().octets(),
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(a) => Self::V6(SOCKADDR_IN6 {
                sin6_family: AF_INET6,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: a.ip().octets(),
                sin6_scope_id: a.scope_id(),
            }),
        }
    }

    pub(super) fn as_mut_ptr(&mut self) -> *mut SOCKADDR {
        match self {
            Self::V4(a) => ptr::from_mut(a).cast(),
            Self::V6(a) => ptr::from_mut(a).cast(),
        }
    }
}

/// Room for an address the provider writes (a `SOCKADDR_STORAGE`, zeroed: family `AF_UNSPEC`
/// until written).
pub(super) struct AddressSlot(SOCKADDR_STORAGE);

impl AddressSlot {
    pub(super) const fn new() -> Self {
        Self(SOCKADDR_STORAGE::zeroed())
    }

    pub(super) fn as_mut_ptr(&mut self) -> *mut SOCKADDR {
        ptr::from_mut(&mut self.0).cast()
    }

    /// The address written, when its family is `AF_INET` or `AF_INET6`.
    pub(super) fn decode(&self) -> Option<SocketAddr> {
        let storage = ptr::from_ref(&self.0);
        match self.0.ss_family {
            AF_INET => {
                // SAFETY: SOCKADDR_STORAGE is 128 bytes aligned to 8, room for a SOCKADDR_IN
                // (16, aligned to 2) at its start; every bit pattern is a valid SOCKADDR_IN.
                let a = unsafe { &*storage.cast::<SOCKADDR_IN>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(a.sin_addr),
                    u16::from_be(a.sin_port),
                )))
            }
            AF_INET6 => {
                // SAFETY: as above, for a SOCKADDR_IN6 (28 bytes, aligned to 4).
                let a = unsafe { &*storage.cast::<SOCKADDR_IN6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr),
                    u16::from_be(a.sin6_port),
                    u32::from_be(a.sin6_flowinfo),
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn round_trip(address: SocketAddr) -> Option<SocketAddr> {
        let mut given = Sockaddr::new(address);
        let mut slot = AddressSlot::new();
        let length = match &given {
            Sockaddr::V4(_) => size_of::<SOCKADDR_IN>(),
            Sockaddr::V6(_) => size_of::<SOCKADDR_IN6>(),
        };
        // SAFETY: both valid for `length` bytes (the slot holds 128).
        unsafe {
            ptr::copy_nonoverlapping(
                given.as_mut_ptr().cast::<u8>(),
                slot.as_mut_ptr().cast::<u8>(),
                length,
            );
        }
        slot.decode()
    }

    #[test]
    fn an_address_written_in_the_providers_form_reads_back_the_same() {
        for text in [
            "127.0.0.1:7",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[::1]:7",
            "[fe80::1%4]:443",
            "[2001:db8::8:800:200c:417a]:1",
        ] {
            let address: SocketAddr = text.parse().unwrap();
            assert_eq!(round_trip(address), Some(address), "{text}");
        }
    }

    #[test]
    fn a_slot_the_provider_left_unwritten_or_wrote_an_unknown_family_into_reads_as_nothing() {
        assert_eq!(AddressSlot::new().decode(), None);
        let mut slot = AddressSlot::new();
        slot.0.ss_family = 1; // AF_UNIX
        assert_eq!(slot.decode(), None);
    }
}
