//! A hostile `ADDRINFOEXW` chain: up to 8 entries built from the input, each with any family,
//! any `ai_addrlen` (the bytes behind `ai_addr` are exactly that many: the one thing the
//! library's contract asks of a provider), a NULL address or not, and `ai_next` pointing at any
//! entry (loops included) or NULL. The conversion must end after at most `MAX_CHAIN` entries and
//! return exactly the well-formed IPv4/IPv6 ones met (at most `MAX_ADDRESSES`), each with the
//! port asked for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsk_client::resolve::{MAX_ADDRESSES, MAX_CHAIN, addresses_from_chain};
use wsk_host_model as _;
use wsk_sys::{ADDRINFOEXW, AF_INET, AF_INET6}; // the kernel symbols the library links against on the host

fuzz_target!(|data: &[u8]| {
    let mut input = data.iter().copied();
    let mut next = || input.next().unwrap_or(0);
    let count = usize::from(next() % 8) + 1;
    let port = u16::from_le_bytes([next(), next()]);
    let mut buffers: Vec<Vec<u8>> = Vec::with_capacity(count);
    let mut shape = Vec::with_capacity(count);
    for _ in 0..count {
        let family = match next() % 4 {
            0 => AF_INET,
            1 => AF_INET6,
            _ => u16::from_le_bytes([next(), next()]),
        };
        let len = usize::from(next() % 40);
        let null = next() % 8 == 0;
        let link = usize::from(next()) % (count + 1); // == count: NULL
        let mut bytes: Vec<u8> = (0..len).map(|_| next()).collect();
        if let Some(first) = bytes.get_mut(..2) {
            first.copy_from_slice(&family.to_le_bytes());
        }
        buffers.push(bytes);
        shape.push((null, link));
    }
    let mut entries: Vec<ADDRINFOEXW> = buffers
        .iter_mut()
        .zip(&shape)
        .map(|(bytes, &(null, _))| ADDRINFOEXW {
            ai_flags: 0,
            ai_family: 0,
            ai_socktype: 0,
            ai_protocol: 0,
            ai_addrlen: bytes.len(),
            ai_canonname: std::ptr::null_mut(),
            ai_addr: if null {
                std::ptr::null_mut()
            } else {
                bytes.as_mut_ptr().cast()
            },
            ai_blob: std::ptr::null_mut(),
            ai_bloblen: 0,
            ai_provider: std::ptr::null_mut(),
            ai_next: std::ptr::null_mut(),
        })
        .collect();
    let base = entries.as_mut_ptr();
    for (i, &(_, link)) in shape.iter().enumerate() {
        let target = if link == count {
            std::ptr::null_mut()
        } else {
            base.wrapping_add(link)
        };
        entries[i].ai_next = target;
    }
    // SAFETY: every non-NULL `ai_next` points into `entries`, every non-NULL `ai_addr` at a
    // buffer of exactly `ai_addrlen` bytes; all live for the call.
    let addresses = unsafe { addresses_from_chain(base, port) };
    let mut well_formed = 0;
    let mut entry = 0;
    for _ in 0..MAX_CHAIN {
        let (bytes, (null, link)) = (&buffers[entry], shape[entry]);
        let family = bytes.get(..2).map(|f| u16::from_le_bytes([f[0], f[1]]));
        if !null
            && ((family == Some(AF_INET) && bytes.len() >= 16)
                || (family == Some(AF_INET6) && bytes.len() >= 28))
        {
            well_formed += 1;
        }
        if link == count {
            break;
        }
        entry = link;
    }
    assert_eq!(
        addresses.len(),
        well_formed.min(MAX_ADDRESSES),
        "exactly the well-formed entries of the bounded walk, up to MAX_ADDRESSES"
    );
    for address in addresses.iter() {
        assert_eq!(address.port(), port);
    }
});
