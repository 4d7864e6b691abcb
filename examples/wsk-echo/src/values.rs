//! The echo driver's parameter values, parsed: `Host` (`REG_SZ`: an IPv4/IPv6 literal or a
//! name), `Port` (`REG_DWORD`), `Message` (`REG_SZ`, sent as UTF-8), the optional `Bytes`
//! (`REG_DWORD`, 1 to 4294967295: stream that many bytes, `Message` repeated, instead of one
//! message) and the optional `RoundTrips` (`REG_DWORD`, 1 to [`MAX_ROUND_TRIPS`]: that many
//! timed round trips of `Message`, the latency mode); both absent: one message; both present:
//! refused. Pure: no kernel call, so the
//! host tests and the `echo_parameters` fuzz target (`fuzz/`, which includes this file) run it
//! as the driver does. [`crate::parameters`] reads the values from the registry with the
//! library's `registry`, whose decoding [`parse`] applies to raw values.
//!
//! IRQL: any (pure).

use core::num::NonZeroU32;

use wsk_client::NtError;
use wsk_client::registry::{decode_dword, decode_string};

/// The longest host, in bytes (ASCII).
pub const MAX_HOST: usize = 255;
/// The longest message, in UTF-8 bytes.
pub const MAX_MESSAGE: usize = 512;
/// The most round trips of the latency mode.
pub const MAX_ROUND_TRIPS: u32 = 1_000_000;

/// What the echo exchange needs.
#[derive(Clone, Copy)]
pub struct Parameters {
    host: [u8; MAX_HOST],
    host_len: usize,
    /// The port.
    pub port: u16,
    message: [u8; MAX_MESSAGE],
    message_len: usize,
    bytes: Option<NonZeroU32>,
    round_trips: Option<NonZeroU32>,
}

impl Parameters {
    /// The host (ASCII).
    #[must_use]
    pub fn host(&self) -> &str {
        self.host
            .get(..self.host_len)
            .and_then(|bytes| core::str::from_utf8(bytes).ok())
            .unwrap_or("")
    }

    /// The message (UTF-8 bytes).
    #[must_use]
    pub fn message(&self) -> &[u8] {
        self.message.get(..self.message_len).unwrap_or(&[])
    }

    /// `Bytes`: how many bytes to stream (`Message` repeated); `None`: one message.
    #[must_use]
    pub fn bytes(&self) -> Option<NonZeroU32> {
        self.bytes
    }

    /// `RoundTrips`: how many timed round trips of `Message`; `None`: not the latency mode.
    #[must_use]
    pub fn round_trips(&self) -> Option<NonZeroU32> {
        self.round_trips
    }
}

/// Why the parameters are unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A value is missing or unreadable (the status).
    Missing(&'static core::ffi::CStr, NtError),
    /// A value has the wrong type, length or content.
    Malformed(&'static core::ffi::CStr),
}

impl Parameters {
    pub(crate) const EMPTY: Self = Self {
        host: [0; MAX_HOST],
        host_len: 0,
        port: 0,
        message: [0; MAX_MESSAGE],
        message_len: 0,
        bytes: None,
        round_trips: None,
    };

    /// `Host`: printable ASCII without spaces, at most [`MAX_HOST`] bytes.
    pub(crate) fn set_host(&mut self, host: &str) -> Result<(), Problem> {
        let to = self
            .host
            .get_mut(..host.len())
            .filter(|_| !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or(Problem::Malformed(c"Host"))?;
        to.copy_from_slice(host.as_bytes());
        self.host_len = host.len();
        Ok(())
    }

    /// `Port`: from 1 to 65535.
    pub(crate) fn set_port(&mut self, port: u32) -> Result<(), Problem> {
        self.port = u16::try_from(port)
            .ok()
            .filter(|port| *port != 0)
            .ok_or(Problem::Malformed(c"Port"))?;
        Ok(())
    }

    /// `Message`: 1 to [`MAX_MESSAGE`] bytes of UTF-8.
    pub(crate) fn set_message(&mut self, message: &str) -> Result<(), Problem> {
        let to = self
            .message
            .get_mut(..message.len())
            .filter(|_| !message.is_empty())
            .ok_or(Problem::Malformed(c"Message"))?;
        to.copy_from_slice(message.as_bytes());
        self.message_len = message.len();
        Ok(())
    }

    /// `Bytes`: from 1 to 4294967295; not with `RoundTrips`.
    pub(crate) fn set_bytes(&mut self, bytes: u32) -> Result<(), Problem> {
        if self.round_trips.is_some() {
            return Err(Problem::Malformed(c"Bytes"));
        }
        self.bytes = Some(NonZeroU32::new(bytes).ok_or(Problem::Malformed(c"Bytes"))?);
        Ok(())
    }

    /// `RoundTrips`: from 1 to [`MAX_ROUND_TRIPS`]; not with `Bytes`.
    pub(crate) fn set_round_trips(&mut self, count: u32) -> Result<(), Problem> {
        self.round_trips = Some(
            NonZeroU32::new(count)
                .filter(|count| count.get() <= MAX_ROUND_TRIPS && self.bytes.is_none())
                .ok_or(Problem::Malformed(c"RoundTrips"))?,
        );
        Ok(())
    }
}

/// Parses raw values into parameters, decoded as the driver's registry reads decode them:
/// `host` and `message` are `(type, REG_SZ data)`, `port` a `(type, REG_DWORD data)`, `bytes`
/// and `round_trips` the optional `(type, REG_DWORD data)` (`None`: absent). Pure (the fuzz
/// target's).
///
/// # Errors
/// [`Problem::Malformed`] naming the first bad value (of the wrong type, badly encoded, too long,
/// or out of range).
#[allow(dead_code)] // the entry of the tests and of a fuzz target; `read` sets value by value
pub fn parse(
    host: (u32, &[u8]),
    port: (u32, &[u8]),
    message: (u32, &[u8]),
    bytes: Option<(u32, &[u8])>,
    round_trips: Option<(u32, &[u8])>,
) -> Result<Parameters, Problem> {
    let mut p = Parameters::EMPTY;
    let mut text = [0u8; MAX_MESSAGE];
    p.set_host(decode_string(host.0, host.1, &mut text).map_err(|_| Problem::Malformed(c"Host"))?)?;
    p.set_port(decode_dword(port.0, port.1).map_err(|_| Problem::Malformed(c"Port"))?)?;
    p.set_message(
        decode_string(message.0, message.1, &mut text)
            .map_err(|_| Problem::Malformed(c"Message"))?,
    )?;
    if let Some((value_type, data)) = bytes {
        p.set_bytes(decode_dword(value_type, data).map_err(|_| Problem::Malformed(c"Bytes"))?)?;
    }
    if let Some((value_type, data)) = round_trips {
        p.set_round_trips(
            decode_dword(value_type, data).map_err(|_| Problem::Malformed(c"RoundTrips"))?,
        )?;
    }
    Ok(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{Problem, parse};
    use wsk_client::sys::{REG_DWORD, REG_SZ};
    use wsk_host_model::reg_sz as sz;

    #[test]
    fn good_values_parse() {
        let p = parse(
            (REG_SZ, &sz("127.0.0.1")),
            (REG_DWORD, &7u32.to_le_bytes()),
            (REG_SZ, &sz("héllo")),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            (p.host(), p.port, p.message()),
            ("127.0.0.1", 7, "héllo".as_bytes())
        );
    }

    #[test]
    fn bad_values_are_named() {
        let port = 7u32.to_le_bytes();
        let msg = sz("x");
        assert_eq!(
            parse(
                (REG_DWORD, &sz("h")),
                (REG_DWORD, &port),
                (REG_SZ, &msg),
                None,
                None
            )
            .err(),
            Some(Problem::Malformed(c"Host"))
        );
        assert_eq!(
            parse(
                (REG_SZ, &sz("a b")),
                (REG_DWORD, &port),
                (REG_SZ, &msg),
                None,
                None
            )
            .err(),
            Some(Problem::Malformed(c"Host"))
        );
        assert_eq!(
            parse(
                (REG_SZ, &sz("h")),
                (REG_DWORD, &0u32.to_le_bytes()),
                (REG_SZ, &msg),
                None,
                None
            )
            .err(),
            Some(Problem::Malformed(c"Port"))
        );
        assert_eq!(
            parse(
                (REG_SZ, &sz("h")),
                (REG_DWORD, &70000u32.to_le_bytes()),
                (REG_SZ, &msg),
                None,
                None
            )
            .err(),
            Some(Problem::Malformed(c"Port"))
        );
        assert_eq!(
            parse(
                (REG_SZ, &sz("h")),
                (REG_SZ, &port),
                (REG_SZ, &msg),
                None,
                None
            )
            .err(),
            Some(Problem::Malformed(c"Port"))
        );
        assert_eq!(
            parse(
                (REG_SZ, &sz("h")),
                (REG_DWORD, &port),
                (REG_SZ, &sz("")),
                None,
                None
            )
            .err(),
            Some(Problem::Malformed(c"Message"))
        );
        // Odd length, an unpaired surrogate, too long: the library's decoding refuses them.
        for bad in [
            vec![0x41, 0, 0x42],
            vec![0x00, 0xD8, 0x41, 0],
            sz(&"m".repeat(513)),
        ] {
            assert_eq!(
                parse(
                    (REG_SZ, &sz("h")),
                    (REG_DWORD, &port),
                    (REG_SZ, &bad),
                    None,
                    None
                )
                .err(),
                Some(Problem::Malformed(c"Message"))
            );
        }
    }

    #[test]
    fn bytes_is_optional_and_checked() {
        let host = sz("127.0.0.1");
        let port = 7u32.to_le_bytes();
        let msg = sz("hi");
        let with = |bytes: Option<(u32, &[u8])>| {
            parse(
                (REG_SZ, &host),
                (REG_DWORD, &port),
                (REG_SZ, &msg),
                bytes,
                None,
            )
        };
        assert_eq!(with(None).unwrap().bytes(), None, "absent: one message");
        let n = 16u32 << 20;
        assert_eq!(
            with(Some((REG_DWORD, &n.to_le_bytes())))
                .unwrap()
                .bytes()
                .map(core::num::NonZeroU32::get),
            Some(n)
        );
        assert_eq!(
            with(Some((REG_DWORD, &u32::MAX.to_le_bytes())))
                .unwrap()
                .bytes()
                .map(core::num::NonZeroU32::get),
            Some(u32::MAX)
        );
        for (kind, data) in [
            (REG_DWORD, 0u32.to_le_bytes().to_vec()),
            (REG_SZ, sz("1024")),
            (REG_SZ, sz("1")), // 4 bytes, but not a REG_DWORD
            (REG_DWORD, vec![1, 0]),
            (REG_DWORD, vec![1, 0, 0, 0, 0, 0, 0, 0]),
            (REG_DWORD, Vec::new()),
        ] {
            assert_eq!(
                with(Some((kind, &data))).err(),
                Some(Problem::Malformed(c"Bytes")),
                "{kind} {data:?}"
            );
        }
    }

    #[test]
    fn round_trips_is_optional_bounded_and_not_with_bytes() {
        let host = sz("127.0.0.1");
        let port = 7u32.to_le_bytes();
        let msg = sz("x");
        let dword = |n: u32| n.to_le_bytes();
        let with = |bytes: Option<[u8; 4]>, round_trips: Option<[u8; 4]>| {
            parse(
                (REG_SZ, &host),
                (REG_DWORD, &port),
                (REG_SZ, &msg),
                bytes.as_ref().map(|b| (REG_DWORD, b.as_slice())),
                round_trips.as_ref().map(|r| (REG_DWORD, r.as_slice())),
            )
        };
        let count = |p: super::Parameters| p.round_trips().map(core::num::NonZeroU32::get);
        assert_eq!(with(None, None).map(count), Ok(None), "absent: one message");
        assert_eq!(with(None, Some(dword(10_000))).map(count), Ok(Some(10_000)));
        assert_eq!(
            with(None, Some(dword(super::MAX_ROUND_TRIPS))).map(count),
            Ok(Some(super::MAX_ROUND_TRIPS))
        );
        for bad in [0, super::MAX_ROUND_TRIPS + 1, u32::MAX] {
            assert_eq!(
                with(None, Some(dword(bad))).err(),
                Some(Problem::Malformed(c"RoundTrips")),
                "{bad}"
            );
        }
        assert_eq!(
            with(Some(dword(1024)), Some(dword(10))).err(),
            Some(Problem::Malformed(c"RoundTrips")),
            "Bytes and RoundTrips together: refused"
        );
    }
}
