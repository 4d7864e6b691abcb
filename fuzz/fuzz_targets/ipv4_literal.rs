//! `Host` strings -> `parse_literal`, against std's parsers: whatever std reads as an IPv4 or
//! IPv6 address the library reads the same; whatever the library reads, std reads too, except
//! IPv4 octets with leading zeros, which std refuses as ambiguous and the library reads as decimal
//! (the README's choice; inside an IPv6 literal the library refuses them as std does). (The
//! target keeps its first name, `ipv4_literal`, and its corpus.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use wsk_client::resolve::parse_literal;
use wsk_host_model as _;

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else {
        return;
    };
    let ours = parse_literal(host, 7);
    if let Ok(std) = host.parse::<Ipv4Addr>() {
        assert_eq!(ours, Some(SocketAddr::new(IpAddr::V4(std), 7)), "{host:?}");
        return;
    }
    if let Ok(std) = host.parse::<Ipv6Addr>() {
        assert_eq!(ours, Some(SocketAddr::V6(SocketAddrV6::new(std, 7, 0, 0))), "{host:?}");
        return;
    }
    if let Some(ours) = ours {
        let leading_zero = ours.is_ipv4()
            && host
                .split('.')
                .any(|octet| octet.len() > 1 && octet.starts_with('0'));
        assert!(leading_zero, "{host:?} read as {ours} but std refuses it");
    }
});
