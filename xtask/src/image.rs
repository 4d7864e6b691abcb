//! Checks a built driver image (`wsk_attach.sys`, `wsk_echo.sys`) with the `object` crate's PE reader: the properties Windows
//! and the HLK require of a kernel driver, imports against the source's declarations, and (from
//! the linker map) that no panic or formatting machinery reached the image.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use object::LittleEndian as LE;
use object::pe::{
    IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE, IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY,
    IMAGE_DLLCHARACTERISTICS_NX_COMPAT, IMAGE_FILE_MACHINE_AMD64, IMAGE_SCN_MEM_EXECUTE,
    IMAGE_SCN_MEM_WRITE, IMAGE_SUBSYSTEM_NATIVE, ImageNtHeaders64,
};
use object::read::pe::{ExportTarget, ImageNtHeaders, ImageOptionalHeader, Import, PeFile64};

/// The DLLs a WDM driver built from this project may import from.
const ALLOWED_DLLS: &[&str] = &["ntoskrnl.exe", "NETIO.SYS"];
/// Imports the lifecycle cannot work without.
const REQUIRED_IMPORTS: &[&str] = &[
    "NmrRegisterClient",
    "NmrClientAttachProvider",
    "NmrDeregisterClient",
    "NmrWaitForClientDeregisterComplete",
    "ExAllocatePoolWithTag",
    "ExFreePoolWithTag",
    "MmGetSystemRoutineAddress",
    "DbgPrintEx",
];
/// Imports that would stop the driver from loading on Windows before 10 2004.
const FORBIDDEN_IMPORTS: &[&str] = &["ExAllocatePool2"];
/// Symbol fragments of Rust's panic and formatting machinery (v0-mangled or plain).
const PANIC_MARKERS: &[&str] = &["panic", "4core3fmt", "rust_begin_unwind", "eh_personality"];

/// The checked facts, for the summary.
struct Summary {
    lines: String,
    failures: Vec<String>,
}

impl Summary {
    fn check(&mut self, ok: bool, what: &str) {
        let _ = writeln!(self.lines, "  [{}] {what}", if ok { "ok" } else { "FAIL" });
        if !ok {
            self.failures.push(what.to_string());
        }
    }
}

/// The functions the source declares in `extern` blocks of `crates/wsk-sys`.
fn declared_functions(root: &Path) -> Result<BTreeSet<String>, String> {
    let dir = root.join("crates").join("wsk-sys").join("src");
    let mut names = BTreeSet::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("pub fn ") {
                if let Some((name, _)) = rest.split_once('(') {
                    names.insert(name.to_string());
                }
            }
        }
    }
    Ok(names)
}

/// The PE checksum (as `CheckSumMappedFile` computes it), over `data` with the stored checksum
/// at `checksum_offset` counted as zero.
fn pe_checksum(data: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, chunk) in data.chunks(2).enumerate() {
        let offset = i * 2;
        if offset == checksum_offset || offset == checksum_offset + 2 {
            continue;
        }
        let low = chunk.first().copied().unwrap_or(0);
        let high = chunk.get(1).copied().unwrap_or(0);
        let word = u16::from_le_bytes([low, high]);
        sum += u64::from(word);
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum = (sum & 0xFFFF) + (sum >> 16);
    #[allow(clippy::cast_possible_truncation)]
    let sum = sum as u32;
    #[allow(clippy::cast_possible_truncation)]
    let len = data.len() as u32;
    sum + len
}

fn section_name(raw: [u8; 8]) -> String {
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .to_string()
}

/// Checks the image at `path`; returns the summary, or the list of failures.
#[allow(clippy::too_many_lines)]
pub fn check(path: &Path, root: &Path) -> Result<String, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let pe = PeFile64::parse(&*data)
        .map_err(|e| format!("{}: not a PE32+ image: {e}", path.display()))?;
    let headers: &ImageNtHeaders64 = pe.nt_headers();
    let file = headers.file_header();
    let optional = headers.optional_header();
    let mut s = Summary {
        lines: String::new(),
        failures: Vec::new(),
    };
    let _ = writeln!(s.lines, "{}: {} bytes", path.display(), data.len());

    s.check(true, "PE32+ (parsed as a 64-bit PE image)");
    s.check(
        file.machine.get(LE) == IMAGE_FILE_MACHINE_AMD64,
        "machine AMD64",
    );
    s.check(
        optional.subsystem() == IMAGE_SUBSYSTEM_NATIVE,
        "subsystem NATIVE",
    );
    let dll = optional.dll_characteristics();
    let wanted = IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE
        | IMAGE_DLLCHARACTERISTICS_NX_COMPAT
        | IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY;
    s.check(
        dll & wanted == wanted,
        &format!("DllCharacteristics {dll:#06x} has DYNAMIC_BASE, NX_COMPAT, FORCE_INTEGRITY"),
    );

    // Exports: DriverEntry only, and it is the entry point.
    let exports = pe.export_table().map_err(|e| e.to_string())?;
    let exports = match exports {
        Some(table) => table.exports().map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let export_names: Vec<String> = exports
        .iter()
        .map(|e| {
            e.name.map_or_else(
                || "<ordinal>".into(),
                |n| String::from_utf8_lossy(n).into_owned(),
            )
        })
        .collect();
    let entry = optional.address_of_entry_point();
    let driver_entry = exports.iter().find_map(|e| match (e.name, e.target) {
        (Some(b"DriverEntry"), ExportTarget::Address(rva)) => Some(rva),
        _ => None,
    });
    s.check(
        driver_entry == Some(entry),
        &format!("entry point {entry:#x} is DriverEntry"),
    );
    s.check(
        export_names == ["DriverEntry"],
        &format!(
            "exports only DriverEntry (exports: {})",
            export_names.join(", ")
        ),
    );

    // Sections: none both writable and executable.
    let mut section_list = Vec::new();
    for section in pe.section_table().iter() {
        let name = section_name(section.name);
        let flags = section.characteristics.get(LE);
        let wx = flags & IMAGE_SCN_MEM_WRITE != 0 && flags & IMAGE_SCN_MEM_EXECUTE != 0;
        s.check(
            !wx,
            &format!("section {name} is not both writable and executable"),
        );
        section_list.push(format!("{name} {}", section.size_of_raw_data.get(LE)));
    }
    let _ = writeln!(
        s.lines,
        "  sections (raw bytes): {}",
        section_list.join(", ")
    );

    // Checksum.
    let dos_header_size = usize::try_from(
        object::pe::ImageDosHeader::parse(&*data)
            .map_err(|e| e.to_string())?
            .nt_headers_offset(),
    )
    .map_err(|e| e.to_string())?;
    let checksum_offset = dos_header_size + 4 + 20 + 64;
    let stored = optional.check_sum();
    let computed = pe_checksum(&data, checksum_offset);
    s.check(
        stored != 0 && stored == computed,
        &format!("checksum {stored:#x} is valid (computed {computed:#x})"),
    );

    // Imports.
    let declared = declared_functions(root)?;
    let mut imported = BTreeSet::new();
    if let Some(table) = pe.import_table().map_err(|e| e.to_string())? {
        let mut descriptors = table.descriptors().map_err(|e| e.to_string())?;
        while let Some(descriptor) = descriptors.next().map_err(|e| e.to_string())? {
            let dll = String::from_utf8_lossy(
                table
                    .name(descriptor.name.get(LE))
                    .map_err(|e| e.to_string())?,
            )
            .into_owned();
            s.check(
                ALLOWED_DLLS.contains(&dll.as_str()),
                &format!("imports from {dll} are allowed"),
            );
            let mut thunks = table
                .thunks(descriptor.original_first_thunk.get(LE))
                .map_err(|e| e.to_string())?;
            let mut names = Vec::new();
            while let Some(thunk) = thunks
                .next::<ImageNtHeaders64>()
                .map_err(|e| e.to_string())?
            {
                match table
                    .import::<ImageNtHeaders64>(thunk)
                    .map_err(|e| e.to_string())?
                {
                    Import::Name(_, name) => {
                        let name = String::from_utf8_lossy(name).into_owned();
                        names.push(name.clone());
                        imported.insert(name);
                    }
                    Import::Ordinal(ordinal) => {
                        s.check(false, &format!("import by ordinal {ordinal}"));
                    }
                }
            }
            let _ = writeln!(s.lines, "  imports {dll}: {}", names.join(", "));
        }
    }
    let undeclared: Vec<&String> = imported.difference(&declared).collect();
    s.check(
        undeclared.is_empty(),
        &format!("every import is declared in crates/wsk-sys (undeclared: {undeclared:?})"),
    );
    for name in REQUIRED_IMPORTS {
        s.check(imported.contains(*name), &format!("imports {name}"));
    }
    for name in FORBIDDEN_IMPORTS {
        s.check(
            !imported.contains(*name),
            &format!("does not import {name} statically"),
        );
    }

    // Panic machinery, from the linker map next to the image.
    // `wsk_echo.sys` and its self-test mutant `wsk_echo.selftest.sys` share `deps/wsk_echo.map`.
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    let map = path.with_file_name("deps").join(format!("{stem}.map"));
    match std::fs::read_to_string(&map) {
        Ok(text) => {
            let hits: Vec<&str> = text
                .lines()
                .filter(|line| PANIC_MARKERS.iter().any(|m| line.contains(m)))
                .collect();
            s.check(
                hits.is_empty(),
                &format!(
                    "no panic or fmt symbol in {} ({} found)",
                    map.display(),
                    hits.len()
                ),
            );
            for hit in hits.iter().take(5) {
                let _ = writeln!(s.lines, "      {}", hit.trim());
            }
        }
        Err(e) => s.check(false, &format!("linker map {}: {e}", map.display())),
    }

    if s.failures.is_empty() {
        let _ = writeln!(s.lines, "image check: all passed");
        Ok(s.lines)
    } else {
        eprint!("{}", s.lines);
        Err(format!("image check failed: {}", s.failures.join("; ")))
    }
}

/// A mutation of an image that the check must reject, and what the failure must name.
struct Mutation {
    what: &'static str,
    expect: &'static str,
    apply: fn(&mut [u8], usize),
}

const MUTATIONS: &[Mutation] = &[
    Mutation {
        what: "first section made writable and executable",
        expect: "not both writable and executable",
        apply: |data, nt| {
            let sections = nt + 4 + 20 + 240;
            // Characteristics is the last field (offset 36) of the first section header.
            let flags = sections + 36;
            let value = u32::from_le_bytes([
                data[flags],
                data[flags + 1],
                data[flags + 2],
                data[flags + 3],
            ]) | IMAGE_SCN_MEM_WRITE
                | IMAGE_SCN_MEM_EXECUTE;
            data[flags..flags + 4].copy_from_slice(&value.to_le_bytes());
        },
    },
    Mutation {
        what: "FORCE_INTEGRITY cleared",
        expect: "FORCE_INTEGRITY",
        apply: |data, nt| {
            let offset = nt + 4 + 20 + 70;
            let value = u16::from_le_bytes([data[offset], data[offset + 1]])
                & !IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY;
            data[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
        },
    },
    Mutation {
        what: "subsystem set to WINDOWS_GUI",
        expect: "subsystem NATIVE",
        apply: |data, nt| {
            let offset = nt + 4 + 20 + 68;
            data[offset..offset + 2].copy_from_slice(&2u16.to_le_bytes());
        },
    },
];

/// Proves the check can fail: each mutation of a good image (with its checksum recomputed, so
/// only the mutated property is wrong), and a corrupted checksum, must be rejected.
pub fn self_test(image: &Path, root: &Path) -> Result<(), String> {
    check(image, root)?;
    let good = std::fs::read(image).map_err(|e| e.to_string())?;
    let nt = usize::try_from(u32::from_le_bytes([
        good[0x3C], good[0x3D], good[0x3E], good[0x3F],
    ]))
    .map_err(|e| e.to_string())?;
    let checksum_offset = nt + 4 + 20 + 64;
    let mutant = image.with_extension("selftest.sys");
    let mut cases: Vec<(&str, &str, Vec<u8>)> = MUTATIONS
        .iter()
        .map(|m| {
            let mut data = good.clone();
            (m.apply)(&mut data, nt);
            let sum = pe_checksum(&data, checksum_offset);
            data[checksum_offset..checksum_offset + 4].copy_from_slice(&sum.to_le_bytes());
            (m.what, m.expect, data)
        })
        .collect();
    let mut bad_sum = good.clone();
    bad_sum[checksum_offset] ^= 0x01;
    cases.push(("checksum off by one", "checksum", bad_sum));
    for (what, expect, data) in cases {
        std::fs::write(&mutant, data).map_err(|e| e.to_string())?;
        match check(&mutant, root) {
            Err(message) if message.contains(expect) => {
                eprintln!("image check self-test: rejected ({what})");
            }
            other => {
                return Err(format!(
                    "image check self-test: {what}: expected a failure naming '{expect}', got {other:?}"
                ));
            }
        }
    }
    std::fs::remove_file(&mutant).map_err(|e| e.to_string())?;
    Ok(())
}
