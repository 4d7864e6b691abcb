<#
.SYNOPSIS
    Turns on test signing (bcdedit /set testsigning on) so Windows loads a test-signed wsk_attach.sys.
.DESCRIPTION
    Idempotent: does nothing when test signing is already configured. Needs administrator rights.
    Secure Boot must be off (VM firmware settings), or Windows ignores the option. Takes effect
    after a reboot; -Off turns it back off.
#>
[CmdletBinding()]
param([switch] $Off, [switch] $Reboot)

. "$PSScriptRoot\WskAttach.Common.ps1"
Assert-Admin

try {
    if (Confirm-SecureBootUEFI) {
        Write-Warning 'Secure Boot is on: Windows ignores testsigning until it is turned off in the VM firmware settings.'
    }
} catch {
    # Legacy BIOS VM, or the cmdlet is not supported: nothing to check.
    Write-Verbose "Secure Boot state unknown: $($_.Exception.Message)"
}

$current = (Invoke-Native bcdedit.exe @('/enum', '{current}')).Output
$configured = $current -match '(?im)^\s*testsigning\s+Yes\s*$'
$wanted = -not $Off

if ($configured -eq $wanted) {
    Write-Host "testsigning is already $(if ($wanted) { 'on' } else { 'off' }) in the boot configuration."
} else {
    Invoke-Native bcdedit.exe @('/set', 'testsigning', $(if ($wanted) { 'on' } else { 'off' })) | Out-Null
    Write-Host "testsigning set $(if ($wanted) { 'on' } else { 'off' })."
}

if ((Test-TestSigningActive) -eq $wanted) {
    Write-Host 'The running boot already matches: no reboot needed.'
} elseif ($Reboot) {
    Restart-Computer -Force
} else {
    Write-Host 'Reboot for it to take effect (or run again with -Reboot).' -ForegroundColor Yellow
}
