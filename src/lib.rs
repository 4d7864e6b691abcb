//! wsk-attach: a WDM driver that attaches to the Winsock Kernel (WSK) subsystem through the
//! Network Module Registrar (NMR), as Microsoft's "Attaching a WSK Application to the WSK
//! Subsystem" describes — written as a template for other kernel drivers.
//!
//! The lifecycle, one module each:
//! [`entry`] (`DriverEntry`/`DriverUnload` bodies) → [`registration`] (`NmrRegisterClient`) →
//! [`attach`] (`ClientAttachProvider`, with [`version`] negotiation, [`pool`] and the
//! [`binding`] context) → [`provider`] (calls through the attached provider) → [`detach`]
//! (`ClientDetachProvider`) → [`cleanup`] (`ClientCleanupBindingContext`).
//! [`abi`] holds the hand-declared C ABI; [`status`] the `NTSTATUS` wrapper.
//!
//! Kernel build (`cfg(wsk_kernel)`, target OS Windows): `no_std`, with `driver.rs` exporting
//! `DriverEntry`; on a Windows host with the WDK (feature `wdk`), `wdk_glue.rs` wires in the
//! windows-drivers-rs crates. Host build: `std`, with [`host_model`] standing in for NETIO.SYS and
//! ntoskrnl.

#![cfg_attr(wsk_kernel, no_std)]

pub mod abi;
mod log;

pub mod attach;
pub mod binding;
pub mod cleanup;
pub mod detach;
pub mod entry;
pub mod pool;
pub mod provider;
pub mod registration;
pub mod status;
pub mod version;

#[cfg(wsk_kernel)]
mod driver;

#[cfg(feature = "wdk")]
mod wdk_glue;

#[cfg(not(wsk_kernel))]
pub mod host_model;
