//! Checks a built driver image (`wsk_attach.sys`, `wsk_echo.sys`) with the `object` crate's PE reader: the properties Windows
//! and the HLK require of a kernel driver, imports against the source's declarations, (from
//! the linker map) that no panic or formatting machinery reached the image, and its Authenticode
//! security directory: absent from the build output, present and well-formed in a signed package.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use object::LittleEndian as LE;
use object::pe::{
    IMAGE_DIRECTORY_ENTRY_SECURITY, IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE,
    IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY, IMAGE_DLLCHARACTERISTICS_NX_COMPAT,
    IMAGE_FILE_MACHINE_AMD64, IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_WRITE, IMAGE_SUBSYSTEM_NATIVE,
    ImageNtHeaders64,
};
use object::read::pe::{ExportTarget, ImageNtHeaders, ImageOptionalHeader, Import, PeFile64};

/// The DLLs a WDM driver built from this project may import from.
const ALLOWED_DLLS: &[&str] = &["ntoskrnl.exe", "NETIO.SYS"];
/// Imports the lifecycle cannot work without, whatever the backend.
const REQUIRED_IMPORTS: &[&str] = &[
    "ExAllocatePoolWithTag",
    "ExFreePoolWithTag",
    "MmGetSystemRoutineAddress",
    "RtlGetVersion",
    "IoCreateDevice",
    "IoDeleteDevice",
    "DbgPrintEx",
];
/// The client functions of each backend: an image imports all of one set and none of the other
/// (the backend is chosen at compile time, so the other one must not be linked in).
const BACKEND_IMPORTS: &[(&str, &[&str])] = &[
    (
        "NMR",
        &[
            "NmrRegisterClient",
            "NmrClientAttachProvider",
            "NmrDeregisterClient",
            "NmrWaitForClientDeregisterComplete",
        ],
    ),
    (
        "WskRegister",
        &[
            "WskRegister",
            "WskCaptureProviderNPI",
            "WskReleaseProviderNPI",
            "WskDeregister",
        ],
    ),
];
/// The logging import, which the `no-log` build must not have.
const LOG_IMPORT: &str = "DbgPrintEx";
/// Imports that would stop the driver from loading on Windows before 10 2004.
const FORBIDDEN_IMPORTS: &[&str] = &["ExAllocatePool2"];
/// Symbol fragments of Rust's panic and formatting machinery (v0-mangled or plain).
const PANIC_MARKERS: &[&str] = &["panic", "4core3fmt", "rust_begin_unwind", "eh_personality"];

/// `WIN_CERTIFICATE.wRevision` of an Authenticode signature (`WIN_CERT_REVISION_2_0`).
const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// `WIN_CERTIFICATE.wCertificateType` of an Authenticode signature (`WIN_CERT_TYPE_PKCS_SIGNED_DATA`).
const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// What the check expects of an image beyond what every driver image must be.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// `true`: the image is Authenticode-signed, so its security directory must be present and
    /// hold one well-formed `WIN_CERTIFICATE` at the end of the file; `false`: it must have none
    /// (the linker's output).
    pub signed: bool,
    /// The linker map to search for panic machinery; `None`: `deps/<stem>.map` beside the image.
    pub map: Option<PathBuf>,
}

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
            if let Some(rest) = line.trim_start().strip_prefix("pub fn ")
                && let Some((name, _)) = rest.split_once('(')
            {
                names.insert(name.to_string());
            }
        }
    }
    Ok(names)
}

/// The PE checksum (as `CheckSumMappedFile` computes it), over `data` with the stored checksum
/// at `checksum_offset` counted as zero. It covers the whole file, the certificate table of a
/// signed image included (the signer sets it after appending the signature; Authenticode's own
/// hash skips the checksum and the table, so the checksum can change without breaking it).
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

/// Checks the linker's output at `path` (unsigned, map beside it); returns the summary, or the
/// list of failures.
pub fn check(path: &Path, root: &Path) -> Result<String, String> {
    check_with(path, root, &Expect::default())
}

/// The end of the last section's raw data in the file: where a certificate table may start.
fn end_of_sections(pe: &PeFile64<'_>) -> u64 {
    pe.section_table()
        .iter()
        .map(|section| {
            u64::from(section.pointer_to_raw_data.get(LE))
                + u64::from(section.size_of_raw_data.get(LE))
        })
        .max()
        .unwrap_or(0)
}

/// What is wrong with the certificate table at file offset `offset` of `size` bytes (the
/// security directory of a signed image): it must follow the sections, be 8-byte aligned, end at
/// the end of the file, and hold one `WIN_CERTIFICATE` of revision 2.0 and type PKCS#7 signed
/// data whose length fills the table (up to 8 bytes of padding) and whose content is DER.
fn certificate_table_problems(
    data: &[u8],
    offset: u64,
    size: u64,
    sections_end: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    let len = data.len() as u64;
    if offset < sections_end {
        problems.push(format!(
            "it starts at {offset:#x}, inside the sections (which end at {sections_end:#x})"
        ));
    }
    if !offset.is_multiple_of(8) {
        problems.push(format!("its offset {offset:#x} is not 8-byte aligned"));
    }
    if offset.saturating_add(size) != len {
        problems.push(format!(
            "it ends at {:#x}, not at the end of the file ({len:#x})",
            offset.saturating_add(size)
        ));
    }
    let header = usize::try_from(offset)
        .ok()
        .and_then(|start| data.get(start..start.checked_add(8)?));
    let Some(header) = header else {
        problems.push("no room for a WIN_CERTIFICATE header".into());
        return problems;
    };
    let length = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let revision = u16::from_le_bytes([header[4], header[5]]);
    let kind = u16::from_le_bytes([header[6], header[7]]);
    if length < 9 || length > size || size - length >= 8 {
        problems.push(format!(
            "WIN_CERTIFICATE dwLength {length} does not fill the {size}-byte table"
        ));
    }
    if revision != WIN_CERT_REVISION_2_0 {
        problems.push(format!(
            "WIN_CERTIFICATE wRevision {revision:#06x}, expected 0x0200"
        ));
    }
    if kind != WIN_CERT_TYPE_PKCS_SIGNED_DATA {
        problems.push(format!(
            "WIN_CERTIFICATE wCertificateType {kind:#06x}, expected 0x0002 (PKCS#7 signed data)"
        ));
    }
    let der = usize::try_from(offset + 8).ok().and_then(|at| data.get(at));
    if der != Some(&0x30) {
        problems.push("WIN_CERTIFICATE content is not a DER SEQUENCE".into());
    }
    problems
}

/// Checks the image at `path` with the expectations `expect`; returns the summary, or the list
/// of failures.
pub fn check_with(path: &Path, root: &Path, expect: &Expect) -> Result<String, String> {
    check_image(path, root, expect, Logging::On)
}

/// Whether the image was built to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logging {
    /// The shipped build: `DbgPrintEx` is imported.
    On,
    /// The `no-log` build (`cargo xtask baseline`): `DbgPrintEx` must not be imported.
    Off,
}

/// [`check`] for an image built with `logging`.
pub fn check_logging(path: &Path, root: &Path, logging: Logging) -> Result<String, String> {
    check_image(path, root, &Expect::default(), logging)
}

#[allow(clippy::too_many_lines)]
fn check_image(
    path: &Path,
    root: &Path,
    expect: &Expect,
    logging: Logging,
) -> Result<String, String> {
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

    // Security directory (a file offset, not an RVA): the Authenticode signature.
    let security = pe
        .data_directories()
        .get(IMAGE_DIRECTORY_ENTRY_SECURITY)
        .map(|dir| {
            (
                u64::from(dir.virtual_address.get(LE)),
                u64::from(dir.size.get(LE)),
            )
        });
    match (expect.signed, security) {
        (false, None) => s.check(true, "no security directory (unsigned build output)"),
        (false, Some((offset, size))) => s.check(
            false,
            &format!(
                "security directory ({size} bytes at {offset:#x}) in an image expected unsigned"
            ),
        ),
        (true, None) => s.check(
            false,
            "security directory present (the Authenticode signature): the image has none",
        ),
        (true, Some((offset, size))) => {
            let problems = certificate_table_problems(&data, offset, size, end_of_sections(&pe));
            s.check(
                problems.is_empty(),
                &format!(
                    "security directory: {size} bytes at {offset:#x}, one WIN_CERTIFICATE (rev 2.0, PKCS#7) at the end of the file{}",
                    if problems.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", problems.join("; "))
                    }
                ),
            );
        }
    }

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
        if *name == LOG_IMPORT && logging == Logging::Off {
            s.check(
                !imported.contains(*name),
                &format!("does not import {name} (no-log build)"),
            );
        } else {
            s.check(imported.contains(*name), &format!("imports {name}"));
        }
    }
    let backends: Vec<&str> = BACKEND_IMPORTS
        .iter()
        .filter(|(_, names)| names.iter().all(|name| imported.contains(*name)))
        .map(|(backend, _)| *backend)
        .collect();
    let partial: Vec<&str> = BACKEND_IMPORTS
        .iter()
        .filter(|(_, names)| names.iter().any(|name| imported.contains(*name)))
        .map(|(backend, _)| *backend)
        .collect();
    s.check(
        backends.len() == 1 && partial == backends,
        &format!(
            "imports the client functions of exactly one backend (complete: {backends:?}, any: {partial:?})"
        ),
    );
    for name in FORBIDDEN_IMPORTS {
        s.check(
            !imported.contains(*name),
            &format!("does not import {name} statically"),
        );
    }

    // Panic machinery, from the linker map (by default next to the image), and who calls it.
    let map = expect.map.clone().unwrap_or_else(|| map_beside(path));
    match std::fs::read_to_string(&map) {
        Ok(text) => {
            let text_section = pe
                .section_table()
                .iter()
                .find(|section| section_name(section.name) == ".text")
                .and_then(|section| {
                    let start = usize::try_from(section.pointer_to_raw_data.get(LE)).ok()?;
                    let len = usize::try_from(section.size_of_raw_data.get(LE)).ok()?;
                    data.get(start..start.checked_add(len)?)
                })
                .unwrap_or(&[]);
            let verdict = panic_paths(&text, text_section);
            s.check(
                verdict.unexplained.is_empty(),
                &format!(
                    "no panic or fmt machinery in {} but behind the compiler's `async fn` resumed \
                     check ({} symbol(s) of it, {} call(s) into it from elsewhere)",
                    map.display(),
                    verdict.symbols,
                    verdict.unexplained.len()
                ),
            );
            for hit in verdict.unexplained.iter().take(5) {
                let _ = writeln!(s.lines, "      {hit}");
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

/// What [`panic_paths`] found.
struct PanicPaths {
    /// Panic or formatting symbols in the map.
    symbols: usize,
    /// What is not explained: such a symbol no call reaches from the roots alone, or a call into
    /// one from a function outside the machinery.
    unexplained: Vec<String>,
}

/// The one way panic machinery may be linked into a driver image: behind the check the compiler
/// puts in every `async fn` and block, "`async fn` resumed after completion"
/// (`core::panicking::panic_const::panic_const_async_fn_resumed*`), which only an executor that
/// polls a completed future reaches — the library's never does (a completed task is dropped, not
/// polled: `task::state`, loom-checked). From the map's symbols in `.text` and the section's code:
/// every direct call or jump (`E8`/`E9`/`0F 8x` with a 32-bit displacement) into a panic or
/// formatting function that is not one of those roots must come from inside the machinery
/// itself (the root, `panic_fmt`, the panic handler). A panic anywhere else — an `unwrap`, an
/// index — is a call into `panic_fmt` (or a `panic_*` function) from driver code: unexplained.
fn panic_paths(map: &str, text: &[u8]) -> PanicPaths {
    // (offset in .text, name) of every symbol of section 1 (.text), sorted.
    let mut symbols: Vec<(usize, &str)> = map
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.next()?.strip_prefix("0001:")?;
            let name = fields.next()?;
            Some((usize::from_str_radix(address, 16).ok()?, name))
        })
        .collect();
    symbols.sort_unstable();
    let is_marker = |name: &str| PANIC_MARKERS.iter().any(|m| name.contains(m));
    let is_root = |name: &str| name.contains("panic_const_async_fn_resumed");
    let machinery: BTreeSet<usize> = symbols
        .iter()
        .filter(|(_, name)| is_marker(name))
        .map(|(offset, _)| *offset)
        .collect();
    let mut out = PanicPaths {
        symbols: machinery.len(),
        unexplained: Vec::new(),
    };
    // Markers outside .text (data, imports) cannot be explained by calls.
    for line in map.lines() {
        if is_marker(line) && !line.trim_start().starts_with("0001:") {
            out.unexplained.push(format!("not code: {}", line.trim()));
        }
    }
    if machinery.is_empty() {
        return out;
    }
    if !symbols.iter().any(|(_, name)| is_root(name)) {
        out.unexplained.extend(
            symbols
                .iter()
                .filter(|(_, name)| is_marker(name))
                .map(|(_, name)| format!("linked, and no async fn root: {name}")),
        );
        return out;
    }
    let name_at = |offset: usize| {
        let i = symbols.partition_point(|(start, _)| *start <= offset);
        i.checked_sub(1)
            .and_then(|i| symbols.get(i))
            .map_or("?", |(_, name)| name)
    };
    let rel32 = |at: usize| {
        text.get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(i32::from_le_bytes)
    };
    for at in 0..text.len() {
        let call = match (text.get(at), text.get(at + 1)) {
            (Some(0xE8 | 0xE9), _) => rel32(at + 1).map(|rel| (at + 5, rel)),
            (Some(0x0F), Some(0x80..=0x8F)) => rel32(at + 2).map(|rel| (at + 6, rel)),
            _ => None,
        };
        let Some(target) = call.and_then(|(next, rel)| next.checked_add_signed(rel as isize))
        else {
            continue;
        };
        if !machinery.contains(&target) || is_root(name_at(target)) {
            continue;
        }
        let caller = name_at(at);
        if !is_marker(caller) {
            out.unexplained
                .push(format!("{caller} calls {}", name_at(target)));
        }
    }
    out
}

/// The linker map of the image at `path` in the build output: `deps/<stem>.map` beside it.
/// `wsk_echo.sys` and its self-test mutant `wsk_echo.selftest.sys` share `deps/wsk_echo.map`.
pub fn map_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.split('.').next().unwrap_or_default();
    path.with_file_name("deps").join(format!("{stem}.map"))
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

/// The offset of the NT headers (`e_lfanew`) of `image`.
fn nt_offset(image: &[u8]) -> Result<usize, String> {
    let bytes = image.get(0x3C..0x40).ok_or("not a PE image: too short")?;
    usize::try_from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        .map_err(|e| e.to_string())
}

/// Sets the stored checksum of `data` to the one computed over it.
fn fix_checksum(data: &mut [u8], checksum_offset: usize) {
    let sum = pe_checksum(data, checksum_offset);
    data[checksum_offset..checksum_offset + 4].copy_from_slice(&sum.to_le_bytes());
}

/// One self-test case: a mutant image, what it breaks, the text the failure must contain, and
/// the expectations it is checked with.
struct Case {
    what: String,
    expect: &'static str,
    data: Vec<u8>,
    with: Expect,
}

/// Writes each case's image to `mutant` and checks it: each must be rejected with a failure that
/// names what was broken. Removes `mutant` afterwards.
fn reject_all(mutant: &Path, root: &Path, cases: Vec<Case>) -> Result<(), String> {
    for case in cases {
        std::fs::write(mutant, &case.data).map_err(|e| format!("{}: {e}", mutant.display()))?;
        match check_with(mutant, root, &case.with) {
            Err(message) if message.contains(case.expect) => {
                eprintln!("image check self-test: rejected ({})", case.what);
            }
            other => {
                let _ = std::fs::remove_file(mutant);
                return Err(format!(
                    "image check self-test: {}: expected a failure naming '{}', got {other:?}",
                    case.what, case.expect
                ));
            }
        }
    }
    std::fs::remove_file(mutant).map_err(|e| format!("{}: {e}", mutant.display()))
}

/// Proves the check can fail: each mutation of a good image (with its checksum recomputed, so
/// only the mutated property is wrong), and a corrupted checksum, must be rejected.
pub fn self_test(image: &Path, root: &Path) -> Result<(), String> {
    check(image, root)?;
    let good = std::fs::read(image).map_err(|e| e.to_string())?;
    let nt = nt_offset(&good)?;
    let checksum_offset = nt + 4 + 20 + 64;
    let unsigned = || Expect {
        signed: false,
        map: Some(map_beside(image)),
    };
    let mut cases: Vec<Case> = MUTATIONS
        .iter()
        .map(|m| {
            let mut data = good.clone();
            (m.apply)(&mut data, nt);
            fix_checksum(&mut data, checksum_offset);
            Case {
                what: m.what.into(),
                expect: m.expect,
                data,
                with: unsigned(),
            }
        })
        .collect();
    let mut bad_sum = good.clone();
    bad_sum[checksum_offset] ^= 0x01;
    cases.push(Case {
        what: "checksum off by one".into(),
        expect: "checksum",
        data: bad_sum,
        with: unsigned(),
    });
    cases.push(Case {
        what: "the unsigned image checked as a signed one".into(),
        expect: "security directory present",
        data: good,
        with: Expect {
            signed: true,
            map: Some(map_beside(image)),
        },
    });
    reject_all(&image.with_extension("selftest.sys"), root, cases)
}

/// Proves the signed-image checks can fail, on the signed image `signed` whose linker map is
/// `map`: a zeroed security directory, a `WIN_CERTIFICATE` of the wrong revision, bytes appended
/// after the certificate table (each with the checksum recomputed), a checksum off by one, and
/// the signed image checked as an unsigned one must all be rejected. The mutants are written in
/// `scratch` (a folder), never beside the package.
pub fn self_test_signed(
    signed: &Path,
    root: &Path,
    map: &Path,
    scratch: &Path,
) -> Result<(), String> {
    let with = |signed: bool| Expect {
        signed,
        map: Some(map.to_path_buf()),
    };
    check_with(signed, root, &with(true))?;
    let good = std::fs::read(signed).map_err(|e| e.to_string())?;
    let nt = nt_offset(&good)?;
    let checksum_offset = nt + 4 + 20 + 64;
    // IMAGE_OPTIONAL_HEADER64.DataDirectory starts at 112; the security entry is the fifth.
    let security = nt + 4 + 20 + 112 + 8 * IMAGE_DIRECTORY_ENTRY_SECURITY;
    let table = usize::try_from(u32::from_le_bytes([
        good[security],
        good[security + 1],
        good[security + 2],
        good[security + 3],
    ]))
    .map_err(|e| e.to_string())?;
    if table == 0 || table + 8 > good.len() {
        return Err(format!(
            "{}: no certificate table to mutate",
            signed.display()
        ));
    }

    let mut no_directory = good.clone();
    no_directory[security..security + 8].fill(0);
    fix_checksum(&mut no_directory, checksum_offset);
    let mut revision = good.clone();
    revision[table + 4..table + 6].copy_from_slice(&0x0100_u16.to_le_bytes());
    fix_checksum(&mut revision, checksum_offset);
    let mut appended = good.clone();
    appended.extend_from_slice(&[0; 8]);
    fix_checksum(&mut appended, checksum_offset);
    let mut bad_sum = good.clone();
    bad_sum[checksum_offset] ^= 0x01;

    let case = |what: &str, expect, data, signed| Case {
        what: format!("signed image: {what}"),
        expect,
        data,
        with: with(signed),
    };
    let cases = vec![
        case(
            "security directory zeroed",
            "security directory present",
            no_directory,
            true,
        ),
        case("WIN_CERTIFICATE revision 1.0", "wRevision", revision, true),
        case(
            "8 bytes after the certificate table",
            "not at the end of the file",
            appended,
            true,
        ),
        case("checksum off by one", "checksum", bad_sum, true),
        case("checked as unsigned", "expected unsigned", good, false),
    ];
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let name = signed.file_name().unwrap_or_default().to_string_lossy();
    reject_all(&scratch.join(format!("selftest-{name}")), root, cases)
}
