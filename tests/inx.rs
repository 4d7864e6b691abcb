//! Checks `wsk_attach.inx`, the INF source of the driver package, on any host.
//!
//! The Windows tools (`stampinf`, `InfVerif`) only run on Windows; this test reads
//! the file the way they do (UTF-16LE with a byte order mark, sections, keys,
//! `;` comments, `%token%` strings) and checks what the project relies on:
//! the `[Version]` keys, the primitive-driver layout, that every section a
//! directive names exists, the service install values, the binary name and
//! DIRID 13.
//!
//! Each check returns the problems it found. The `*_rejects_*` tests break a
//! copy of the real file in one place and make sure the check notices, so no
//! check can pass vacuously.

// A test reports a broken file by panicking, and its parser indexes fields it
// has just checked: the workspace's kernel-code lints do not apply here.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    reason = "test code: a panic is how a test fails"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// The INF source, next to `Cargo.toml`.
const INX_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wsk_attach.inx");

/// The bytes of the INF source, read once at run time (not `include_bytes!`,
/// so an edit is always seen without a rebuild).
fn inx_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        std::fs::read(INX_PATH).unwrap_or_else(|e| panic!("cannot read {INX_PATH}: {e}"))
    })
}

/// The kernel service the INF installs (`sc.exe query wsk_attach`).
const SERVICE_NAME: &str = "wsk_attach";

/// `ClassGuid` of the `System` setup class (devguid.h, `GUID_DEVCLASS_SYSTEM`).
const SYSTEM_CLASS_GUID: &str = "{4D36E97D-E325-11CE-BFC1-08002BE10318}";

/// The install sections of a primitive driver, before stampinf replaces `$ARCH$`.
const INSTALL_SECTION: &str = "DefaultInstall.NT$ARCH$";
const SERVICES_SECTION: &str = "DefaultInstall.NT$ARCH$.Services";

/// Directives whose values name other sections of the same INF.
const SECTION_LIST_DIRECTIVES: &[&str] = &[
    "CopyFiles",
    "AddReg",
    "DelReg",
    "BitReg",
    "DelFiles",
    "RenFiles",
    "Needs",
    "AddProperty",
    "DelProperty",
    "AddPowerSetting",
    "AddEventProvider",
];

/// Sections that Windows reads by name rather than through a directive.
const ROOT_SECTIONS: &[&str] = &[
    "Version",
    "Strings",
    "DestinationDirs",
    "SourceDisksNames",
    "SourceDisksFiles",
    INSTALL_SECTION,
    SERVICES_SECTION,
];

// --------------------------------------------------------------------------
// Decoding and parsing
// --------------------------------------------------------------------------

/// Decodes UTF-16LE with a byte order mark, the encoding of the file.
fn decode_utf16le_with_bom(bytes: &[u8]) -> Result<String, String> {
    let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) else {
        return Err(format!(
            "no UTF-16LE byte order mark (FF FE): the file starts with {:02X?}",
            &bytes[..bytes.len().min(4)]
        ));
    };
    if body.len() % 2 != 0 {
        return Err(format!(
            "odd number of bytes after the BOM ({})",
            body.len()
        ));
    }
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    String::from_utf16(&units).map_err(|e| format!("not valid UTF-16LE: {e}"))
}

/// One `key = value` line (or a bare line such as a file name in a copy-files
/// section, which has no key).
#[derive(Debug, Clone)]
struct Entry {
    line: usize,
    key: Option<String>,
    value: String,
}

#[derive(Debug, Clone)]
struct Section {
    /// Name as written, without brackets.
    name: String,
    line: usize,
    entries: Vec<Entry>,
}

#[derive(Debug, Default)]
struct Inf {
    /// The driver the file installs: its service name, which is also the `.sys` and `.cat`
    /// stem (cargo-make's `CARGO_MAKE_CRATE_FS_NAME`, the package name with `_` for `-`).
    service: String,
    sections: Vec<Section>,
    /// Problems found while parsing (text outside a section, bad headers).
    parse_errors: Vec<String>,
}

/// Removes a `;` comment, leaving `;` inside double quotes alone.
fn strip_comment(line: &str) -> &str {
    let mut in_quotes = false;
    for (index, ch) in line.char_indices() {
        match ch {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => return &line[..index],
            _ => {}
        }
    }
    line
}

/// Removes one pair of surrounding double quotes.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

fn parse(text: &str) -> Inf {
    let mut inf = Inf {
        service: SERVICE_NAME.to_owned(),
        ..Inf::default()
    };
    let mut pending = String::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line_number = index + 1;
        let mut line = strip_comment(raw_line).trim().to_owned();
        // A trailing backslash continues the line.
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        if !pending.is_empty() {
            line = format!("{pending}{line}");
            pending.clear();
        }
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            match rest.strip_suffix(']') {
                Some(name) if !name.trim().is_empty() => inf.sections.push(Section {
                    name: name.trim().to_owned(),
                    line: line_number,
                    entries: Vec::new(),
                }),
                _ => inf
                    .parse_errors
                    .push(format!("line {line_number}: bad section header `{line}`")),
            }
            continue;
        }
        let Some(section) = inf.sections.last_mut() else {
            inf.parse_errors
                .push(format!("line {line_number}: `{line}` outside any section"));
            continue;
        };
        let entry = match line.split_once('=') {
            Some((key, value)) => Entry {
                line: line_number,
                key: Some(unquote(key.trim()).to_owned()),
                value: value.trim().to_owned(),
            },
            None => Entry {
                line: line_number,
                key: None,
                value: line.clone(),
            },
        };
        section.entries.push(entry);
    }
    inf
}

impl Inf {
    /// Section names are case-insensitive in INF files.
    fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    fn has_section(&self, name: &str) -> bool {
        self.section(name).is_some()
    }

    /// `[Strings]` as a map from lower-case token to unquoted value.
    fn strings(&self) -> BTreeMap<String, String> {
        self.section("Strings")
            .map(|s| {
                s.entries
                    .iter()
                    .filter_map(|e| {
                        e.key
                            .as_ref()
                            .map(|k| (k.to_ascii_lowercase(), unquote(&e.value).to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Section {
    /// Values of every entry with this key (keys are case-insensitive).
    fn values<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a Entry> + use<'a> {
        let key = key.to_owned();
        self.entries.iter().filter(move |e| {
            e.key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(&key))
        })
    }

    /// The single value of `key`, or a problem if it is missing or repeated.
    fn single(&self, key: &str) -> Result<&str, String> {
        let found: Vec<&Entry> = self.values(key).collect();
        match found.as_slice() {
            [entry] => Ok(entry.value.as_str()),
            [] => Err(format!("[{}] has no {key}", self.name)),
            _ => Err(format!("[{}] sets {key} {} times", self.name, found.len())),
        }
    }
}

/// Splits a comma-separated INF value into trimmed fields.
fn fields(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).collect()
}

/// Replaces `%token%` with its `[Strings]` value; `%13%`-style DIRIDs and
/// `%%` stay as they are.
fn expand(value: &str, strings: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('%') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let token = &after[..end];
        if let Some(text) = strings.get(&token.to_ascii_lowercase()) {
            out.push_str(text);
        } else {
            out.push('%');
            out.push_str(token);
            out.push('%');
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn load() -> Inf {
    let text = decode_utf16le_with_bom(inx_bytes()).expect("wsk_attach.inx decodes");
    parse(&text)
}

/// The real file with `from` replaced by `to` (exactly once), parsed.
fn mutated(from: &str, to: &str) -> Inf {
    let text = decode_utf16le_with_bom(inx_bytes()).expect("wsk_attach.inx decodes");
    assert_eq!(
        text.matches(from).count(),
        1,
        "mutation target `{from}` must occur exactly once in wsk_attach.inx"
    );
    parse(&text.replacen(from, to, 1))
}

/// The `.sys` name cargo-make gives the package: `CARGO_MAKE_CRATE_FS_NAME`
/// (the package name with `-` replaced by `_`) plus `.sys`.
fn expected_binary(inf: &Inf) -> String {
    format!("{}.sys", inf.service)
}

#[test]
fn the_seed_service_is_the_package_name() {
    assert_eq!(SERVICE_NAME, env!("CARGO_PKG_NAME").replace('-', "_"));
}

// --------------------------------------------------------------------------
// Checks: each returns the problems it found
// --------------------------------------------------------------------------

fn check_encoding(bytes: &[u8]) -> Vec<String> {
    let text = match decode_utf16le_with_bom(bytes) {
        Ok(text) => text,
        Err(problem) => return vec![problem],
    };
    let mut problems = Vec::new();
    if text.contains('\0') {
        problems.push("NUL character in the text (wrong encoding?)".to_owned());
    }
    if text.starts_with('\u{feff}') {
        problems.push("a second byte order mark after the first".to_owned());
    }
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.len() - 1;
    for (index, line) in lines.iter().enumerate() {
        if index != last && !line.ends_with('\r') {
            problems.push(format!("line {} does not end in CRLF", index + 1));
        }
        if line.trim_end_matches('\r').contains('\r') {
            problems.push(format!("line {} has a stray CR", index + 1));
        }
    }
    if !text.ends_with("\r\n") {
        problems.push("the file does not end with CRLF".to_owned());
    }
    problems
}

fn check_syntax(inf: &Inf) -> Vec<String> {
    let mut problems = inf.parse_errors.clone();
    let mut seen = BTreeMap::new();
    for section in &inf.sections {
        if let Some(first) = seen.insert(section.name.to_ascii_lowercase(), section.line) {
            problems.push(format!(
                "[{}] at line {} repeats the section of line {first}",
                section.name, section.line
            ));
        }
    }
    problems
}

fn check_version(inf: &Inf) -> Vec<String> {
    let Some(version) = inf.section("Version") else {
        return vec!["no [Version] section".to_owned()];
    };
    let strings = inf.strings();
    let mut problems = Vec::new();
    let mut expect = |key: &str, ok: &dyn Fn(&str) -> bool, what: &str| match version.single(key) {
        Ok(value) if ok(value) => {}
        Ok(value) => problems.push(format!("[Version] {key} = `{value}`, expected {what}")),
        Err(problem) => problems.push(problem),
    };
    expect(
        "Signature",
        &|v| unquote(v).eq_ignore_ascii_case("$WINDOWS NT$"),
        "\"$WINDOWS NT$\"",
    );
    expect("Class", &|v| v.eq_ignore_ascii_case("System"), "System");
    expect(
        "ClassGuid",
        &|v| v.eq_ignore_ascii_case(SYSTEM_CLASS_GUID),
        SYSTEM_CLASS_GUID,
    );
    expect(
        "Provider",
        &|v| {
            let name = expand(v, &strings);
            !name.is_empty() && !name.contains('%') && !name.eq_ignore_ascii_case("Microsoft")
        },
        "a provider defined in [Strings] that is not Microsoft (InfVerif 1204)",
    );
    let catalog = format!("{}.cat", inf.service);
    expect(
        "CatalogFile",
        &|v| v.eq_ignore_ascii_case(&catalog),
        "the catalog cargo make signs (wsk_attach.cat)",
    );
    expect(
        "DriverVer",
        &|v| v.is_empty() || is_driver_ver(v),
        "empty (stamped by stampinf) or mm/dd/yyyy,w.x.y.z",
    );
    expect("PnpLockdown", &|v| v == "1", "1");
    problems
}

/// `mm/dd/yyyy,w.x.y.z`, the form stampinf writes.
fn is_driver_ver(value: &str) -> bool {
    let Some((date, version)) = value.split_once(',') else {
        return false;
    };
    let date: Vec<&str> = date.trim().split('/').collect();
    let version: Vec<&str> = version.trim().split('.').collect();
    let numeric = |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    date.len() == 3
        && date.iter().all(numeric)
        && date[2].len() == 4
        && version.len() == 4
        && version.iter().all(numeric)
}

fn check_primitive_driver(inf: &Inf) -> Vec<String> {
    let mut problems = Vec::new();
    for section in [INSTALL_SECTION, SERVICES_SECTION] {
        if !inf.has_section(section) {
            problems.push(format!("no [{section}] section"));
        }
    }
    for section in &inf.sections {
        let name = section.name.to_ascii_lowercase();
        if name == "manufacturer" {
            problems.push("a primitive driver has no [Manufacturer] section".to_owned());
        }
        if name == "defaultinstall" || name == "defaultinstall.services" {
            problems.push(format!("[{}] is not architecture-decorated", section.name));
        }
        if name.starts_with("defaultinstall.") && !name.starts_with("defaultinstall.nt$arch$") {
            problems.push(format!(
                "[{}]: decorate with NT$ARCH$ and let stampinf set the architecture",
                section.name
            ));
        }
        if name.starts_with("defaultuninstall")
            && !section
                .values("LegacyUninstall")
                .any(|e| e.value.trim() == "1")
        {
            problems.push(format!(
                "[{}] is not allowed in a primitive driver",
                section.name
            ));
        }
    }
    problems
}

fn check_references(inf: &Inf) -> Vec<String> {
    let mut problems = Vec::new();
    let mut referenced: BTreeSet<String> = ROOT_SECTIONS
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let mut refer = |target: &str, from: &str, line: usize, problems: &mut Vec<String>| {
        if target.is_empty() {
            return;
        }
        referenced.insert(target.to_ascii_lowercase());
        if !inf.has_section(target) {
            problems.push(format!(
                "line {line}: {from} names [{target}], which does not exist"
            ));
        }
    };
    for section in &inf.sections {
        for entry in &section.entries {
            let Some(key) = entry.key.as_deref() else {
                continue;
            };
            if SECTION_LIST_DIRECTIVES
                .iter()
                .any(|d| d.eq_ignore_ascii_case(key))
            {
                for target in fields(&entry.value) {
                    // `CopyFiles = @file.sys` names a file, not a section.
                    if !target.starts_with('@') {
                        refer(target, key, entry.line, &mut problems);
                    }
                }
            } else if key.eq_ignore_ascii_case("AddService") {
                let parts = fields(&entry.value);
                match parts.get(2) {
                    Some(install) => refer(install, key, entry.line, &mut problems),
                    None => problems.push(format!(
                        "line {}: AddService has no service-install section",
                        entry.line
                    )),
                }
                if let Some(event_log) = parts.get(3) {
                    refer(event_log, key, entry.line, &mut problems);
                }
            } else if section.name.eq_ignore_ascii_case("DestinationDirs")
                && !key.eq_ignore_ascii_case("DefaultDestDir")
            {
                refer(key, "[DestinationDirs]", entry.line, &mut problems);
            }
        }
    }
    for section in &inf.sections {
        if !referenced.contains(&section.name.to_ascii_lowercase()) {
            problems.push(format!(
                "[{}] at line {} is never referenced (InfVerif 2083)",
                section.name, section.line
            ));
        }
    }
    problems
}

fn check_strings(inf: &Inf) -> Vec<String> {
    let strings = inf.strings();
    let mut problems = Vec::new();
    for section in &inf.sections {
        if section.name.eq_ignore_ascii_case("Strings") {
            continue;
        }
        for entry in &section.entries {
            let text = format!("{} {}", entry.key.as_deref().unwrap_or(""), entry.value);
            let expanded = expand(&text.replace("%%", ""), &strings);
            let mut rest = expanded.as_str();
            while let Some(start) = rest.find('%') {
                let after = &rest[start + 1..];
                let Some(end) = after.find('%') else { break };
                let token = &after[..end];
                if !token.bytes().all(|b| b.is_ascii_digit()) {
                    problems.push(format!(
                        "line {}: %{token}% is not defined in [Strings] (InfVerif 1235)",
                        entry.line
                    ));
                }
                rest = &after[end + 1..];
            }
        }
    }
    problems
}

fn check_files(inf: &Inf) -> Vec<String> {
    let mut problems = Vec::new();
    let binary = expected_binary(inf);
    let disks: BTreeSet<String> = inf
        .section("SourceDisksNames")
        .map(|s| s.entries.iter().filter_map(|e| e.key.clone()).collect())
        .unwrap_or_default();
    let source_files: BTreeMap<String, String> = inf
        .section("SourceDisksFiles")
        .map(|s| {
            s.entries
                .iter()
                .filter_map(|e| {
                    e.key.as_ref().map(|k| {
                        let disk = fields(&e.value).first().copied().unwrap_or("").to_owned();
                        (k.to_ascii_lowercase(), disk)
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    if source_files.is_empty() {
        problems.push("[SourceDisksFiles] lists no file".to_owned());
    }
    for (file, disk) in &source_files {
        if !disks.contains(disk) {
            problems.push(format!(
                "{file} is on disk `{disk}`, not in [SourceDisksNames]"
            ));
        }
        if !file.eq_ignore_ascii_case(&binary) {
            problems.push(format!("{file} is in the package; only {binary} should be"));
        }
    }
    let destinations = inf.section("DestinationDirs");
    let dest_of = |section: &str| -> Option<String> {
        let dirs = destinations?;
        dirs.values(section)
            .chain(dirs.values("DefaultDestDir"))
            .map(|e| fields(&e.value).first().copied().unwrap_or("").to_owned())
            .next()
    };
    if dest_of("DefaultDestDir").as_deref() != Some("13") {
        problems.push("[DestinationDirs] DefaultDestDir is not 13 (the driver store)".to_owned());
    }
    let copy_sections: Vec<String> = inf
        .sections
        .iter()
        .flat_map(|s| s.values("CopyFiles"))
        .flat_map(|e| {
            fields(&e.value)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    if copy_sections.is_empty() {
        problems.push("no CopyFiles directive: the binary is never copied".to_owned());
    }
    let mut copied = BTreeSet::new();
    for copy in &copy_sections {
        if let Some(file) = copy.strip_prefix('@') {
            copied.insert(file.to_ascii_lowercase());
            continue;
        }
        match dest_of(copy) {
            Some(dirid) if dirid == "13" => {}
            other => problems.push(format!(
                "[{copy}] copies to DIRID {other:?}, not 13 (driver package isolation)"
            )),
        }
        for entry in inf.section(copy).map_or(&[][..], |s| s.entries.as_slice()) {
            // A copy-files line is `destination[,source[,,flags]]`.
            let file = fields(entry.key.as_deref().unwrap_or(&entry.value))[0].to_ascii_lowercase();
            if !source_files.contains_key(&file) {
                problems.push(format!(
                    "line {}: {file} is copied but not in [SourceDisksFiles] (InfVerif 1230)",
                    entry.line
                ));
            }
            copied.insert(file);
        }
    }
    if !copied.contains(&binary) {
        problems.push(format!("{binary} is never copied"));
    }
    problems
}

fn check_service(inf: &Inf) -> Vec<String> {
    let Some(services) = inf.section(SERVICES_SECTION) else {
        return vec![format!("no [{SERVICES_SECTION}] section")];
    };
    let add: Vec<&Entry> = services.values("AddService").collect();
    let [entry] = add.as_slice() else {
        return vec![format!(
            "[{SERVICES_SECTION}] has {} AddService lines, expected one",
            add.len()
        )];
    };
    let parts = fields(&entry.value);
    let mut problems = Vec::new();
    if !parts[0].eq_ignore_ascii_case(&inf.service) {
        problems.push(format!(
            "AddService installs `{}`, expected {}",
            parts[0], inf.service
        ));
    }
    // Flags: 0x2 (SPSVCINST_ASSOCSERVICE) makes it a device's function driver,
    // which a primitive driver has no device for.
    if let Some(flags) = parts.get(1).filter(|f| !f.is_empty() && **f != "0") {
        problems.push(format!(
            "AddService flags `{flags}`: a non-PnP service takes none"
        ));
    }
    let Some(install) = parts.get(2).and_then(|name| inf.section(name)) else {
        problems.push("AddService's service-install section is missing".to_owned());
        return problems;
    };
    let strings = inf.strings();
    let binary_path = format!("%13%\\{}", expected_binary(inf));
    let wanted: [(&str, &str, &str); 4] = [
        ("ServiceType", "1", "SERVICE_KERNEL_DRIVER"),
        ("StartType", "3", "SERVICE_DEMAND_START"),
        ("ErrorControl", "1", "SERVICE_ERROR_NORMAL"),
        (
            "ServiceBinary",
            &binary_path,
            "the binary in the driver store (DIRID 13)",
        ),
    ];
    for (key, value, meaning) in wanted {
        match install.single(key) {
            Ok(found) if expand(found, &strings).eq_ignore_ascii_case(value) => {}
            Ok(found) => problems.push(format!(
                "[{}] {key} = `{found}`, expected {value} ({meaning})",
                install.name
            )),
            Err(problem) => problems.push(problem),
        }
    }
    match install.single("DisplayName") {
        Ok(name) if !expand(name, &strings).trim().is_empty() => {}
        Ok(_) => problems.push(format!("[{}] DisplayName is empty", install.name)),
        Err(problem) => problems.push(problem),
    }
    // Driver package isolation: registry writes only under HKR.
    for directive in ["AddReg", "DelReg"] {
        for reg in install.values(directive).chain(
            inf.section(INSTALL_SECTION)
                .into_iter()
                .flat_map(move |s| s.values(directive)),
        ) {
            for name in fields(&reg.value) {
                for line in inf.section(name).map_or(&[][..], |s| s.entries.as_slice()) {
                    let root = fields(&line.value)[0];
                    if !root.eq_ignore_ascii_case("HKR") {
                        problems.push(format!(
                            "line {}: registry root {root}, only HKR keeps the package isolated",
                            line.line
                        ));
                    }
                }
            }
        }
    }
    problems
}

// --------------------------------------------------------------------------
// Tests on the real file
// --------------------------------------------------------------------------

fn assert_clean(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "INF source {what}:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn inx_is_utf16le_with_bom_and_crlf() {
    assert_clean("encoding", &check_encoding(inx_bytes()));
}

#[test]
fn inx_parses_with_unique_sections() {
    assert_clean("syntax", &check_syntax(&load()));
}

#[test]
fn inx_version_section_is_complete() {
    assert_clean("[Version]", &check_version(&load()));
}

#[test]
fn inx_is_a_primitive_driver() {
    assert_clean("primitive driver layout", &check_primitive_driver(&load()));
}

#[test]
fn inx_references_only_existing_sections() {
    assert_clean("section references", &check_references(&load()));
}

#[test]
fn inx_strings_are_all_defined() {
    assert_clean("string tokens", &check_strings(&load()));
}

#[test]
fn inx_copies_the_binary_to_dirid_13() {
    assert_clean("files", &check_files(&load()));
}

#[test]
fn inx_installs_a_demand_start_kernel_service() {
    assert_clean("service install", &check_service(&load()));
}

// --------------------------------------------------------------------------
// Each check notices a broken copy
// --------------------------------------------------------------------------

fn assert_caught(problems: &[String], needle: &str) {
    assert!(
        problems.iter().any(|p| p.contains(needle)),
        "expected a problem mentioning `{needle}`, got {problems:?}"
    );
}

#[test]
fn encoding_check_rejects_utf8_and_lf() {
    let text = decode_utf16le_with_bom(inx_bytes()).expect("decodes");
    assert_caught(&check_encoding(text.as_bytes()), "byte order mark");
    let lf_only: Vec<u8> = std::iter::once(0xFEFF_u16)
        .chain(text.replace("\r\n", "\n").encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect();
    assert_caught(&check_encoding(&lf_only), "CRLF");
}

#[test]
fn syntax_check_rejects_a_repeated_section() {
    let inf = mutated("[Strings]", "[strings]\r\n[Strings]");
    assert_caught(&check_syntax(&inf), "repeats the section");
}

#[test]
fn version_check_rejects_missing_or_wrong_keys() {
    assert_caught(
        &check_version(&mutated("PnpLockdown = 1", "")),
        "PnpLockdown",
    );
    assert_caught(
        &check_version(&mutated("\"$WINDOWS NT$\"", "\"$Chicago$\"")),
        "Signature",
    );
    assert_caught(
        &check_version(&mutated(
            "ProviderName       = \"wsk-attach project\"",
            "ProviderName = \"Microsoft\"",
        )),
        "Provider",
    );
    assert_caught(
        &check_version(&mutated(
            "CatalogFile = wsk_attach.cat",
            "CatalogFile = other.cat",
        )),
        "CatalogFile",
    );
    assert_caught(
        &check_version(&mutated("DriverVer   = ;", "DriverVer = 2025-01-01 ;")),
        "DriverVer",
    );
    assert_caught(
        &check_version(&mutated("Class       = System", "")),
        "has no Class",
    );
}

#[test]
fn driver_ver_accepts_the_stamped_form() {
    assert!(is_driver_ver("11/23/2026,0.1.0.0"));
    assert!(!is_driver_ver("11/23/2026,0.1.0"));
    assert!(!is_driver_ver("2026-11-23,0.1.0.0"));
}

#[test]
fn primitive_check_rejects_pnp_and_undecorated_sections() {
    assert_caught(
        &check_primitive_driver(&mutated("[DefaultInstall.NT$ARCH$]", "[DefaultInstall]")),
        "not architecture-decorated",
    );
    assert_caught(
        &check_primitive_driver(&mutated(
            "[Strings]",
            "[Manufacturer]\r\n%ProviderName% = Models\r\n[Strings]",
        )),
        "[Manufacturer]",
    );
    assert_caught(
        &check_primitive_driver(&mutated(
            "[DefaultInstall.NT$ARCH$.Services]",
            "[DefaultInstall.NTamd64.Services]",
        )),
        "NT$ARCH$",
    );
    assert_caught(
        &check_primitive_driver(&mutated(
            "[Strings]",
            "[DefaultUninstall.NT$ARCH$]\r\n[Strings]",
        )),
        "not allowed",
    );
}

#[test]
fn reference_check_rejects_missing_and_unused_sections() {
    assert_caught(
        &check_references(&mutated(
            "CopyFiles = WskAttach_CopyFiles",
            "CopyFiles = Missing_Files",
        )),
        "[Missing_Files], which does not exist",
    );
    assert_caught(
        &check_references(&mutated(
            "AddService = wsk_attach,,WskAttach_Service_Install",
            "AddService = wsk_attach,,No_Such_Install",
        )),
        "[No_Such_Install]",
    );
    assert_caught(
        &check_references(&mutated("WskAttach_CopyFiles = 13", "Other_CopyFiles = 13")),
        "[Other_CopyFiles]",
    );
    assert_caught(
        &check_references(&mutated("[Strings]", "[Leftover]\r\nx = 1\r\n[Strings]")),
        "never referenced",
    );
}

#[test]
fn strings_check_rejects_an_undefined_token() {
    assert_caught(
        &check_strings(&mutated("%ServiceDisplayName%", "%NoSuchString%")),
        "%NoSuchString%",
    );
}

#[test]
fn file_check_rejects_other_dirids_and_names() {
    assert_caught(
        &check_files(&mutated(
            "WskAttach_CopyFiles = 13",
            "WskAttach_CopyFiles = 12",
        )),
        "not 13",
    );
    assert_caught(
        &check_files(&mutated("DefaultDestDir      = 13", "DefaultDestDir = 12")),
        "DefaultDestDir",
    );
    assert_caught(
        &check_files(&mutated("wsk_attach.sys = 1,,", "other.sys = 1,,")),
        "not in [SourceDisksFiles]",
    );
    assert_caught(
        &check_files(&mutated("wsk_attach.sys = 1,,", "wsk_attach.sys = 2,,")),
        "[SourceDisksNames]",
    );
}

#[test]
fn service_check_rejects_wrong_install_values() {
    assert_caught(
        &check_service(&mutated("ServiceType   = 1", "ServiceType   = 2")),
        "ServiceType",
    );
    assert_caught(
        &check_service(&mutated("StartType     = 3", "StartType     = 1")),
        "StartType",
    );
    assert_caught(
        &check_service(&mutated("ErrorControl  = 1", "ErrorControl  = 3")),
        "ErrorControl",
    );
    assert_caught(
        &check_service(&mutated("%13%\\wsk_attach.sys", "%12%\\wsk_attach.sys")),
        "ServiceBinary",
    );
    assert_caught(
        &check_service(&mutated("%13%\\wsk_attach.sys", "%13%\\other.sys")),
        "ServiceBinary",
    );
    assert_caught(
        &check_service(&mutated(
            "AddService = wsk_attach,,",
            "AddService = wsk_attach,0x00000002,",
        )),
        "flags",
    );
    assert_caught(
        &check_service(&mutated(
            "AddService = wsk_attach,,",
            "AddService = other,,",
        )),
        "expected wsk_attach",
    );
    assert_caught(
        &check_service(&mutated(
            "ServiceBinary = %13%\\wsk_attach.sys",
            "ServiceBinary = %13%\\wsk_attach.sys\r\nAddReg = Global_Reg\r\n[Global_Reg]\r\nHKLM,Software\\WskAttach,x,0x00010001,1",
        )),
        "only HKR",
    );
}

// --------------------------------------------------------------------------
// The example driver's INF source passes every check too
// --------------------------------------------------------------------------

/// One of the checks above.
type Check = fn(&Inf) -> Vec<String>;

/// `examples/<folder>/<service>.inx` passes every check, and the seed's file under the example's
/// service name does not (the checks look at names).
fn example_inx_passes_every_check(folder: &str, service: &str) {
    let path = format!(
        "{}/examples/{folder}/{service}.inx",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    assert_clean(&format!("encoding ({service})"), &check_encoding(&bytes));
    let text = decode_utf16le_with_bom(&bytes).expect("the example's .inx decodes");
    let mut inf = parse(&text);
    service.clone_into(&mut inf.service);
    let checks: [(&str, Check); 7] = [
        ("syntax", check_syntax),
        ("[Version]", check_version),
        ("primitive driver", check_primitive_driver),
        ("references", check_references),
        ("strings", check_strings),
        ("files", check_files),
        ("service", check_service),
    ];
    for (what, check) in checks {
        assert_clean(&format!("{what} ({service})"), &check(&inf));
    }
    let mut seed = load();
    service.clone_into(&mut seed.service);
    assert!(!check_service(&seed).is_empty() && !check_files(&seed).is_empty());
}

#[test]
fn the_echo_clients_inx_passes_every_check() {
    example_inx_passes_every_check("wsk-echo", "wsk_echo");
}

#[test]
fn the_echo_servers_inx_passes_every_check() {
    example_inx_passes_every_check("wsk-echo-server", "wsk_echo_server");
}
