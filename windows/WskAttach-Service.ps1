<#
.SYNOPSIS
    Installs, starts, queries, stops or deletes the wsk_attach kernel service with sc.exe.
.DESCRIPTION
    Each action is idempotent and leaves the service in the asked state:
      Install  copies wsk_attach.sys to %SystemRoot%\System32\drivers and runs
               sc.exe create wsk_attach type= kernel start= demand binPath= <that file>
               (or sc.exe config if the service exists; the binary is replaced only while stopped)
      Start    sc.exe start wsk_attach (already running is fine); needs test signing
      Query    sc.exe query and sc.exe qc
      Stop     sc.exe stop wsk_attach and waits for STOPPED (already stopped is fine)
      Delete   stops it, sc.exe delete wsk_attach, removes the copied binary
      Cycle    Install, Start, Query, Stop, Delete in turn
    Needs administrator rights. The same can be done from the INF (a primitive driver):
    pnputil /add-driver wsk_attach.inf /install.
.PARAMETER PackageDir
    The signed package folder (Install); default target\debug\wsk_attach_package (then release).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory, Position = 0)]
    [ValidateSet('Install', 'Start', 'Query', 'Stop', 'Delete', 'Cycle')]
    [string] $Action,
    [string] $PackageDir,
    [int] $TimeoutSeconds = 30
)

. "$PSScriptRoot\WskAttach.Common.ps1"
Assert-Admin

$installedBinary = Join-Path $env:SystemRoot "System32\drivers\$DriverFile"

function Get-ServiceState {
    # Win32_SystemDriver covers kernel services; $null when the service does not exist.
    $driver = Get-CimInstance Win32_SystemDriver -Filter "Name='$ServiceName'" -ErrorAction SilentlyContinue
    if ($driver) { return $driver.State } else { return $null }
}

function Wait-ServiceState([string] $Wanted) {
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    while ((Get-ServiceState) -ne $Wanted) {
        if ((Get-Date) -gt $deadline) {
            throw "$ServiceName did not reach '$Wanted' within $TimeoutSeconds s (state: $(Get-ServiceState))."
        }
        Start-Sleep -Milliseconds 250
    }
}

function Install-WskService {
    if (-not $PackageDir) { $script:PackageDir = Get-DefaultPackageDir }
    $source = Join-Path $PackageDir $DriverFile
    if (-not (Test-Path $source)) { throw "Missing ${source}: build and sign the package first." }
    $state = Get-ServiceState
    if ($state -eq 'Running') {
        Write-Warning "$ServiceName is running: leaving its binary in place (stop it to update)."
    } else {
        Copy-Item -Path $source -Destination $installedBinary -Force
        Write-Host "Copied $source -> $installedBinary"
    }
    if ($null -eq $state) {
        Invoke-Native sc.exe @('create', $ServiceName, 'type=', 'kernel', 'start=', 'demand',
            'error=', 'normal', 'binPath=', $installedBinary, 'DisplayName=', 'wsk_attach WSK client') | Out-Null
    } else {
        Invoke-Native sc.exe @('config', $ServiceName, 'type=', 'kernel', 'start=', 'demand',
            'error=', 'normal', 'binPath=', $installedBinary) | Out-Null
    }
}

function Start-WskService {
    if ($null -eq (Get-ServiceState)) { throw "$ServiceName is not installed: run '.\WskAttach-Service.ps1 Install' first." }
    if ((Get-ServiceState) -eq 'Running') { Write-Host "$ServiceName is already running."; return }
    Assert-TestSigning
    # 1056: ERROR_SERVICE_ALREADY_RUNNING
    $result = Invoke-Native sc.exe @('start', $ServiceName) -Allowed 0, 1056, 577, 1275
    switch ($result.ExitCode) {
        577  { throw "Windows cannot verify the signature of $installedBinary (error 577): sign it with Sign-Package.ps1 and check that test signing is active." }
        1275 { throw "Windows blocked $installedBinary from loading (error 1275): check Sign-Package.ps1, test signing and the memory-integrity (HVCI) setting." }
    }
    Wait-ServiceState 'Running'
    Write-Host "$ServiceName is running." -ForegroundColor Green
}

function Show-WskService {
    if ($null -eq (Get-ServiceState)) { Write-Host "$ServiceName is not installed."; return }
    Invoke-Native sc.exe @('query', $ServiceName) | Out-Null
    Invoke-Native sc.exe @('qc', $ServiceName) | Out-Null
}

function Stop-WskService {
    $state = Get-ServiceState
    if ($null -eq $state -or $state -eq 'Stopped') { Write-Host "$ServiceName is not running."; return }
    # 1062: ERROR_SERVICE_NOT_ACTIVE
    Invoke-Native sc.exe @('stop', $ServiceName) -Allowed 0, 1062 | Out-Null
    Wait-ServiceState 'Stopped'
    Write-Host "$ServiceName stopped (DriverUnload ran)." -ForegroundColor Green
}

function Remove-WskService {
    Stop-WskService
    if ($null -ne (Get-ServiceState)) {
        # 1060: ERROR_SERVICE_DOES_NOT_EXIST, 1072: ERROR_SERVICE_MARKED_FOR_DELETE
        Invoke-Native sc.exe @('delete', $ServiceName) -Allowed 0, 1060, 1072 | Out-Null
    } else {
        Write-Host "$ServiceName is not installed."
    }
    if (Test-Path $installedBinary) {
        Remove-Item $installedBinary -Force
        Write-Host "Removed $installedBinary"
    }
}

switch ($Action) {
    'Install' { Install-WskService }
    'Start'   { Start-WskService }
    'Query'   { Show-WskService }
    'Stop'    { Stop-WskService }
    'Delete'  { Remove-WskService }
    'Cycle'   { Install-WskService; Start-WskService; Show-WskService; Stop-WskService; Remove-WskService }
}
