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
//! The lifecycle, one module each: [`registration`] (`NmrRegisterClient`) → [`attach`]
//! (`ClientAttachProvider`, with [`version`] negotiation, [`pool`] and the [`binding`] context) →
//! [`provider`] (calls through the attached provider) → [`detach`] (`ClientDetachProvider`) →
//! [`cleanup`] (`ClientCleanupBindingContext`). What drivers attach for: [`socket`] (with
//! [`buffer`], [`resolve`]) over [`irp`] requests; [`task`], the executor that runs futures in the
//! client's work items, with [`timer`] and [`time`]. [`gate`] is the non-blocking "calls in flight"
//! primitive under the bindings; [`status`] the `NTSTATUS` wrapper; [`sys`] the C ABI
//! (`wsk-sys`).
//!
//! A library: `no_std`, no panic handler, no allocator, no exported symbol. The driver that embeds
//! it brings those (see the `wsk-attach` driver and `examples/wsk-echo`).

#![no_std]

#[cfg(test)]
extern crate std;

pub use wsk_sys as sys;

mod log;
mod spin_lock;

pub mod attach;
pub mod binding;
pub mod buffer;
pub mod cleanup;
pub mod client;
pub mod detach;
pub mod driver_cell;
pub mod gate;
pub mod irp;
pub mod pool;
pub mod provider;
pub mod registration;
pub mod resolve;
pub mod runtime;
pub mod socket;
pub mod status;
pub mod task;
pub mod time;
pub mod timer;
pub mod unload;
pub mod version;
pub mod work;
pub mod wsk_register;

#[cfg(test)]
mod test_client;

pub use client::{Backend, Client, ClientState, DetachNotice, DetachReason, guid};
pub use driver_cell::DriverCell;
pub use pool::PoolTag;
pub use provider::{BindingRef, ProviderError};
pub use registration::{RegisterError, Registration};
pub use status::NtStatus;
pub use version::WskVersion;
