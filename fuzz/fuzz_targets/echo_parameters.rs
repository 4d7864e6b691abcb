//! The echo driver's raw registry values — each value's type and bytes, from the input — parsed
//! as the driver does (`examples/wsk-echo/src/values.rs`, included). Whatever the registry
//! holds: no panic, and parameters that parse are usable: an ASCII-graphic host of at most
//! `MAX_HOST` bytes, a port from 1 to 65535, a message of 1 to `MAX_MESSAGE` UTF-8 bytes, and
//! `Bytes` (present when the input has a fourth value) exactly the `REG_DWORD` given, never 0;
//! `RoundTrips` (a fifth value) likewise, at most `MAX_ROUND_TRIPS`, and never with `Bytes`.
#![no_main]

#[allow(dead_code)]
#[path = "../../examples/wsk-echo/src/values.rs"]
mod values;

use libfuzzer_sys::fuzz_target;
use values::{MAX_HOST, MAX_MESSAGE, MAX_ROUND_TRIPS, parse};
use wsk_client::sys::{REG_DWORD, REG_SZ};
use wsk_host_model as _;

fn value(input: &mut std::slice::Iter<'_, u8>) -> (u32, Vec<u8>) {
    let kind = match input.next().copied().unwrap_or(0) % 4 {
        0 | 1 => REG_SZ,
        2 => REG_DWORD,
        other => u32::from(other) << 8,
    };
    let len = usize::from(input.next().copied().unwrap_or(0)) * 5 % 1200;
    (kind, input.by_ref().take(len).copied().collect())
}

fuzz_target!(|data: &[u8]| {
    let mut input = data.iter();
    let host = value(&mut input);
    let port = value(&mut input);
    let message = value(&mut input);
    // A fourth value only when the input goes on (the older corpus has none: `Bytes` absent).
    let bytes = (input.len() > 0).then(|| value(&mut input));
    // A fifth, likewise: `RoundTrips`.
    let round_trips = (input.len() > 0).then(|| value(&mut input));
    if let Ok(p) = parse(
        (host.0, &host.1),
        (port.0, &port.1),
        (message.0, &message.1),
        bytes.as_ref().map(|(kind, data)| (*kind, data.as_slice())),
        round_trips.as_ref().map(|(kind, data)| (*kind, data.as_slice())),
    ) {
        assert!(!p.host().is_empty() && p.host().len() <= MAX_HOST);
        assert!(
            p.host().bytes().all(|b| b.is_ascii_graphic()),
            "{:?}",
            p.host()
        );
        assert!(p.port != 0);
        assert!(!p.message().is_empty() && p.message().len() <= MAX_MESSAGE);
        assert!(std::str::from_utf8(p.message()).is_ok());
        assert_eq!(host.0, REG_SZ);
        assert_eq!(port.0, REG_DWORD);
        assert_eq!(message.0, REG_SZ);
        match (&bytes, p.bytes()) {
            (None, None) => {}
            (Some((kind, data)), Some(n)) => {
                assert_eq!(*kind, REG_DWORD);
                assert_eq!(data.len(), 4);
                assert_eq!(data.as_slice(), n.get().to_le_bytes());
            }
            other => panic!("Bytes given and parsed differ: {other:?}"),
        }
        match (&round_trips, p.round_trips()) {
            (None, None) => {}
            (Some((kind, data)), Some(n)) => {
                assert_eq!(*kind, REG_DWORD);
                assert_eq!(data.as_slice(), n.get().to_le_bytes());
                assert!(n.get() <= MAX_ROUND_TRIPS);
                assert!(p.bytes().is_none(), "Bytes and RoundTrips together");
            }
            other => panic!("RoundTrips given and parsed differ: {other:?}"),
        }
    } else if let Some((kind, data)) = &bytes {
        // A good Bytes never fails the parse by itself.
        let good = *kind == REG_DWORD && data.len() == 4 && data.iter().any(|b| *b != 0);
        let rest_ok = parse(
            (host.0, &host.1),
            (port.0, &port.1),
            (message.0, &message.1),
            None,
            None,
        );
        assert!(!(good && rest_ok.is_ok()), "a good Bytes refused");
    }
});
