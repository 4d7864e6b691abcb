//! The library's publishable crates, packaged and verified as CI does: `cargo package` builds
//! each from its `.crate` file, for the host (a kernel build of them is the drivers').
//!
//! Packaged together, the crates depend on each other through a local registry that cargo puts
//! in the target directory, and it unpacks each `.crate` under
//! `$CARGO_HOME/registry/src/<that registry's hash>/<name>-<version>`, where it keeps it: a later
//! packaging of the same version from a checkout at the same path (CI's clean clone) finds that
//! folder, does not unpack it again, and verifies against the old sources (issue 20's first CI:
//! `wsk-client` built against a `wsk-sys` 0.1.0 without `IoReuseIrp`). So every unpacked copy of
//! these crates is removed first.

use std::path::{Path, PathBuf};

use crate::{cargo, run};

/// The crates `cargo package` verifies.
pub const CRATES: [&str; 4] = ["wsk-sys", "wsk-rt", "wsk-build", "wsk-client"];

/// `cargo package` of [`CRATES`], after removing their unpacked copies from cargo's registry
/// sources.
pub fn package() -> Result<(), String> {
    let removed = remove_unpacked(&cargo_home()?, &CRATES)?;
    for path in &removed {
        eprintln!(
            "xtask: removed an unpacked copy of a packaged crate: {}",
            path.display()
        );
    }
    let mut command = cargo();
    command.args(["package", "--allow-dirty"]);
    for name in CRATES {
        command.args(["-p", name]);
    }
    run(&mut command)
}

/// `$CARGO_HOME`, or `~/.cargo`.
fn cargo_home() -> Result<PathBuf, String> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cargo"))
        .ok_or_else(|| "xtask: neither CARGO_HOME nor HOME is set".to_string())
}

/// Removes `cargo_home/registry/src/*/<name>-<version>` for each of `names` (any version);
/// returns what it removed.
fn remove_unpacked(cargo_home: &Path, names: &[&str]) -> Result<Vec<PathBuf>, String> {
    let sources = cargo_home.join("registry").join("src");
    let Ok(registries) = std::fs::read_dir(&sources) else {
        return Ok(Vec::new()); // nothing unpacked yet
    };
    let mut removed = Vec::new();
    for registry in registries.flatten() {
        let Ok(crates) = std::fs::read_dir(registry.path()) else {
            continue;
        };
        for unpacked in crates.flatten() {
            let file_name = unpacked.file_name();
            let name = file_name.to_string_lossy();
            let ours = names.iter().any(|ours| {
                name.strip_prefix(ours)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
            });
            if ours {
                let path = unpacked.path();
                std::fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                removed.push(path);
            }
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::remove_unpacked;

    #[test]
    fn only_the_packaged_crates_unpacked_copies_are_removed() {
        let home = std::env::temp_dir().join(format!("wsk-xtask-publish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        let src = home.join("registry").join("src");
        let keep = [
            src.join("index.crates.io-1").join("wsk-sys-helper-1.0.0"),
            src.join("index.crates.io-1").join("object-0.36.7"),
            src.join("-abc").join("wsk-client-extras-0.1.0"),
        ];
        let remove = [
            src.join("-abc").join("wsk-sys-0.1.0"),
            src.join("-def").join("wsk-client-0.1.0"),
            src.join("-def").join("wsk-client-0.2.0-rc.1"),
        ];
        for dir in keep.iter().chain(&remove) {
            std::fs::create_dir_all(dir.join("src")).unwrap();
        }
        let removed = remove_unpacked(&home, &["wsk-sys", "wsk-client"]).unwrap();
        let mut expected = remove.to_vec();
        expected.sort();
        assert_eq!(removed, expected);
        assert!(
            keep.iter().all(|dir| dir.is_dir()),
            "another crate's copy removed"
        );
        assert!(remove.iter().all(|dir| !dir.exists()));
        assert_eq!(
            remove_unpacked(&home.join("nothing"), &["wsk-sys"]).unwrap(),
            Vec::<std::path::PathBuf>::new()
        );
        std::fs::remove_dir_all(&home).unwrap();
    }
}
