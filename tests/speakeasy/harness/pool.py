"""The pool, and the two system routines by which the driver picks its allocator.

ExAllocatePool2 (missing from Speakeasy), ExAllocatePoolWithTag (fills with 0xCD, like real
pool), ExFreePoolWithTag (checks the tag, double frees, poisons with 0xDD, as Driver Verifier's
special pool would); the untagged ExAllocatePool is reported. Every block must be freed exactly
once with its tag; anything left at unload is a leak. A scenario can fail every allocation, the
binding contexts', or chosen ones by number. MmGetSystemRoutineAddress(L"ExAllocatePool2") finds
it or not, per scenario; RtlGetVersion reports the scenario's Windows version (the driver's
ExAllocatePoolWithTag fallback uses NonPagedPoolNx from Windows 8 on, NonPagedPool before).

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/ : nf-wdm-exallocatepool2,
nf-wdm-exallocatepoolwithtag, nf-wdm-exfreepoolwithtag, nf-wdm-mmgetsystemroutineaddress,
nf-wdm-rtlgetversion.
"""
import struct
from typing import Dict, List, Optional

from .abi import STATUS_INVALID_PARAMETER, STATUS_SUCCESS, pool_tag, tag_name
from .machine import hook
from .records import Allocation


class PoolModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.allocations: Dict[int, Allocation] = {}
        self.alloc_list: List[Allocation] = []
        self.allocation_attempts = 0

    def pool_block(self, addr: int) -> Optional[Allocation]:
        for a in self.allocations.values():
            if a.freed_by is None and a.address <= addr < a.address + a.size:
                return a
        return None

    def _new_alloc(self, api, size, tag, pool) -> int:
        self.allocation_attempts += 1
        sc = self.scenario
        if self._inject(api) is not None:
            return 0
        if (sc.fail_pool_allocations or self.allocation_attempts in sc.fail_allocations
                or (sc.fail_binding_allocations and tag == pool_tag(self.profile.binding_tag))):
            return 0
        addr = self.alloc(size, "pool.%08x" % tag)
        a = Allocation(addr, size, tag, api, pool)
        self.allocations[addr] = a
        self.alloc_list.append(a)
        return addr

    @hook("ntoskrnl", "ExAllocatePool2", 3)
    def _h_exallocatepool2(self, emu, api, func, argv):
        flags, size, tag = argv
        tag &= 0xFFFFFFFF
        addr = self._new_alloc("ExAllocatePool2", size, tag, flags)
        self.ev("pool", "ExAllocatePool2", {"Flags": flags, "NumberOfBytes": size, "Tag": tag},
                status=addr)
        return addr

    @hook("ntoskrnl", "ExAllocatePoolWithTag", 3)
    def _h_exallocatepoolwithtag(self, emu, api, func, argv):
        pool, size, tag = argv[0] & 0xFFFFFFFF, argv[1], argv[2] & 0xFFFFFFFF
        addr = self._new_alloc("ExAllocatePoolWithTag", size, tag, pool)
        if addr:  # real pool is not zeroed
            self.wr(addr, b"\xcd" * size)
        self.ev("pool", "ExAllocatePoolWithTag", {"PoolType": pool, "NumberOfBytes": size,
                                                  "Tag": tag}, status=addr)
        return addr

    @hook("ntoskrnl", "ExAllocatePool", 2)
    def _h_exallocatepool(self, emu, api, func, argv):
        pool, size = argv[0] & 0xFFFFFFFF, argv[1]
        self.violation("ExAllocatePool (untagged) used")
        addr = self._new_alloc("ExAllocatePool", size, 0x656E6F4E, pool)  # 'None'
        self.ev("pool", "ExAllocatePool", {"PoolType": pool, "NumberOfBytes": size}, status=addr)
        return addr

    def _free(self, api, addr, tag):
        a = self.allocations.get(addr)
        if a is None:
            self.violation("%s(0x%x): not an allocation" % (api, addr))
            return
        if a.freed_by is not None:
            self.violation("%s(0x%x): double free" % (api, addr))
            return
        a.freed_by, a.free_tag = api, tag
        if tag is not None and tag != a.tag:
            self.violation("%s(0x%x, %s): allocated with tag %s" % (api, addr, tag_name(tag),
                                                                   tag_name(a.tag)))
        self.wr(addr, b"\xdd" * a.size)  # poison, as Driver Verifier's special pool would

    @hook("ntoskrnl", "ExFreePoolWithTag", 2)
    def _h_exfreepoolwithtag(self, emu, api, func, argv):
        addr, tag = argv[0], argv[1] & 0xFFFFFFFF
        self.ev("pool", "ExFreePoolWithTag", {"P": addr, "Tag": tag})
        self._free("ExFreePoolWithTag", addr, tag)
        return 0

    @hook("ntoskrnl", "ExFreePool", 1)
    def _h_exfreepool(self, emu, api, func, argv):
        (addr,) = argv
        self.ev("pool", "ExFreePool", {"P": addr})
        self._free("ExFreePool", addr, None)
        return 0

    @hook("ntoskrnl", "MmGetSystemRoutineAddress", 1)
    def _h_getroutine(self, emu, api, func, argv):
        (us,) = argv
        # UNICODE_STRING: Length bytes, not necessarily NUL-terminated (a Rust driver's is not),
        # so not Speakeasy's read_unicode_string, which reads up to a NUL.
        name = self._read_ustr(us, True) if us else ""
        length, maxlen, _ = struct.unpack("<HH4xQ", self.rd(us, 16)) if us else (0, 0, 0)
        if length % 2 or length > maxlen:
            self.violation("MmGetSystemRoutineAddress: malformed UNICODE_STRING (Length %d, "
                           "MaximumLength %d)" % (length, maxlen))
        if name == "ExAllocatePool2":
            addr = self.exallocatepool2_addr if self.scenario.exallocatepool2 else 0
        else:
            addr = 0
        self.ev("kernel", "MmGetSystemRoutineAddress", {"SystemRoutineName": name}, status=addr)
        return addr

    @hook("ntoskrnl", "RtlGetVersion", 1)
    def _h_rtlgetversion(self, emu, api, func, argv):
        (info,) = argv
        major, minor, build = self.scenario.windows_version
        size = self.rd32(info) if self.readable(info, 4) else None
        # RTL_OSVERSIONINFOW is 276 bytes, RTL_OSVERSIONINFOEXW 284: the driver says which.
        if size not in (276, 284):
            self.violation("RtlGetVersion: dwOSVersionInfoSize %s, expected 276 or 284" % size)
            status = STATUS_INVALID_PARAMETER
        else:
            self.wr(info + 4, struct.pack("<IIII", major, minor, build, 2))  # VER_PLATFORM_WIN32_NT
            status = STATUS_SUCCESS
        self.ev("kernel", "RtlGetVersion", {"dwOSVersionInfoSize": size or 0}, status=status,
                text="Windows %d.%d build %d" % (major, minor, build))
        return status

    def _pool_left(self, when: str):
        for a in self.alloc_list:
            if a.freed_by is None:
                self.violation("pool leak at %s: %d bytes tag %s at 0x%x (%s)"
                               % (when, a.size, tag_name(a.tag), a.address, a.api))
