//! A host model of NMR, the WSK provider and the ntoskrnl pieces the driver imports, so that the
//! driver's own callbacks run unchanged under `cargo test` (host build only).
//!
//! It defines the very symbols the kernel image imports (`NmrRegisterClient`, `ExFreePoolWithTag`,
//! `DbgPrintEx`, ...) with the same signatures; the driver's `extern` declarations link to them.
//! Like NMR it offers providers to clients on registration (before `NmrRegisterClient` has
//! written its out-handle) and when a provider registers later, detaches bindings when either side
//! goes away, waits for `NmrClientDetachProviderComplete` after `STATUS_PENDING`, and cleans up.
//! Unlike NMR it offers every provider to every client (whatever its `NpiId`), so that the
//! driver's own checks are exercised, and it records every call, every pool block and every rule
//! broken (a "violation": what would be a bugcheck or an NMR assertion on Windows).
//!
//! A test takes a [`Session`] (tests are serialised, the model is reset), drives the driver, and
//! reads [`Session::events`]. Dropping the session fails the test if a pool block is still live
//! or a rule was broken.

#![allow(
    non_snake_case,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::missing_panics_doc
)]

mod kernel;
mod nmr;
mod state;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use state::{Allocation, BindingState, Event, ProviderConfig, ProviderId};

use crate::abi::{DRIVER_OBJECT, HANDLE};
use crate::status::NtStatus;

/// Serialises tests: the driver and the model are both process-wide.
static TEST_LOCK: Mutex<()> = Mutex::new(());

/// How long the model waits for a pending detach to complete before it records a violation.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// One test's exclusive use of the model.
pub struct Session {
    _serial: MutexGuard<'static, ()>,
    driver: Box<DRIVER_OBJECT>,
    checked: bool,
}

/// Starts a session: waits for other sessions to end and resets the model.
#[must_use]
pub fn session() -> Session {
    let serial = TEST_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    state::reset();
    Session {
        _serial: serial,
        driver: Box::new(kernel::zeroed_driver_object()),
        checked: false,
    }
}

impl Session {
    /// Whether `MmGetSystemRoutineAddress("ExAllocatePool2")` finds it (default: yes).
    pub fn set_pool2_available(&self, available: bool) {
        state::with(|s| s.pool2_available = available);
    }

    /// Makes the next `count` pool allocations fail.
    pub fn fail_allocations(&self, count: usize) {
        state::with(|s| s.failing_allocations = count);
    }

    /// Makes `NmrRegisterClient` fail with `status`.
    pub fn fail_register_client(&self, status: NtStatus) {
        state::with(|s| s.register_client_failure = Some(status));
    }

    /// Runs the driver's `DriverEntry` body with this session's `DRIVER_OBJECT`.
    pub fn driver_entry(&mut self) -> NtStatus {
        // SAFETY: sessions are serialised, so no other DriverEntry/DriverUnload runs now.
        unsafe { crate::entry::driver_entry(&mut self.driver) }
    }

    /// The `DriverUnload` routine `DriverEntry` set, if any.
    #[must_use]
    pub fn unload_routine(&self) -> crate::abi::PDRIVER_UNLOAD {
        self.driver.DriverUnload
    }

    /// Calls the `DriverUnload` routine that `DriverEntry` set, as the I/O manager does.
    pub fn driver_unload(&mut self) {
        let unload = self
            .driver
            .DriverUnload
            .expect("DriverEntry did not set DriverUnload");
        // SAFETY: DriverEntry succeeded (it set the routine); sessions are serialised.
        unsafe { unload(&raw mut *self.driver) };
    }

    /// Registers a provider; NMR offers it to every registered client at once (the attach
    /// callbacks run on this thread before this returns).
    #[allow(clippy::must_use_candidate)] // often registered for good
    pub fn register_provider(&self, config: ProviderConfig) -> ProviderId {
        nmr::register_provider(config)
    }

    /// Deregisters a provider: detaches every binding of it and returns the detach statuses. A
    /// binding whose detach was pending is cleaned up when the driver completes it.
    #[allow(clippy::must_use_candidate)] // the statuses are not always of interest
    pub fn deregister_provider(&self, provider: ProviderId) -> Vec<NtStatus> {
        nmr::deregister_provider(provider)
    }

    /// Waits until no binding of `provider` is left (after pending detaches completed).
    pub fn wait_provider_unbound(&self, provider: ProviderId) {
        state::wait_until(|s| !s.bindings.iter().any(|b| b.provider == provider));
    }

    /// Every event so far, in order.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        state::with(|s| s.events.clone())
    }

    /// The versions named by each `NmrClientAttachProvider` call so far.
    #[must_use]
    pub fn attach_tries(&self) -> Vec<(u16, NtStatus)> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::NmrClientAttachProvider {
                    version, status, ..
                } => Some((version, status)),
                _ => None,
            })
            .collect()
    }

    /// The statuses `ClientAttachProvider` returned so far.
    #[must_use]
    pub fn attach_results(&self) -> Vec<NtStatus> {
        self.events()
            .into_iter()
            .filter_map(|event| match event {
                Event::ClientAttachProvider { status, .. } => Some(status),
                _ => None,
            })
            .collect()
    }

    /// The bindings NMR currently holds, with their states.
    #[must_use]
    pub fn bindings(&self) -> Vec<(HANDLE, BindingState)> {
        state::with(|s| {
            s.bindings
                .iter()
                .map(|b| (b.handle as HANDLE, b.state))
                .collect()
        })
    }

    /// The pool blocks still allocated.
    #[must_use]
    pub fn live_allocations(&self) -> Vec<Allocation> {
        state::with(|s| s.allocations.values().copied().collect())
    }

    /// How many pool allocations succeeded in this session.
    #[must_use]
    pub fn allocation_count(&self) -> usize {
        state::with(|s| s.allocation_count)
    }

    /// The driver's log lines (formatted `DbgPrintEx` output).
    #[must_use]
    pub fn log(&self) -> Vec<String> {
        state::with(|s| s.log.clone())
    }

    /// The rules broken so far.
    #[must_use]
    pub fn violations(&self) -> Vec<String> {
        state::with(|s| s.violations.clone())
    }

    /// Checks the end state: nothing allocated, no rule broken, no binding left. Dropping the
    /// session runs it too (unless the test is already failing).
    pub fn check_clean(&mut self) {
        self.checked = true;
        let violations = self.violations();
        assert!(violations.is_empty(), "rules broken: {violations:#?}");
        let live = self.live_allocations();
        assert!(live.is_empty(), "pool still allocated: {live:?}");
        assert_eq!(
            crate::binding::BINDINGS.in_use(),
            0,
            "binding slots still in use"
        );
    }
}

impl Drop for Session {
    /// Unloads a driver the test left loaded (so that one failing test does not leave the next
    /// one a registered driver), then checks the end state unless the test is already failing.
    fn drop(&mut self) {
        if self.driver.DriverUnload.is_some() {
            self.driver_unload();
        }
        if !self.checked && !std::thread::panicking() {
            self.check_clean();
        }
    }
}
