//! wsk-client: attach a Windows kernel driver to the Winsock Kernel (WSK) subsystem through the
//! Network Module Registrar (NMR), as Microsoft's "Attaching a WSK Application to the WSK
//! Subsystem" describes, and use the attached provider safely.
//!
//! A driver describes itself with the [`Client`] trait (log name, NMR module id, pool tag, WSK
//! versions, the static [`ClientState`]), registers with [`Registration::register`] in
//! `DriverEntry`, and drops the registration in `DriverUnload`:
//!
//! ```text
//! static REGISTRATION: DriverCell<Registration<MyDriver>> = DriverCell::new();
//! // DriverEntry:
//! let _ = wsk_client::pool::select::<MyDriver>(); // first, like ExInitializeDriverRuntime
//! match Registration::<MyDriver>::register() {
//!     Ok(registration) => { unsafe { REGISTRATION.set(registration) }; /* set DriverUnload */ }
//!     Err(error) => return error.driver_entry_status().raw(),
//! }
//! // DriverUnload:
//! drop(unsafe { REGISTRATION.take() }); // deregisters and waits for every binding
//! ```
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
//! A library: `no_std`, no panic handler, no allocator, no exported symbol. The driver that embeds
//! it brings those (see the `wsk-attach` driver and `examples/wsk-echo`).

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
