//! The test driver the library's integration tests and benchmark embed the library in: a client
//! with its own identity, `DriverEntry` and `DriverUnload`, written the way a real driver does it.

#![allow(
    dead_code,
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::future::Future;
use std::sync::{Mutex, mpsc};
use std::time::Duration as StdDuration;

use wsk_client::binding::BindingSlot;
use wsk_client::buffer::Buffer;
use wsk_client::sys::{DRIVER_OBJECT, GUID, NTSTATUS, UNICODE_STRING};
use wsk_client::task::{self, TaskHandle};
use wsk_client::{
    Backend, BindingRef, Client, ClientState, DetachNotice, NtStatus, PoolTag, Registration,
    WskVersion, guid,
};
use wsk_host_model::{DriverInitialize, Event, RemoteClient, Session, connect_client};

/// How many bindings the test driver holds at once.
pub const MAX_BINDINGS: usize = 4;

pub struct TestDriver;

static STATE: ClientState<[BindingSlot; MAX_BINDINGS]> = ClientState::new();
static REGISTRATION: Mutex<Option<Registration<TestDriver>>> = Mutex::new(None);

/// A test driver: a client plus where its `DriverEntry` keeps the registration.
pub trait TestClient: Client {
    fn registration() -> &'static Mutex<Option<Registration<Self>>>;
}

impl TestClient for TestDriver {
    fn registration() -> &'static Mutex<Option<Registration<Self>>> {
        &REGISTRATION
    }
}

/// The same driver through the `WskRegister` backend (its own identity and state).
pub struct WskTestDriver;

static WSK_STATE: ClientState<[BindingSlot; 1]> = ClientState::new();
static WSK_REGISTRATION: Mutex<Option<Registration<WskTestDriver>>> = Mutex::new(None);

impl Client for WskTestDriver {
    const NAME: &'static core::ffi::CStr = c"wsk_test_driver";
    const MODULE_ID: GUID = guid(0x7E57_D41E_0000_4000_8000_0000_0000_0002);
    const POOL_TAG: PoolTag = PoolTag::new(*b"WskR");
    const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];
    const BACKEND: Backend = Backend::WskRegister;
    fn state() -> &'static ClientState {
        &WSK_STATE
    }
}

impl TestClient for WskTestDriver {
    fn registration() -> &'static Mutex<Option<Registration<Self>>> {
        &WSK_REGISTRATION
    }
}

/// The NMR test driver's `DriverEntry`.
#[allow(non_upper_case_globals)]
pub const DriverEntry: DriverInitialize = driver_entry::<TestDriver>;

impl Client for TestDriver {
    const NAME: &'static core::ffi::CStr = c"test_driver";
    const MODULE_ID: GUID = guid(0x7E57_D41E_0000_4000_8000_0000_0000_0001);
    const POOL_TAG: PoolTag = PoolTag::new(*b"WskT");
    const VERSIONS: &'static [WskVersion] = &[WskVersion::V1_1, WskVersion::V1_0];
    fn state() -> &'static ClientState {
        &STATE
    }

    fn on_detach(notice: DetachNotice) {
        NOTICES.lock().unwrap().push(notice);
        if let Some(hook) = ON_DETACH.lock().unwrap().as_mut() {
            hook(notice);
        }
    }
}

/// Every detach notice so far (cleared by `session()`).
pub static NOTICES: Mutex<Vec<DetachNotice>> = Mutex::new(Vec::new());

type Hook<T> = Mutex<Option<Box<dyn FnMut(T) + Send>>>;

/// What the test driver does on a detach notice (besides recording it).
static ON_DETACH: Hook<DetachNotice> = Mutex::new(None);

/// What the test driver's `DriverUnload` does first: stopping its own work.
static STOP_OWN_WORK: Hook<()> = Mutex::new(None);

/// A reference the test driver holds, like a socket would (dropped by tests where they choose).
pub static HELD: Mutex<Option<BindingRef<TestDriver>>> = Mutex::new(None);

/// Sets what the test driver does on a detach notice.
pub fn on_detach(hook: impl FnMut(DetachNotice) + Send + 'static) {
    *ON_DETACH.lock().unwrap() = Some(Box::new(hook));
}

/// Sets what the test driver's `DriverUnload` does before dropping its registration.
pub fn stop_own_work(hook: impl FnMut(()) + Send + 'static) {
    *STOP_OWN_WORK.lock().unwrap() = Some(Box::new(hook));
}

/// The binding context's pool tag, as the model reports tags.
pub const TAG: u32 = TestDriver::POOL_TAG.raw();

/// `DRIVER_INITIALIZE` of test driver `D`.
///
/// # Safety
/// As a `DriverEntry`.
#[allow(non_snake_case)]
pub unsafe extern "system" fn driver_entry<D: TestClient>(
    DriverObject: *mut DRIVER_OBJECT,
    _RegistryPath: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the model passes its own DRIVER_OBJECT, exclusively.
    let Some(driver) = (unsafe { DriverObject.as_mut() }) else {
        return NtStatus::INVALID_PARAMETER.raw();
    };
    // First: the pool routine and type for this system (the WDK's ExInitializeDriverRuntime).
    let _ = wsk_client::pool::select::<D>();
    match Registration::<D>::register(driver) {
        Ok(registration) => {
            drop(D::registration().lock().unwrap().replace(registration));
            driver.DriverUnload = Some(driver_unload::<D>);
            NtStatus::SUCCESS.raw()
        }
        Err(error) => error.driver_entry_status().raw(),
    }
}

#[allow(non_snake_case)]
unsafe extern "system" fn driver_unload<D: TestClient>(_DriverObject: *mut DRIVER_OBJECT) {
    // First the driver's own work (threads joined), as the unload contract says.
    let stop = STOP_OWN_WORK.lock().unwrap().take();
    if let Some(mut stop) = stop {
        stop(());
    }
    let registration = D::registration().lock().unwrap().take();
    if let Some(registration) = registration {
        let _ = registration.deregister();
    }
    #[allow(clippy::cast_possible_truncation)]
    let live = D::state().live_allocations() as u32;
    wsk_client::info!(D, "unloaded, live pool allocations: %u", live);
}

/// A session whose end check includes the library's own state: no binding slot in use and no
/// pool block counted live.
pub fn session() -> Session {
    let mut s = wsk_host_model::session();
    NOTICES.lock().unwrap().clear();
    *ON_DETACH.lock().unwrap() = None;
    *STOP_OWN_WORK.lock().unwrap() = None;
    drop(HELD.lock().unwrap().take());
    s.add_check(|| {
        for state in [TestDriver::state(), WskTestDriver::state()] {
            match (state.bindings_in_use(), state.live_allocations()) {
                (0, 0) => {}
                (slots, live) => {
                    return Err(format!(
                        "library state: {slots} binding slot(s) in use, {live} live allocation(s)"
                    ));
                }
            }
        }
        Ok(())
    });
    s
}

/// A session with the test driver loaded.
pub fn started() -> Session {
    let mut s = session();
    assert_eq!(s.driver_entry(DriverEntry), wsk_host_model::Status::SUCCESS);
    s
}

/// How long a test waits for its task to get somewhere, or for a remote client to connect.
pub const LIMIT: StdDuration = StdDuration::from_secs(10);

/// Spawns `future` as a task of the test driver.
pub fn spawn(future: impl Future<Output = ()> + Send + 'static) -> TaskHandle {
    task::spawn::<TestDriver, _>(future).unwrap()
}

/// What the task sent, within [`LIMIT`].
pub fn recv<T>(rx: &mpsc::Receiver<T>) -> T {
    rx.recv_timeout(LIMIT).expect("the task never got there")
}

/// A remote client of the model connected to the listening socket the test bound.
pub fn client() -> RemoteClient {
    connect_client(LIMIT).expect("no listening socket was bound")
}

/// How many of the session's events are `what`.
pub fn count(s: &Session, what: impl Fn(&Event) -> bool) -> usize {
    s.events().iter().filter(|e| what(e)).count()
}

/// A buffer of the test driver holding `bytes`.
pub fn buffer_with(bytes: &[u8]) -> Buffer {
    let mut buffer = Buffer::new::<TestDriver>(bytes.len()).unwrap();
    buffer.as_mut_slice().copy_from_slice(bytes);
    buffer
}
