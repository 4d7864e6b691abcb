"""NMR, the Network Module Registrar (netio.sys), as a WSK client driver sees it.

NmrRegisterClient reads the driver's NPI_CLIENT_CHARACTERISTICS (Version 0, Length 72, NpiId =
WSK, ModuleId = the profile's GUID, Number 0, a static of the image) and, for each provider
already registered, calls the driver's ClientAttachProvider before it writes the client handle
(as NMR may). NmrClientAttachProvider answers per scenario and on success writes a WSK_CLIENT
and a WSK_PROVIDER_DISPATCH (provider.py). NmrDeregisterClient calls ClientDetachProvider then
ClientCleanupBindingContext for every attached binding and returns STATUS_PENDING; a detach that
returns STATUS_PENDING waits for NmrClientDetachProviderComplete.
NmrWaitForClientDeregisterComplete checks that everything is detached and cleaned up.

Rules from https://learn.microsoft.com/windows-hardware/drivers/ddi/netioddk/ :
nf-netioddk-nmrregisterclient, nf-netioddk-nmrderegisterclient,
nf-netioddk-nmrwaitforclientderegistercomplete, nf-netioddk-nmrclientattachprovider,
nf-netioddk-nmrclientdetachprovidercomplete, and the callbacks
nc-netioddk-npi_client_attach_provider_fn, nc-netioddk-npi_client_detach_provider_fn,
nc-netioddk-npi_client_cleanup_binding_context_fn.
"""
import struct
import uuid
from typing import List, Optional

from .abi import (NPI_WSK_INTERFACE_ID, PROVIDER_MODULE_ID, SIZEOF_NPI_CLIENT_CHARACTERISTICS,
                  SIZEOF_NPI_MODULEID, SIZEOF_NPI_REGISTRATION_INSTANCE,
                  SIZEOF_WSK_CLIENT_DISPATCH, STATUS_INVALID_PARAMETER, STATUS_PENDING,
                  STATUS_SUCCESS, guid_bytes, status_name)
from .machine import hook
from .records import AttachTry, Binding
from .scenario import Provider


class NmrModel:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bindings: List[Binding] = []
        self.client: Optional[dict] = None
        self.client_handle: Optional[int] = None
        self.deregistered = False
        self.wait_done = False
        self.deregister_failed = False
        self.client_gone = False  # NMR deregistered it itself (the system shutdown)

    def _fake_handle(self, what: str) -> int:
        # Real memory, so a driver that dereferences a handle does not crash in a surprising way.
        return self.alloc(0x40, "nmr.%s" % what)

    def _read_characteristics(self, addr: int) -> dict:
        raw = self.rd(addr, SIZEOF_NPI_CLIENT_CHARACTERISTICS)
        ver, length, attach, detach, cleanup = struct.unpack_from("<HH4xQQQ", raw, 0)
        rver, rsize, npiid_p, modid_p, number, chars_p = struct.unpack_from("<HH4xQQI4xQ", raw, 32)
        c = dict(address=addr, Version=ver, Length=length, ClientAttachProvider=attach,
                 ClientDetachProvider=detach, ClientCleanupBindingContext=cleanup,
                 reg_Version=rver, reg_Size=rsize, reg_NpiId=npiid_p, reg_ModuleId=modid_p,
                 reg_Number=number, reg_NpiSpecificCharacteristics=chars_p)
        c["NpiId"] = uuid.UUID(bytes_le=self.rd(npiid_p, 16)) if self.readable(npiid_p, 16) else None
        if self.readable(modid_p, SIZEOF_NPI_MODULEID):
            ml, mt = struct.unpack("<HxxI", self.rd(modid_p, 8))
            c["ModuleId"] = dict(Length=ml, Type=mt,
                                 Guid=uuid.UUID(bytes_le=self.rd(modid_p + 8, 16)))
        else:
            c["ModuleId"] = None
        return c

    def _check_characteristics(self, c: dict):
        def chk(cond, msg):
            if not cond:
                self.violation("NPI_CLIENT_CHARACTERISTICS: " + msg)
        chk(c["Version"] == 0, "Version %d, expected 0" % c["Version"])
        chk(c["Length"] == SIZEOF_NPI_CLIENT_CHARACTERISTICS,
            "Length %d, expected 72" % c["Length"])
        chk(self.readable(c["ClientAttachProvider"]), "ClientAttachProvider is not code")
        chk(self.readable(c["ClientDetachProvider"]), "ClientDetachProvider is not code")
        chk(c["reg_Version"] == 0, "ClientRegistrationInstance.Version %d" % c["reg_Version"])
        chk(c["reg_Size"] == SIZEOF_NPI_REGISTRATION_INSTANCE,
            "ClientRegistrationInstance.Size %d, expected 40" % c["reg_Size"])
        chk(c["NpiId"] == NPI_WSK_INTERFACE_ID, "NpiId %s is not NPI_WSK_INTERFACE_ID" % c["NpiId"])
        chk(c["ModuleId"] is not None, "ModuleId not readable")
        if c["ModuleId"]:
            chk(c["ModuleId"]["Length"] == SIZEOF_NPI_MODULEID,
                "ModuleId.Length %d, expected 24" % c["ModuleId"]["Length"])
            chk(c["ModuleId"]["Type"] == 1, "ModuleId.Type %d, expected MIT_GUID"
                % c["ModuleId"]["Type"])
            chk(c["ModuleId"]["Guid"] == self.profile.module_id,
                "ModuleId.Guid {%s}, expected %s's {%s}" % (
                    str(c["ModuleId"]["Guid"]).upper(), self.profile.name,
                    str(self.profile.module_id).upper()))
        chk(c["reg_Number"] == 0, "ClientRegistrationInstance.Number %d" % c["reg_Number"])
        chk(self.in_image(c["address"]),
            "characteristics at 0x%x are not a static inside the image" % c["address"])

    def _make_registration_instance(self, p: Provider) -> int:
        ri = self.alloc(SIZEOF_NPI_REGISTRATION_INSTANCE, "provider.registration")
        npiid = self.alloc(16, "provider.npiid")
        self.wr(npiid, guid_bytes(p.npi_id))
        modid = self.alloc(SIZEOF_NPI_MODULEID, "provider.moduleid")
        self.wr(modid, struct.pack("<HxxI", SIZEOF_NPI_MODULEID, 1) + guid_bytes(PROVIDER_MODULE_ID))
        chars = 0
        if p.characteristics:
            chars = self.alloc(4, "provider.characteristics")
            self.wr(chars, struct.pack("<HH", p.highest & 0xFFFF, p.lowest & 0xFFFF))
        self.wr(ri, struct.pack("<HH4xQQI4xQ", 0, SIZEOF_NPI_REGISTRATION_INSTANCE, npiid, modid,
                                0, chars))
        return ri

    def _attach_gen(self, p: Provider):
        b = Binding(handle=self._fake_handle("binding"), provider=p,
                    registration_instance=self._make_registration_instance(p))
        self.bindings.append(b)
        b.state = "attaching"
        st = yield from self.call(
            self.client["ClientAttachProvider"],
            [b.handle, self.client_context, b.registration_instance], "ClientAttachProvider",
            arg_names=("NmrBindingHandle", "ClientContext", "ProviderRegistrationInstance"))
        self.events[-1].args["provider"] = p.describe()
        b.attach_status = st
        ok_try = any(t.status == STATUS_SUCCESS for t in b.tries)
        if b.state in ("detached", "detach-pending"):  # detached during the attach call
            if st != STATUS_SUCCESS:
                self.violation("ClientAttachProvider returned %s after NmrClientAttachProvider "
                               "succeeded" % status_name(st))
            if b.state == "detached":
                yield from self._cleanup_gen(b)
        elif st == STATUS_SUCCESS:
            b.state = "attached"
            if not ok_try:
                self.violation("ClientAttachProvider returned STATUS_SUCCESS without a successful "
                               "NmrClientAttachProvider")
        else:
            b.state = "refused"
            if ok_try:
                self.violation("ClientAttachProvider returned %s after NmrClientAttachProvider "
                               "succeeded" % status_name(st))
            if b.tries and st != b.tries[-1].status:
                self.violation("ClientAttachProvider returned %s, not the status of the last "
                               "NmrClientAttachProvider (%s)" % (status_name(st),
                                                                 status_name(b.tries[-1].status)))
        return st

    def _detach_gen(self, b: Binding, why: str, cleanup: bool = True):
        b.state = "detaching"
        b.complete_called = False
        st = yield from self.call(self.client["ClientDetachProvider"], [b.client_context],
                                  "ClientDetachProvider", arg_names=("ClientBindingContext",))
        self.events[-1].args["why"] = why
        b.detach_status = st
        if st == STATUS_SUCCESS:
            if b.complete_called:
                self.violation("NmrClientDetachProviderComplete called although "
                               "ClientDetachProvider returned STATUS_SUCCESS")
        elif st == STATUS_PENDING:
            if not b.complete_called:
                b.state = "detach-pending"
                return
        else:
            self.violation("ClientDetachProvider returned %s (only STATUS_SUCCESS or "
                           "STATUS_PENDING are allowed)" % status_name(st))
        if cleanup:
            yield from self._cleanup_gen(b)
        else:
            b.state = "detached"

    def _cleanup_gen(self, b: Binding):
        fn = self.client["ClientCleanupBindingContext"]
        if fn:
            yield from self.call(fn, [b.client_context], "ClientCleanupBindingContext",
                                 returns=False, arg_names=("ClientBindingContext",))
        b.state = "cleaned"

    @hook("netio", "NmrRegisterClient", 3)
    def _h_register(self, emu, api, func, argv):
        chars, ctx, phandle = argv
        e = self.ev("nmr", "NmrRegisterClient", {"ClientCharacteristics": chars,
                                                  "ClientContext": ctx,
                                                  "NmrClientHandle": phandle})
        if self.profile.backend != "nmr":
            self.violation("NmrRegisterClient: the %s profile is a %s client, not a raw NMR one"
                           % (self.profile.name, self.profile.backend))
        if self.client is not None:
            self.violation("NmrRegisterClient called twice")
        self.client = self._read_characteristics(chars)
        self.client_context = ctx
        self._check_characteristics(self.client)
        injected = self._inject("NmrRegisterClient")
        if injected is not None:
            e.status = injected
            return e.status
        if self.scenario.register_status != STATUS_SUCCESS:
            e.status = self.scenario.register_status
            return e.status
        self.client_handle = self._fake_handle("client")

        def gen():
            for p in self.scenario.providers:
                yield from self._attach_gen(p)
            # NMR writes the handle when NmrRegisterClient returns, i.e. after the attach calls.
            self.wr64(phandle, self.client_handle)
            e.status = STATUS_SUCCESS
            e.args["*NmrClientHandle"] = self.client_handle
            self.ev("nmr-return", "NmrRegisterClient", status=STATUS_SUCCESS,
                    text="NMR wrote client handle 0x%x" % self.client_handle)
            return STATUS_SUCCESS
        return self._start(gen())

    def _binding(self, handle) -> Optional[Binding]:
        for b in self.bindings:
            if b.handle == handle:
                return b
        return None

    @hook("netio", "NmrClientAttachProvider", 5)
    def _h_client_attach(self, emu, api, func, argv):
        handle, ctx, disp, p_ctx, p_disp = argv
        e = self.ev("nmr", "NmrClientAttachProvider", {
            "NmrBindingHandle": handle, "ClientBindingContext": ctx, "ClientDispatch": disp,
            "ProviderBindingContext": p_ctx, "ProviderDispatch": p_disp})
        injected = self._inject("NmrClientAttachProvider")
        b = self._binding(handle)
        if b is None:
            self.violation("NmrClientAttachProvider with an unknown binding handle 0x%x" % handle)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        if b.state != "attaching":
            self.violation("NmrClientAttachProvider outside ClientAttachProvider (binding %s)"
                           % b.state)
        if not self.readable(disp, SIZEOF_WSK_CLIENT_DISPATCH):
            self.violation("NmrClientAttachProvider: ClientDispatch 0x%x not readable" % disp)
            e.status = STATUS_INVALID_PARAMETER
            return e.status
        version, reserved, event = struct.unpack("<HHxxxxQ", self.rd(disp, 16))
        e.args["ClientDispatch.Version"] = version
        e.args["ClientDispatch.WskClientEvent"] = event
        status = b.provider.answer(version, len(b.tries)) & 0xFFFFFFFF
        if injected is not None:
            status = injected  # the provider did not attach: nothing written
        blk = self.pool_block(ctx)
        t = AttachTry(binding=handle, client_context=ctx, version=version, status=status,
                      client_dispatch=disp, reserved=reserved, client_event=event,
                      out_client_in_context=bool(blk and blk.address <= p_ctx < blk.address + blk.size),
                      out_dispatch_in_context=bool(blk and blk.address <= p_disp < blk.address + blk.size),
                      context_is_pool=blk is not None and blk.address == ctx)
        b.tries.append(t)
        if status == STATUS_SUCCESS:
            wsk_client = self.alloc(0x40, "wsk.client")
            pd = self._provider_dispatch(b.provider.dispatch_version or version)
            self.wr64(p_ctx, wsk_client)
            self.wr64(p_disp, pd)
            b.client_context = ctx
            b.wsk_client = wsk_client
            b.provider_dispatch = pd
            e.args["*ProviderBindingContext"] = wsk_client
            e.args["*ProviderDispatch"] = pd
        e.status = status
        if status == STATUS_SUCCESS and b.provider.detach_during_attach:
            def gen():
                self.ev("provider", "provider deregisters",
                        text="%s, while NmrClientAttachProvider is returning" % b.provider.name)
                yield from self._detach_gen(b, "provider deregistration during attach",
                                            cleanup=False)
                return status
            return self._start(gen())
        return status

    @hook("netio", "NmrDeregisterClient", 1)
    def _h_deregister(self, emu, api, func, argv):
        (handle,) = argv
        e = self.ev("nmr", "NmrDeregisterClient", {"NmrClientHandle": handle})
        if handle != self.client_handle:
            self.violation("NmrDeregisterClient(0x%x): not the handle NmrRegisterClient gave "
                           "(%s)" % (handle, hex(self.client_handle or 0)))
        if self.deregistered:
            self.violation("NmrDeregisterClient called twice")
        self.deregistered = True
        injected = self._inject("NmrDeregisterClient")
        if injected is not None:
            # NMR did not initiate the deregistration: no detach, the bindings stay attached.
            self.deregister_failed = True
            e.status = injected
            return injected

        def gen():
            for b in self.bindings:
                if b.state == "attached":
                    yield from self._detach_gen(b, "NmrDeregisterClient")
            e.status = STATUS_PENDING
            self.ev("nmr-return", "NmrDeregisterClient", status=STATUS_PENDING)
            return STATUS_PENDING
        return self._start(gen())

    @hook("netio", "NmrClientDetachProviderComplete", 1)
    def _h_detach_complete(self, emu, api, func, argv):
        (handle,) = argv
        self.ev("nmr", "NmrClientDetachProviderComplete", {"NmrBindingHandle": handle})
        b = self._binding(handle)
        if b is None:
            self.violation("NmrClientDetachProviderComplete with unknown handle 0x%x" % handle)
            return 0
        b.complete_calls += 1
        if b.state == "detaching":
            b.complete_called = True
            if self.in_callback("ClientDetachProvider"):
                # On the callback's own thread: it has not returned, let alone STATUS_PENDING.
                # (From another thread, NMR takes it once the callback returned: _detach_gen.)
                self.violation("NmrClientDetachProviderComplete(0x%x) inside "
                               "ClientDetachProvider: only after it returned STATUS_PENDING "
                               "(NPI_CLIENT_DETACH_PROVIDER_FN)" % handle)
            return 0
        if b.state == "detach-pending":
            b.complete_called = True
            attaching = any(c.name == "ClientAttachProvider"
                            for t in self.threads if t.state in ("running", "blocked")
                            for _, _, c, _ in t.pending)
            if attaching:
                b.state = "detached"  # cleaned up when ClientAttachProvider returns
                return 0

            def gen():
                yield from self._cleanup_gen(b)
                return 0
            return self._start(gen())
        if b.detach_status == STATUS_SUCCESS:
            self.violation("NmrClientDetachProviderComplete(0x%x) after ClientDetachProvider "
                           "returned STATUS_SUCCESS: only after it returned STATUS_PENDING, once "
                           "(NPI_CLIENT_DETACH_PROVIDER_FN)" % handle)
        else:
            self.violation("NmrClientDetachProviderComplete(0x%x) for a binding in state %s"
                           % (handle, b.state))
        return 0

    @hook("netio", "NmrWaitForClientDeregisterComplete", 1)
    def _h_wait(self, emu, api, func, argv):
        (handle,) = argv
        e = self.ev("nmr", "NmrWaitForClientDeregisterComplete", {"NmrClientHandle": handle})
        injected = self._inject("NmrWaitForClientDeregisterComplete")
        if self.deregister_failed:
            # No deregistration was initiated: what the documentation says of a wait before
            # NmrDeregisterClient (nothing to wait for).
            self.wait_done = True
            e.status = injected if injected is not None else STATUS_INVALID_PARAMETER
            return e.status
        if handle != self.client_handle:
            self.violation("NmrWaitForClientDeregisterComplete(0x%x): not the client handle"
                           % handle)
        if not self.deregistered:
            self.violation("NmrWaitForClientDeregisterComplete before NmrDeregisterClient")
        stuck = [b for b in self.bindings if b.state in ("attached", "detaching", "detach-pending")]
        if stuck:
            self.violation("NmrWaitForClientDeregisterComplete would wait forever: %d binding(s) "
                           "not detached and cleaned up" % len(stuck))
        self.wait_done = True
        e.status = STATUS_SUCCESS if injected is None else injected
        return e.status

    def _nmr_shutdown_gen(self):
        """Generator: the system shuts down with the client still registered (its
        NmrDeregisterClient failed): NMR detaches and cleans up each binding still attached, as a
        provider's deregistration would."""
        if self.client is None or not self.deregister_failed:
            return
        self.ev("provider", "system shutdown", text="NMR deregisters the client still "
                "registered: it detaches its bindings")
        for b in self.bindings:
            if b.state == "attached":
                yield from self._detach_gen(b, "system shutdown")
        self.client_gone = True

    def _nmr_registered(self) -> bool:
        """Whether the client is still registered with NMR: never deregistered, its
        NmrDeregisterClient failed, or a binding of it not cleaned up yet."""
        if self.client_handle is None or self.client_gone:
            return False
        return (not self.deregistered or self.deregister_failed
                or any(b.state in ("attached", "detaching", "detach-pending", "detached")
                       for b in self.bindings))

    def _nmr_unmapped(self, when: str):
        """The image is unmapped: a client still registered with NMR would have NMR call into
        unmapped code (its detach and cleanup callbacks)."""
        if self._nmr_registered():
            self.violation("%s with the NMR client still registered and the image unmapped: "
                           "NMR would call into it (its deregistration was not complete: keep the "
                           "device object, and the image, until it is)" % when)

    def _nmr_left(self):
        """After the emulation: the unload deregistered and waited."""
        # (After a failed NmrDeregisterClient nothing was initiated: there is nothing to wait for.)
        if (self.client is not None and self.unload_ran and not self.wait_done
                and not self.deregister_failed):
            self.violation("DriverUnload did not call NmrWaitForClientDeregisterComplete")
        if self.client is not None and self.unload_ran and not self.deregistered:
            self.violation("DriverUnload did not call NmrDeregisterClient")
