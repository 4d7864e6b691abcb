//! [`AddressText`]: a socket address as text for a log line (`%s`), written by hand — `core::fmt`
//! would bring its panic paths into a kernel image. IPv4 `a.b.c.d:port`; IPv6 `[groups]:port`
//! in RFC 5952's form (lower-case hex, no leading zeros, the longest run of two or more zero
//! groups as `::`, the first of equal runs), without a zone.

use core::ffi::CStr;
use core::net::SocketAddr;

/// `[` + 39 + `]:` + 5 + NUL.
const CAPACITY: usize = 48;

/// A socket address as NUL-terminated text.
pub struct AddressText {
    bytes: [u8; CAPACITY],
    length: usize,
}

impl AddressText {
    /// The text of `address`.
    #[must_use]
    pub fn new(address: SocketAddr) -> Self {
        let mut text = Self {
            bytes: [0; CAPACITY],
            length: 0,
        };
        match address {
            SocketAddr::V4(a) => {
                for (i, octet) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    text.decimal(u32::from(octet));
                }
            }
            SocketAddr::V6(a) => {
                text.push(b'[');
                text.ipv6(&a.ip().segments());
                text.push(b']');
            }
        }
        text.push(b':');
        text.decimal(u32::from(address.port()));
        text
    }

    /// The text, for `%s`.
    #[must_use]
    pub fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.bytes).unwrap_or(c"?")
    }

    /// The text without its NUL.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.length).unwrap_or(&[])
    }

    /// Appends `byte`, keeping the last byte for the NUL (the capacity fits every address).
    fn push(&mut self, byte: u8) {
        if self.length + 1 < CAPACITY
            && let Some(slot) = self.bytes.get_mut(self.length)
        {
            *slot = byte;
            self.length += 1;
        }
    }

    fn decimal(&mut self, value: u32) {
        let mut digits = [0u8; 10];
        let mut count = 0;
        let mut rest = value;
        loop {
            if let Some(digit) = digits.get_mut(count) {
                #[allow(clippy::cast_possible_truncation)] // a digit
                let d = (rest % 10) as u8;
                *digit = b'0' + d;
            }
            count += 1;
            rest /= 10;
            if rest == 0 || count == digits.len() {
                break;
            }
        }
        for i in (0..count).rev() {
            if let Some(&digit) = digits.get(i) {
                self.push(digit);
            }
        }
    }

    fn hex(&mut self, value: u16) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut started = false;
        for shift in [12u32, 8, 4, 0] {
            let nibble = usize::from((value >> shift) & 0xF);
            if nibble != 0 || started || shift == 0 {
                started = true;
                if let Some(&digit) = DIGITS.get(nibble) {
                    self.push(digit);
                }
            }
        }
    }

    fn ipv6(&mut self, groups: &[u16; 8]) {
        // The longest run of zero groups (two or more; the first of equal runs).
        let (mut best, mut best_len, mut run, mut run_len) = (0, 0, 0, 0);
        for (i, group) in groups.iter().enumerate() {
            if *group == 0 {
                if run_len == 0 {
                    run = i;
                }
                run_len += 1;
                if run_len > best_len {
                    (best, best_len) = (run, run_len);
                }
            } else {
                run_len = 0;
            }
        }
        let compressed = if best_len >= 2 {
            Some(best..best + best_len)
        } else {
            None
        };
        let mut i = 0;
        while i < groups.len() {
            if let Some(range) = compressed.as_ref().filter(|r| r.start == i) {
                self.push(b':');
                if i == 0 {
                    self.push(b':');
                }
                i = range.end;
                continue;
            }
            if let Some(&group) = groups.get(i) {
                self.hex(group);
            }
            if i + 1 < groups.len() {
                self.push(b':');
            }
            i += 1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn text(address: &str) -> std::string::String {
        let address: SocketAddr = address.parse().unwrap();
        std::str::from_utf8(AddressText::new(address).as_bytes())
            .unwrap()
            .into()
    }

    #[test]
    fn addresses_read_as_std_writes_them() {
        for address in [
            "0.0.0.0:0",
            "127.0.0.1:7",
            "255.255.255.255:65535",
            "[::]:0",
            "[::1]:7",
            "[1::]:80",
            "[1:0:0:2::3]:1",
            "[2001:db8::8:800:200c:417a]:443",
            "[2001:db8:0:1:1:1:1:1]:9",
            "[fe80::1:0:0:1]:65535",
            "[1:2:3:4:5:6:7:8]:1",
            "[1:0:2:0:3:0:4:0]:2",
        ] {
            let parsed: SocketAddr = address.parse().unwrap();
            assert_eq!(text(address), parsed.to_string(), "{address}");
        }
        let address: SocketAddr = "[::ffff:1.2.3.4]:5".parse().unwrap();
        // std writes an IPv4-mapped address with a dotted tail; this text keeps hex groups.
        assert_eq!(text("[::ffff:1.2.3.4]:5"), "[::ffff:102:304]:5");
        assert_ne!(address.to_string(), "");
    }

    #[test]
    fn the_text_is_nul_terminated_for_percent_s() {
        let address: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        let text = AddressText::new(address);
        assert_eq!(
            text.as_cstr().to_bytes(),
            b"[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
        );
    }
}
