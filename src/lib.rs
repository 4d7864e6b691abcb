//! `wsk_attach.sys`: the seed driver. It does what Microsoft's "Attaching a WSK Application to the
//! WSK Subsystem" describes — `DriverEntry` registers an NPI client of WSK with NMR; NMR attaches
//! it to the WSK provider, with a fallback to an older WSK version; `DriverUnload` deregisters and
//! waits until every binding is detached and cleaned up — through the `wsk-client` library, which
//! does the work. What is left here is the driver's identity and its entry points.
//!
//! The driver is safe code: it implements the library's `Client` (its identity) and `Driver` (what
//! it does at load: nothing of its own), and `wsk_client::driver!` generates its entry points.
//! Kernel build (`cfg(wsk_kernel)`): `no_std`, exports `DriverEntry`, links `wsk-rt`'s panic
//! handler and `_fltused`; with the WDK (feature `wdk`) `wdk_glue.rs` brings windows-drivers-rs's
//! instead. Host build: the same `DriverEntry`/`DriverUnload`, run by the unit tests against
//! `wsk-host-model`.

#![cfg_attr(wsk_kernel, no_std)]

use wsk_client::binding::BindingSlot;
use wsk_client::registry::ServiceKey;
use wsk_client::sys::GUID;
use wsk_client::{Client, ClientState, Driver, NtError, PoolTag, WskVersion, guid};

/// The seed driver as a WSK client.
pub struct WskAttach;

impl Client for WskAttach {
    const NAME: &'static core::ffi::CStr = c"wsk_attach";
    /// {4D636F0B-B15B-48CA-8894-FB0987DBE869}. A driver built from this one needs a GUID of its own.
    const MODULE_ID: GUID = guid(0x4D63_6F0B_B15B_48CA_8894_FB09_87DB_E869);
    const POOL_TAG: PoolTag = PoolTag::new(*b"WskA");
    const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];

    fn state() -> &'static ClientState {
        &STATE
    }
}

/// Four bindings: Windows has one WSK provider; the spares cover a provider that re-registers
/// before its old binding is cleaned up.
static STATE: ClientState<[BindingSlot; 4]> = ClientState::new();

/// The seed driver keeps nothing of its own: `DriverEntry` registers the client (the library),
/// `DriverUnload` deregisters and waits for every binding, then logs the live pool allocations
/// (0 when healthy; not with the feature `no-log`).
impl Driver for WskAttach {
    fn load(_service: ServiceKey<'_>) -> Result<Self, NtError> {
        Ok(Self)
    }
}

wsk_client::driver!(WskAttach);

#[cfg(feature = "wdk")]
mod wdk_glue;

#[cfg(test)]
mod tests;
