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

# Runs a native tool, echoes the command and its output, and throws when its exit code is not in
# $Allowed; the exit code alone decides. Its stderr is captured with its stdout (2>&1): Windows
# PowerShell 5.1 wraps each stderr line in an ErrorRecord, and under $ErrorActionPreference = 'Stop'
# the first one becomes a terminating error that hides the tool's message and exit code
# (PowerShell issue #3996: signtool, inf2cat and verifier write their errors to stderr). So the
# tool runs with 'Continue', local to this function, and every record is turned back into its text.
function Invoke-Native {
    param(
        [Parameter(Mandatory)] [string] $FilePath,
        [string[]] $ArgumentList = @(),
        [int[]] $Allowed = @(0)
    )
    $command = Get-Command -Name $FilePath -CommandType Application -ErrorAction SilentlyContinue |
        Select-Object -First 1
    if (-not $command) { throw "$FilePath not found (not on PATH and not a file)." }
    Write-Host "> $FilePath $($ArgumentList -join ' ')" -ForegroundColor DarkGray
    $ErrorActionPreference = 'Continue'
    # PowerShell 7.3+: a non-zero exit code must not throw before it is compared with $Allowed.
    $PSNativeCommandUseErrorActionPreference = $false
    $output = & $command.Source @ArgumentList 2>&1 | ForEach-Object {
        if ($_ -is [System.Management.Automation.ErrorRecord]) { $_.Exception.Message } else { "$_" }
    } | Out-String
    $code = $LASTEXITCODE
    $ErrorActionPreference = 'Stop'
    if ($output.Trim()) { Write-Host $output.TrimEnd() }
    if ($Allowed -notcontains $code) {
        throw "$FilePath $($ArgumentList -join ' ') failed with exit code $code.$(if ($output.Trim()) { " Its output: $($output.Trim())" })"
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

# Adds a certificate to LocalMachine\Root and LocalMachine\TrustedPublisher (once).
function Add-TrustedCertificate([System.Security.Cryptography.X509Certificates.X509Certificate2] $Cert) {
    foreach ($storeName in 'Root', 'TrustedPublisher') {
        $store = New-Object System.Security.Cryptography.X509Certificates.X509Store($storeName, 'LocalMachine')
        $store.Open('ReadWrite')
        try {
            if ($store.Certificates.Find('FindByThumbprint', $Cert.Thumbprint, $false).Count -eq 0) {
                $store.Add($Cert)
                Write-Host "Trusted $($Cert.Subject) in LocalMachine\$storeName."
            } else {
                Write-Host "$($Cert.Subject) is already in LocalMachine\$storeName."
            }
        } finally { $store.Close() }
    }
}

# Removes a certificate (by thumbprint) from LocalMachine\Root and LocalMachine\TrustedPublisher.
function Remove-TrustedCertificate([System.Security.Cryptography.X509Certificates.X509Certificate2] $Cert) {
    foreach ($storeName in 'Root', 'TrustedPublisher') {
        $store = New-Object System.Security.Cryptography.X509Certificates.X509Store($storeName, 'LocalMachine')
        $store.Open('ReadWrite')
        try {
            $found = $store.Certificates.Find('FindByThumbprint', $Cert.Thumbprint, $false)
            if ($found.Count -eq 0) {
                Write-Host "$($Cert.Subject) is not in LocalMachine\$storeName."
            } else {
                foreach ($item in $found) { $store.Remove($item) }
                Write-Host "Removed $($Cert.Subject) from LocalMachine\$storeName."
            }
        } finally { $store.Close() }
    }
}

# State of a kernel service ('Running', 'Stopped', ...; Win32_SystemDriver covers kernel
# services), or $null when it does not exist.
function Get-DriverServiceState {
    param([Parameter(Mandatory)] [string] $Name)
    $driver = Get-CimInstance Win32_SystemDriver -Filter "Name='$Name'" -ErrorAction SilentlyContinue
    if ($driver) { return $driver.State } else { return $null }
}

# Waits until the kernel service $Name is in state $Wanted; throws after $TimeoutSeconds.
function Wait-DriverServiceState {
    param(
        [Parameter(Mandatory)] [string] $Name,
        [Parameter(Mandatory)] [string] $Wanted,
        [int] $TimeoutSeconds = 30
    )
    $deadline = (Get-Date).AddSeconds($TimeoutSeconds)
    while ((Get-DriverServiceState $Name) -ne $Wanted) {
        if ((Get-Date) -gt $deadline) {
            throw "$Name did not reach '$Wanted' within $TimeoutSeconds s (state: $(Get-DriverServiceState $Name))."
        }
        Start-Sleep -Milliseconds 250
    }
}

# The package folder written by `cargo xtask package` (target\package\<driver>, copied to the VM):
# the driver (also its service name), its test-signed .sys, the certificate it is signed with
# (test-signing.cer), and where the .sys is installed.
function Resolve-DriverPackage {
    param([Parameter(Mandatory)] [string] $PackageDir, [string] $Driver)
    if (-not (Test-Path -LiteralPath $PackageDir -PathType Container)) {
        throw "No package folder ${PackageDir}: copy target\package\<driver> from the build machine ('cargo xtask package')."
    }
    $PackageDir = (Resolve-Path -LiteralPath $PackageDir).Path
    if (-not $Driver) {
        $images = @(Get-ChildItem -LiteralPath $PackageDir -Filter '*.sys' -File)
        if ($images.Count -ne 1) {
            throw "Expected one .sys in $PackageDir, found $($images.Count): pass -Driver NAME."
        }
        $Driver = $images[0].BaseName
    }
    $sys = Join-Path $PackageDir "$Driver.sys"
    $cer = Join-Path $PackageDir 'test-signing.cer'
    foreach ($file in $sys, $cer) {
        if (-not (Test-Path -LiteralPath $file -PathType Leaf)) {
            throw "Missing ${file}: copy the whole folder 'cargo xtask package' wrote."
        }
    }
    [pscustomobject]@{
        Driver      = $Driver
        Sys         = $sys
        Certificate = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2($cer)
        Installed   = Join-Path $env:SystemRoot "System32\drivers\$Driver.sys"
    }
}
