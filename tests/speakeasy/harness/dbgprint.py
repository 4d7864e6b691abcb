"""Debug output: DbgPrintEx and DbgPrint, formatted by the harness's own printf (flags, width,
precision, h/l/ll/I64/z, %s %S %Z %wZ %p %c) and recorded in order with the other events.

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-dbgprintex.
"""
from .machine import hook


class DbgPrintModel:
    @hook("ntoskrnl", "DbgPrintEx", 3)
    def _h_dbgprintex(self, emu, api, func, argv):
        cid, level, fmt = emu.get_func_argv(_cdecl(), 3)
        text = self._format(fmt, 3)
        self.ev("log", "DbgPrintEx", {"ComponentId": cid & 0xFFFFFFFF,
                                      "Level": level & 0xFFFFFFFF}, text=text)
        if self.current is not None:
            self.current.last_log = text
        return len(text)

    @hook("ntoskrnl", "DbgPrint", 1)
    def _h_dbgprint(self, emu, api, func, argv):
        (fmt,) = emu.get_func_argv(_cdecl(), 1)
        text = self._format(fmt, 1)
        self.ev("log", "DbgPrint", {}, text=text)
        if self.current is not None:
            self.current.last_log = text
        return len(text)

    def _format(self, fmt_addr: int, first_vararg: int) -> str:
        fmt = self.emu.read_mem_string(fmt_addr, width=1)
        nslots = [first_vararg]

        def nxt():
            v = self.emu.get_func_argv(_cdecl(), nslots[0] + 1)[nslots[0]]
            nslots[0] += 1
            return v
        return format_printf(fmt, nxt, self._read_cstr, self._read_wstr, self._read_ustr)

    def _read_cstr(self, a):
        return self.emu.read_mem_string(a, width=1) if a else "(null)"

    def _read_wstr(self, a):
        return self.emu.read_mem_string(a, width=2) if a else "(null)"


def _cdecl():
    import speakeasy.winenv.arch as _arch
    return _arch.CALL_CONV_CDECL


# ---------------------------------------------------------------------------------------------
# printf, as DbgPrintEx formats (enough of it: flags, width, precision, h/l/ll/I64/z, %Z %wZ)
# ---------------------------------------------------------------------------------------------
def format_printf(fmt: str, next_arg, read_cstr, read_wstr, read_ustr) -> str:
    out = []
    i, n = 0, len(fmt)
    while i < n:
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        i += 1
        if i < n and fmt[i] == "%":
            out.append("%")
            i += 1
            continue
        flags = ""
        while i < n and fmt[i] in "-+ #0":
            flags += fmt[i]
            i += 1
        width = ""
        if i < n and fmt[i] == "*":
            width = str(_s32(next_arg()))
            i += 1
        else:
            while i < n and fmt[i].isdigit():
                width += fmt[i]
                i += 1
        prec = None
        if i < n and fmt[i] == ".":
            i += 1
            prec = ""
            if i < n and fmt[i] == "*":
                prec = str(max(0, _s32(next_arg())))
                i += 1
            else:
                while i < n and fmt[i].isdigit():
                    prec += fmt[i]
                    i += 1
            prec = prec or "0"
        bits = 32
        wide = False
        while i < n:
            if fmt.startswith("I64", i):
                bits, i = 64, i + 3
            elif fmt.startswith("I32", i):
                bits, i = 32, i + 3
            elif fmt.startswith("ll", i):
                bits, i = 64, i + 2
            elif fmt.startswith("hh", i):
                bits, i = 8, i + 2
            elif fmt[i] == "h":
                bits, i = 16, i + 1
            elif fmt[i] in "lL":
                i += 1  # long is 32-bit on Windows
            elif fmt[i] in "zjtI":
                bits, i = 64, i + 1
            elif fmt[i] == "w":
                wide, i = True, i + 1
            else:
                break
        if i >= n:
            out.append("%" + flags + width)
            break
        conv = fmt[i]
        i += 1
        spec = "%" + flags + width + ("" if prec is None else "." + prec)
        if conv in "diuxXoc":
            v = next_arg() & ((1 << bits) - 1)
            if conv in "di" and v >> (bits - 1):
                v -= 1 << bits
            if conv == "c":
                out.append((spec + "c") % chr(v & 0xFF))
            else:
                out.append((spec + ("d" if conv in "iu" else conv)) % v)
        elif conv == "p":
            out.append("%016X" % next_arg())
        elif conv == "s":
            s = (read_wstr if wide else read_cstr)(next_arg())
            out.append((spec + "s") % s)
        elif conv == "S":
            out.append((spec + "s") % read_wstr(next_arg()))
        elif conv == "Z":
            out.append((spec + "s") % read_ustr(next_arg(), wide))
        else:
            out.append("%" + flags + width + conv)  # unknown: shown as written
    return "".join(out)


def _s32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v
