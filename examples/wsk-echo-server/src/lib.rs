//! `wsk_echo_server.sys`: Microsoft's WSK sample echosrv, in async Rust on `wsk-client` — a TCP
//! echo server. `DriverEntry` reads its parameters (`Port`, `MaxConnections`, `Address`:
//! `parameters.rs`), registers as a WSK client (raw NMR, or `WskRegister` with the `wsk-register`
//! feature) and starts the server (`server.rs`): a listening task that accepts, and a task per
//! connection that echoes every byte it receives. `DriverUnload` deregisters: the stop cancels
//! every task (each closes its socket) and waits for them, then logs the live pool allocations.
//!
//! Safe code: the entry points are `wsk_client::driver!`'s. Kernel build (`cfg(wsk_kernel)`):
//! `no_std`, exports `DriverEntry`, links `wsk-rt`'s panic handler and `_fltused`. Host build:
//! the unit tests run the same entry points against `wsk-host-model`.

#![cfg_attr(wsk_kernel, no_std)]

use wsk_client::binding::BindingSlot;
use wsk_client::registry::ServiceKey;
use wsk_client::sys::GUID;
use wsk_client::{
    Backend, Client, ClientState, DetachNotice, Driver, NtError, PoolTag, WskVersion, guid,
};

mod parameters;
mod server;

/// The echo server: its identity as a WSK client, and what it serves (read by `DriverEntry`).
pub struct WskEchoServer {
    /// `None`: not configured, or the parameters were refused (logged): nothing is served.
    parameters: Option<parameters::Parameters>,
}

impl Client for WskEchoServer {
    const NAME: &'static core::ffi::CStr = c"wsk_echo_server";
    /// {5E7A1C42-0B9D-4E63-8F21-7A4C9D3E6B15}: its own, not the other drivers'.
    const MODULE_ID: GUID = guid(0x5E7A_1C42_0B9D_4E63_8F21_7A4C_9D3E_6B15);
    /// The binding context's tag (the library derives its others from it: `SrvW`, `SrvT`, ...).
    const POOL_TAG: PoolTag = PoolTag::new(*b"SrvB");
    const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];
    /// Raw NMR by default; `WskRegister` with the `wsk-register` feature.
    const BACKEND: Backend = if cfg!(feature = "wsk-register") {
        Backend::WskRegister
    } else {
        Backend::Nmr
    };

    fn state() -> &'static ClientState {
        &STATE
    }

    /// A detach or the unload began: cancel the listening task and every connection's.
    fn on_detach(_notice: DetachNotice) {
        server::stop();
    }
}

static STATE: ClientState<[BindingSlot; 2]> = ClientState::new();

/// `DriverEntry` reads the parameters and, once the client is registered, starts the server;
/// `DriverUnload`'s deregistration stops it (`on_detach`) and waits for every task.
impl Driver for WskEchoServer {
    /// A problem with the parameters is logged (`listen failed: parameters`); the driver loads
    /// and serves nothing.
    fn load(service: ServiceKey<'_>) -> Result<Self, NtError> {
        server::reset();
        Ok(Self {
            parameters: parameters::read(service),
        })
    }

    fn start(&mut self) {
        if let Some(parameters) = self.parameters {
            server::start(parameters);
        }
    }
}

wsk_client::driver!(WskEchoServer);

#[cfg(feature = "wdk")]
use wdk_panic as _;

#[cfg(feature = "wdk")]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[cfg(test)]
mod tests;
