//! `cargo xtask ci`'s check that the drivers are safe code (issue 19): no `unsafe` token in the
//! seed driver's `src/*.rs` nor in `examples/*/src/**/*.rs`, outside their test modules (a file
//! named `tests.rs` or under a `tests/` folder, and whatever follows a `#[cfg(test)]` line). What
//! `wsk_client::driver!` expands to is the library's, not the driver's source.
//!
//! The scan is lexical: comments, string literals and character literals are skipped, so a
//! `// SAFETY:` comment or a log line that says "unsafe" is not a finding; an `unsafe` block,
//! function, impl, trait or attribute (`unsafe(export_name)`) is.

use std::path::{Path, PathBuf};

/// Every `unsafe` in the drivers' own sources, as `path:line`.
pub fn findings(root: &Path) -> Result<Vec<String>, String> {
    let mut files = Vec::new();
    collect(&root.join("src"), false, &mut files)?;
    let examples = root.join("examples");
    let entries =
        std::fs::read_dir(&examples).map_err(|e| format!("{}: {e}", examples.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", examples.display()))?;
        let src = entry.path().join("src");
        if src.is_dir() {
            collect(&src, true, &mut files)?;
        }
    }
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let shown = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        found.extend(
            unsafe_lines(&text)
                .into_iter()
                .map(|line| format!("{shown}:{line}")),
        );
    }
    Ok(found)
}

/// Fails, listing them, when the drivers have any `unsafe`.
pub fn check(root: &Path) -> Result<(), String> {
    let found = findings(root)?;
    if found.is_empty() {
        eprintln!("safe drivers: no `unsafe` in src/ or examples/*/src outside tests");
        Ok(())
    } else {
        Err(format!(
            "the drivers must be safe code (issue 19), but `unsafe` is in:\n  {}",
            found.join("\n  ")
        ))
    }
}

/// The `.rs` files under `dir` that are not test modules (`recurse`: into subfolders too).
fn collect(dir: &Path, recurse: bool, files: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if recurse && name != "tests" {
                collect(&path, recurse, files)?;
            }
        } else if path.extension().is_some_and(|e| e == "rs") && name != "tests.rs" {
            files.push(path);
        }
    }
    Ok(())
}

/// The end of the comment, string or character literal that starts at `i`, if one does.
fn skip_literal(bytes: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    match (bytes[i], bytes.get(i + 1)) {
        (b'/', Some(b'/')) => {
            while j < bytes.len() && bytes[j] != b'\n' {
                j += 1;
            }
            Some(j)
        }
        (b'/', Some(b'*')) => {
            j += 2;
            while j < bytes.len() && !(bytes[j] == b'*' && bytes.get(j + 1) == Some(&b'/')) {
                j += 1;
            }
            Some((j + 2).min(bytes.len()))
        }
        (b'"', _) => {
            j += 1;
            while j < bytes.len() && bytes[j] != b'"' {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            Some((j + 1).min(bytes.len()))
        }
        // A character literal ('x', '\n'); a lifetime ('a) has no closing quote there.
        (b'\'', _) if bytes.get(i + 2) == Some(&b'\'') => Some(i + 3),
        (b'\'', Some(b'\\')) if bytes.get(i + 3) == Some(&b'\'') => Some(i + 4),
        _ => None,
    }
}

/// `text` with the bodies of its inline test modules (`#[cfg(test)]`, then any attributes, then
/// `mod name {`) blanked, their line ends kept.
fn mask_test_modules(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(end) = skip_literal(&bytes, i) {
            i = end;
            continue;
        }
        if !bytes[i..].starts_with(b"#[cfg(test)]") {
            i += 1;
            continue;
        }
        let after = String::from_utf8_lossy(&bytes[i + 12..]).into_owned();
        let mut rest = after.trim_start();
        while rest.starts_with("#[") {
            rest = rest
                .find(']')
                .map_or("", |end| rest[end + 1..].trim_start());
        }
        let is_module = rest
            .strip_prefix("mod ")
            .and_then(|r| r.find(['{', ';']).map(|at| &r[at..]))
            .is_some_and(|r| r.starts_with('{'));
        if !is_module {
            i += 12;
            continue;
        }
        // The module's `{`, then its matching `}`.
        let Some(open) = bytes[i..].iter().position(|b| *b == b'{').map(|at| i + at) else {
            break;
        };
        let mut depth = 0usize;
        let mut j = open;
        while j < bytes.len() {
            if let Some(end) = skip_literal(&bytes, j) {
                j = end;
                continue;
            }
            match bytes[j] {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        let end = j.min(bytes.len());
        for byte in &mut bytes[open..end] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
        i = j;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The lines (1-based) of `text` with an `unsafe` token in code, outside inline test modules.
fn unsafe_lines(text: &str) -> Vec<usize> {
    let masked = mask_test_modules(text);
    let bytes = masked.as_bytes();
    let mut lines = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(end) = skip_literal(bytes, i) {
            i = end;
            continue;
        }
        if bytes[i].is_ascii_alphabetic() || bytes[i] == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            if &bytes[start..i] == b"unsafe" {
                lines.push(1 + masked[..start].matches('\n').count());
            }
        } else {
            i += 1;
        }
    }
    lines.dedup();
    lines
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::unsafe_lines;

    #[test]
    fn unsafe_in_code_is_found_and_in_comments_strings_and_tests_is_not() {
        let text = "\
// SAFETY: an unsafe word in a comment
/* unsafe, in a block comment */
fn f() {
    let s = \"unsafe in a string\";
    let c = 'u';
    let _ = unsafe { g() };
}
#[cfg_attr(wsk_kernel, unsafe(export_name = \"DriverEntry\"))]
fn not_unsafe_ident() {}
#[cfg(test)]
mod tests { fn t() { let s = \"}\"; unsafe { h() } } }
#[cfg(test)]
fn only_for_tests() { unsafe { i() } }
/// `#[cfg(test)]` in a comment exempts nothing:
fn after() { unsafe { j() } }
";
        assert_eq!(unsafe_lines(text), [6, 8, 13, 15]);
        assert!(unsafe_lines("fn f<'a>(x: &'a u8) -> &'a u8 { x }").is_empty());
    }

    #[test]
    fn the_drivers_of_this_workspace_have_none() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        assert_eq!(super::findings(&root), Ok(Vec::new()));
    }
}
