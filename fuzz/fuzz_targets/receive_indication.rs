//! A hostile receive indication (issue 18): a `WSK_DATA_INDICATION` list built from the input —
//! up to 8 entries, each a `WSK_BUF` with any offset and length over a chain of up to 4 MDLs of
//! any byte counts, some unmapped, entries and MDL chains that may loop back, and a
//! `BytesIndicated` that may lie. `copy_indicated` must end (the walks are bounded), copy nothing
//! from a list that is not exactly what it claims, and otherwise copy exactly the bytes the
//! entries describe, in order, from `skip` on, never past `out`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsk_client::socket::indication::{MAX_INDICATIONS, MAX_MDLS, copy_indicated};
use wsk_host_model as _; // the kernel symbols the library links against on the host
use wsk_sys::{MDL, MDL_SOURCE_IS_NONPAGED_POOL, WSK_BUF, WSK_DATA_INDICATION};

fuzz_target!(|data: &[u8]| {
    let mut input = data.iter().copied();
    let mut next = || input.next().unwrap_or(0);
    // The MDLs: up to 8, each over its own bytes, some unmapped; `Next` to any of them or NULL.
    let count = usize::from(next() % 8) + 1;
    let mut memory: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let len = usize::from(next() % 24);
            (0..len).map(|j| (i * 31 + j) as u8).collect()
        })
        .collect();
    let mut mdls: Vec<MDL> = memory
        .iter_mut()
        .map(|bytes| MDL {
            Next: std::ptr::null_mut(),
            Size: 48,
            MdlFlags: MDL_SOURCE_IS_NONPAGED_POOL,
            Process: std::ptr::null_mut(),
            MappedSystemVa: bytes.as_mut_ptr().cast(),
            StartVa: std::ptr::null_mut(),
            ByteCount: bytes.len() as u32,
            ByteOffset: 0,
        })
        .collect();
    let unmapped: Vec<bool> = (0..count).map(|_| next() % 16 == 0).collect();
    let links: Vec<usize> = (0..count).map(|_| usize::from(next()) % (count + 1)).collect();
    let base = mdls.as_mut_ptr();
    for (i, link) in links.iter().enumerate() {
        // SAFETY: indexes within `mdls`, which is not resized after this.
        mdls[i].Next = if *link == count { std::ptr::null_mut() } else { unsafe { base.add(*link) } };
    }
    // The entries: up to 8, each over an MDL (or NULL), any offset and length; `Next` anywhere.
    let entries_count = usize::from(next() % 8) + 1;
    let mut entries: Vec<WSK_DATA_INDICATION> = (0..entries_count)
        .map(|_| {
            let mdl = usize::from(next()) % (count + 1);
            WSK_DATA_INDICATION {
                Next: std::ptr::null_mut(),
                Buffer: WSK_BUF {
                    // SAFETY: within `mdls`.
                    Mdl: if mdl == count { std::ptr::null_mut() } else { unsafe { base.add(mdl) } },
                    Offset: u32::from(next() % 32),
                    Length: usize::from(next() % 64),
                },
            }
        })
        .collect();
    let entry_links: Vec<usize> =
        (0..entries_count).map(|_| usize::from(next()) % (entries_count + 1)).collect();
    let ebase = entries.as_mut_ptr();
    for (i, link) in entry_links.iter().enumerate() {
        // SAFETY: within `entries`, not resized after this.
        entries[i].Next =
            if *link == entries_count { std::ptr::null_mut() } else { unsafe { ebase.add(*link) } };
    }
    let lie = next() % 8 == 0;
    let skip = usize::from(next() % 64);
    let mut out = vec![0xAAu8; usize::from(next() % 128)];

    // The reference: what the list describes, walked the same bounded way, or None if malformed.
    let index = |p: *mut MDL| (p as usize - base as usize) / size_of::<MDL>();
    let expected: Option<Vec<u8>> = (|| {
        let mut bytes = Vec::new();
        let mut entry = 0usize;
        let mut seen_entries = 0;
        loop {
            seen_entries += 1;
            if seen_entries > MAX_INDICATIONS {
                return None;
            }
            let buf = entries[entry].Buffer;
            let (mut left, mut skip_in, mut mdl) = (buf.Length, buf.Offset as usize, buf.Mdl);
            let mut seen_mdls = 0;
            while left > 0 {
                if mdl.is_null() {
                    return None;
                }
                seen_mdls += 1;
                if seen_mdls > MAX_MDLS {
                    return None;
                }
                let m = index(mdl);
                let len = memory[m].len();
                if skip_in >= len || unmapped[m] {
                    return None;
                }
                let take = left.min(len - skip_in);
                bytes.extend_from_slice(&memory[m][skip_in..skip_in + take]);
                left -= take;
                skip_in = 0;
                mdl = mdls[m].Next;
            }
            if entry_links[entry] == entries_count {
                return Some(bytes);
            }
            entry = entry_links[entry];
        }
    })();
    let indicated = expected.as_ref().map_or(0, Vec::len) + usize::from(lie);
    let map = |mdl: *mut MDL| -> *const u8 {
        if unmapped[index(mdl)] {
            std::ptr::null()
        } else {
            // SAFETY: one of the target's MDLs.
            unsafe { (*mdl).MappedSystemVa.cast_const().cast() }
        }
    };
    // SAFETY: every entry and MDL reachable is one of the target's, each MDL's bytes readable.
    let result = unsafe { copy_indicated(&entries[0], indicated, skip, &mut out, &map) };
    match (expected, lie) {
        (Some(bytes), false) => {
            let from = skip.min(bytes.len());
            let want = &bytes[from..bytes.len().min(from + out.len())];
            assert_eq!(result, Ok(want.len()));
            assert_eq!(&out[..want.len()], want);
            assert!(out[want.len()..].iter().all(|b| *b == 0xAA), "written past the copy");
        }
        _ => {
            assert!(result.is_err(), "a malformed or lying list was taken: {result:?}");
            assert!(out.iter().all(|b| *b == 0xAA), "a refused list wrote bytes");
        }
    }
});
