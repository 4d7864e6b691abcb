<#
.SYNOPSIS
    Creates and trusts a test certificate, then test-signs the wsk_attach driver package.
.DESCRIPTION
    1. Reuses or creates the code-signing certificate "CN=wsk_attach test signing" in
       Cert:\LocalMachine\My (New-SelfSignedCertificate) and exports it next to the package.
    2. Trusts it: adds it to LocalMachine\Root and LocalMachine\TrustedPublisher.
    3. Signs wsk_attach.sys, rebuilds wsk_attach.cat with inf2cat (/os:10_x64), signs the .cat,
       and verifies both with signtool verify /pa.
    Idempotent: the certificate is created once and each run re-signs the same files.
    `cargo make` already signs with its own WDRLocalTestCert; -TrustCargoMakeCertificate only
    trusts that certificate (WDRLocalTestCert.cer in the package folder) and signs nothing.
    Needs administrator rights (LocalMachine stores).
.PARAMETER PackageDir
    The package folder; default target\debug\wsk_attach_package (then release).
#>
[CmdletBinding()]
param(
    [string] $PackageDir,
    [switch] $TrustCargoMakeCertificate,
    [string] $TimestampUrl   # e.g. http://timestamp.digicert.com; no timestamp when empty
)

. "$PSScriptRoot\WskAttach.Common.ps1"
Assert-Admin

if (-not $PackageDir) { $PackageDir = Get-DefaultPackageDir }
$PackageDir = (Resolve-Path $PackageDir).Path
$sys = Join-Path $PackageDir $DriverFile
$inf = Join-Path $PackageDir 'wsk_attach.inf'
$cat = Join-Path $PackageDir 'wsk_attach.cat'
foreach ($file in $sys, $inf) {
    if (-not (Test-Path $file)) { throw "Missing ${file}: build the package with 'cargo make' first." }
}

if ($TrustCargoMakeCertificate) {
    $cer = Join-Path $PackageDir 'WDRLocalTestCert.cer'
    if (-not (Test-Path $cer)) { throw "Missing ${cer}: cargo make writes it into the package folder." }
    Add-TrustedCertificate (New-Object System.Security.Cryptography.X509Certificates.X509Certificate2($cer))
    return
}

$subject = 'CN=wsk_attach test signing'
$cert = Get-ChildItem Cert:\LocalMachine\My -CodeSigningCert |
    Where-Object { $_.Subject -eq $subject -and $_.NotAfter -gt (Get-Date).AddDays(1) } |
    Sort-Object NotAfter -Descending | Select-Object -First 1
if ($cert) {
    Write-Host "Reusing $subject ($($cert.Thumbprint))."
} else {
    $cert = New-SelfSignedCertificate -Type CodeSigningCert -Subject $subject `
        -CertStoreLocation Cert:\LocalMachine\My -KeyAlgorithm RSA -KeyLength 2048 `
        -HashAlgorithm SHA256 -NotAfter (Get-Date).AddYears(2)
    Write-Host "Created $subject ($($cert.Thumbprint))."
}
Export-Certificate -Cert $cert -FilePath (Join-Path $PackageDir 'wsk_attach_test.cer') -Force | Out-Null
Add-TrustedCertificate $cert

$signtool = Find-KitTool signtool
$inf2cat = Find-KitTool inf2cat
$signArgs = @('sign', '/v', '/fd', 'SHA256', '/sm', '/s', 'My', '/sha1', $cert.Thumbprint)
if ($TimestampUrl) { $signArgs += @('/tr', $TimestampUrl, '/td', 'SHA256') }

Invoke-Native $signtool ($signArgs + $sys) | Out-Null
Invoke-Native $inf2cat @("/driver:$PackageDir", '/os:10_x64', '/uselocaltime') | Out-Null
Invoke-Native $signtool ($signArgs + $cat) | Out-Null
foreach ($file in $sys, $cat) {
    Invoke-Native $signtool @('verify', '/pa', '/v', $file) | Out-Null
}
Write-Host "Signed and verified: $sys, $cat" -ForegroundColor Green
