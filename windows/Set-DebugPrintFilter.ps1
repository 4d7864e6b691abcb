<#
.SYNOPSIS
    Makes the driver's DbgPrintEx(DPFLTR_IHVDRIVER_ID, ...) output visible (or hides it with -Off).
.DESCRIPTION
    Sets HKLM\SYSTEM\CurrentControlSet\Control\Session Manager\Debug Print Filter\IHVDRIVER
    (REG_DWORD) to 0xFFFFFFFF, so messages of every level from component IHVDRIVER (id 77) reach
    the kernel debugger and DebugView (Sysinternals, "Capture Kernel"). Also sets DEFAULT the same
    way: wdk::println! goes through DbgPrint, which is component DEFAULT at INFO level.
    Read at boot: reboot, or in an attached kernel debugger run
        ed nt!Kd_IHVDRIVER_Mask 0xffffffff
        ed nt!Kd_DEFAULT_Mask 0xffffffff
    Idempotent. Needs administrator rights.
#>
[CmdletBinding()]
param([switch] $Off, [uint32] $Mask = [uint32]::MaxValue)

. "$PSScriptRoot\WskAttach.Common.ps1"
Assert-Admin

$key = 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Debug Print Filter'
$components = 'IHVDRIVER', 'DEFAULT'
if ($Off) {
    if (Test-Path $key) {
        foreach ($name in $components) { Remove-ItemProperty -Path $key -Name $name -ErrorAction SilentlyContinue }
    }
    Write-Host 'IHVDRIVER and DEFAULT debug print filters removed (default: errors only). Reboot to apply.'
    return
}
if (-not (Test-Path $key)) { New-Item -Path $key -Force | Out-Null }
foreach ($name in $components) {
    $current = (Get-ItemProperty -Path $key -Name $name -ErrorAction SilentlyContinue).$name
    # The registry returns a REG_DWORD as Int32: compare the bits.
    if ($null -ne $current -and [uint32]([int64]$current -band 0xFFFFFFFF) -eq $Mask) {
        Write-Host ('{0} is already 0x{1:X8}.' -f $name, $Mask)
    } else {
        New-ItemProperty -Path $key -Name $name -PropertyType DWord `
            -Value ([BitConverter]::ToInt32([BitConverter]::GetBytes($Mask), 0)) -Force | Out-Null
        Write-Host ('{0} set to 0x{1:X8}. Reboot, or in the debugger: ed nt!Kd_{0}_Mask 0x{1:x}' -f $name, $Mask)
    }
}
