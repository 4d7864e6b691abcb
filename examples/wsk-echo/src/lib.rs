//! `wsk_echo.sys`: an example driver that embeds `wsk-client` with an identity of its own (module
//! GUID, pool tags, log prefix `wsk_echo`), attaching through raw NMR or, with the `wsk-register`
//! feature, through `WskRegister`, and chains its own setup and teardown around the client's
//! registration: `DriverEntry` sets up the driver's context, then registers;
//! `DriverUnload` deregisters (waiting for every binding), then tears the context down.
//!
//! Safe code: the entry points are `wsk_client::driver!`'s. Kernel build (`cfg(wsk_kernel)`):
//! `no_std`, exports `DriverEntry`, links `wsk-rt`'s panic handler and `_fltused`. Host build:
//! the unit tests run the same entry points against `wsk-host-model`.

#![cfg_attr(wsk_kernel, no_std)]

use wsk_client::binding::BindingSlot;
use wsk_client::pool::Owned;
use wsk_client::registry::ServiceKey;
use wsk_client::sys::GUID;
use wsk_client::{
    Backend, Client, ClientState, DetachNotice, Driver, NtError, PoolTag, WskVersion, guid,
};

mod connection;
mod latency;
mod parameters;
mod stream;
mod values;

/// The example driver: its identity as a WSK client, and what it keeps from `DriverEntry` to
/// `DriverUnload`.
pub struct WskEcho {
    /// The driver's own context, in pool: set up before the registration, torn down after it
    /// (`None` only inside the drop, once freed).
    context: Option<Owned<EchoContext>>,
}

impl Client for WskEcho {
    const NAME: &'static core::ffi::CStr = c"wsk_echo";
    /// {9A3C5E21-6B7D-4F80-A1B2-C3D4E5F60718}: not the seed driver's.
    const MODULE_ID: GUID = guid(0x9A3C_5E21_6B7D_4F80_A1B2_C3D4_E5F6_0718);
    /// The binding context's tag.
    const POOL_TAG: PoolTag = PoolTag::new(*b"EchB");
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

    /// A detach or the unload began: cancel the connection's task (which closes it).
    fn on_detach(notice: DetachNotice) {
        connection::on_detach(notice);
    }
}

/// The tag of the driver's own context (one tag per purpose).
const DRIVER_CONTEXT_TAG: PoolTag = PoolTag::new(*b"EchG");

// One tag per purpose: the driver's own differ from each other and from every tag the library
// allocates with for it (binding contexts, work items, requests, buffers, names).
const _: () = assert!(wsk_client::pool::distinct(
    &WskEcho::LIBRARY_TAGS,
    &[DRIVER_CONTEXT_TAG, connection::PARAMETERS_TAG]
));

static STATE: ClientState<[BindingSlot; 2]> = ClientState::new();

/// What the driver sets up for itself before it registers.
struct EchoContext {
    /// Start/stop cycles seen.
    started: u32,
    /// The echo to make, handed to the connection's task at the start (`None`: nothing to echo,
    /// or the parameters were refused: logged).
    parameters: Option<values::Parameters>,
}

/// `DriverEntry` sets up the driver's context and reads the parameters, then (the library)
/// registers the client, then starts the connection's task; `DriverUnload` (the library)
/// deregisters — the stop cancels the task, and every binding is gone — then drops the driver:
/// the context is torn down last.
impl Driver for WskEcho {
    fn load(service: ServiceKey<'_>) -> Result<Self, NtError> {
        connection::reset();
        let setup = EchoContext {
            started: 1,
            parameters: None,
        };
        let mut context = match Owned::try_new::<WskEcho>(setup, DRIVER_CONTEXT_TAG) {
            Ok(context) => context,
            Err(status) => {
                wsk_client::error!(WskEcho, "setup failed: no pool");
                return Err(status);
            }
        };
        wsk_client::info!(
            WskEcho,
            "setup: driver context ready (start %u)",
            context.started
        );
        // A problem with the parameters is logged; the driver loads anyway and echoes nothing.
        context.parameters = parameters::read(service);
        Ok(Self {
            context: Some(context),
        })
    }

    /// The connection, a task of the driver's (a failure is logged; the driver stays loaded:
    /// the exchange's result line says what happened).
    fn start(&mut self) {
        let parameters = self
            .context
            .as_mut()
            .and_then(|context| context.parameters.take());
        let _ = connection::start(parameters);
    }
}

/// The teardown, after the deregistration: the context is freed, then said to be.
impl Drop for WskEcho {
    fn drop(&mut self) {
        drop(self.context.take());
        wsk_client::info!(WskEcho, "teardown: driver context freed");
    }
}

wsk_client::driver!(WskEcho);

#[cfg(feature = "wdk")]
use wdk_panic as _;

#[cfg(feature = "wdk")]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[cfg(test)]
mod tests;
