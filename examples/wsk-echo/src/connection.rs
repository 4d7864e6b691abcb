//! The echo driver's connection — for now only the binding reference a connection holds, the way
//! a socket will: taken in a work item once the driver is registered, let go in a work item when a
//! detach or the unload begins. Until it is let go, a detach of the provider pends and the unload
//! waits: the library's contract, exercised end to end (Speakeasy, Wine).
//!
//! IRQL: [`start`] and [`stop`] at <= `DISPATCH_LEVEL` (they queue work items); the work runs at
//! `PASSIVE_LEVEL`.

use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use wsk_client::pool::PoolBox;
use wsk_client::work::{self, Work};
use wsk_client::{BindingRef, Client, NtStatus, PoolTag, dbg_print};

use crate::WskEcho;

/// The tag of the connection's pool block.
const CONNECTION_TAG: PoolTag = PoolTag::new(*b"EchC");

/// The connection's binding reference, in pool; NULL when there is none.
static CONNECTION: AtomicPtr<BindingRef<WskEcho>> = AtomicPtr::new(ptr::null_mut());

/// Queues the work that opens the connection (takes the reference).
///
/// # Errors
/// The work item could not be queued (logged by the library).
pub(crate) fn start() -> Result<(), NtStatus> {
    work::queue::<WskEcho, _>(Open)
}

/// Queues the work that closes the connection (lets the reference go). Called from
/// [`Client::on_detach`]: must not block.
pub(crate) fn stop() {
    if work::queue::<WskEcho, _>(Close).is_err() {
        // Refused only once the unload stopped taking work, which it does after every reference
        // is gone: then there is no connection left to close.
        // SAFETY: no argument; no Unicode conversion.
        let _ = unsafe {
            dbg_print!(
                WskEcho,
                DPFLTR_WARNING_LEVEL,
                "connection: close not queued"
            )
        };
    }
}

struct Open;

impl Work for Open {
    fn run(self) {
        let reference = match BindingRef::<WskEcho>::acquire() {
            Ok(reference) => reference,
            Err(error) => {
                let status = NtStatus::from(error);
                // SAFETY: `%08X` takes the `u32`; no Unicode conversion.
                let _ = unsafe {
                    dbg_print!(
                        WskEcho,
                        DPFLTR_WARNING_LEVEL,
                        "connection: no provider: 0x%08X",
                        status.bits()
                    )
                };
                return;
            }
        };
        let boxed = match PoolBox::try_new::<WskEcho>(reference, CONNECTION_TAG) {
            Ok(boxed) => boxed,
            Err(status) => {
                // SAFETY: `%08X` takes the `u32`; no Unicode conversion.
                let _ = unsafe {
                    dbg_print!(
                        WskEcho,
                        DPFLTR_ERROR_LEVEL,
                        "connection: no pool: 0x%08X",
                        status.bits()
                    )
                };
                return;
            }
        };
        let raw = boxed.into_raw();
        if CONNECTION
            .compare_exchange(
                ptr::null_mut(),
                raw.as_ptr(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            // SAFETY: `raw` came from `into_raw` just above, with CONNECTION_TAG.
            drop(unsafe { PoolBox::from_raw::<WskEcho>(raw, CONNECTION_TAG) });
            return;
        }
        // SAFETY: no argument; no Unicode conversion.
        let _ = unsafe {
            dbg_print!(
                WskEcho,
                DPFLTR_INFO_LEVEL,
                "connection: holding a binding reference"
            )
        };
    }
}

struct Close;

impl Work for Close {
    fn run(self) {
        let Some(raw) = NonNull::new(CONNECTION.swap(ptr::null_mut(), Ordering::AcqRel)) else {
            return;
        };
        // SAFETY: CONNECTION only ever holds a pointer from `PoolBox::into_raw` with
        // CONNECTION_TAG, and the swap above made it this work's alone.
        drop(unsafe { PoolBox::from_raw::<WskEcho>(raw, CONNECTION_TAG) });
        // SAFETY: no argument; no Unicode conversion.
        let _ = unsafe { dbg_print!(WskEcho, DPFLTR_INFO_LEVEL, "connection: reference released") };
    }
}

/// Whether the connection holds its reference (tests).
#[cfg(test)]
pub(crate) fn is_open() -> bool {
    !CONNECTION.load(Ordering::Acquire).is_null()
}

/// `Client::on_detach` of the echo driver.
pub(crate) fn on_detach(_notice: wsk_client::DetachNotice) {
    stop();
}

// The connection belongs to client `WskEcho`.
const _: () = assert!(WskEcho::POOL_TAG.raw() != CONNECTION_TAG.raw());
