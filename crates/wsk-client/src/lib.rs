//! wsk-client: attach a Windows kernel driver to the Winsock Kernel (WSK) subsystem through the
//! Network Module Registrar (NMR), as Microsoft's "Attaching a WSK Application to the WSK
//! Subsystem" describes, and use the attached provider safely.
//!
//! A driver describes itself with the [`Client`] trait (log name, NMR module id, pool tag, WSK
//! versions, its [`ClientState`]), says what it does at load with the [`Driver`] trait, and
//! writes [`driver!`] once: the macro generates `DriverEntry` (which registers the client with NMR
//! and starts the driver) and `DriverUnload` (which stops it, deregisters and waits for every
//! binding). The driver's own code is safe Rust: tasks ([`task::spawn`]) that take a
//! [`BindingRef`] and use sockets ([`socket`]), logging with [`info!`] and its siblings, its
//! parameters from the registry ([`registry`]).
//!
//! ```
//! use wsk_client::binding::BindingSlot;
//! use wsk_client::registry::ServiceKey;
//! use wsk_client::{Client, ClientState, Driver, NtError, PoolTag, WskVersion, guid};
//!
//! /// The driver: its identity, and what it keeps from `DriverEntry` to `DriverUnload`.
//! pub struct MyDriver {
//!     port: u32,
//! }
//!
//! impl Client for MyDriver {
//!     const NAME: &'static core::ffi::CStr = c"my_driver";
//!     const MODULE_ID: wsk_client::sys::GUID = guid(0x0123_4567_89AB_CDEF_0123_4567_89AB_CDEF);
//!     const POOL_TAG: PoolTag = PoolTag::new(*b"MyDr");
//!     const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];
//!     fn state() -> &'static ClientState {
//!         static STATE: ClientState<[BindingSlot; 2]> = ClientState::new();
//!         &STATE
//!     }
//! }
//!
//! impl Driver for MyDriver {
//!     /// `DriverEntry`, before the registration: read `Parameters\Port` (default 7).
//!     fn load(service: ServiceKey<'_>) -> Result<Self, NtError> {
//!         let port = match service.parameters() {
//!             Ok(key) => key.dword("Port").map_err(|e| e.status())?.unwrap_or(7),
//!             Err(_) => 7,
//!         };
//!         Ok(MyDriver { port })
//!     }
//!
//!     /// `DriverEntry`, once the client is registered: start the driver's tasks.
//!     fn start(&mut self) {
//!         wsk_client::info!(MyDriver, "serving on port %u", self.port);
//!     }
//! }
//!
//! wsk_client::driver!(MyDriver);
//! # fn main() {}
//! ```
//!
//! The example drivers of the repository (`examples/wsk-echo`, a client; `examples/wsk-echo-server`,
//! a TCP and UDP server) and `cargo xtask new NAME` (a driver crate of your own) start from there.
//!
//! Layers, as folders: [`kernel`] (pool, requests, work items, the task executor, timers) under
//! [`net`] (sockets, buffers, name resolution), with the NMR lifecycle beside them. The
//! lifecycle is one private module per callback or step — `registration` (`NmrRegisterClient`) →
//! `attach` (`ClientAttachProvider`, with [`version`] negotiation, [`pool`] and the [`binding`]
//! context) → [`provider`] (calls through the attached provider) → `detach`
//! (`ClientDetachProvider`) → `cleanup` (`ClientCleanupBindingContext`) → `unload`; the safe
//! surface over them is [`Client`], [`Registration`] and [`BindingRef`]. [`gate`] is the
//! non-blocking "calls in flight" primitive under the bindings; [`status`] the `NTSTATUS`
//! wrapper; [`sys`] the C ABI (`wsk-sys`).
//!
//! A library: `no_std`, no panic handler, no allocator, no exported symbol of its own. The driver
//! that embeds it brings the panic handler and `_fltused` through crate `wsk-rt` (which
//! [`driver!`] names in the kernel build) or windows-drivers-rs's `wdk-panic`.

#![no_std]

#[cfg(test)]
extern crate std;

pub use wsk_sys as sys;

pub mod log;

// The NMR lifecycle, one module per callback or step: the trampolines NMR and the I/O manager
// call, private (as Rust-for-Linux keeps its C trampolines private); the safe surface is the
// `Client` trait, `Registration` and `BindingRef`.
mod attach;
mod cleanup;
mod detach;
mod runtime;
mod unload;
mod wsk_register;

pub mod binding;
pub mod client;
mod client_state;
pub mod driver;
mod driver_cell;
pub mod gate;
pub mod kernel;
pub mod net;
pub mod provider;
pub mod registration;
pub mod status;
pub mod version;

// The layers' modules under their short names too (`wsk_client::socket`, `wsk_client::task`).
pub(crate) use kernel::spin_lock;
pub use kernel::{irp, pool, registry, task, time, timer, work};
pub use net::{buffer, resolve, socket, text};

#[cfg(test)]
mod test_client;

pub use client::{Backend, Client, DetachNotice, DetachReason, guid};
pub use client_state::ClientState;
pub use driver::Driver;
pub use pool::PoolTag;
pub use provider::{BindingRef, ProviderError};
pub use registration::{RegisterError, Registration};
pub use status::{NtError, NtStatus};
pub use version::WskVersion;
