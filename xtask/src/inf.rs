//! The `.inf` of a Linux-built package: the driver's `.inx` stamped the way the WDK's `stampinf`
//! stamps it in the `cargo make` flow (`stampinf -f X.inf -d * -a amd64 -c X.cat -v *`), and the
//! read-back check of a stamped file.
//!
//! What `stampinf` sets, and so what [`stamp`] sets:
//! - `$ARCH$` becomes the architecture (`[DefaultInstall.NT$ARCH$]` → `[DefaultInstall.NTamd64]`);
//! - `[Version] DriverVer = mm/dd/yyyy,a.b.c.d` (the date, and here the crate version as
//!   `major.minor.patch.0`, where `cargo make` uses `-v *`);
//! - `[Version] CatalogFile = <driver>.cat`;
//!
//! and the file stays UTF-16LE with a byte order mark and CRLF line ends.

use std::fmt;

/// The values `stampinf` writes into an INF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The architecture that replaces `$ARCH$` (`amd64`).
    pub arch: String,
    /// `DriverVer`'s date.
    pub date: Date,
    /// `DriverVer`'s version, four numbers.
    pub version: [u16; 4],
    /// `CatalogFile`'s value (`wsk_attach.cat`).
    pub catalog: String,
}

impl Stamp {
    /// The `DriverVer` value: `mm/dd/yyyy,a.b.c.d`.
    pub fn driver_ver(&self) -> String {
        let [a, b, c, d] = self.version;
        format!("{},{a}.{b}.{c}.{d}", self.date)
    }
}

/// A calendar date (proleptic Gregorian, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: i64,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// The UTC date of `seconds` after the Unix epoch (Howard Hinnant's `civil_from_days`).
    pub fn from_unix_seconds(seconds: u64) -> Self {
        let days = i64::try_from(seconds / 86_400).unwrap_or(i64::MAX / 2);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097); // [0, 146096]
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
        let mp = (5 * doy + 2) / 153; // [0, 11]
        let day = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
        let month = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month: u32::try_from(month).unwrap_or(1),
            day: u32::try_from(day).unwrap_or(1),
        }
    }
}

impl fmt::Display for Date {
    /// `mm/dd/yyyy`, the form of `DriverVer`'s date.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}/{:02}/{:04}", self.month, self.day, self.year)
    }
}

/// The four-part `DriverVer` version of a crate version: `major.minor.patch` becomes
/// `major.minor.patch.0`. Fails on a pre-release or build suffix, or a part above 65535
/// (`DriverVer` takes four 16-bit numbers).
pub fn driver_version(crate_version: &str) -> Result<[u16; 4], String> {
    let parts: Vec<&str> = crate_version.trim().split('.').collect();
    let [major, minor, patch] = parts.as_slice() else {
        return Err(format!(
            "crate version `{crate_version}` is not major.minor.patch"
        ));
    };
    let number = |part: &str| -> Result<u16, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "crate version `{crate_version}`: `{part}` is not a number (DriverVer takes numbers only, no pre-release or build suffix)"
            ));
        }
        part.parse::<u16>().map_err(|_| {
            format!("crate version `{crate_version}`: {part} does not fit DriverVer's 16-bit parts")
        })
    };
    Ok([number(major)?, number(minor)?, number(patch)?, 0])
}

/// Decodes UTF-16LE with a byte order mark (the encoding of the `.inx` and `.inf` files).
pub fn decode_utf16le_bom(bytes: &[u8]) -> Result<String, String> {
    let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) else {
        return Err(format!(
            "no UTF-16LE byte order mark (FF FE): the file starts with {:02X?}",
            bytes.get(..bytes.len().min(4)).unwrap_or_default()
        ));
    };
    if body.len() % 2 != 0 {
        return Err(format!(
            "odd number of bytes after the byte order mark ({})",
            body.len()
        ));
    }
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    String::from_utf16(&units).map_err(|e| format!("not valid UTF-16LE: {e}"))
}

/// Encodes `text` as UTF-16LE with a byte order mark.
pub fn encode_utf16le_bom(text: &str) -> Vec<u8> {
    std::iter::once(0xFEFF_u16)
        .chain(text.encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Splits an INF line into its text and its `;` comment (a `;` inside double quotes is text).
fn split_comment(line: &str) -> (&str, &str) {
    let mut in_quotes = false;
    for (index, ch) in line.char_indices() {
        match ch {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => return line.split_at(index),
            _ => {}
        }
    }
    (line, "")
}

/// The section a line opens (`[Name]` → `Name`), if it is a section header.
fn section_header(text: &str) -> Option<&str> {
    text.trim()
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .map(str::trim)
}

/// The key of a `key = value` line, trimmed.
fn line_key(text: &str) -> Option<&str> {
    text.split_once('=').map(|(key, _)| key.trim())
}

/// `key = value`, keeping the key and the spacing before `=` as the line has them.
fn set_value(text: &str, value: &str) -> String {
    match text.split_once('=') {
        Some((key, _)) => format!("{key}= {value}"),
        None => format!("{text} = {value}"),
    }
}

/// Stamps the `.inx` text `inx` (decoded) like `stampinf`: see the module documentation. Line ends
/// are kept as they are. Fails when there is no `[Version]` section.
pub fn stamp(inx: &str, stamp: &Stamp) -> Result<String, String> {
    let driver_ver = stamp.driver_ver();
    let mut lines: Vec<String> = Vec::new();
    let mut in_version = false;
    let mut version_seen = false;
    // Index after the last entry of [Version], and whether each key was found there.
    let mut version_end = 0;
    let mut driver_ver_set = false;
    let mut catalog_set = false;
    for raw in inx.split_inclusive('\n') {
        let (body, ending) = match raw.strip_suffix("\r\n") {
            Some(body) => (body, "\r\n"),
            None => raw
                .strip_suffix('\n')
                .map_or((raw, ""), |body| (body, "\n")),
        };
        let (text, comment) = split_comment(body);
        let text = text.replace("$ARCH$", &stamp.arch);
        if let Some(name) = section_header(&text) {
            in_version = name.eq_ignore_ascii_case("Version");
            version_seen |= in_version;
            lines.push(format!("{text}{comment}{ending}"));
            if in_version {
                version_end = lines.len();
            }
            continue;
        }
        let line = match line_key(&text) {
            Some(key) if in_version && key.eq_ignore_ascii_case("DriverVer") => {
                driver_ver_set = true;
                // The `.inx`'s comment on this line says the value is still to be stamped.
                set_value(&text, &driver_ver)
            }
            Some(key) if in_version && key.eq_ignore_ascii_case("CatalogFile") => {
                catalog_set = true;
                set_value(&text, &stamp.catalog)
            }
            _ => format!("{text}{comment}"),
        };
        if in_version && !text.trim().is_empty() {
            version_end = lines.len() + 1;
        }
        lines.push(format!("{line}{ending}"));
    }
    if !version_seen {
        return Err("the INF source has no [Version] section".into());
    }
    let mut added = Vec::new();
    if !catalog_set {
        added.push(format!("CatalogFile = {}\r\n", stamp.catalog));
    }
    if !driver_ver_set {
        added.push(format!("DriverVer = {driver_ver}\r\n"));
    }
    for (index, line) in added.into_iter().enumerate() {
        lines.insert(version_end + index, line);
    }
    Ok(lines.concat())
}

/// A section of a parsed INF: its name and its `key = value` or bare lines, comments removed.
#[derive(Debug)]
struct Section {
    name: String,
    entries: Vec<(Option<String>, String)>,
}

/// Parses INF text into sections (text before the first section is ignored).
fn sections(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for line in text.lines() {
        let (body, _) = split_comment(line);
        let body = body.trim();
        if body.is_empty() {
            continue;
        }
        if let Some(name) = section_header(body) {
            sections.push(Section {
                name: name.to_owned(),
                entries: Vec::new(),
            });
        } else if let Some(section) = sections.last_mut() {
            let entry = match body.split_once('=') {
                Some((key, value)) => (Some(key.trim().to_owned()), value.trim().to_owned()),
                None => (None, body.to_owned()),
            };
            section.entries.push(entry);
        }
    }
    sections
}

/// True for `mm/dd/yyyy,a.b.c.d` with a real month and day and 16-bit version parts: the form
/// `stampinf` writes.
fn is_driver_ver(value: &str) -> bool {
    let Some((date, version)) = value.split_once(',') else {
        return false;
    };
    let date: Vec<&str> = date.split('/').collect();
    let version: Vec<&str> = version.split('.').collect();
    let digits = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit());
    let [month, day, year] = date.as_slice() else {
        return false;
    };
    digits(month, 2)
        && digits(day, 2)
        && digits(year, 4)
        && month.parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
        && day.parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
        && version.len() == 4
        && version.iter().all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && part.parse::<u16>().is_ok()
        })
}

/// Reads a stamped `.inf` back (`bytes`, as written to the package) and returns every way it
/// differs from what `stampinf` would have written from the decoded `.inx` text `inx` with the
/// values in `expected`: the encoding (UTF-16LE, BOM, CRLF), `DriverVer` (present once, in
/// `stampinf`'s form, with the expected date and version), `CatalogFile`, no `$ARCH$` left, the
/// architecture-decorated install sections, and the same sections and entries as the `.inx`.
pub fn check_stamped(bytes: &[u8], inx: &str, expected: &Stamp) -> Vec<String> {
    let text = match decode_utf16le_bom(bytes) {
        Ok(text) => text,
        Err(problem) => return vec![problem],
    };
    let mut problems = Vec::new();
    if text.starts_with('\u{feff}') {
        problems.push("a second byte order mark after the first".to_owned());
    }
    let bare_lf = text.split('\n').count() - 1 - text.matches("\r\n").count();
    if bare_lf != 0 || !text.ends_with("\r\n") {
        problems.push(format!(
            "line ends: {bare_lf} line(s) end in LF only, or the file does not end with CRLF (INF files use CRLF)"
        ));
    }
    let parsed = sections(&text);
    let Some(version) = parsed
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case("Version"))
    else {
        problems.push("no [Version] section".to_owned());
        return problems;
    };
    let values = |key: &str| -> Vec<&str> {
        version
            .entries
            .iter()
            .filter(|(k, _)| k.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(key)))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let driver_ver = expected.driver_ver();
    match values("DriverVer").as_slice() {
        [value] if *value == driver_ver && is_driver_ver(value) => {}
        [value] => problems.push(format!(
            "[Version] DriverVer = `{value}`, expected `{driver_ver}` (stampinf's mm/dd/yyyy,a.b.c.d)"
        )),
        [] => problems.push("[Version] has no DriverVer (stampinf sets it)".to_owned()),
        more => problems.push(format!("[Version] sets DriverVer {} times", more.len())),
    }
    match values("CatalogFile").as_slice() {
        [value] if value.eq_ignore_ascii_case(&expected.catalog) => {}
        [value] => problems.push(format!(
            "[Version] CatalogFile = `{value}`, expected {}",
            expected.catalog
        )),
        [] => problems.push("[Version] has no CatalogFile (stampinf -c sets it)".to_owned()),
        more => problems.push(format!("[Version] sets CatalogFile {} times", more.len())),
    }
    for (number, line) in text.lines().enumerate() {
        if split_comment(line).0.contains("$ARCH$") {
            problems.push(format!(
                "line {}: $ARCH$ is left (stampinf -a {} replaces it)",
                number + 1,
                expected.arch
            ));
        }
    }
    for name in [
        "DefaultInstall.NT$ARCH$",
        "DefaultInstall.NT$ARCH$.Services",
    ] {
        let name = name.replace("$ARCH$", &expected.arch);
        if !parsed.iter().any(|s| s.name.eq_ignore_ascii_case(&name)) {
            problems.push(format!("no [{name}] section"));
        }
    }
    // Everything else is the .inx's: the same sections with the same entries, in order.
    let source = sections(&inx.replace("$ARCH$", &expected.arch));
    let names = |list: &[Section]| list.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if names(&source) == names(&parsed) {
        for (want, got) in source.iter().zip(&parsed) {
            let keep = |entries: &[(Option<String>, String)]| {
                entries
                    .iter()
                    .filter(|(k, _)| {
                        !want.name.eq_ignore_ascii_case("Version")
                            || !k.as_deref().is_some_and(|k| {
                                k.eq_ignore_ascii_case("DriverVer")
                                    || k.eq_ignore_ascii_case("CatalogFile")
                            })
                    })
                    .cloned()
                    .collect::<Vec<_>>()
            };
            if keep(&want.entries) != keep(&got.entries) {
                problems.push(format!(
                    "[{}] differs from the .inx's (beyond what stampinf sets)",
                    got.name
                ));
            }
        }
    } else {
        problems.push(format!(
            "sections {:?}, the .inx has {:?}",
            names(&parsed),
            names(&source)
        ));
    }
    problems
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// The driver sources the packages are stamped from: (stem, `.inx` path).
    const SOURCES: &[(&str, &str)] = &[
        ("wsk_attach", "wsk_attach.inx"),
        ("wsk_echo", "examples/wsk-echo/wsk_echo.inx"),
        (
            "wsk_echo_server",
            "examples/wsk-echo-server/wsk_echo_server.inx",
        ),
    ];

    fn inx(path: &str) -> String {
        let path = crate::root().join(path);
        decode_utf16le_bom(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn sample(stem: &str) -> Stamp {
        Stamp {
            arch: "amd64".into(),
            date: Date {
                year: 2026,
                month: 11,
                day: 24,
            },
            version: [0, 1, 0, 0],
            catalog: format!("{stem}.cat"),
        }
    }

    /// The stamped `.inf` of `path` with `from` replaced by `to` (exactly once), as bytes.
    fn mutated(stem: &str, path: &str, from: &str, to: &str) -> Vec<u8> {
        let text = stamp(&inx(path), &sample(stem)).unwrap();
        assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once");
        encode_utf16le_bom(&text.replacen(from, to, 1))
    }

    fn assert_caught(problems: &[String], needle: &str) {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem mentioning `{needle}`, got {problems:?}"
        );
    }

    #[test]
    fn dates_from_unix_time() {
        assert_eq!(Date::from_unix_seconds(0).to_string(), "01/01/1970");
        assert_eq!(
            Date::from_unix_seconds(1_700_000_000).to_string(),
            "11/14/2023"
        );
        assert_eq!(
            Date::from_unix_seconds(951_782_400).to_string(),
            "02/29/2000"
        );
        assert_eq!(
            Date::from_unix_seconds(4_102_444_799).to_string(),
            "12/31/2099"
        );
    }

    #[test]
    fn driver_versions_from_crate_versions() {
        assert_eq!(driver_version("0.1.0"), Ok([0, 1, 0, 0]));
        assert_eq!(driver_version("12.34.56"), Ok([12, 34, 56, 0]));
        assert!(driver_version("0.1.0-alpha.1").is_err());
        assert!(driver_version("0.1.0+build").is_err());
        assert!(driver_version("0.1").is_err());
        assert!(driver_version("70000.0.0").is_err());
    }

    #[test]
    fn stamps_both_sources_as_stampinf_does() {
        for (stem, path) in SOURCES {
            let source = inx(path);
            let stamped = stamp(&source, &sample(stem)).unwrap();
            assert!(stamped.contains("DriverVer   = 11/24/2026,0.1.0.0\r\n"));
            assert!(stamped.contains(&format!("CatalogFile = {stem}.cat\r\n")));
            assert!(stamped.contains("[DefaultInstall.NTamd64]\r\n"));
            assert!(stamped.contains("[DefaultInstall.NTamd64.Services]\r\n"));
            // Comments are left alone; only the text of a line is stamped.
            assert!(stamped.contains("replaces $ARCH$"));
            let bytes = encode_utf16le_bom(&stamped);
            let problems = check_stamped(&bytes, &source, &sample(stem));
            assert!(problems.is_empty(), "{stem}: {problems:?}");
        }
    }

    #[test]
    fn stamp_adds_missing_version_keys() {
        let source = "[Version]\r\nSignature = \"$WINDOWS NT$\"\r\n\r\n[DefaultInstall.NT$ARCH$]\r\n\
                      [DefaultInstall.NT$ARCH$.Services]\r\n";
        let stamped = stamp(source, &sample("x")).unwrap();
        assert_eq!(
            stamped,
            "[Version]\r\nSignature = \"$WINDOWS NT$\"\r\nCatalogFile = x.cat\r\n\
             DriverVer = 11/24/2026,0.1.0.0\r\n\r\n[DefaultInstall.NTamd64]\r\n\
             [DefaultInstall.NTamd64.Services]\r\n"
        );
        assert!(check_stamped(&encode_utf16le_bom(&stamped), source, &sample("x")).is_empty());
        assert!(stamp("[Strings]\r\n", &sample("x")).is_err());
    }

    #[test]
    fn check_rejects_a_missing_or_wrong_driver_ver() {
        let (stem, path) = SOURCES[0];
        let source = inx(path);
        let check = |bytes: Vec<u8>| check_stamped(&bytes, &source, &sample(stem));
        assert_caught(
            &check(mutated(
                stem,
                path,
                "DriverVer   = 11/24/2026,0.1.0.0\r\n",
                "",
            )),
            "has no DriverVer",
        );
        assert_caught(
            &check(mutated(
                stem,
                path,
                "11/24/2026,0.1.0.0",
                "11/24/2026,0.2.0.0",
            )),
            "DriverVer",
        );
        assert_caught(
            &check(mutated(
                stem,
                path,
                "11/24/2026,0.1.0.0",
                "2026-11-24,0.1.0.0",
            )),
            "DriverVer",
        );
        assert_caught(
            &check(mutated(
                stem,
                path,
                "11/24/2026,0.1.0.0",
                "11/24/2026,0.1.0",
            )),
            "DriverVer",
        );
        assert_caught(
            &check(mutated(
                stem,
                path,
                "DriverVer   = 11/24/2026,0.1.0.0\r\n",
                "DriverVer   = 11/24/2026,0.1.0.0\r\nDriverVer = 11/24/2026,0.1.0.0\r\n",
            )),
            "DriverVer 2 times",
        );
    }

    #[test]
    fn check_rejects_catalog_arch_and_section_changes() {
        let (stem, path) = SOURCES[1];
        let source = inx(path);
        let check = |bytes: Vec<u8>| check_stamped(&bytes, &source, &sample(stem));
        assert_caught(
            &check(mutated(stem, path, "CatalogFile = wsk_echo.cat\r\n", "")),
            "has no CatalogFile",
        );
        assert_caught(
            &check(mutated(
                stem,
                path,
                "CatalogFile = wsk_echo.cat",
                "CatalogFile = other.cat",
            )),
            "CatalogFile",
        );
        assert_caught(
            &check(mutated(
                stem,
                path,
                "[DefaultInstall.NTamd64]",
                "[DefaultInstall.NT$ARCH$]",
            )),
            "$ARCH$ is left",
        );
        assert_caught(
            &check(mutated(
                stem,
                path,
                "[DefaultInstall.NTamd64.Services]",
                "[DefaultInstall.NTx86.Services]",
            )),
            "no [DefaultInstall.NTamd64.Services]",
        );
        assert_caught(
            &check(mutated(
                stem,
                path,
                "StartType     = 3",
                "StartType     = 2",
            )),
            "differs from the .inx's",
        );
    }

    #[test]
    fn check_rejects_the_wrong_encoding() {
        let (stem, path) = SOURCES[0];
        let source = inx(path);
        let stamped = stamp(&source, &sample(stem)).unwrap();
        assert_caught(
            &check_stamped(stamped.as_bytes(), &source, &sample(stem)),
            "byte order mark",
        );
        let lf = encode_utf16le_bom(&stamped.replace("\r\n", "\n"));
        assert_caught(&check_stamped(&lf, &source, &sample(stem)), "CRLF");
    }
}
