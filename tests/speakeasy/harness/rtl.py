"""Run-time library routines of ntoskrnl that Speakeasy lacks and the C echo driver
(baseline/wsk_echo_baseline.c) calls: RtlUnicodeToUTF8N (its Message, sent as UTF-8) and
RtlIpv4StringToAddressW (its Host, a dotted IPv4 literal).

RtlUnicodeToUTF8N converts UTF-16LE to UTF-8 (invalid code units become U+FFFD and the status
is STATUS_SOME_NOT_MAPPED; a destination too small gets what fits and STATUS_BUFFER_TOO_SMALL;
NULL destination: the size needed); both Destination and ActualByteCount NULL, a NULL source, or
an odd byte count are STATUS_INVALID_PARAMETER(_4, _5). RtlIpv4StringToAddressW: with Strict, four
decimal parts of 0..255 separated by dots; without, the one to four part forms of inet_addr
(decimal, octal with a leading 0, hexadecimal with 0x), the last part filling the rest of the
address; the address in network order, *Terminator at the first character not converted;
STATUS_INVALID_PARAMETER otherwise.

Pages: https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-rtlunicodetoutf8n,
https://learn.microsoft.com/windows/win32/api/ip2string/nf-ip2string-rtlipv4stringtoaddressw.
"""
import struct
from typing import List, Optional, Tuple

from .abi import STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_PARAMETER, STATUS_SUCCESS
from .machine import hook

STATUS_SOME_NOT_MAPPED = 0x00000107
STATUS_INVALID_PARAMETER_4 = 0xC00000F2
STATUS_INVALID_PARAMETER_5 = 0xC00000F3


def _ipv4_parts(text: str, strict: bool) -> Tuple[Optional[List[int]], int]:
    """The parts of the address at the start of text, and how many characters they took (None:
    not an address)."""
    parts: List[int] = []
    i = 0
    while True:
        start = i
        base = 10
        if not strict and text[i:i + 2].lower() == "0x":
            base, i = 16, i + 2
        elif not strict and text[i:i + 1] == "0" and text[i + 1:i + 2].isdigit():
            base = 8
        digits = "0123456789abcdef"[:base]
        j = i
        while j < len(text) and text[j].lower() in digits:
            j += 1
        if j == i or (base == 16 and j == start + 2):
            return None, 0
        parts.append(int(text[i:j], base))
        i = j
        if i < len(text) and text[i] == "." and len(parts) < 4:
            i += 1
            continue
        break
    if strict and (len(parts) != 4 or any(p > 255 for p in parts)):
        return None, 0
    return parts, i


def ipv4_address(text: str, strict: bool) -> Tuple[Optional[bytes], int]:
    """The address (4 bytes, network order) at the start of text, and the characters it took."""
    parts, used = _ipv4_parts(text, strict)
    if parts is None:
        return None, 0
    last_bits = 8 * (5 - len(parts))
    if any(p > 255 for p in parts[:-1]) or parts[-1] >= 1 << last_bits:
        return None, 0
    value = 0
    for p in parts[:-1]:
        value = value << 8 | p
    value = value << last_bits | parts[-1]
    return struct.pack(">I", value), used


class RtlModel:
    @hook("ntoskrnl", "RtlUnicodeToUTF8N", 5)
    def _h_rtlunicodetoutf8n(self, emu, api, func, argv):
        dest, max_bytes, actual_p, source, source_bytes = argv
        max_bytes, source_bytes = max_bytes & 0xFFFFFFFF, source_bytes & 0xFFFFFFFF
        e = self.ev("kernel", "RtlUnicodeToUTF8N", {"MaxByteCount": max_bytes,
                                                     "UnicodeStringByteCount": source_bytes})
        if not dest and not actual_p:
            e.status = STATUS_INVALID_PARAMETER
        elif not source:
            e.status = STATUS_INVALID_PARAMETER_4
        elif source_bytes % 2:
            e.status = STATUS_INVALID_PARAMETER_5
        if e.status is not None:
            return e.status
        raw = self.rd(source, source_bytes) if source_bytes else b""
        try:
            text, status = raw.decode("utf-16-le"), STATUS_SUCCESS
        except UnicodeDecodeError:
            text, status = raw.decode("utf-16-le", "replace"), STATUS_SOME_NOT_MAPPED
        out = text.encode("utf-8")
        if dest:
            if len(out) > max_bytes:  # what fits, whole characters only
                fit = b""
                for ch in text:
                    piece = ch.encode("utf-8")
                    if len(fit) + len(piece) > max_bytes:
                        break
                    fit += piece
                out, status = fit, STATUS_BUFFER_TOO_SMALL
            if out:
                self.wr(dest, out)
        if actual_p:
            self.wr(actual_p, struct.pack("<I", len(out)))
        e.status = status
        return status

    @hook("ntoskrnl", "RtlIpv4StringToAddressW", 4)
    def _h_rtlipv4stringtoaddressw(self, emu, api, func, argv):
        s, strict, terminator_p, addr_p = argv
        strict &= 0xFF
        units = []
        while len(units) < 64:  # a NUL-terminated string: an address is far shorter
            u = self.rd16(s + 2 * len(units))
            if u == 0:
                break
            units.append(u)
        text = "".join(chr(u) for u in units)
        e = self.ev("kernel", "RtlIpv4StringToAddressW", {"S": text, "Strict": strict})
        address, used = ipv4_address(text, bool(strict))
        if address is None:
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        self.wr(addr_p, address)
        self.wr64(terminator_p, s + 2 * used)
        e.args["*Addr"] = ".".join(str(b) for b in address)
        e.status = STATUS_SUCCESS
        return STATUS_SUCCESS
