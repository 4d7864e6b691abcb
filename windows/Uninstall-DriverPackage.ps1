<#
.SYNOPSIS
    Undoes Install-DriverPackage.ps1: stops and deletes the driver's service, removes its binary
    and the package's certificate.
.DESCRIPTION
    Run it from the package folder (it reads the driver name and test-signing.cer there), in an
    elevated PowerShell:
      1. sc.exe stop <driver> and waits for STOPPED (DriverUnload ran; already stopped is fine);
      2. sc.exe delete <driver> (already gone is fine);
      3. removes %SystemRoot%\System32\drivers\<driver>.sys;
      4. removes test-signing.cer from LocalMachine\Root and LocalMachine\TrustedPublisher, unless
         -KeepCertificate. Both packages of one checkout are signed with the same certificate:
         keep it while the other driver stays installed, or it will not start again.
    Idempotent. Needs administrator rights.
.PARAMETER PackageDir
    The package folder; default: the folder of this script.
.PARAMETER Driver
    The driver, which is also its service name; default: the one .sys in the package folder.
.PARAMETER KeepCertificate
    Leave the certificate trusted.
#>
[CmdletBinding()]
param(
    [string] $PackageDir = $PSScriptRoot,
    [string] $Driver,
    [switch] $KeepCertificate,
    [int] $TimeoutSeconds = 30
)

. "$PSScriptRoot\WskAttach.Common.ps1"
Assert-Admin

$package = Resolve-DriverPackage -PackageDir $PackageDir -Driver $Driver
$name = $package.Driver

$state = Get-DriverServiceState $name
if ($null -eq $state) {
    Write-Host "$name is not installed."
} else {
    if ($state -ne 'Stopped') {
        # 1062: ERROR_SERVICE_NOT_ACTIVE
        Invoke-Native sc.exe @('stop', $name) -Allowed 0, 1062 | Out-Null
        Wait-DriverServiceState -Name $name -Wanted 'Stopped' -TimeoutSeconds $TimeoutSeconds
        Write-Host "$name stopped (DriverUnload ran)." -ForegroundColor Green
    }
    # 1060: ERROR_SERVICE_DOES_NOT_EXIST, 1072: ERROR_SERVICE_MARKED_FOR_DELETE
    Invoke-Native sc.exe @('delete', $name) -Allowed 0, 1060, 1072 | Out-Null
}
if (Test-Path -LiteralPath $package.Installed) {
    Remove-Item -LiteralPath $package.Installed -Force
    Write-Host "Removed $($package.Installed)"
}
if ($KeepCertificate) {
    Write-Host "Kept $($package.Certificate.Subject) trusted (-KeepCertificate)."
} else {
    Remove-TrustedCertificate $package.Certificate
}
Write-Host "$name uninstalled." -ForegroundColor Green
