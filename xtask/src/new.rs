//! `cargo xtask new NAME [--path DIR]`: a new driver crate from the template (`xtask/template`),
//! in `DIR/NAME` (default `./NAME`): a WDM driver on wsk-client in safe code, with
//!
//! - its own identity: an NMR module id made at random (a version 4 GUID), a pool tag from its
//!   name (`my-driver`: `MydB`; the template checks it against the library's tags at compile
//!   time), its log name and service (`my_driver`);
//! - `Cargo.toml` (its own workspace; wsk-client, wsk-rt, wsk-build and, for its tests,
//!   wsk-host-model by path: this repository's `crates/`), `build.rs`, `src/lib.rs`, a host test
//!   on wsk-host-model (`src/tests.rs`), `<service>.inx` (UTF-16LE with a BOM, CRLF),
//!   `Makefile.toml` (`cargo make` on Windows), a README and a `.gitignore`.
//!
//! `cargo xtask build-crate DIR` cross-builds such a crate into its `.sys`, checks the image and
//! runs it under Speakeasy. `cargo xtask ci` makes one in a temporary folder and does all of it
//! ([`ci`]), its host tests and lints included.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, image, inf, root, toolchain};

/// The template's files: (path in the new crate, text). `@IMAGE@.inx` is named after the
/// service.
const TEMPLATE: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../template/Cargo.toml.tmpl")),
    ("build.rs", include_str!("../template/build.rs.tmpl")),
    ("src/lib.rs", include_str!("../template/src/lib.rs.tmpl")),
    (
        "src/tests.rs",
        include_str!("../template/src/tests.rs.tmpl"),
    ),
    (
        "Makefile.toml",
        include_str!("../template/Makefile.toml.tmpl"),
    ),
    ("README.md", include_str!("../template/README.md.tmpl")),
    (".gitignore", include_str!("../template/gitignore.tmpl")),
    ("@IMAGE@.inx", include_str!("../template/driver.inx.tmpl")),
];

/// What a new driver is called and how it is told apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The crate's name (`my-driver`).
    pub name: String,
    /// The image's, log's and service's name (`my_driver`).
    pub image: String,
    /// The driver's type (`MyDriver`).
    pub type_name: String,
    /// The binding context's pool tag (`MydB`).
    pub tag: String,
    /// The NMR module id.
    pub guid: u128,
}

impl Identity {
    /// The identity of a driver called `name`, with module id `guid`.
    ///
    /// # Errors
    /// A name that is not 2 to 32 characters of lowercase ASCII letters, digits, `-` and `_`
    /// starting with a letter, or is one of the library's crates.
    pub fn new(name: &str, guid: u128) -> Result<Self, String> {
        let valid = (2..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with(['-', '_'])
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "{name:?}: a driver's name is 2 to 32 lowercase letters, digits, '-' or '_', \
                 starting with a letter"
            ));
        }
        let crate_name = name.replace('_', "-");
        if [
            "wsk-sys",
            "wsk-rt",
            "wsk-build",
            "wsk-client",
            "wsk-host-model",
        ]
        .contains(&crate_name.as_str())
        {
            return Err(format!(
                "{name:?} is the name of one of the library's crates"
            ));
        }
        let type_name = crate_name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect();
        let letters: Vec<char> = name.chars().filter(char::is_ascii_alphanumeric).collect();
        let mut tag: String = letters.iter().take(3).collect();
        while tag.len() < 3 {
            tag.push('x');
        }
        let tag = tag[..1].to_ascii_uppercase() + &tag[1..] + "B";
        Ok(Self {
            image: crate_name.replace('-', "_"),
            name: crate_name,
            type_name,
            tag,
            guid,
        })
    }

    /// The module id's five groups of hex digits (8, 4, 4, 4, 12).
    fn guid_groups(&self) -> [String; 5] {
        let g = self.guid;
        [
            format!("{:08X}", g >> 96),
            format!("{:04X}", (g >> 80) & 0xFFFF),
            format!("{:04X}", (g >> 64) & 0xFFFF),
            format!("{:04X}", (g >> 48) & 0xFFFF),
            format!("{:012X}", g & 0xFFFF_FFFF_FFFF),
        ]
    }

    /// The module id as `guid(...)` takes it: `0x01234567_89AB_CDEF_0123_456789ABCDEF`.
    pub fn guid_hex(&self) -> String {
        format!("0x{}", self.guid_groups().join("_"))
    }

    /// The module id in registry form: `{01234567-89AB-CDEF-0123-456789ABCDEF}`.
    pub fn guid_text(&self) -> String {
        format!("{{{}}}", self.guid_groups().join("-"))
    }

    /// The template's `text` with this identity and `library` (the folder of the library's
    /// crates) in place of its placeholders.
    fn fill(&self, text: &str, library: &str) -> String {
        text.replace("@NAME@", &self.name)
            .replace("@IMAGE@", &self.image)
            .replace("@TYPE@", &self.type_name)
            .replace("@TAG3@", &self.tag[..3])
            .replace("@TAG@", &self.tag)
            .replace("@GUID_HEX@", &self.guid_hex())
            .replace("@GUID@", &self.guid_text())
            .replace("@LIBRARY@", library)
    }

    /// What the Speakeasy harness expects of the image (`tests/driver_profiles.py`'s
    /// `DriverProfile`, as JSON for `WSK_DRIVER_PROFILE`).
    pub fn speakeasy_profile(&self) -> String {
        let id = self.guid_text();
        format!(
            "{{\"name\": \"{image}\", \"service\": \"{image}\", \"binding_tag\": \"{tag}\", \
             \"module_id\": \"{id}\"}}",
            image = self.image,
            tag = self.tag,
            id = id.trim_matches(['{', '}']),
        )
    }
}

/// A random version 4 GUID (from the system's random source).
fn random_guid() -> Result<u128, String> {
    let mut bytes = [0u8; 16];
    let mut file = std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    std::io::Read::read_exact(&mut file, &mut bytes).map_err(|e| format!("/dev/urandom: {e}"))?;
    let random = u128::from_be_bytes(bytes);
    // Version 4 (random), variant 1 (RFC 4122).
    Ok((random & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62))
}

/// Writes the crate of driver `identity` into `dir` (which must not exist), depending on the
/// library's crates in `library`. Returns the files written.
///
/// # Errors
/// `dir` exists, or a file cannot be written.
pub fn generate(identity: &Identity, dir: &Path, library: &Path) -> Result<Vec<PathBuf>, String> {
    if dir.exists() {
        return Err(format!("{} exists already", dir.display()));
    }
    let library = library.to_string_lossy().into_owned();
    let mut written = Vec::new();
    for (path, text) in TEMPLATE {
        let path = dir.join(identity.fill(path, &library));
        let text = identity.fill(text, &library);
        let bytes = if path.extension().is_some_and(|e| e == "inx") {
            // INF sources: UTF-16LE with a byte order mark, CRLF line ends.
            inf::encode_utf16le_bom(&text.replace('\n', "\r\n"))
        } else {
            text.into_bytes()
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    // The names' lengths change where rustfmt breaks lines: format the sources as written.
    let status = cargo()
        .arg("fmt")
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cargo fmt in {}: {e}", dir.display()))?;
    if !status.success() {
        return Err(format!("cargo fmt in {} failed ({status})", dir.display()));
    }
    Ok(written)
}

/// `cargo xtask new NAME [--path DIR]`.
pub fn new(args: &[String]) -> Result<(), String> {
    let (name, parent) = match args {
        [name] => (name, PathBuf::from(".")),
        [name, flag, dir] if flag == "--path" => (name, PathBuf::from(dir)),
        _ => return Err("usage: cargo xtask new NAME [--path DIR]".into()),
    };
    let identity = Identity::new(name, random_guid()?)?;
    let parent = std::env::current_dir()
        .map_err(|e| e.to_string())?
        .join(parent);
    let dir = parent.join(&identity.name);
    generate(&identity, &dir, &root().join("crates"))?;
    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "created {} ({}.sys): driver type {}, module id {}, pool tag {}\n\
         next: cd {} && cargo test; then, from {}, cargo xtask build-crate {}",
        dir.display(),
        identity.image,
        identity.type_name,
        identity.guid_text(),
        identity.tag,
        dir.display(),
        root().display(),
        dir.display()
    );
    eprint!("{summary}");
    Ok(())
}

/// The identity of the driver crate in `dir`, read back from what `generate` wrote (its
/// `src/lib.rs`).
fn identity_of(dir: &Path) -> Result<Identity, String> {
    let lib = dir.join("src").join("lib.rs");
    let text = std::fs::read_to_string(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    let between = |before: &str, after: &str| -> Result<String, String> {
        let start = text
            .find(before)
            .map(|i| i + before.len())
            .ok_or_else(|| format!("{}: no `{before}`", lib.display()))?;
        let end = text[start..]
            .find(after)
            .map(|i| start + i)
            .ok_or_else(|| format!("{}: no `{after}` after `{before}`", lib.display()))?;
        Ok(text[start..end].to_string())
    };
    let image = between("const NAME: &'static CStr = c\"", "\"")?;
    let guid_hex = between("const MODULE_ID: GUID = guid(0x", ")")?.replace('_', "");
    let guid = u128::from_str_radix(&guid_hex, 16).map_err(|e| format!("module id: {e}"))?;
    let identity = Identity::new(&image, guid)?;
    let tag = between("const POOL_TAG: PoolTag = PoolTag::new(*b\"", "\"")?;
    Ok(Identity { tag, ..identity })
}

/// `cargo xtask build-crate DIR`: the `.sys` of the driver crate in `DIR` (cross build, image
/// check), run under Speakeasy (the default scenario). Returns the image.
pub fn build_crate(dir: &Path) -> Result<PathBuf, String> {
    let identity = identity_of(dir)?;
    let image = toolchain::build_crate(dir, &identity.image)?;
    print!("{}", image::check(&image, &root())?);
    // The trace, checked: the harness finds no problem (exit 0), the task said it attached, and
    // the unload left nothing.
    let mut command = Command::new("python3");
    command
        .arg("tests/speakeasy/run_driver.py")
        .arg(&image)
        .env("WSK_DRIVER_PROFILE", identity.speakeasy_profile())
        .current_dir(root());
    eprintln!(
        "$ python3 tests/speakeasy/run_driver.py {}",
        image.display()
    );
    let output = command
        .output()
        .map_err(|e| format!("run_driver.py: {e}"))?;
    let trace = String::from_utf8_lossy(&output.stdout);
    print!("{trace}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        return Err(format!(
            "{} under Speakeasy: problems found",
            image.display()
        ));
    }
    for line in ["attached", "unloaded, live pool allocations: 0"] {
        let line = format!("{}: {line}", identity.image);
        if !trace.lines().any(|l| l.trim_end().ends_with(&line)) {
            return Err(format!(
                "{} under Speakeasy: no line {line:?}",
                image.display()
            ));
        }
    }
    Ok(image)
}

/// `cargo xtask ci`'s check of the template: a new driver in a temporary folder; its host tests
/// and lints; its INF source decodes and stamps; its `.sys` builds, passes the image check and
/// runs under Speakeasy. The folder is removed when all passed (kept to look at otherwise).
pub fn ci() -> Result<(), String> {
    let parent = std::env::temp_dir().join(format!("wsk-xtask-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    let identity = Identity::new("ci-hello", random_guid()?)?;
    let dir = parent.join(&identity.name);
    generate(&identity, &dir, &root().join("crates"))?;
    eprintln!("xtask new: made {} in {}", identity.name, dir.display());
    let in_crate = |command: &mut Command| {
        command.current_dir(&dir).env_remove("CARGO_TARGET_DIR");
        eprintln!("$ (in {}) {:?}", dir.display(), command);
        let status = command.status().map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{command:?} in {} failed ({status})",
                dir.display()
            ))
        }
    };
    in_crate(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    in_crate(cargo().arg("test"))?;
    let inx = dir.join(format!("{}.inx", identity.image));
    let bytes = std::fs::read(&inx).map_err(|e| format!("{}: {e}", inx.display()))?;
    let text = inf::decode_utf16le_bom(&bytes)?;
    let stamp = inf::Stamp {
        arch: "amd64".into(),
        date: inf::Date::from_unix_seconds(0),
        version: [0, 1, 0, 0],
        catalog: format!("{}.cat", identity.image),
    };
    let stamped = inf::stamp(&text, &stamp)?;
    let problems = inf::check_stamped(&inf::encode_utf16le_bom(&stamped), &text, &stamp);
    if !problems.is_empty() {
        return Err(format!("{}: {}", inx.display(), problems.join("; ")));
    }
    build_crate(&dir)?;
    let _ = std::fs::remove_dir_all(&parent);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::{Identity, TEMPLATE};

    #[test]
    fn a_name_gives_the_identity() {
        let id = Identity::new("my-driver", 0x0123_4567_89AB_CDEF_0123_4567_89AB_CDEF).unwrap();
        assert_eq!(
            (
                id.name.as_str(),
                id.image.as_str(),
                id.type_name.as_str(),
                id.tag.as_str()
            ),
            ("my-driver", "my_driver", "MyDriver", "MydB")
        );
        assert_eq!(id.guid_hex(), "0x01234567_89AB_CDEF_0123_456789ABCDEF");
        assert_eq!(id.guid_text(), "{01234567-89AB-CDEF-0123-456789ABCDEF}");
        assert_eq!(Identity::new("x9", 0).unwrap().tag, "X9xB");
        for bad in [
            "",
            "a",
            "9lives",
            "My",
            "a b",
            "wsk-client",
            "trailing-",
            &"a".repeat(33),
        ] {
            assert!(Identity::new(bad, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let id = Identity::new("ci_hello", 7).unwrap();
        for (path, text) in TEMPLATE {
            let filled = id.fill(text, "/lib");
            assert!(
                !filled.contains("@NAME@") && !filled.contains("@IMAGE@"),
                "{path}"
            );
            assert!(!placeholder_left(&filled), "{path}: a placeholder left");
        }
    }

    /// Whether `text` has a placeholder: `@`, capitals, digits or `_`, `@`.
    fn placeholder_left(text: &str) -> bool {
        text.match_indices('@').any(|(at, _)| {
            let rest = &text[at + 1..];
            let word = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            word > 0 && rest[word..].starts_with('@')
        })
    }

    #[test]
    fn a_placeholder_the_fill_misses_is_seen() {
        let id = Identity::new("ci_hello", 7).unwrap();
        assert!(placeholder_left(&id.fill("a @UNKNOWN_1@ b", "/lib")));
        assert!(!placeholder_left("#!@rust, user@host, @ alone"));
    }

    #[test]
    fn random_guids_are_version_4() {
        let guid = super::random_guid().unwrap();
        assert_eq!((guid >> 76) & 0xF, 4);
        assert_eq!((guid >> 62) & 0x3, 2);
        assert_ne!(guid, super::random_guid().unwrap());
    }
}
