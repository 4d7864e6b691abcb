"""The registry as the driver sees it: its service key (the RegistryPath DriverEntry got) and
the scenario's subkeys and values (Scenario.registry). ZwOpenKey (OBJ_KERNEL_HANDLE required,
relative to an open key or absolute), ZwQueryValueKey (KeyValuePartialInformation, with
STATUS_BUFFER_TOO_SMALL / STATUS_BUFFER_OVERFLOW as documented), ZwClose (of a key, or of a
system thread's handle: ps.py); a key left open at unload is reported.

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/ : nf-wdm-zwopenkey,
nf-wdm-zwqueryvaluekey, nf-wdm-zwclose.
"""
import struct
from typing import Dict

from .abi import (STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_HANDLE,
                  STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS)
from .machine import hook


class RegistryModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Registry keys open: handle -> path relative to the service key ("" is the key).
        self.open_keys: Dict[int, str] = {}
        self.registry_path = ""  # what DriverEntry got: the service key
        self.next_key_handle = 0xFFFFFFFF80000100

    @hook("ntoskrnl", "ZwOpenKey", 3)
    def _h_zwopenkey(self, emu, api, func, argv):
        handle_out, access, attributes = argv
        access &= 0xFFFFFFFF
        status, path = STATUS_OBJECT_NAME_NOT_FOUND, None
        length, root, name_us, attrs = struct.unpack("<I4xQQI", self.rd(attributes, 28))
        name = self._read_ustr(name_us, True) if name_us else ""
        if length != 48:
            self.violation("ZwOpenKey: OBJECT_ATTRIBUTES.Length %d, expected 48" % length)
            status = STATUS_INVALID_PARAMETER
        elif not attrs & 0x200:
            self.violation("ZwOpenKey: a kernel driver's handle without OBJ_KERNEL_HANDLE "
                           "(Attributes 0x%x) is the current process's" % attrs)
            status = STATUS_INVALID_PARAMETER
        elif root == 0:
            if self.registry_path and name.lower() == self.registry_path.lower():
                path = ""
        elif root in self.open_keys:
            parent = self.open_keys[root]
            candidate = (parent + "\\" + name) if parent else name
            path = next((k for k in self.scenario.registry
                         if k.lower() == candidate.lower()), None)
        else:
            self.violation("ZwOpenKey: RootDirectory 0x%x is not an open key" % root)
            status = STATUS_INVALID_HANDLE
        injected = self._inject("ZwOpenKey")
        if injected is not None:
            status, path = injected, None
        if path is not None:
            handle = self.next_key_handle
            self.next_key_handle += 4
            self.open_keys[handle] = path
            self.wr(handle_out, struct.pack("<Q", handle))
            status = STATUS_SUCCESS
        self.ev("kernel", "ZwOpenKey", {"RootDirectory": root, "ObjectName": name,
                                        "DesiredAccess": access}, status=status)
        return status

    @hook("ntoskrnl", "ZwQueryValueKey", 6)
    def _h_zwqueryvaluekey(self, emu, api, func, argv):
        handle, name_us, klass, info, length, result_out = argv
        length &= 0xFFFFFFFF
        name = self._read_ustr(name_us, True) if name_us else ""
        status = STATUS_OBJECT_NAME_NOT_FOUND
        injected = self._inject("ZwQueryValueKey")
        if handle not in self.open_keys:
            self.violation("ZwQueryValueKey: 0x%x is not an open key" % handle)
            status = STATUS_INVALID_HANDLE
        elif injected is not None:
            status = injected  # nothing written
        elif klass != 2:
            self.violation("ZwQueryValueKey: class %d, the harness knows "
                           "KeyValuePartialInformation (2)" % klass)
            status = STATUS_INVALID_PARAMETER
        else:
            values = self.scenario.registry.get(self.open_keys[handle], {})
            found = next((v for k, v in values.items() if k.lower() == name.lower()), None)
            if found is not None:
                kind, data = found
                needed = 12 + len(data)
                self.wr(result_out, struct.pack("<I", needed))
                if length < 12:
                    status = STATUS_BUFFER_TOO_SMALL
                else:
                    self.wr(info, struct.pack("<III", 0, kind, len(data)))
                    room = min(len(data), length - 12)
                    if room:
                        self.wr(info + 12, data[:room])
                    status = STATUS_SUCCESS if room == len(data) else STATUS_BUFFER_OVERFLOW
        self.ev("kernel", "ZwQueryValueKey", {"KeyHandle": handle, "ValueName": name,
                                              "Length": length}, status=status)
        return status

    @hook("ntoskrnl", "ZwClose", 1)
    def _h_zwclose(self, emu, api, func, argv):
        (handle,) = argv
        if handle in self.open_keys:
            del self.open_keys[handle]
            status = STATUS_SUCCESS
        elif self._close_thread_handle(handle):  # a system thread's (ps.py)
            status = STATUS_SUCCESS
        else:
            self.violation("ZwClose: 0x%x is not a handle the driver opened" % handle)
            status = STATUS_INVALID_HANDLE
        self.ev("kernel", "ZwClose", {"Handle": handle}, status=status)
        return status

    def _keys_left(self, when: str):
        for handle, path in self.open_keys.items():
            self.violation("registry key handle 0x%x (%s) not closed at %s (ZwClose)"
                           % (handle, path or "the service key", when))
