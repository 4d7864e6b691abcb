//! What an embedding driver chooses: the [`Client`] trait (its identity, tags, versions, backend,
//! detach notice), and where its state is: the [`crate::ClientState`] static it declares. The
//! trait sits above the layers and imports only the types its constants have; the state, which
//! the lower layers fill, is `client_state.rs`.
//!
//! Everything here is compile-time data or interlocked state: any IRQL.

use core::ffi::CStr;

use crate::ClientState;
use crate::pool::PoolTag;
use crate::sys::{DPFLTR_IHVDRIVER_ID, GUID, PFN_WSK_CLIENT_EVENT};
use crate::version::WskVersion;

/// A WSK client: the identity and choices of one driver (or of one client inside a driver).
///
/// The library builds this client's `NPI_CLIENT_CHARACTERISTICS` and `WSK_CLIENT_DISPATCH`
/// tables from these constants at compile time, and its NMR callbacks are monomorphised per
/// client, so two clients in one image never share a module id, a pool tag or a binding.
///
/// ```
/// use wsk_client::{Client, ClientState, PoolTag, WskVersion, guid};
/// use wsk_client::binding::BindingSlot;
///
/// struct MyDriver;
///
/// static STATE: ClientState<[BindingSlot; 2]> = ClientState::new();
///
/// impl Client for MyDriver {
///     const NAME: &'static core::ffi::CStr = c"my_driver";
///     const MODULE_ID: wsk_client::sys::GUID = guid(0x0123_4567_89AB_CDEF_0123_4567_89AB_CDEF);
///     const POOL_TAG: PoolTag = PoolTag::new(*b"MyDr");
///     const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];
///     fn state() -> &'static ClientState {
///         &STATE
///     }
/// }
/// ```
pub trait Client: Sized + 'static {
    /// The log prefix (`wsk_attach` logs `wsk_attach: attached at WSK 1.1`). ASCII; no `%`.
    const NAME: &'static CStr;

    /// The `DbgPrintEx` component id of the log lines.
    const DEBUG_COMPONENT: u32 = DPFLTR_IHVDRIVER_ID;

    /// The NMR module id (`NPI_MODULEID`, `MIT_GUID`): a GUID of this client's own.
    const MODULE_ID: GUID;

    /// The pool tag of the binding context (one tag per purpose: use other tags elsewhere).
    const POOL_TAG: PoolTag;

    /// The WSK versions this client supports, highest first: the order attach tries them in.
    /// At least one and at most [`crate::version::MAX_VERSIONS`], strictly descending (checked at
    /// compile time).
    const VERSIONS: &'static [WskVersion];

    /// `WSK_CLIENT_DISPATCH.WskClientEvent` for every version (NULL: no client-level events).
    const CLIENT_EVENT: PFN_WSK_CLIENT_EVENT = None;

    /// How the client attaches: raw NMR (the seed's flow), or `WskRegister` and
    /// `WskCaptureProviderNPI`. Chosen at compile time; the API on top is the same.
    const BACKEND: Backend = Backend::Nmr;

    /// The pool tag of the library's work item contexts ([`crate::work`]): by default
    /// [`Client::POOL_TAG`] with `W` as its last character.
    const WORK_ITEM_TAG: PoolTag = Self::POOL_TAG.with_last(b'W');

    /// The pool tag of request contexts ([`crate::irp`]): by default `I` last.
    const REQUEST_TAG: PoolTag = Self::POOL_TAG.with_last(b'I');

    /// The pool tag of send/receive buffers ([`crate::buffer`]): by default `D` last.
    const BUFFER_TAG: PoolTag = Self::POOL_TAG.with_last(b'D');

    /// The pool tag of a name being resolved ([`crate::resolve`]): by default `N` last.
    const NAME_TAG: PoolTag = Self::POOL_TAG.with_last(b'N');

    /// The pool tag of tasks ([`crate::task`]): by default `T` last.
    const TASK_TAG: PoolTag = Self::POOL_TAG.with_last(b'T');

    /// The pool tag of a socket's receive events and their ring ([`crate::socket`]): by default
    /// `E` last.
    const EVENTS_TAG: PoolTag = Self::POOL_TAG.with_last(b'E');

    /// Every tag the library allocates with for this client, one per purpose (binding contexts,
    /// work items, requests, buffers, names, tasks, socket events). A driver's own tags must be
    /// none of these:
    /// `const _: () = assert!(wsk_client::pool::distinct(&MyDriver::LIBRARY_TAGS, &[MY_TAG]));`.
    const LIBRARY_TAGS: [PoolTag; 7] = [
        Self::POOL_TAG,
        Self::WORK_ITEM_TAG,
        Self::REQUEST_TAG,
        Self::BUFFER_TAG,
        Self::NAME_TAG,
        Self::TASK_TAG,
        Self::EVENTS_TAG,
    ];

    /// Called once when a binding starts to go away — the provider detaches, or the client's
    /// unload begins — so that the client closes its sockets and drops its
    /// [`crate::provider::BindingRef`]s: the detach (and the unload) completes when the last one
    /// is gone. New references fail from the moment the detach began.
    ///
    /// IRQL: `PASSIVE_LEVEL`, never inside a call of NMR's: for a provider's detach, in a work
    /// item of the library queued by `ClientDetachProvider` after it closed the binding (the
    /// work item was allocated with the binding, so the notice cannot be lost for want of
    /// memory); for the unload, in `DriverUnload`'s drop of the [`crate::Registration`]. A work
    /// item must stay short: close and let go here, and do not wait for the network (a close
    /// never blocks).
    fn on_detach(_notice: DetachNotice) {}

    /// The client's state: a static the driver declares, for example
    /// `static STATE: ClientState<[BindingSlot; 4]> = ClientState::new();` (4 bindings).
    fn state() -> &'static ClientState;
}

/// How a client attaches to the WSK subsystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `NmrRegisterClient` and the NMR callbacks (`crate::attach`, `crate::detach`,
    /// `crate::cleanup`).
    Nmr,
    /// `WskRegister`, `WskCaptureProviderNPI`, `WskReleaseProviderNPI`, `WskDeregister`
    /// (`crate::wsk_register`).
    WskRegister,
}

/// Why [`Client::on_detach`] is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DetachReason {
    /// NMR detaches a binding (the provider goes away, or the client deregisters).
    Provider,
    /// The client's unload began ([`crate::Registration`] is being dropped).
    Unload,
}

/// What [`Client::on_detach`] is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetachNotice {
    /// Why.
    pub reason: DetachReason,
    /// The references still held that the detach (or the unload) waits for.
    pub references: u32,
}

/// A `GUID` from its usual spelling as one number: `guid(0x4D636F0B_B15B_48CA_8894_FB0987DBE869)`
/// is `{4D636F0B-B15B-48CA-8894-FB0987DBE869}`.
#[must_use]
#[allow(clippy::cast_possible_truncation)] // each field takes its own bits
pub const fn guid(value: u128) -> GUID {
    let tail = (value as u64).to_be_bytes();
    GUID {
        Data1: (value >> 96) as u32,
        Data2: (value >> 80) as u16,
        Data3: (value >> 64) as u16,
        Data4: tail,
    }
}
