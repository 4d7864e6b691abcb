//! The model's state: one process-wide record, behind a mutex that is never held while the
//! driver's code runs.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::Status;
use wsk_sys::PVOID;
use wsk_sys::{
    GUID, MIT_GUID, NPI_CLIENT_CHARACTERISTICS, NPI_MODULEID, NPI_MODULEID_u,
    NPI_REGISTRATION_INSTANCE, NPI_WSK_INTERFACE_ID, WSK_PROVIDER_CHARACTERISTICS,
    WSK_PROVIDER_DISPATCH,
};

use super::WAIT_LIMIT;

/// WSK 1.0, `MAKE_WSK_VERSION(1, 0)`.
pub const WSK_1_0: u16 = wsk_sys::MAKE_WSK_VERSION(1, 0);
/// WSK 1.1, `MAKE_WSK_VERSION(1, 1)`.
pub const WSK_1_1: u16 = wsk_sys::MAKE_WSK_VERSION(1, 1);

/// A provider registered with the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProviderId(pub usize);

/// How a provider looks and answers.
#[derive(Clone, Debug)]
#[allow(clippy::struct_excessive_bools)] // one switch per behaviour a test can choose
pub struct ProviderConfig {
    /// The `NpiId` of its registration instance.
    pub npi_id: GUID,
    /// Its `WSK_PROVIDER_CHARACTERISTICS`; `None` makes `NpiSpecificCharacteristics` NULL.
    pub characteristics: Option<WSK_PROVIDER_CHARACTERISTICS>,
    /// The `Size` of its registration instance.
    pub instance_size: u16,
    /// Scripted `NmrClientAttachProvider` answers by requested version; a version not listed
    /// gets `STATUS_SUCCESS` inside the characteristics' range and `STATUS_NOINTERFACE` outside.
    pub answers: Vec<(u16, Status)>,
    /// Detach (and clean up) the binding inside `NmrClientAttachProvider`, before it returns.
    pub detach_during_attach: bool,
    /// Return a NULL dispatch table on success (a broken provider).
    pub null_dispatch: bool,
    /// Run inside `NmrClientAttachProvider` (after an early detach, if any), before it returns to
    /// the client: to hold an attach there while other things happen.
    pub during_attach: Option<AttachHook>,
    /// The `Version` its dispatch table says, when not the version attached (Wine's says 1.0).
    pub dispatch_version: Option<u16>,
    /// `WskSocket` fails (completes its IRP) with this status.
    pub socket_failure: Option<Status>,
    /// `WskSocket` does not complete until the IRP is cancelled (then `STATUS_CANCELLED`).
    pub socket_hangs_until_cancelled: bool,
    /// With `socket_hangs_until_cancelled`: the cancel comes too late, the provider makes the
    /// socket anyway and completes the IRP with `STATUS_SUCCESS` (legal: a cancel is a request).
    pub socket_made_despite_cancel: bool,
    /// `WskSocket` is a stub: returns `STATUS_NOT_IMPLEMENTED` without completing its IRP (Wine).
    pub socket_stub: bool,
    /// `WskConnect` fails with this status (`STATUS_CONNECTION_REFUSED`, say).
    pub connect_failure: Option<Status>,
    /// The peer never answers: what the client sends is not echoed.
    pub peer_silent: bool,
    /// `IoCancelIrp` does nothing to a pending receive (Wine); closing the socket completes it.
    pub ignores_cancel: bool,
    /// `WskDisconnect` is a stub (Wine): `STATUS_NOT_IMPLEMENTED`, IRP not completed.
    pub disconnect_stub: bool,
    /// `WskControlSocket`, `WskGetLocalAddress` and `WskGetRemoteAddress` are stubs (Wine):
    /// `STATUS_NOT_IMPLEMENTED`, IRP not completed.
    pub control_stub: bool,
    /// `WskSocket` of a datagram socket completes with `STATUS_NOT_IMPLEMENTED` (Wine).
    pub datagram_unsupported: bool,
    /// `WskSocketConnect` makes a connected socket (else it answers `STATUS_NOT_SUPPORTED`).
    pub socket_connect: bool,
    /// `WskSocket`, `WskBind`, `WskConnect`, `WskSend`, `WskDisconnect`, `WskCloseSocket` complete
    /// their IRP before returning, and return its status (legal: a WSK function need not pend;
    /// the completion routine then runs before the caller sees the answer).
    pub requests_complete_inline: bool,
}

/// Code a provider runs inside `NmrClientAttachProvider` (see [`ProviderConfig::during_attach`]).
#[derive(Clone)]
pub struct AttachHook(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for AttachHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachHook")
    }
}

impl ProviderConfig {
    /// A WSK provider supporting `[lowest, highest]` (`MAKE_WSK_VERSION` values).
    #[must_use]
    pub fn wsk(lowest: u16, highest: u16) -> Self {
        Self {
            npi_id: NPI_WSK_INTERFACE_ID,
            characteristics: Some(WSK_PROVIDER_CHARACTERISTICS {
                HighestVersion: highest,
                LowestVersion: lowest,
            }),
            #[allow(clippy::cast_possible_truncation)]
            instance_size: size_of::<NPI_REGISTRATION_INSTANCE>() as u16,
            answers: Vec::new(),
            detach_during_attach: false,
            null_dispatch: false,
            during_attach: None,
            dispatch_version: None,
            socket_failure: None,
            socket_hangs_until_cancelled: false,
            socket_made_despite_cancel: false,
            socket_stub: false,
            connect_failure: None,
            peer_silent: false,
            ignores_cancel: false,
            disconnect_stub: false,
            control_stub: false,
            datagram_unsupported: false,
            socket_connect: false,
            requests_complete_inline: false,
        }
    }

    /// Windows 7 and later: WSK 1.0 to 1.1.
    #[must_use]
    pub fn default_wsk() -> Self {
        Self::wsk(WSK_1_0, WSK_1_1)
    }

    /// Scripts the answer to an attach try naming `version` (a `MAKE_WSK_VERSION` value).
    #[must_use]
    pub fn answer(mut self, version: u16, status: Status) -> Self {
        self.answers.push((version, status));
        self
    }

    pub(crate) fn answer_for(&self, version: u16) -> Status {
        if let Some((_, status)) = self.answers.iter().find(|(v, _)| *v == version) {
            return *status;
        }
        match self.characteristics {
            Some(c) if c.LowestVersion <= version && version <= c.HighestVersion => Status::SUCCESS,
            _ => Status::NOINTERFACE,
        }
    }
}

/// What happened, in order. Fields are what their names say: binding handles, statuses, tags.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `MmGetSystemRoutineAddress(name)`.
    MmGetSystemRoutineAddress { name: String, found: bool },
    /// A pool allocation through `routine` (`ok: false` when it failed).
    Allocate {
        routine: &'static str,
        tag: u32,
        size: usize,
        ok: bool,
    },
    /// `ExFreePoolWithTag`.
    Free { tag: u32 },
    /// `NmrRegisterClient` returned.
    NmrRegisterClient { status: Status },
    /// The model called the client's `ClientAttachProvider`, which returned `status`.
    ClientAttachProvider {
        binding: usize,
        provider: ProviderId,
        status: Status,
    },
    /// `NmrClientAttachProvider` naming `version`.
    NmrClientAttachProvider {
        binding: usize,
        version: u16,
        status: Status,
    },
    /// The model called `ClientDetachProvider`.
    ClientDetachProvider { binding: usize, status: Status },
    /// `NmrClientDetachProviderComplete`.
    NmrClientDetachProviderComplete { binding: usize },
    /// The model called `ClientCleanupBindingContext`.
    ClientCleanupBindingContext { binding: usize },
    /// `NmrDeregisterClient`.
    NmrDeregisterClient { status: Status },
    /// `NmrWaitForClientDeregisterComplete`.
    NmrWaitForClientDeregisterComplete { status: Status },
    /// `RtlGetVersion`.
    RtlGetVersion,
    /// `KeSetEvent`.
    KeSetEvent,
    /// `KeWaitForSingleObject`, with its timeout (100 ns units, negative: relative).
    KeWaitForSingleObject { timeout: Option<i64> },
    /// `IoCreateDevice`.
    IoCreateDevice { status: Status },
    /// `IoDeleteDevice`.
    IoDeleteDevice,
    /// `IoAllocateWorkItem` (`ok: false` when it failed).
    IoAllocateWorkItem { ok: bool },
    /// `IoQueueWorkItem`.
    IoQueueWorkItem,
    /// `WskRegister` with a client dispatch of `version`.
    WskRegister { version: u16, status: Status },
    /// `WskCaptureProviderNPI`.
    WskCaptureProviderNPI { status: Status },
    /// `WskReleaseProviderNPI`.
    WskReleaseProviderNPI,
    /// `WskDeregister`.
    WskDeregister,
    /// `IoAllocateIrp` (`ok: false` when it failed).
    IoAllocateIrp { ok: bool },
    /// `IoCancelIrp`.
    IoCancelIrp,
    /// The provider made a socket (or failed to, with `status`).
    WskSocket { status: Status },
    /// The client closed a socket.
    WskCloseSocket,
    /// `WskBind`.
    WskBind,
    /// `WskConnect`, answered `status`.
    WskConnect { status: Status },
    /// `WskSend` of `bytes`.
    WskSend { bytes: usize },
    /// `WskReceive` posted.
    WskReceive,
    /// `WskDisconnect`.
    WskDisconnect,
    /// `WskAccept` posted.
    WskAccept,
    /// `WskSocketConnect` made a connected socket.
    WskSocketConnect,
    /// `WskSendTo` of a datagram of `bytes`.
    WskSendTo { bytes: usize },
    /// `WskReceiveFrom` posted.
    WskReceiveFrom,
    /// `SO_WSK_EVENT_CALLBACK` turned on events (`WSK_EVENT_*` mask).
    EventsEnabled { mask: u32 },
    /// `WskReceiveEvent` of `indicated` bytes, of which the client took `accepted` (answering
    /// `status`). Recorded when the indication begins, with `status` `STATUS_PENDING` and
    /// nothing accepted until the callback returned: so that it is there before anything the
    /// driver does with the bytes (an echo of them) can be seen.
    WskReceiveEvent {
        indicated: usize,
        accepted: usize,
        status: wsk_sys::NTSTATUS,
    },
    /// `WskDisconnectEvent`.
    WskDisconnectEvent,
    /// `WskAcceptEvent`, answered `status`.
    WskAcceptEvent { status: wsk_sys::NTSTATUS },
    /// `WskReceiveFromEvent` of a list of `datagrams`.
    WskReceiveFromEvent { datagrams: usize },
    /// `WskControlSocket` (`request`: `WskSetOption` 0, ...) of option `name` at `level`, with a
    /// 4-byte input `value`.
    WskControlSocket {
        request: i32,
        level: u32,
        name: u32,
        value: Option<u32>,
    },
    /// `KeSetTimer` with a due time of `due` (100 ns units; negative: relative).
    KeSetTimer { due: i64 },
    /// `KeFlushQueuedDpcs`.
    KeFlushQueuedDpcs,
    /// A provider dispatch function called by the client.
    ProviderCall { name: &'static str, client: usize },
}

/// A pool block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// Its tag.
    pub tag: u32,
    /// Its size in bytes.
    pub size: usize,
}

/// Where a binding is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingState {
    /// `ClientAttachProvider` is running; no `NmrClientAttachProvider` success yet.
    Offered,
    /// `NmrClientAttachProvider` succeeded.
    Attached,
    /// `ClientDetachProvider` is running.
    Detaching,
    /// `ClientDetachProvider` returned `STATUS_PENDING`; waiting for the completion.
    DetachPending,
    /// Detached; cleanup is running.
    CleaningUp,
}

pub(crate) struct Binding {
    pub handle: usize,
    pub client: usize,
    pub provider: ProviderId,
    pub state: BindingState,
    pub client_binding_context: usize,
    /// `NmrClientDetachProviderComplete` was called for it.
    pub completed: bool,
}

pub(crate) struct Client {
    pub handle: usize,
    pub characteristics: NPI_CLIENT_CHARACTERISTICS,
    pub context: usize,
    pub deregistering: bool,
}

/// Provider memory the driver reads through pointers: stable while the session lasts.
pub(crate) struct ProviderMemory {
    pub npi_id: GUID,
    pub module_id: NPI_MODULEID,
    pub characteristics: WSK_PROVIDER_CHARACTERISTICS,
    pub instance: NPI_REGISTRATION_INSTANCE,
    pub dispatch: WSK_PROVIDER_DISPATCH,
    /// What the provider hands out as its `WSK_CLIENT` (opaque to the client).
    pub wsk_client: PVOID,
}

pub(crate) struct Provider {
    pub id: ProviderId,
    pub config: ProviderConfig,
    pub registered: bool,
    pub memory: Box<ProviderMemory>,
}

// SAFETY: the raw pointers inside point into the same `Box` or at statics; the model only touches
// them under the state mutex, and the driver only reads them.
unsafe impl Send for Provider {}
// SAFETY: the client's characteristics are the driver's statics, read-only.
unsafe impl Send for Client {}

#[derive(Default)]
#[allow(clippy::struct_excessive_bools)] // one switch per behaviour a test can choose
pub(crate) struct State {
    /// The Windows version `RtlGetVersion` reports: `(major, minor, build)`.
    pub os_version: (u32, u32, u32),
    pub pool2_available: bool,
    /// `Session::pause_routines_after_set_event`: how long a completion routine is preempted
    /// right after its `KeSetEvent`.
    pub routine_pause_after_set_event: Option<std::time::Duration>,
    /// `NmrRegisterClient` succeeds but writes a NULL handle.
    pub register_client_null_handle: bool,
    pub failing_allocations: usize,
    /// `Session::fail_nth`: how many calls of a kind still succeed before one fails.
    pub countdowns: std::collections::HashMap<Failable, usize>,
    pub register_client_failure: Option<Status>,
    pub allocations: HashMap<usize, Allocation>,
    pub allocation_count: usize,
    pub events: Vec<Event>,
    pub log: Vec<String>,
    pub violations: Vec<String>,
    pub clients: Vec<Client>,
    pub providers: Vec<Provider>,
    pub bindings: Vec<Binding>,
    pub next_handle: usize,
    /// Kernel events by address.
    pub kernel_events: HashMap<usize, crate::sync::EventState>,
    /// Device objects by address.
    pub devices: HashMap<usize, crate::io::Device>,
    /// Work items by address.
    pub work_items: HashMap<usize, crate::io::WorkItem>,
    /// Work item routines queued or running.
    pub running_work_items: usize,
    /// Make the next `count` `IoAllocateWorkItem` calls fail.
    pub failing_work_items: usize,
    /// Make `IoCreateDevice` fail with this status.
    pub create_device_failure: Option<Status>,
    /// `NmrDeregisterClient` returns `STATUS_SUCCESS` (and detaches synchronously) rather than
    /// `STATUS_PENDING`, as it may.
    pub deregister_client_returns_success: bool,
    /// The image's life.
    pub image: crate::image::Image,
    /// `WskRegister` registrations by address.
    pub wsk_registrations: HashMap<usize, crate::wsk_register::WskRegistration>,
    /// `WskRegister` fails with this status.
    pub wsk_register_failure: Option<Status>,
    /// The driver's IRPs by address.
    pub irps: HashMap<usize, crate::irp::Irp>,
    /// Make the next `count` `IoAllocateIrp` calls fail.
    pub failing_irps: usize,
    /// Make the next `IoSetCompletionRoutineEx` fail with this status.
    pub completion_routine_failure: Option<Status>,
    /// Open sockets by address, each with its echo peer.
    pub peers: HashMap<usize, crate::socket::Peer>,
    /// Remote clients of the driver's listening sockets ([`crate::RemoteClient`]), by id.
    pub remotes: HashMap<usize, crate::socket::Remote>,
    /// The last remote client id handed out.
    pub next_remote: usize,
    /// Datagram peers of the test ([`crate::DatagramPeer`]), by their address's bytes: what the
    /// driver sends to one lands here instead of coming back.
    pub datagram_peers: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    /// The client's MDLs by address.
    pub mdls: HashMap<usize, crate::socket::Mdl>,
    /// Make the next `count` `IoAllocateMdl` calls fail.
    pub failing_mdls: usize,
    /// Provider threads completing requests, still running.
    pub provider_threads: usize,
    /// Registry keys (lower-case paths) and their values: (type, data).
    pub registry: HashMap<String, HashMap<String, (u32, Vec<u8>)>>,
    /// Open key handles and their paths.
    pub key_handles: HashMap<usize, String>,
    /// Address chains `WskGetAddressInfo` handed out and not yet freed.
    pub address_chains: HashMap<usize, crate::kernel::AddressChain>,
    /// How many times the driver called each imported function (or provider function).
    pub call_counts: HashMap<&'static str, usize>,
    /// `Session::fail_call`: the call, its occurrence (1: the first) and the failure.
    pub injection: Option<(String, usize, Status)>,
    /// The injection was applied.
    pub injected: bool,
    /// `Session::call_at`: the IRQL a callback is called at, when not the table's default.
    pub callback_irql: HashMap<&'static str, crate::irql::Irql>,
    /// NMR callbacks of the client running now (a work item queued inside one starts after).
    pub nmr_callbacks_running: usize,
    /// Kernel timers by address.
    pub timers: HashMap<usize, crate::timer::Timer>,
    /// DPC objects by address.
    pub dpcs: HashMap<usize, crate::timer::Dpc>,
    /// DPCs queued (a timer expired) or running.
    pub dpcs_queued: usize,
    /// Spin locks held, by address: the holding thread.
    pub spin_locks: HashMap<usize, std::thread::ThreadId>,
}

/// A kind of call a test can make fail once ([`crate::Session::fail_nth`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Failable {
    /// A pool allocation (`ExAllocatePool2` / `ExAllocatePoolWithTag`).
    Pool,
    /// `IoAllocateIrp`.
    Irp,
    /// `IoAllocateMdl`.
    Mdl,
    /// `IoAllocateWorkItem`.
    WorkItem,
}

impl State {
    /// Counts a call of `what` by the driver; the failure `Session::fail_call` chose for this
    /// occurrence, if it is this one.
    pub fn count_call(&mut self, what: &'static str) -> Option<Status> {
        let count = self.call_counts.entry(what).or_insert(0);
        *count += 1;
        let count = *count;
        match &self.injection {
            Some((call, occurrence, status)) if call == what && *occurrence == count => {
                self.injected = true;
                Some(*status)
            }
            _ => None,
        }
    }

    /// Counts a call of `kind` down to the one `fail_nth` chose: `true` for that one.
    pub fn nth_fails(&mut self, kind: Failable) -> bool {
        match self.countdowns.get_mut(&kind) {
            Some(0) => {
                self.countdowns.remove(&kind);
                true
            }
            Some(left) => {
                *left -= 1;
                false
            }
            None => false,
        }
    }

    pub fn new_handle(&mut self) -> usize {
        self.next_handle += 1;
        0x4E4D_0000 + self.next_handle * 0x10
    }

    pub fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    pub fn binding(&mut self, handle: usize) -> Option<&mut Binding> {
        self.bindings.iter_mut().find(|b| b.handle == handle)
    }

    pub fn client(&self, handle: usize) -> Option<&Client> {
        self.clients.iter().find(|c| c.handle == handle)
    }

    pub fn provider_mut(&mut self, id: ProviderId) -> Option<&mut Provider> {
        self.providers.get_mut(id.0.checked_sub(1)?)
    }

    pub fn provider(&self, id: ProviderId) -> Option<&Provider> {
        // Ids are handed out in order from 1.
        self.providers.get(id.0.checked_sub(1)?)
    }
}

static STATE: Mutex<Option<State>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();

fn lock() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh state (providers and pool blocks of an earlier session are dropped; a block the driver
/// leaked there is leaked for good).
pub(crate) fn reset() {
    *lock() = Some(State {
        os_version: (10, 0, 19041),
        pool2_available: true,
        ..State::default()
    });
}

/// Runs `f` on the state. Never call the driver from `f`.
pub(crate) fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut guard = lock();
    let state = guard.get_or_insert_with(State::default);
    let result = f(state);
    drop(guard);
    CHANGED.notify_all();
    result
}

/// Waits until `done` holds, up to [`WAIT_LIMIT`]; records a violation when it does not.
pub(crate) fn wait_until(done: impl FnMut(&mut State) -> bool) -> bool {
    let met = wait_for(WAIT_LIMIT, done);
    if !met {
        with(|s| s.violation("waited too long: a pending detach was never completed".into()));
    }
    met
}

/// Waits until `done` holds (it may change the state when it does, under the lock), up to
/// `limit`; `false` when the time ran out.
pub(crate) fn wait_for(
    limit: std::time::Duration,
    mut done: impl FnMut(&mut State) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    let mut guard = lock();
    loop {
        let state = guard.get_or_insert_with(State::default);
        if done(state) {
            drop(guard);
            CHANGED.notify_all();
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        guard = CHANGED
            .wait_timeout(guard, deadline - now)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

pub(crate) fn new_provider_memory(config: &ProviderConfig, id: ProviderId) -> Box<ProviderMemory> {
    let mut memory = Box::new(ProviderMemory {
        npi_id: config.npi_id,
        module_id: NPI_MODULEID {
            #[allow(clippy::cast_possible_truncation)]
            Length: size_of::<NPI_MODULEID>() as u16,
            Type: MIT_GUID,
            u: NPI_MODULEID_u {
                Guid: GUID {
                    Data1: 0x5753_4B50,
                    Data2: 0,
                    Data3: 0,
                    Data4: [0; 8],
                },
            },
        },
        characteristics: config
            .characteristics
            .unwrap_or(WSK_PROVIDER_CHARACTERISTICS {
                HighestVersion: 0,
                LowestVersion: 0,
            }),
        instance: NPI_REGISTRATION_INSTANCE {
            Version: 0,
            Size: config.instance_size,
            NpiId: std::ptr::null(),
            ModuleId: std::ptr::null(),
            Number: 0,
            NpiSpecificCharacteristics: std::ptr::null(),
        },
        dispatch: super::kernel::provider_dispatch(),
        wsk_client: (0x5753_4B43_0000_0000_usize | id.0) as PVOID,
    });
    memory.instance.NpiId = &raw const memory.npi_id;
    memory.instance.ModuleId = &raw const memory.module_id;
    if config.characteristics.is_some() {
        memory.instance.NpiSpecificCharacteristics = (&raw const memory.characteristics).cast();
    }
    memory
}
