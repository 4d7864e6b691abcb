<#
.SYNOPSIS
    Reports the kernel pool held under the driver's tag "WskA" and fails if any is left after unload.
.DESCRIPTION
    Reads the kernel's pool tag table the way poolmon.exe does: NtQuerySystemInformation with
    SystemPoolTagInformation (22), which returns SYSTEM_POOLTAG_INFORMATION { ULONG Count;
    SYSTEM_POOLTAG TagInfo[Count]; }, each entry (x64, 40 bytes): Tag[4] @0, PagedAllocs @4,
    PagedFrees @8, PagedUsed @16 (SIZE_T), NonPagedAllocs @24, NonPagedFrees @28,
    NonPagedUsed @32 (SIZE_T).
    With the service stopped (DriverUnload has run) every allocation tagged WskA must have been
    freed: outstanding = allocs - frees must be 0 and bytes in use 0. Exit code 1 when not.
    Run it while the driver is loaded (-AllowRunning) to just see its live allocations.
    The same in a kernel debugger: !poolused 2 WskA  (or poolmon.exe /iWskA from the WDK).
#>
[CmdletBinding()]
param([string] $Tag = 'WskA', [switch] $AllowRunning)

. "$PSScriptRoot\WskAttach.Common.ps1"
Assert-Admin
if ($Tag.Length -ne 4) { throw "A pool tag has exactly 4 characters; got '$Tag'." }

if (-not ('WskAttach.PoolTags' -as [type])) {
    Add-Type -TypeDefinition @'
using System;
using System.Collections.Generic;
using System.Runtime.InteropServices;
namespace WskAttach {
    public sealed class PoolTagUsage {
        public string Tag;
        public long PagedAllocs, PagedFrees, PagedUsed, NonPagedAllocs, NonPagedFrees, NonPagedUsed;
        public long Outstanding { get { return (PagedAllocs - PagedFrees) + (NonPagedAllocs - NonPagedFrees); } }
        public long BytesUsed { get { return PagedUsed + NonPagedUsed; } }
    }
    public static class PoolTags {
        const int SystemPoolTagInformation = 22;
        const int STATUS_INFO_LENGTH_MISMATCH = unchecked((int)0xC0000004);
        [DllImport("ntdll.dll")]
        static extern int NtQuerySystemInformation(int infoClass, IntPtr buffer, int length, out int returnLength);

        public static List<PoolTagUsage> Query() {
            if (IntPtr.Size != 8) { throw new PlatformNotSupportedException("run from 64-bit PowerShell"); }
            int length = 1 << 20;
            for (int attempt = 0; attempt < 8; attempt++) {
                IntPtr buffer = Marshal.AllocHGlobal(length);
                try {
                    int needed;
                    int status = NtQuerySystemInformation(SystemPoolTagInformation, buffer, length, out needed);
                    if (status == STATUS_INFO_LENGTH_MISMATCH) { length = Math.Max(length * 2, needed + 4096); continue; }
                    if (status < 0) { throw new InvalidOperationException(String.Format("NtQuerySystemInformation(SystemPoolTagInformation) failed: 0x{0:X8}", status)); }
                    int count = Marshal.ReadInt32(buffer, 0);
                    var result = new List<PoolTagUsage>(count);
                    for (int i = 0; i < count; i++) {
                        int at = 8 + i * 40;   // TagInfo starts at 8 (SIZE_T alignment); 40 bytes per entry
                        var tag = new byte[4];
                        Marshal.Copy(IntPtr.Add(buffer, at), tag, 0, 4);
                        result.Add(new PoolTagUsage {
                            Tag = System.Text.Encoding.ASCII.GetString(tag),
                            PagedAllocs = (uint)Marshal.ReadInt32(buffer, at + 4),
                            PagedFrees = (uint)Marshal.ReadInt32(buffer, at + 8),
                            PagedUsed = Marshal.ReadInt64(buffer, at + 16),
                            NonPagedAllocs = (uint)Marshal.ReadInt32(buffer, at + 24),
                            NonPagedFrees = (uint)Marshal.ReadInt32(buffer, at + 28),
                            NonPagedUsed = Marshal.ReadInt64(buffer, at + 32),
                        });
                    }
                    return result;
                } finally { Marshal.FreeHGlobal(buffer); }
            }
            throw new InvalidOperationException("the pool tag table kept growing; try again");
        }
    }
}
'@
}

$state = (Get-CimInstance Win32_SystemDriver -Filter "Name='$ServiceName'" -ErrorAction SilentlyContinue).State
if ($state -eq 'Running' -and -not $AllowRunning) {
    throw "$ServiceName is running: stop it first ('.\WskAttach-Service.ps1 Stop'), or pass -AllowRunning to only look."
}

$usage = [WskAttach.PoolTags]::Query() | Where-Object { $_.Tag -ceq $Tag }
if (-not $usage) {
    Write-Host "No pool was ever allocated with tag '$Tag' since boot (the driver has not allocated, or is not loaded)."
    exit 0
}
$usage | Format-List Tag, NonPagedAllocs, NonPagedFrees, NonPagedUsed, PagedAllocs, PagedFrees, PagedUsed, Outstanding, BytesUsed
if ($state -eq 'Running') {
    Write-Host "$ServiceName is running: the numbers above are live allocations, not leaks."
    exit 0
}
if ($usage.Outstanding -ne 0 -or $usage.BytesUsed -ne 0) {
    Write-Host ("LEAK: {0} allocation(s), {1} byte(s) tagged '{2}' still allocated after unload." -f $usage.Outstanding, $usage.BytesUsed, $Tag) -ForegroundColor Red
    exit 1
}
Write-Host "No leak: every '$Tag' allocation was freed ($($usage.NonPagedAllocs + $usage.PagedAllocs) allocations since boot)." -ForegroundColor Green
exit 0
