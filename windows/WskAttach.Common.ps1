# Shared by the test-VM scripts in this folder: dot-source it (. "$PSScriptRoot\WskAttach.Common.ps1").
# Names, checks that fail early with a clear message, and a wrapper for native tools.

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$script:ServiceName = 'wsk_attach'
$script:DriverFile  = 'wsk_attach.sys'
$script:PoolTag     = 'WskA'      # u32::from_le_bytes(*b"WskA"): shown as "WskA" by poolmon and !poolused
$script:RepoRoot    = Split-Path -Parent $PSScriptRoot

function Assert-Windows {
    if ($PSVersionTable.PSEdition -eq 'Core' -and -not $IsWindows) {
        throw "This script drives a Windows test machine; run it on the Windows VM, not on $([System.Environment]::OSVersion.Platform)."
    }
}

function Assert-Admin {
    Assert-Windows
    $principal = New-Object Security.Principal.WindowsPrincipal([Security.Principal.WindowsIdentity]::GetCurrent())
    if (-not $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) {
        throw "$(Split-Path -Leaf $MyInvocation.PSCommandPath): needs administrator rights. Start PowerShell with 'Run as administrator' and try again."
    }
}

# True when the running boot has test signing on (bcdedit shows what is configured for the next
# boot; the kernel's own view is the CodeIntegrity option, read through WMI/registry).
function Test-TestSigningActive {
    $options = (Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control' -Name SystemStartOptions).SystemStartOptions
    return ($options -match '(^|\s)TESTSIGNING(\s|$)')
}

function Assert-TestSigning {
    if (-not (Test-TestSigningActive)) {
        throw ("Test signing is not active on this boot, so Windows will refuse to load a test-signed driver " +
               "(sc.exe start fails with error 577). Run Enable-TestSigning.ps1 as administrator, turn Secure Boot " +
               "off in the VM's firmware settings if it is on, and reboot.")
    }
}

# Runs a native tool, echoes the command, and throws when its exit code is not in $Allowed.
function Invoke-Native {
    param(
        [Parameter(Mandatory)] [string] $FilePath,
        [string[]] $ArgumentList = @(),
        [int[]] $Allowed = @(0)
    )
    Write-Host "> $FilePath $($ArgumentList -join ' ')" -ForegroundColor DarkGray
    $output = & $FilePath @ArgumentList 2>&1 | Out-String
    $code = $LASTEXITCODE
    if ($output.Trim()) { Write-Host $output.TrimEnd() }
    if ($Allowed -notcontains $code) {
        throw "$FilePath $($ArgumentList -join ' ') failed with exit code $code."
    }
    [pscustomobject]@{ ExitCode = $code; Output = $output }
}

# Finds a WDK/SDK tool (signtool, inf2cat) on PATH or under the newest Windows Kits 10 bin folder.
function Find-KitTool {
    param([Parameter(Mandatory)] [string] $Name)
    $onPath = Get-Command "$Name.exe" -ErrorAction SilentlyContinue
    if ($onPath) { return $onPath.Source }
    $kits = Join-Path ${env:ProgramFiles(x86)} 'Windows Kits\10\bin'
    $arch = if ($env:PROCESSOR_ARCHITECTURE -eq 'ARM64') { 'arm64' } else { 'x64' }
    $found = Get-ChildItem -Path $kits -Recurse -Filter "$Name.exe" -ErrorAction SilentlyContinue |
        Where-Object { $_.DirectoryName -match "\\($arch|x86)$" } |
        Sort-Object FullName -Descending | Select-Object -First 1
    if (-not $found) {
        throw "$Name.exe not found on PATH or under '$kits'. Install the WDK (or open an eWDK prompt) on this machine."
    }
    return $found.FullName
}

# Default package folder written by `cargo make` (debug first, then release).
function Get-DefaultPackageDir {
    foreach ($profile in 'debug', 'release') {
        $dir = Join-Path $script:RepoRoot "target\$profile\wsk_attach_package"
        if (Test-Path (Join-Path $dir $script:DriverFile)) { return $dir }
    }
    throw "No package folder with $($script:DriverFile) under target\debug or target\release: run 'cargo make' first or pass -PackageDir."
}
