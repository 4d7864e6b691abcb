<#
.SYNOPSIS
    Installs and starts a test-signed driver package built on Linux by `cargo xtask package`.
.DESCRIPTION
    Run it from the package folder (a copy of target\package\wsk_attach or target\package\wsk_echo)
    in an elevated PowerShell on a test VM whose running boot has test signing on
    (bcdedit /set testsigning on, then reboot; Enable-TestSigning.ps1 does it). It:
      1. imports test-signing.cer, the certificate the .sys is signed with, into
         LocalMachine\Root and LocalMachine\TrustedPublisher;
      2. copies <driver>.sys to %SystemRoot%\System32\drivers (not while the service runs);
      3. sc.exe create <driver> type= kernel start= demand binPath= <that file>
         (sc.exe config when the service already exists);
      4. sc.exe start <driver> (unless -NoStart), then sc.exe query <driver>.
    Idempotent: a second run leaves the same state. Uninstall-DriverPackage.ps1 undoes it.
    No catalog is needed: sc.exe loads a non-PnP driver by the signature embedded in the .sys.
    Needs administrator rights.
.PARAMETER PackageDir
    The package folder; default: the folder of this script.
.PARAMETER Driver
    The driver, which is also its service name (wsk_attach, wsk_echo); default: the one .sys in
    the package folder.
.PARAMETER NoStart
    Trust, copy and create the service, but do not start it.
#>
[CmdletBinding()]
param(
    [string] $PackageDir = $PSScriptRoot,
    [string] $Driver,
    [switch] $NoStart,
    [int] $TimeoutSeconds = 30
)

. "$PSScriptRoot\WskAttach.Common.ps1"
Assert-Admin

$package = Resolve-DriverPackage -PackageDir $PackageDir -Driver $Driver
$name = $package.Driver
Write-Host "Package $name ($($package.Sys)), signed by $($package.Certificate.Subject) ($($package.Certificate.Thumbprint))."

Add-TrustedCertificate $package.Certificate

# With the certificate trusted, Windows reports the embedded signature as Valid; a hash mismatch
# or no signature at all will not load, test signing or not.
$signature = Get-AuthenticodeSignature -LiteralPath $package.Sys
Write-Host "Signature of $($package.Sys): $($signature.Status) ($($signature.StatusMessage))"
if ($signature.Status -in 'NotSigned', 'HashMismatch') {
    throw "$($package.Sys) is not loadable: its signature is $($signature.Status). Copy the package again, or rebuild it with 'cargo xtask package'."
}
if ($null -eq $signature.SignerCertificate -or $signature.SignerCertificate.Thumbprint -ne $package.Certificate.Thumbprint) {
    throw "$($package.Sys) is not signed with test-signing.cer of the same package folder: copy the whole folder again."
}

$state = Get-DriverServiceState $name
if ($state -eq 'Running') {
    Write-Warning "$name is running: leaving $($package.Installed) in place (Uninstall-DriverPackage.ps1 or sc.exe stop $name first to update it)."
} else {
    Copy-Item -LiteralPath $package.Sys -Destination $package.Installed -Force
    Write-Host "Copied $($package.Sys) -> $($package.Installed)"
}
if ($null -eq $state) {
    Invoke-Native sc.exe @('create', $name, 'type=', 'kernel', 'start=', 'demand', 'error=', 'normal',
        'binPath=', $package.Installed, 'DisplayName=', "$name (test-signed, Linux build)") | Out-Null
} else {
    Invoke-Native sc.exe @('config', $name, 'type=', 'kernel', 'start=', 'demand', 'error=', 'normal',
        'binPath=', $package.Installed) | Out-Null
}

if ($NoStart) {
    Write-Host "Installed $name; not started (-NoStart): sc.exe start $name"
} elseif ((Get-DriverServiceState $name) -eq 'Running') {
    Write-Host "$name is already running."
} else {
    Assert-TestSigning
    # 1056: ERROR_SERVICE_ALREADY_RUNNING; 577: ERROR_INVALID_IMAGE_HASH; 1275: ERROR_DRIVER_BLOCKED
    $result = Invoke-Native sc.exe @('start', $name) -Allowed 0, 1056, 577, 1275
    switch ($result.ExitCode) {
        577  { throw "Windows cannot verify the signature of $($package.Installed) (error 577): check that test signing is active in this boot (bcdedit /enum {current}) and that Secure Boot is off." }
        1275 { throw "Windows blocked $($package.Installed) from loading (error 1275): check test signing and the memory-integrity (HVCI) setting." }
    }
    Wait-DriverServiceState -Name $name -Wanted 'Running' -TimeoutSeconds $TimeoutSeconds
    Write-Host "$name is running (DriverEntry returned STATUS_SUCCESS)." -ForegroundColor Green
}
Invoke-Native sc.exe @('query', $name) | Out-Null
