//! `cargo xtask package [--release] [--pfx FILE [--pfx-password-env VAR]]`: a test-signed driver
//! package per driver, built on Linux, for a test VM with test signing on.
//!
//! `target/package/<driver>/` holds:
//! - `<driver>.sys`: the image, Authenticode-signed (SHA-256 file hash and SHA-256 page hashes,
//!   no timestamp) by Debian's `osslsigncode`;
//! - `<driver>.inf`: the driver's `.inx` stamped as `stampinf` does it ([`crate::inf`]);
//! - `test-signing.cer`: the signing certificate (DER), to import on the VM;
//! - `Install-DriverPackage.ps1`, `Uninstall-DriverPackage.ps1` and `WskAttach.Common.ps1` (from
//!   `windows/`): trust the certificate, copy the `.sys`, `sc.exe create` / `start` / `query`, and
//!   back.
//!
//! No catalog (`.cat`): loading a non-PnP driver with `sc.exe` under test signing checks the
//! signature embedded in the `.sys`, and no Linux tool writes a catalog (`inf2cat` is Windows-only).
//!
//! The certificate is generated once per checkout with `openssl` (RSA 2048, SHA-256, self-signed,
//! EKU code signing) under `target/test-signing/`, outside `target/package/`, so that deleting the
//! packages does not change what the VM already trusts; `--pfx` signs with your own PFX instead.
//!
//! The Linux cross build has one profile, release (opt-level "s", LTO, panic=abort; a dev build
//! would keep overflow-check panics, which the image check rejects), so `--release` is accepted
//! for symmetry with `cargo make default --release` and changes nothing: both forms package the
//! release images.
//!
//! Every package is checked after it is written ([`check_package`]); `cargo xtask ci` also proves
//! each of those checks can fail ([`ci`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{image, inf, root, run, toolchain};

/// The Debian packages this module runs: `osslsigncode` (Authenticode) and `openssl`.
const PACKAGES: &[&str] = &["osslsigncode", "openssl"];
/// `stampinf -a`: the architecture of the images (`x86_64-pc-windows-msvc`).
const ARCH: &str = "amd64";
/// The certificate's file name in each package.
const CER_NAME: &str = "test-signing.cer";
/// The scripts copied from `windows/` into each package.
const SCRIPTS: &[&str] = &[
    "Install-DriverPackage.ps1",
    "Uninstall-DriverPackage.ps1",
    "WskAttach.Common.ps1",
];
/// The subject of the generated certificate.
const SUBJECT: &str = "/CN=wsk-attach test signing (Linux build)";
/// The command line, for errors.
const USAGE: &str = "usage: cargo xtask package [--release] [--pfx FILE [--pfx-password-env VAR]]";

/// Where the packages go: `target/package/<driver>/`.
fn package_root() -> PathBuf {
    root().join("target").join("package")
}

/// Where the generated certificate and its key live (once per checkout).
fn cert_dir() -> PathBuf {
    root().join("target").join("test-signing")
}

/// A scratch folder for the self-tests' mutants, removed when they pass.
fn scratch_dir() -> PathBuf {
    package_root().join(".selftest")
}

/// A user's PFX to sign with (`--pfx FILE --pfx-password-env VAR`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pfx {
    file: PathBuf,
    /// The environment variable holding the password; `None`: no password.
    password_env: Option<String>,
}

/// The command line of `cargo xtask package`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    pfx: Option<Pfx>,
}

/// Parses the arguments after `package`.
fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut file = None;
    let mut password_env = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--release" => {}
            "--pfx" => file = Some(PathBuf::from(rest.next().ok_or("--pfx needs a file")?)),
            "--pfx-password-env" => {
                password_env = Some(
                    rest.next()
                        .ok_or("--pfx-password-env needs a variable name")?
                        .clone(),
                );
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    match (file, password_env) {
        (Some(file), password_env) => Ok(Options {
            pfx: Some(Pfx { file, password_env }),
        }),
        (None, Some(_)) => Err(format!("--pfx-password-env without --pfx\n{USAGE}")),
        (None, None) => Ok(Options::default()),
    }
}

/// Runs `command` in the workspace root and returns its standard output; an error carries the
/// command, its status and both outputs.
fn output(command: &mut Command) -> Result<String, String> {
    command.current_dir(root());
    let out = command
        .output()
        .map_err(|e| format!("{}: {e}", crate::describe(command)))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{} failed ({}):\n{stdout}{}",
            crate::describe(command),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// True when `program --version`-style `probe` runs.
fn runs(program: &str, probe: &str) -> bool {
    Command::new(program)
        .arg(probe)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Installs `osslsigncode` and `openssl` from Debian when either is missing; fails when they are
/// still missing afterwards.
fn ensure_tools() -> Result<(), String> {
    let present = || runs("osslsigncode", "--version") && runs("openssl", "version");
    if present() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", PACKAGES.join(" "));
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if present() {
        Ok(())
    } else {
        Err(format!(
            "{} installed, but `osslsigncode --version` or `openssl version` still fails",
            PACKAGES.join(" ")
        ))
    }
}

/// How the images are signed, and what a signature is verified against.
struct Signer {
    key: Key,
    /// PEM certificates that `osslsigncode verify` trusts (`-CAfile`): the generated certificate,
    /// or the certificates in the PFX.
    anchor: PathBuf,
    /// The signing certificate, DER: the package's `.cer`.
    cer: Vec<u8>,
}

/// The signing key: the generated PEM pair, or a user's PFX.
enum Key {
    Pem { cert: PathBuf, key: PathBuf },
    Pfx(Pfx),
}

/// Generates a self-signed code-signing certificate (RSA 2048, SHA-256, EKU code signing, ten
/// years) and its key as `cert.pem` and `key.pem` in `dir`, unless both are already there.
fn ensure_generated_certificate(dir: &Path, subject: &str) -> Result<(PathBuf, PathBuf), String> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    eprintln!(
        "xtask: generating the test certificate in {}",
        dir.display()
    );
    output(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes"])
            .args(["-days", "3650", "-subj", subject])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "keyUsage=critical,digitalSignature"])
            .args(["-addext", "extendedKeyUsage=codeSigning"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", key.display()))?;
    }
    Ok((cert, key))
}

/// `-passin` for `openssl pkcs12`: the PFX password's variable, or an empty password.
fn passin(pfx: &Pfx) -> String {
    pfx.password_env
        .as_ref()
        .map_or_else(|| "pass:".to_owned(), |var| format!("env:{var}"))
}

/// Extracts certificates from `pfx` into the PEM file `out` (`extra`: more `openssl pkcs12`
/// arguments), retrying with OpenSSL's legacy provider for PFX files in the older encryption
/// (RC2 / 3DES) Windows still writes.
fn pfx_certificates(pfx: &Pfx, extra: &[&str], out: &Path) -> Result<(), String> {
    let attempt = |legacy: bool| {
        let mut command = Command::new("openssl");
        command
            .args(["pkcs12", "-nokeys", "-in"])
            .arg(&pfx.file)
            .args(["-passin", &passin(pfx)])
            .args(extra)
            .arg("-out")
            .arg(out);
        if legacy {
            command.arg("-legacy");
        }
        output(&mut command)
    };
    attempt(false).or_else(|first| attempt(true).map_err(|_| first))?;
    Ok(())
}

impl Signer {
    /// The signer for `options`: the generated certificate (created on first use), or the PFX.
    fn new(options: &Options, work: &Path) -> Result<Self, String> {
        let (key, cert_pem, anchor) = match &options.pfx {
            None => {
                let (cert, key) = ensure_generated_certificate(&cert_dir(), SUBJECT)?;
                (
                    Key::Pem {
                        cert: cert.clone(),
                        key,
                    },
                    cert.clone(),
                    cert,
                )
            }
            Some(pfx) => {
                // The tools run in the workspace root; the path was given from the caller's.
                let pfx = Pfx {
                    file: std::path::absolute(&pfx.file)
                        .map_err(|e| format!("--pfx {}: {e}", pfx.file.display()))?,
                    password_env: pfx.password_env.clone(),
                };
                if !pfx.file.is_file() {
                    return Err(format!("--pfx {}: no such file", pfx.file.display()));
                }
                if let Some(var) = &pfx.password_env
                    && std::env::var_os(var).is_none()
                {
                    return Err(format!("--pfx-password-env {var}: the variable is not set"));
                }
                std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;
                let anchor = work.join("pfx-certificates.pem");
                let leaf = work.join("pfx-signing-certificate.pem");
                pfx_certificates(&pfx, &[], &anchor)?;
                pfx_certificates(&pfx, &["-clcerts"], &leaf)?;
                (Key::Pfx(pfx), leaf, anchor)
            }
        };
        let cer = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert_pem)
            .current_dir(root())
            .output()
            .map_err(|e| format!("openssl x509: {e}"))?;
        if !cer.status.success() || cer.stdout.is_empty() {
            return Err(format!(
                "openssl x509 -outform DER -in {}: {}",
                cert_pem.display(),
                String::from_utf8_lossy(&cer.stderr)
            ));
        }
        Ok(Self {
            key,
            anchor,
            cer: cer.stdout,
        })
    }

    /// Signs `input` into `output` with SHA-256 and page hashes; `name` is the signature's
    /// description (`-n`).
    fn sign(&self, input: &Path, output: &Path, name: &str) -> Result<(), String> {
        self.sign_with(input, output, name, "sha256", true)
    }

    /// Signs `input` into `output` with the digest `hash` (`-h`), with page hashes or without;
    /// `name` is the signature's description (`-n`).
    fn sign_with(
        &self,
        input: &Path,
        output: &Path,
        name: &str,
        hash: &str,
        page_hashes: bool,
    ) -> Result<(), String> {
        let mut command = Command::new("osslsigncode");
        command
            .args(["sign", "-h", hash, "-n", name])
            .current_dir(root());
        if page_hashes {
            command.arg("-ph");
        }
        let password = match &self.key {
            Key::Pem { cert, key } => {
                command.arg("-certs").arg(cert).arg("-key").arg(key);
                None
            }
            Key::Pfx(pfx) => {
                // The password goes through a pipe, never the command line.
                command
                    .arg("-pkcs12")
                    .arg(&pfx.file)
                    .args(["-readpass", "/dev/stdin"]);
                Some(
                    pfx.password_env
                        .as_ref()
                        .and_then(std::env::var_os)
                        .unwrap_or_default(),
                )
            }
        };
        command.arg("-in").arg(input).arg("-out").arg(output);
        eprintln!("$ {}", crate::describe(&command));
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("osslsigncode: {e} (is it installed?)"))?;
        // Dropping stdin closes it: osslsigncode reads the password (or nothing) to its end.
        if let Some(mut stdin) = child.stdin.take()
            && let Some(password) = password
        {
            stdin
                .write_all(password.as_encoded_bytes())
                .map_err(|e| format!("osslsigncode: writing the password: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("osslsigncode: {e}"))?;
        if out.status.success() && output.is_file() {
            Ok(())
        } else {
            Err(format!(
                "osslsigncode sign {} failed ({}):\n{}{}",
                input.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// `osslsigncode verify` of `signed` against the PEM certificates in `anchor`. Succeeds, with the
/// tool's report, only when it exits 0, says `Signature verification: ok`, and shows a SHA-256
/// message digest and SHA-256 page hashes that match the file.
fn verify(signed: &Path, anchor: &Path) -> Result<String, String> {
    let mut command = Command::new("osslsigncode");
    command
        .arg("verify")
        .arg("-CAfile")
        .arg(anchor)
        .arg("-TSA-CAfile")
        .arg(anchor)
        .arg("-in")
        .arg(signed)
        .current_dir(root());
    let out = command
        .output()
        .map_err(|e| format!("osslsigncode verify: {e}"))?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let has = |key: &str, value: &str| {
        report
            .lines()
            .any(|line| line.starts_with(key) && line.trim_end().ends_with(value))
    };
    let mut problems = Vec::new();
    if !out.status.success() {
        problems.push(format!("osslsigncode verify: {}", out.status));
    }
    if !report
        .lines()
        .any(|line| line.trim() == "Signature verification: ok")
    {
        problems.push("no `Signature verification: ok`".to_owned());
    }
    if !has("Message digest algorithm  :", "SHA256") {
        problems.push("the message digest is not SHA-256".to_owned());
    }
    if !has("Page hash algorithm  :", "SHA256") {
        problems.push("no SHA-256 page hashes".to_owned());
    }
    if report.contains("MISMATCH") {
        problems.push("a digest, page hash or checksum MISMATCH".to_owned());
    }
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(format!(
            "signature of {} does not verify against {}: {}\n{report}",
            signed.display(),
            anchor.display(),
            problems.join("; ")
        ))
    }
}

/// One driver to package: its folder (the image's name), its crate's file stem (the `.sys`,
/// `.inf` and service name), the built (unsigned) image and its `.inx`.
struct Driver {
    folder: String,
    stem: String,
    image: PathBuf,
    inx: PathBuf,
    version: String,
}

/// The manifest folder and version of the cargo package `package` (from `cargo pkgid`, which
/// prints `path+file:///DIR#NAME@VERSION`, or `...#VERSION` when NAME is DIR's last component).
fn package_dir_and_version(package: &str) -> Result<(PathBuf, String), String> {
    let id = output(crate::cargo().args(["pkgid", "-p", package]))?;
    let id = id.trim();
    let (location, fragment) = id
        .split_once('#')
        .ok_or_else(|| format!("cargo pkgid -p {package}: unexpected `{id}`"))?;
    let dir = location
        .strip_prefix("path+file://")
        .ok_or_else(|| format!("cargo pkgid -p {package}: `{id}` is not a path package"))?;
    let version = fragment.rsplit_once('@').map_or(fragment, |(_, v)| v);
    Ok((PathBuf::from(dir), version.to_owned()))
}

/// The drivers of the workspace with their built images (`images`, in [`toolchain::DRIVERS`]
/// order).
fn drivers(images: &[PathBuf]) -> Result<Vec<Driver>, String> {
    if images.len() != toolchain::DRIVERS.len() {
        return Err(format!(
            "{} images for {} drivers",
            images.len(),
            toolchain::DRIVERS.len()
        ));
    }
    toolchain::DRIVERS
        .iter()
        .zip(images)
        .map(|(driver, image)| {
            let (dir, version) = package_dir_and_version(driver.package)?;
            Ok(Driver {
                folder: driver.image.to_owned(),
                stem: driver.stem.to_owned(),
                image: image.clone(),
                inx: dir.join(format!("{}.inx", driver.stem)),
                version,
            })
        })
        .collect()
}

/// The date `DriverVer` gets: `$SOURCE_DATE_EPOCH` when set (reproducible builds), else today
/// (UTC).
fn stamp_date() -> Result<inf::Date, String> {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("SOURCE_DATE_EPOCH={value}: {e}"))?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| format!("the clock is before 1970: {e}"))?
            .as_secs(),
    };
    Ok(inf::Date::from_unix_seconds(seconds))
}

/// What `stampinf` would write into `driver`'s INF on `date`.
fn stamp_for(driver: &Driver, date: inf::Date) -> Result<inf::Stamp, String> {
    Ok(inf::Stamp {
        arch: ARCH.to_owned(),
        date,
        version: inf::driver_version(&driver.version)?,
        catalog: format!("{}.cat", driver.stem),
    })
}

/// Reads `driver`'s `.inx` (UTF-16LE with a byte order mark).
fn read_inx(driver: &Driver) -> Result<String, String> {
    let bytes = std::fs::read(&driver.inx).map_err(|e| format!("{}: {e}", driver.inx.display()))?;
    inf::decode_utf16le_bom(&bytes).map_err(|e| format!("{}: {e}", driver.inx.display()))
}

/// The files a package folder holds, by name.
fn expected_files(stem: &str) -> Vec<String> {
    let mut files = vec![
        format!("{stem}.sys"),
        format!("{stem}.inf"),
        CER_NAME.to_owned(),
    ];
    files.extend(SCRIPTS.iter().map(|s| (*s).to_owned()));
    files.sort();
    files
}

/// Writes `driver`'s package folder (replacing any earlier one): the signed image, the stamped
/// INF, the certificate and the VM scripts. Returns the folder.
fn write_package(driver: &Driver, signer: &Signer, stamp: &inf::Stamp) -> Result<PathBuf, String> {
    let dir = package_root().join(&driver.folder);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    signer.sign(
        &driver.image,
        &dir.join(format!("{}.sys", driver.stem)),
        &driver.stem,
    )?;
    let stamped = inf::stamp(&read_inx(driver)?, stamp)
        .map_err(|e| format!("{}: {e}", driver.inx.display()))?;
    write(
        &format!("{}.inf", driver.stem),
        &inf::encode_utf16le_bom(&stamped),
    )?;
    write(CER_NAME, &signer.cer)?;
    for script in SCRIPTS {
        let source = root().join("windows").join(script);
        let text = std::fs::read(&source).map_err(|e| format!("{}: {e}", source.display()))?;
        write(script, &text)?;
    }
    Ok(dir)
}

/// Checks a written package folder `dir` of `driver`: exactly the expected files; the signature
/// verifies against the signer's certificates with SHA-256 and page hashes; the signed image
/// passes the image check with its security directory and a valid checksum; the INF reads back
/// with every field `stampinf` sets; the `.cer` is the signer's code-signing certificate.
/// Returns `osslsigncode verify`'s report.
fn check_package(
    dir: &Path,
    driver: &Driver,
    signer: &Signer,
    stamp: &inf::Stamp,
) -> Result<String, String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .map(|entry| {
            entry
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    found.sort();
    if found != expected_files(&driver.stem) {
        return Err(format!(
            "{}: holds {found:?}, expected {:?}",
            dir.display(),
            expected_files(&driver.stem)
        ));
    }

    let packaged = dir.join(format!("{}.sys", driver.stem));
    let report = verify(&packaged, &signer.anchor)?;

    let summary = image::check_with(
        &packaged,
        &root(),
        &image::Expect {
            signed: true,
            map: Some(image::map_beside(&driver.image)),
        },
    )?;
    print!("{summary}");

    let inf_path = dir.join(format!("{}.inf", driver.stem));
    let bytes = std::fs::read(&inf_path).map_err(|e| format!("{}: {e}", inf_path.display()))?;
    let problems = inf::check_stamped(&bytes, &read_inx(driver)?, stamp);
    if !problems.is_empty() {
        return Err(format!(
            "{}: not what stampinf would write:\n  {}",
            inf_path.display(),
            problems.join("\n  ")
        ));
    }
    println!(
        "{}: DriverVer = {}, CatalogFile = {}, sections NT{ARCH}: ok",
        inf_path.display(),
        stamp.driver_ver(),
        stamp.catalog
    );

    let cer_path = dir.join(CER_NAME);
    let cer = std::fs::read(&cer_path).map_err(|e| format!("{}: {e}", cer_path.display()))?;
    if cer != signer.cer {
        return Err(format!(
            "{}: not the signing certificate",
            cer_path.display()
        ));
    }
    let text = output(
        Command::new("openssl")
            .args([
                "x509",
                "-inform",
                "DER",
                "-noout",
                "-subject",
                "-fingerprint",
                "-sha1",
            ])
            .args(["-ext", "extendedKeyUsage", "-in"])
            .arg(&cer_path),
    )?;
    if !text.contains("Code Signing") {
        return Err(format!(
            "{}: the certificate has no code-signing EKU:\n{text}",
            cer_path.display()
        ));
    }
    let thumbprint = text
        .lines()
        .find_map(|line| {
            line.split_once("Fingerprint=")
                .map(|(_, v)| v.replace(':', ""))
        })
        .unwrap_or_default();
    println!(
        "{}: code-signing certificate, thumbprint {thumbprint}: ok",
        cer_path.display()
    );
    Ok(report)
}

/// Builds, writes and checks every package with `signer`; returns each driver's package folder
/// and the signed image in it.
fn package_all(images: &[PathBuf], signer: &Signer) -> Result<Vec<(Driver, PathBuf)>, String> {
    let date = stamp_date()?;
    let mut done = Vec::new();
    for driver in drivers(images)? {
        let stamp = stamp_for(&driver, date)?;
        let dir = write_package(&driver, signer, &stamp)?;
        let report = check_package(&dir, &driver, signer, &stamp)?;
        println!(
            "$ osslsigncode verify -CAfile {anchor} -TSA-CAfile {anchor} -in {}",
            dir.join(format!("{}.sys", driver.stem)).display(),
            anchor = signer.anchor.display()
        );
        print!("{report}");
        println!("package {}: all checks passed", dir.display());
        done.push((driver, dir));
    }
    Ok(done)
}

/// `cargo xtask package`: builds and checks the images, then writes and checks a signed package
/// per driver.
pub fn command(args: &[String]) -> Result<(), String> {
    let options = parse_args(args)?;
    ensure_tools()?;
    let images = crate::build_and_check()?;
    let signer = Signer::new(&options, &package_root())?;
    let done = package_all(&images, &signer)?;
    // The PFX's certificates were only needed for the checks.
    for name in ["pfx-certificates.pem", "pfx-signing-certificate.pem"] {
        let _ = std::fs::remove_file(package_root().join(name));
    }
    println!("\nPackages (copy a folder to the test VM):");
    for (_, dir) in &done {
        println!("  {}", dir.display());
    }
    Ok(())
}

/// A mutation of a signed image that `osslsigncode verify` must reject.
struct SignatureMutation {
    what: &'static str,
    apply: fn(&mut Vec<u8>) -> Result<(), String>,
}

/// Reads a little-endian `u32` at `at`.
fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    let bytes = data
        .get(at..at + 4)
        .ok_or_else(|| format!("offset {at:#x} is past the end"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// The offset of the NT headers of a PE image.
fn nt_headers(data: &[u8]) -> Result<usize, String> {
    usize::try_from(u32_at(data, 0x3C)?).map_err(|e| e.to_string())
}

const SIGNATURE_MUTATIONS: &[SignatureMutation] = &[
    SignatureMutation {
        what: "one byte of the first section's code flipped",
        apply: |data| {
            let nt = nt_headers(data)?;
            // The first section header follows the optional header (240 bytes in PE32+);
            // PointerToRawData is at offset 20 in it.
            let raw = usize::try_from(u32_at(data, nt + 4 + 20 + 240 + 20)?)
                .map_err(|e| e.to_string())?;
            let byte = data.get_mut(raw + 0x10).ok_or("no first section")?;
            *byte ^= 0x01;
            Ok(())
        },
    },
    SignatureMutation {
        what: "one byte of the PKCS#7 signature value flipped",
        apply: |data| {
            let nt = nt_headers(data)?;
            let table = usize::try_from(u32_at(data, nt + 4 + 20 + 112 + 8 * 4)?)
                .map_err(|e| e.to_string())?;
            let length = usize::try_from(u32_at(data, table)?).map_err(|e| e.to_string())?;
            // With no timestamp, the blob ends with the signer's RSA signature value.
            let byte = data
                .get_mut(table + length - 16)
                .ok_or("no certificate table")?;
            *byte ^= 0x01;
            Ok(())
        },
    },
];

/// Proves the signature check can fail, on the package's signed image `packaged` (signed by
/// `signer` from the build output `unsigned`): each mutation in [`SIGNATURE_MUTATIONS`], the good
/// image verified against another certificate, and the image signed without page hashes or with
/// SHA-1 must be rejected by [`verify`].
fn signature_self_test(
    packaged: &Path,
    unsigned: &Path,
    signer: &Signer,
    scratch: &Path,
) -> Result<(), String> {
    verify(packaged, &signer.anchor)?;
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let good = std::fs::read(packaged).map_err(|e| format!("{}: {e}", packaged.display()))?;
    let name = packaged.file_name().unwrap_or_default().to_string_lossy();
    let mutant = scratch.join(format!("mutant-{name}"));
    let expect_rejected =
        |what: &str, image: &Path, anchor: &Path, naming: &str| match verify(image, anchor) {
            Err(message) if message.contains(naming) => {
                let first = message.lines().next().unwrap_or_default();
                eprintln!("signature self-test: rejected ({what}): {first}");
                Ok(())
            }
            other => Err(format!(
                "signature self-test: {what}: expected a failure naming '{naming}', got {other:?}"
            )),
        };
    for mutation in SIGNATURE_MUTATIONS {
        let mut data = good.clone();
        (mutation.apply)(&mut data)?;
        std::fs::write(&mutant, &data).map_err(|e| format!("{}: {e}", mutant.display()))?;
        expect_rejected(
            mutation.what,
            &mutant,
            &signer.anchor,
            "Signature verification: ok",
        )?;
    }
    let (other, _) = ensure_generated_certificate(
        &scratch.join("other-certificate"),
        "/CN=wsk-attach self-test: another certificate",
    )?;
    expect_rejected(
        "verified against another certificate",
        packaged,
        &other,
        "Signature verification: ok",
    )?;
    for (what, hash, page_hashes, naming) in [
        ("signed without page hashes", "sha256", false, "page hashes"),
        ("signed with SHA-1", "sha1", true, "not SHA-256"),
    ] {
        let _ = std::fs::remove_file(&mutant);
        signer.sign_with(unsigned, &mutant, "self-test", hash, page_hashes)?;
        expect_rejected(what, &mutant, &signer.anchor, naming)?;
    }
    std::fs::remove_file(&mutant).map_err(|e| format!("{}: {e}", mutant.display()))?;
    Ok(())
}

/// The package checks of `cargo xtask ci`: packages the built `images` with the generated
/// certificate, checks each package, and proves the checks can fail (signature mutations, the
/// signed image check's self-test; the INF check's are unit tests of [`crate::inf`]). Returns the
/// signed images, in the order of `images`, for the Speakeasy and Wine suites.
pub fn ci(images: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    ensure_tools()?;
    let signer = Signer::new(&Options::default(), &package_root())?;
    let done = package_all(images, &signer)?;
    let scratch = scratch_dir();
    let mut signed_images = Vec::new();
    for (driver, dir) in &done {
        let packaged = dir.join(format!("{}.sys", driver.stem));
        signature_self_test(&packaged, &driver.image, &signer, &scratch)?;
        image::self_test_signed(
            &packaged,
            &root(),
            &image::map_beside(&driver.image),
            &scratch,
        )?;
        signed_images.push(packaged);
    }
    std::fs::remove_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    Ok(signed_images)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn release_is_accepted_and_changes_nothing() {
        assert_eq!(parse_args(&args(&[])), Ok(Options::default()));
        assert_eq!(parse_args(&args(&["--release"])), Ok(Options::default()));
    }

    #[test]
    fn pfx_options() {
        assert_eq!(
            parse_args(&args(&["--pfx", "a.pfx", "--pfx-password-env", "PW"])),
            Ok(Options {
                pfx: Some(Pfx {
                    file: "a.pfx".into(),
                    password_env: Some("PW".into()),
                }),
            })
        );
        assert!(parse_args(&args(&["--pfx"])).is_err());
        assert!(parse_args(&args(&["--pfx-password-env", "PW"])).is_err());
        assert!(parse_args(&args(&["--debug"])).is_err());
    }

    #[test]
    fn a_package_holds_the_image_inf_certificate_and_scripts() {
        assert_eq!(
            expected_files("wsk_echo"),
            [
                "Install-DriverPackage.ps1",
                "Uninstall-DriverPackage.ps1",
                "WskAttach.Common.ps1",
                "test-signing.cer",
                "wsk_echo.inf",
                "wsk_echo.sys",
            ]
        );
        for script in SCRIPTS {
            assert!(root().join("windows").join(script).is_file(), "{script}");
        }
    }
}
