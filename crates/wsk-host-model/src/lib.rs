//! A host model of NMR, the WSK provider and the ntoskrnl pieces a WSK client imports, so that a
//! driver's own callbacks run unchanged under `cargo test`. A test double: use it as a
//! dev-dependency only. It depends on `wsk-sys`, never on the library it tests.
//!
//! It defines the very symbols a kernel image imports (`NmrRegisterClient`, `ExFreePoolWithTag`,
//! `DbgPrintEx`, ...) with the same signatures; the `extern` declarations of `wsk-sys` link to
//! them in a host build.
//! Like NMR it offers providers to clients on registration (before `NmrRegisterClient` has
//! written its out-handle) and when a provider registers later, detaches bindings when either side
//! goes away, waits for `NmrClientDetachProviderComplete` after `STATUS_PENDING`, and cleans up.
//! Unlike NMR it offers every provider to every client (whatever its `NpiId`), so that the
//! driver's own checks are exercised, and it records every call, every pool block and every rule
//! broken (a "violation": what would be a bugcheck or an NMR assertion on Windows).
//!
//! A test takes a [`Session`] (tests are serialised, the model is reset), runs a driver's
//! `DriverEntry` with [`Session::driver_entry`], drives NMR, and reads [`Session::events`].
//! Dropping the session unloads the driver and fails the test if a pool block is still live, a
//! client is still registered or a rule was broken — including code of the image that NMR could
//! still call after a failed `DriverEntry` or after `DriverUnload`.

#![allow(
    non_snake_case,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::missing_panics_doc
)]

mod events;
pub mod failure_matrix;
mod image;
mod io;
mod irp;
pub mod irql;
mod kernel;
mod nmr;
mod registry;
mod remote;
mod socket;
mod state;
mod status;
mod sync;
mod timer;
mod wsk_register;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use irql::Irql;
pub use remote::{DatagramPeer, RemoteClient, connect_client, datagram_peer};
pub use state::{
    Allocation, AttachHook, BindingState, Event, Failable, ProviderConfig, ProviderId, WSK_1_0,
    WSK_1_1,
};
pub use status::Status;

use wsk_sys::{DRIVER_OBJECT, HANDLE, NTSTATUS, PDRIVER_UNLOAD, UNICODE_STRING};

/// `DRIVER_INITIALIZE`: a driver's `DriverEntry`.
pub type DriverInitialize =
    unsafe extern "system" fn(*mut DRIVER_OBJECT, *const UNICODE_STRING) -> NTSTATUS;

/// A check of the test's own (for example, of the library's state) run with the session's.
pub type ExtraCheck = Box<dyn Fn() -> Result<(), String>>;

/// Serialises tests: the driver and the model are both process-wide.
static TEST_LOCK: Mutex<()> = Mutex::new(());

/// How long the model waits for a pending detach to complete before it records a violation.
pub const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// One test's exclusive use of the model.
pub struct Session {
    _serial: MutexGuard<'static, ()>,
    driver: Box<DRIVER_OBJECT>,
    registry_path: Box<[u16]>,
    extra_checks: Vec<ExtraCheck>,
    checked: bool,
}

/// Registers a provider from any thread (the session's [`Session::register_provider`] needs the
/// session): for a provider that registers while the test thread is busy elsewhere.
#[allow(clippy::must_use_candidate)] // often registered for good
pub fn register_provider(config: ProviderConfig) -> ProviderId {
    nmr::register_provider(config)
}

/// Whether the calling thread is inside one of NMR's calls into the client (its
/// `ClientAttachProvider`, `ClientDetachProvider` or `ClientCleanupBindingContext`): a test's
/// check that code of the embedder's own never runs there.
#[must_use]
pub fn inside_nmr_callback() -> bool {
    nmr::inside_callback()
}

/// A zeroed `DRIVER_OBJECT`, as the I/O manager hands to `DriverEntry` (for unit tests that need
/// one outside a session's).
#[must_use]
pub fn zeroed_driver_object() -> DRIVER_OBJECT {
    kernel::zeroed_driver_object()
}

/// `REG_SZ` data of `text`: UTF-16LE with its terminating NUL, as `Session::set_parameter` wants
/// it for a string value.
#[must_use]
pub fn reg_sz(text: &str) -> Vec<u8> {
    text.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Starts a session: waits for other sessions to end and resets the model.
#[must_use]
pub fn session() -> Session {
    let serial = TEST_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    state::reset();
    Session {
        _serial: serial,
        driver: Box::new(kernel::zeroed_driver_object()),
        registry_path: "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\test"
            .encode_utf16()
            .collect(),
        extra_checks: Vec::new(),
        checked: false,
    }
}

impl Session {
    /// Whether `MmGetSystemRoutineAddress("ExAllocatePool2")` finds it (default: yes).
    pub fn set_pool2_available(&self, available: bool) {
        state::with(|s| s.pool2_available = available);
    }

    /// A completion routine (an `IoSetCompletionRoutineEx` one) that sets an event is preempted
    /// for `pause` right after `KeSetEvent`, so the thread it woke runs first: whatever that
    /// thread then counts on the routine having done before the signal, it has not.
    pub fn pause_routines_after_set_event(&self, pause: std::time::Duration) {
        state::with(|s| s.routine_pause_after_set_event = Some(pause));
    }

    /// Makes exactly one call of `kind` fail: the one after `n` more succeed (0: the next).
    /// [`Session::nth_failure_left`] says whether (and when) it is still to come.
    pub fn fail_nth(&self, kind: Failable, n: usize) {
        state::with(|s| s.countdowns.insert(kind, n));
    }

    /// How many more calls of `kind` succeed before the one `fail_nth` chose (`None`: reached).
    #[must_use]
    pub fn nth_failure_left(&self, kind: Failable) -> Option<usize> {
        state::with(|s| s.countdowns.get(&kind).copied())
    }

    /// Makes exactly one call fail: the `occurrence`-th (1: the first) call of the imported or
    /// provider function named `call` (its C name) returns `status` — or NULL, for a function
    /// that allocates — or, for a WSK function that takes an IRP, completes it with `status`.
    /// [`Session::injected`] says whether that call came.
    pub fn fail_call(&self, call: &str, occurrence: usize, status: Status) {
        state::with(|s| {
            s.injection = Some((call.to_string(), occurrence, status));
            s.injected = false;
        });
    }

    /// Whether the failure [`Session::fail_call`] chose has happened.
    #[must_use]
    pub fn injected(&self) -> bool {
        state::with(|s| s.injected)
    }

    /// How many times the driver called each imported or provider function so far.
    #[must_use]
    pub fn call_counts(&self) -> std::collections::BTreeMap<String, usize> {
        state::with(|s| {
            s.call_counts
                .iter()
                .map(|(name, count)| ((*name).to_string(), *count))
                .collect()
        })
    }

    /// How many times the driver called the imported or provider function `name` so far.
    #[must_use]
    pub fn calls(&self, name: &str) -> usize {
        state::with(|s| s.call_counts.get(name).copied().unwrap_or(0))
    }

    /// Makes the next `count` pool allocations fail.
    pub fn fail_allocations(&self, count: usize) {
        state::with(|s| s.failing_allocations = count);
    }

    /// Makes `NmrRegisterClient` fail with `status`.
    pub fn fail_register_client(&self, status: Status) {
        state::with(|s| s.register_client_failure = Some(status));
    }

    /// The Windows version `RtlGetVersion` reports (default 10.0.19041).
    pub fn set_os_version(&self, major: u32, minor: u32, build: u32) {
        state::with(|s| s.os_version = (major, minor, build));
    }

    /// Makes `NmrRegisterClient` succeed without writing a handle (a broken NMR).
    pub fn return_null_client_handle(&self) {
        state::with(|s| s.register_client_null_handle = true);
    }

    /// Adds a check run with the session's own at the end (for example, the library's state).
    pub fn add_check(&mut self, check: impl Fn() -> Result<(), String> + 'static) {
        self.extra_checks.push(Box::new(check));
    }

    /// Runs a driver's `DriverEntry` with this session's `DRIVER_OBJECT`, as the I/O manager does.
    /// When it fails, the I/O manager unloads the image at once (without `DriverUnload`): a client
    /// still registered then is recorded as a rule broken.
    pub fn driver_entry(&mut self, entry: DriverInitialize) -> Status {
        // The service key exists whenever a driver loads (the SCM created it).
        let service = String::from_utf16_lossy(&self.registry_path).to_lowercase();
        state::with(|s| {
            s.registry.entry(service).or_default();
        });
        let path_bytes = u16::try_from(self.registry_path.len() * 2).expect("short path");
        let path = UNICODE_STRING {
            Length: path_bytes,
            MaximumLength: path_bytes,
            Buffer: self.registry_path.as_mut_ptr(),
        };
        let driver = &raw mut *self.driver;
        let path = &raw const path;
        let irql = state::with(|s| irql::callback(s, "DriverEntry"));
        let status = Status::from_raw(image::run(image::Guard::Caller, || {
            // SAFETY: sessions are serialised, so no other DriverEntry/DriverUnload runs now; the
            // driver object and the registry path are valid for the call.
            irql::at(irql, || unsafe { entry(driver, path) })
        }));
        if status.raw() < 0 {
            let left = nmr::registered_clients();
            if !left.is_empty() {
                state::with(|s| {
                    s.violation(format!(
                        "DriverEntry failed with {status:?} but {} NMR client(s) stay registered: NMR would call into an unloaded image",
                        left.len()
                    ));
                });
                for client in left {
                    nmr::deregister_stuck_client(client);
                }
            }
            self.driver.DriverUnload = None;
            // The I/O manager unloads the image of a failed DriverEntry at once.
            state::with(image::unload_returned);
        }
        status
    }

    /// The session's `DRIVER_OBJECT`, for code that runs without `DriverEntry` (doctests).
    pub fn driver_object(&mut self) -> &mut DRIVER_OBJECT {
        &mut self.driver
    }

    /// The `DriverUnload` routine `DriverEntry` set, if any.
    #[must_use]
    pub fn unload_routine(&self) -> PDRIVER_UNLOAD {
        self.driver.DriverUnload
    }

    /// Calls the `DriverUnload` routine that `DriverEntry` set, as the I/O manager does; once it
    /// returns, a client still registered (NMR could call into the unmapped image) is recorded as a
    /// rule broken.
    pub fn driver_unload(&mut self) {
        let unload = self
            .driver
            .DriverUnload
            .take()
            .expect("DriverEntry did not set DriverUnload");
        let driver = &raw mut *self.driver;
        let irql = state::with(|s| irql::callback(s, "DriverUnload"));
        image::run(image::Guard::Caller, || {
            // SAFETY: DriverEntry succeeded (it set the routine); sessions are serialised.
            irql::at(irql, || unsafe { unload(driver) });
        });
        state::with(image::unload_returned);
        let left = nmr::registered_clients();
        state::with(|s| {
            // A device object left holds the image: NMR can still call the client safely.
            if !left.is_empty() && s.image.unmapped {
                s.violation(format!(
                    "DriverUnload returned with {} NMR client(s) still registered and the image \
                     unmapped: NMR would call into it",
                    left.len()
                ));
            }
        });
    }

    /// What a system shutdown does to a driver that could not unload for good: NMR deregisters its
    /// clients, and its device objects (and image) go.
    pub fn system_shutdown(&self) {
        self.deregister_stuck_clients();
        state::with(|s| {
            s.image.devices -= s.devices.len();
            s.devices.clear();
            image::settle(s);
        });
    }

    /// Deregisters, from NMR's side, clients that a driver registered but cannot deregister (it
    /// got no handle): what a system shutdown does; for tests that leave one on purpose.
    pub fn deregister_stuck_clients(&self) {
        for client in nmr::registered_clients() {
            nmr::deregister_stuck_client(client);
        }
    }

    /// The module ids of the clients registered now, in registration order.
    #[must_use]
    pub fn client_module_ids(&self) -> Vec<wsk_sys::GUID> {
        state::with(|s| {
            s.clients
                .iter()
                .map(|c| {
                    // SAFETY: the client's characteristics point at its module id for as long as
                    // it is registered.
                    let module_id =
                        unsafe { *c.characteristics.ClientRegistrationInstance.ModuleId };
                    // SAFETY: a WSK client's module id is a MIT_GUID (checked at registration).
                    unsafe { module_id.u.Guid }
                })
                .collect()
        })
    }

    /// Makes `NmrDeregisterClient` return `STATUS_SUCCESS` instead of `STATUS_PENDING` (a client
    /// must wait for the deregistration either way).
    pub fn deregister_client_returns_success(&self) {
        state::with(|s| s.deregister_client_returns_success = true);
    }

    /// Calls `callback` (`ClientDetachProvider`, `ClientCleanupBindingContext`, ...) at `irql`
    /// from now on, instead of the default of `tests/irql-rules.txt`: one of the levels its line
    /// lists (its page allows them).
    ///
    /// # Panics
    /// When the table does not allow `irql` for `callback`.
    pub fn call_at(&self, callback: &'static str, irql: Irql) {
        let allowed = irql::rules().callbacks.get(callback);
        assert!(
            allowed.is_some_and(|levels| levels.contains(&irql)),
            "tests/irql-rules.txt does not let the system call {callback} at {}",
            irql.name()
        );
        state::with(|s| s.callback_irql.insert(callback, irql));
    }

    /// Removes and returns the rules broken so far whose text contains `needle`: for a test that
    /// shows a known rule break (an expected failure, strict: it asserts the break is there).
    #[must_use]
    pub fn take_violations_matching(&self, needle: &str) -> Vec<String> {
        state::with(|s| {
            let (taken, kept) = s.violations.drain(..).partition(|v| v.contains(needle));
            s.violations = kept;
            taken
        })
    }

    /// Makes the next `count` `IoAllocateWorkItem` calls fail.
    pub fn fail_work_items(&self, count: usize) {
        state::with(|s| s.failing_work_items = count);
    }

    /// Makes `IoCreateDevice` fail with `status`.
    pub fn fail_create_device(&self, status: Status) {
        state::with(|s| s.create_device_failure = Some(status));
    }

    /// Makes `WskRegister` fail with `status`.
    pub fn fail_wsk_register(&self, status: Status) {
        state::with(|s| s.wsk_register_failure = Some(status));
    }

    /// Runs `f` on a new thread as driver code that nothing in Windows waits for (a thread or DPC
    /// of the driver's own): the driver must have waited for it before `DriverUnload` returns.
    pub fn driver_thread<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> std::thread::JoinHandle<R> {
        std::thread::spawn(move || image::run(image::Guard::Unprotected, f))
    }

    /// Whether the model considers the image unmapped (unloaded, and nothing holds it).
    #[must_use]
    pub fn image_unmapped(&self) -> bool {
        state::with(|s| s.image.unmapped)
    }

    /// Waits until no work item routine is queued or running and no provider thread is
    /// completing a request.
    pub fn wait_work_items(&self) {
        state::wait_until(|s| s.running_work_items == 0 && s.provider_threads == 0);
    }

    /// Makes the next `count` `IoAllocateIrp` calls fail.
    pub fn fail_irps(&self, count: usize) {
        state::with(|s| s.failing_irps = count);
    }

    /// Makes the next `IoSetCompletionRoutineEx` fail with `status`.
    pub fn fail_completion_routine(&self, status: Status) {
        state::with(|s| s.completion_routine_failure = Some(status));
    }

    /// Makes the next `count` `IoAllocateMdl` calls fail.
    pub fn fail_mdls(&self, count: usize) {
        state::with(|s| s.failing_mdls = count);
    }

    /// Sets a value under the driver's service key (`subkey`: `Parameters`, say; the service key
    /// is the registry path `DriverEntry` gets). `value_type`: `REG_SZ`, `REG_DWORD`, ...
    pub fn set_parameter(&self, subkey: &str, name: &str, value_type: u32, data: &[u8]) {
        let service = String::from_utf16_lossy(&self.registry_path).to_lowercase();
        let path = format!("{service}\\{}", subkey.to_lowercase());
        state::with(|s| {
            s.registry.entry(service).or_default();
            s.registry
                .entry(path)
                .or_default()
                .insert(name.to_lowercase(), (value_type, data.to_vec()));
        });
    }

    /// Sockets the model's providers made that are still open.
    #[must_use]
    pub fn open_sockets(&self) -> usize {
        state::with(|s| s.peers.len())
    }

    /// How many address chains `WskGetAddressInfo` handed out that were not freed yet.
    #[must_use]
    pub fn address_chains(&self) -> usize {
        state::with(|s| s.address_chains.len())
    }

    /// Ends a session whose driver can never unload (it registered without getting a handle):
    /// NMR deregisters its clients as a shutdown would, then the end check runs, except that the
    /// driver's device objects stay (they keep the image loaded, as they must).
    pub fn end_with_image_pinned(mut self) {
        self.deregister_stuck_clients();
        self.wait_work_items();
        state::with(|s| {
            s.devices.clear();
            s.image.devices = 0;
        });
        self.check_clean();
    }

    /// Forgets the rules broken so far (for a test that breaks one on purpose and checked it).
    pub fn forget_violations(&self) {
        state::with(|s| s.violations.clear());
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
    pub fn deregister_provider(&self, provider: ProviderId) -> Vec<Status> {
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
    pub fn attach_tries(&self) -> Vec<(u16, Status)> {
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
    pub fn attach_results(&self) -> Vec<Status> {
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

    /// The tags of the pool allocations that succeeded, in order.
    #[must_use]
    pub fn allocated_tags(&self) -> Vec<u32> {
        state::with(|s| {
            s.events
                .iter()
                .filter_map(|e| match e {
                    Event::Allocate { tag, ok: true, .. } => Some(*tag),
                    _ => None,
                })
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

    /// Checks the end state: nothing allocated, no rule broken, no client or binding left, and
    /// the test's own checks. Dropping the session runs it too (unless the test is already
    /// failing).
    pub fn check_clean(&mut self) {
        self.checked = true;
        // The end state is the one after every work item and provider completion has returned.
        self.wait_work_items();
        let violations = self.violations();
        assert!(violations.is_empty(), "rules broken: {violations:#?}");
        let live = self.live_allocations();
        assert!(live.is_empty(), "pool still allocated: {live:?}");
        let bindings = self.bindings();
        assert!(bindings.is_empty(), "bindings left: {bindings:?}");
        let clients = nmr::registered_clients();
        assert!(clients.is_empty(), "clients still registered: {clients:x?}");
        let wsk = state::with(|s| s.wsk_registrations.len());
        assert_eq!(wsk, 0, "WskRegister registrations left");
        let (devices, work_items, irps, sockets) = state::with(|s| {
            (
                s.devices.len(),
                s.work_items.len(),
                s.irps.len(),
                s.peers.len(),
            )
        });
        assert_eq!(devices, 0, "device objects left");
        assert_eq!(work_items, 0, "work items still allocated");
        assert_eq!(irps, 0, "IRPs still allocated");
        assert_eq!(sockets, 0, "sockets still open");
        for check in &self.extra_checks {
            if let Err(problem) = check() {
                panic!("{problem}");
            }
        }
    }
}

impl Drop for Session {
    /// Unloads a driver the test left loaded (so that one failing test does not leave the next
    /// one a registered driver), then checks the end state unless the test is already failing.
    fn drop(&mut self) {
        if self.driver.DriverUnload.is_some() {
            self.driver_unload();
        }
        self.wait_work_items();
        if !self.checked && !std::thread::panicking() {
            self.check_clean();
        }
    }
}
