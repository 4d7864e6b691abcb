<#
.SYNOPSIS
    Turns Driver Verifier on for wsk_attach.sys (standard checks, pool tracking, low-resources
    simulation), or off with -Off.
.DESCRIPTION
    On:  verifier.exe /flags 0x209BF /driver wsk_attach.sys
         0x209BB is what `verifier /standard` sets (special pool 0x1, force IRQL checking 0x2,
         pool tracking 0x8, I/O verification 0x10, deadlock detection 0x20, DMA checking 0x80,
         security checks 0x100, miscellaneous checks 0x800, DDI compliance checking 0x20000);
         0x4 adds randomized low-resources simulation. Pool tracking bugchecks (0xC4 / 0x62) if
         the driver unloads with pool still allocated.
         With -FaultProbability, also verifier.exe /faults <probability> WskA: inject allocation
         failures with that probability (1..10000, in 1/10000) into allocations tagged WskA only.
    Off: verifier.exe /reset (clears every Driver Verifier setting on the machine).
    Idempotent: the settings are read back with /querysettings. A reboot applies them.
    Needs administrator rights.
#>
[CmdletBinding()]
param(
    [switch] $Off,
    [ValidateRange(1, 10000)] [int] $FaultProbability,
    [switch] $Reboot
)

. "$PSScriptRoot\WskAttach.Common.ps1"
Assert-Admin

$StandardFlags = 0x209BB
$LowResourcesSimulation = 0x4
$flags = '0x{0:X}' -f ($StandardFlags -bor $LowResourcesSimulation)

function Get-VerifierSettings { (Invoke-Native verifier.exe @('/querysettings') -Allowed 0, 1, 2).Output }

# verifier.exe exits with 2 when the change needs a reboot; the settings read back decide.
if ($Off) {
    Invoke-Native verifier.exe @('/reset') -Allowed 0, 1, 2 | Out-Null
    if ((Get-VerifierSettings) -match [regex]::Escape($DriverFile)) {
        throw "Driver Verifier still lists $DriverFile after /reset."
    }
    Write-Host 'Driver Verifier settings cleared.'
} else {
    if (-not (Test-TestSigningActive)) {
        Write-Warning 'Test signing is not active: the driver will not load until it is (Enable-TestSigning.ps1).'
    }
    Invoke-Native verifier.exe @('/flags', $flags, '/driver', $DriverFile) -Allowed 0, 1, 2 | Out-Null
    if ($FaultProbability) {
        Invoke-Native verifier.exe @('/faults', "$FaultProbability", $PoolTag) -Allowed 0, 1, 2 | Out-Null
    }
    $settings = Get-VerifierSettings
    if ($settings -notmatch [regex]::Escape($DriverFile)) {
        throw "Driver Verifier does not list $DriverFile after /flags $flags; see the output above."
    }
    Write-Host "Driver Verifier set for $DriverFile with flags $flags."
}
Write-Host 'Reboot to apply (Driver Verifier settings take effect at boot).' -ForegroundColor Yellow
if ($Reboot) { Restart-Computer -Force }
