//! `Host` strings -> `parse_literal`, against std's parser: whatever std reads as an IPv4
//! address the library reads the same; whatever the library reads, std reads too, except octets
//! with leading zeros, which std refuses as ambiguous and the library reads as decimal (the
//! README's choice).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use wsk_client::resolve::parse_literal;
use wsk_host_model as _;

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else {
        return;
    };
    let ours = parse_literal(host, 7);
    match host.parse::<Ipv4Addr>() {
        Ok(std) => assert_eq!(ours, Some(SocketAddr::new(IpAddr::V4(std), 7)), "{host:?}"),
        Err(_) => {
            if let Some(ours) = ours {
                let leading_zero = host
                    .split('.')
                    .any(|octet| octet.len() > 1 && octet.starts_with('0'));
                assert!(leading_zero, "{host:?} read as {ours} but std refuses it");
            }
        }
    }
});
