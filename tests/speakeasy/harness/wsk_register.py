"""The WskRegister layer (wsk.h): WskRegister / WskCaptureProviderNPI / WskReleaseProviderNPI /
WskDeregister, in front of the WSK subsystem (the scenario's first provider, ready at load, or
ready `wsk_ready_after_ms` later, or never).

WskRegister checks the WSK_CLIENT_NPI and its dispatch (statics of the image; an NPI or a
WSK_REGISTRATION on a stack is reported) and answers per scenario; WskCaptureProviderNPI answers
for the version the client registered, with WSK_NO_WAIT, a timeout (the thread blocks until the
subsystem is ready or the timeout passes) or WSK_INFINITE_WAIT, and writes a WSK_PROVIDER_NPI
whose dispatch says the scenario's version; a wait in DriverEntry is reported.
WskReleaseProviderNPI without a capture, and WskDeregister with a captured NPI not released (it
would block forever), are violations; so is a registration or a capture left at unload.

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/wsk/nf-wsk-wskregister,
nf-wsk-wskcaptureprovidernpi, nf-wsk-wskreleaseprovidernpi, nf-wsk-wskderegister.
"""
import struct
from typing import List, Optional

from .abi import (SIZEOF_WSK_CLIENT_DISPATCH, SIZEOF_WSK_CLIENT_NPI, SIZEOF_WSK_PROVIDER_NPI,
                  SIZEOF_WSK_REGISTRATION, STATUS_DEVICE_NOT_READY, STATUS_INVALID_PARAMETER,
                  STATUS_SUCCESS, TICKS_PER_MS, WSK_INFINITE_WAIT, WSK_NO_WAIT, seconds)
from .machine import hook
from .records import Event, Wait, WskRegistration
from .scenario import Provider


def _waits(harness, argv) -> bool:
    """WskCaptureProviderNPI's 'blocking' condition (tests/irql-rules.txt): a WaitTimeout other
    than WSK_NO_WAIT, with which the caller must be at PASSIVE_LEVEL."""
    return argv[1] & 0xFFFFFFFF != WSK_NO_WAIT


class WskRegisterModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wsk_regs: List[WskRegistration] = []
        self.wsk_capture_answers = 0

    def _wsk_provider(self) -> Provider:
        return self.scenario.providers[0] if self.scenario.providers else Provider()

    def _wsk_ready_at(self) -> Optional[int]:
        """When WskCaptureProviderNPI finds the WSK subsystem ready (None: never)."""
        if self.scenario.providers:
            return 0
        if self.scenario.wsk_ready_after_ms is None:
            return None
        return self.scenario.wsk_ready_after_ms * TICKS_PER_MS

    def _wsk_reg(self, addr: int, api: str) -> Optional[WskRegistration]:
        for reg in reversed(self.wsk_regs):
            if reg.address == addr:
                return reg
        self.violation("%s(0x%x): not a WSK_REGISTRATION that WskRegister initialised"
                       % (api, addr))
        return None

    def _live_wsk_reg(self, addr: int) -> Optional[WskRegistration]:
        for reg in self.wsk_regs:
            if (reg.address == addr and reg.status == STATUS_SUCCESS
                    and reg.deregistered_seq is None):
                return reg
        return None

    @hook("netio", "WskRegister", 2)
    def _h_wsk_register(self, emu, api, func, argv):
        npi, registration = argv
        e = self.ev("wskreg", "WskRegister", {"WskClientNpi": npi, "WskRegistration": registration})
        injected = self._inject("WskRegister")
        if self.profile.backend != "wskregister":
            self.violation("WskRegister: the %s profile is a raw NMR client, not a WskRegister one"
                           % self.profile.name)
        version = disp = ctx = 0
        if not self.readable(npi, SIZEOF_WSK_CLIENT_NPI):
            self.violation("WskRegister: WskClientNpi 0x%x not readable" % npi)
        else:
            ctx, disp = struct.unpack("<QQ", self.rd(npi, 16))
            if not self.readable(disp, SIZEOF_WSK_CLIENT_DISPATCH):
                self.violation("WskRegister: WSK_CLIENT_NPI.Dispatch 0x%x not readable" % disp)
            else:
                version, reserved, event = struct.unpack("<HHxxxxQ", self.rd(disp, 16))
                e.args["ClientDispatch.Version"] = version
                if reserved:
                    self.violation("WskRegister: WSK_CLIENT_DISPATCH.Reserved is %d" % reserved)
                if not self.in_image(disp):
                    self.violation("WskRegister: the WSK_CLIENT_DISPATCH at 0x%x is %s, not a "
                                   "static of the image (it must outlive the registration)"
                                   % (disp, self.where(disp)))
                if event and not self.in_image(event):
                    self.violation("WskRegister: WskClientEvent 0x%x is not code of the image"
                                   % event)
        for what, addr in (("WskClientNpi", npi), ("WskRegistration", registration)):
            if self.on_a_stack(addr):
                self.violation("WskRegister: %s 0x%x is %s: it must stay valid until WskDeregister "
                               "returns" % (what, addr, self.where(addr)))
        if not self.readable(registration, SIZEOF_WSK_REGISTRATION):
            self.violation("WskRegister: WskRegistration 0x%x not writable" % registration)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if self._live_wsk_reg(registration):
            self.violation("WskRegister(0x%x): that WSK_REGISTRATION is registered already (no "
                           "WskDeregister since)" % registration)
        status = self.scenario.register_status & 0xFFFFFFFF
        if injected is not None:
            status = injected
        reg = WskRegistration(address=registration, client_npi=npi, version=version,
                              client_dispatch=disp, client_context=ctx, status=status,
                              registered_seq=e.seq)
        self.wsk_regs.append(reg)
        if status == STATUS_SUCCESS:
            # What WskRegister keeps in the registration (opaque to the client).
            self.wr(registration, struct.pack("<QQQ", 1, self._fake_handle("wsk.registration"), 0))
        e.status = status
        return status

    def _capture_now(self, reg: WskRegistration, wait_ms: int, npi_out: int, e: Event) -> int:
        """The outcome of a capture, once it stops waiting (e: the call's event)."""
        out = e  # where the outcome is recorded: the call, or the return of a blocked call
        if e.args.get("blocked"):
            out = self.ev("wskreg-return", "WskCaptureProviderNPI",
                          text="after waiting %s" % seconds(self.now - e.time))
        ready = self._wsk_ready_at()
        if reg.deregistered_seq is not None or ready is None or self.now < ready:
            status = STATUS_DEVICE_NOT_READY
        else:
            p = self._wsk_provider()
            status = p.answer(reg.version, self.wsk_capture_answers) & 0xFFFFFFFF
            self.wsk_capture_answers += 1
            if status == STATUS_SUCCESS:
                if not self.readable(npi_out, SIZEOF_WSK_PROVIDER_NPI):
                    self.violation("WskCaptureProviderNPI: WskProviderNpi 0x%x not writable"
                                   % npi_out)
                    status = STATUS_INVALID_PARAMETER
                else:
                    if reg.wsk_client is None:
                        reg.wsk_client = self.alloc(0x40, "wsk.client")
                        reg.dispatch_version = p.dispatch_version or reg.version
                        reg.provider_dispatch = self._provider_dispatch(reg.dispatch_version)
                    self.wr(npi_out, struct.pack("<QQ", reg.wsk_client, reg.provider_dispatch))
                    reg.captures += 1
                    out.args["*Client"] = reg.wsk_client
                    out.args["*Dispatch"] = reg.provider_dispatch
                    out.args["*Dispatch.Version"] = reg.dispatch_version
        reg.capture_answers.append((wait_ms, status))
        e.status = out.status = status
        return status

    @hook("netio", "WskCaptureProviderNPI", 3, conditions={"blocking": _waits})
    def _h_wsk_capture(self, emu, api, func, argv):
        registration, wait_ms, npi_out = argv
        wait_ms &= 0xFFFFFFFF
        e = self.ev("wskreg", "WskCaptureProviderNPI", {"WskRegistration": registration,
                                                         "WaitTimeout": wait_ms,
                                                         "WskProviderNpi": npi_out})
        injected = self._inject("WskCaptureProviderNPI")
        if wait_ms != WSK_NO_WAIT:
            self.work_item_waits("WskCaptureProviderNPI (WaitTimeout %s)" % (
                "WSK_INFINITE_WAIT" if wait_ms == WSK_INFINITE_WAIT else "%d ms" % wait_ms))
        reg = self._live_wsk_reg(registration)
        if reg is None:
            self.violation("WskCaptureProviderNPI(0x%x): not a registered WSK_REGISTRATION"
                           % registration)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if injected is not None:
            # At once, whatever the wait: nothing captured.
            reg.capture_answers.append((wait_ms, injected))
            e.status = injected
            return injected
        ready = self._wsk_ready_at()
        if (ready is not None and self.now >= ready) or wait_ms == WSK_NO_WAIT:
            return self._capture_now(reg, wait_ms, npi_out, e)
        if self.current.kind == "run" and self.current.name == "DriverEntry":
            self.violation("WskCaptureProviderNPI waits (%s) in DriverEntry: the WSK subsystem "
                           "may load after the driver, so this can deadlock the boot"
                           % ("WSK_INFINITE_WAIT" if wait_ms == WSK_INFINITE_WAIT
                              else "%d ms" % wait_ms))
        deadline = None if wait_ms == WSK_INFINITE_WAIT else self.now + wait_ms * TICKS_PER_MS
        e.args["blocked"] = True
        return self._block(Wait("provider", "the WSK subsystem to become ready",
                                deadline=deadline, registration=reg),
                           lambda _v: self._capture_now(reg, wait_ms, npi_out, e))

    @hook("netio", "WskReleaseProviderNPI", 1)
    def _h_wsk_release(self, emu, api, func, argv):
        (registration,) = argv
        self.ev("wskreg", "WskReleaseProviderNPI", {"WskRegistration": registration})
        reg = self._live_wsk_reg(registration) or self._wsk_reg(registration,
                                                                 "WskReleaseProviderNPI")
        if reg is None:
            return None
        if reg.captures <= 0:
            self.violation("WskReleaseProviderNPI(0x%x) without a captured provider NPI"
                           % registration)
        else:
            reg.captures -= 1
            reg.releases += 1
        return None

    @hook("netio", "WskDeregister", 1)
    def _h_wsk_deregister(self, emu, api, func, argv):
        (registration,) = argv
        e = self.ev("wskreg", "WskDeregister", {"WskRegistration": registration})
        reg = self._live_wsk_reg(registration)
        if reg is None:
            self.violation("WskDeregister(0x%x): not a registered WSK_REGISTRATION (never "
                           "registered, or deregistered already)" % registration)
            return None
        reg.deregistered_seq = e.seq
        if reg.captures:
            # WskDeregister blocks until every captured NPI is released (and every socket
            # closed): the caller holds them, so it would wait forever.
            self.violation("WskDeregister would wait forever: %d captured provider NPI(s) not "
                           "released (WskReleaseProviderNPI)" % reg.captures)
        return None

    def _wsk_registrations_left(self, when: str):
        for reg in self.wsk_regs:
            if reg.status == STATUS_SUCCESS and reg.deregistered_seq is None:
                self.violation("WSK registration 0x%x left registered at %s (no WskDeregister)"
                               % (reg.address, when))
            if reg.captures:
                self.violation("%d captured WSK provider NPI(s) not released at %s"
                               % (reg.captures, when))
