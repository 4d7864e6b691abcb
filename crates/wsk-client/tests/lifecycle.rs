//! The driver's lifecycle against the host model of NMR: register, attach (with version fallback
//! and every way to decline or fail), calls in flight, detach, cleanup, unload. Each test ends with
//! the session's own check: no pool block live, no binding slot in use, no NMR rule broken.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::redundant_closure_for_method_calls
)]

use std::sync::mpsc;
use std::thread;

mod common;

use common::{DriverEntry, MAX_BINDINGS, TAG, TestDriver};
use wsk_client::WskVersion;
use wsk_client::provider::ProviderError;
use wsk_client::sys::{GUID, WSK_PROVIDER_CHARACTERISTICS};
use wsk_host_model::{Event, ProviderConfig, Session, Status, WSK_1_0 as V1_0, WSK_1_1 as V1_1};

/// `with_provider` of the test driver.
fn with_provider<R>(
    f: impl FnOnce(&wsk_client::BindingRef<TestDriver>) -> R,
) -> Result<R, ProviderError> {
    wsk_client::provider::with_provider::<TestDriver, R>(f)
}

use common::started;

/// The events that matter for NMR sequencing (NMR's calls and the driver's callbacks only).
fn nmr_events(s: &Session) -> Vec<Event> {
    s.events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::NmrRegisterClient { .. }
                    | Event::ClientAttachProvider { .. }
                    | Event::NmrClientAttachProvider { .. }
                    | Event::ClientDetachProvider { .. }
                    | Event::NmrClientDetachProviderComplete { .. }
                    | Event::ClientCleanupBindingContext { .. }
                    | Event::NmrDeregisterClient { .. }
                    | Event::NmrWaitForClientDeregisterComplete { .. }
            )
        })
        .collect()
}

fn allocations(s: &Session) -> usize {
    s.events()
        .iter()
        .filter(|e| matches!(e, Event::Allocate { ok: true, .. }))
        .count()
}

/// Pool blocks per binding: its context and its detach notice's work item (allocated together by
/// the attach, so that the detach cannot fail to notify).
const PER_BINDING: usize = 2;

fn has_log(s: &Session, needle: &str) -> bool {
    s.log().iter().any(|line| line.contains(needle))
}

fn provider_range(lowest: u16, highest: u16) -> ProviderConfig {
    ProviderConfig::wsk(lowest, highest)
}

#[test]
fn driver_entry_registers_and_sets_unload() {
    let mut s = common::session();
    assert!(s.unload_routine().is_none());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert!(s.unload_routine().is_some());
    assert_eq!(
        s.events(),
        [
            Event::RtlGetVersion,
            Event::MmGetSystemRoutineAddress {
                name: "ExAllocatePool2".into(),
                found: true
            },
            Event::IoCreateDevice {
                status: Status::SUCCESS
            },
            Event::NmrRegisterClient {
                status: Status::SUCCESS
            },
        ]
    );
    assert!(has_log(&s, "test_driver: registered as WSK NPI client"));
    assert!(has_log(&s, "test_driver: pool: ExAllocatePool2"));
    s.driver_unload();
    assert_eq!(
        nmr_events(&s)[1..],
        [
            Event::NmrDeregisterClient {
                status: Status::PENDING
            },
            Event::NmrWaitForClientDeregisterComplete {
                status: Status::SUCCESS
            },
        ]
    );
    assert!(has_log(
        &s,
        "test_driver: unloaded, live pool allocations: 0"
    ));
}

#[test]
fn register_failure_is_returned_with_nothing_left() {
    let mut s = common::session();
    s.fail_register_client(Status::INSUFFICIENT_RESOURCES);
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::INSUFFICIENT_RESOURCES);
    assert!(s.unload_routine().is_none(), "DriverUnload set on failure");
    assert_eq!(allocations(&s), 0);
    assert!(s.attach_results().is_empty());
    assert!(has_log(&s, "NmrRegisterClient failed: 0xC000009A"));
}

#[test]
fn provider_present_at_registration_attaches_at_1_1() {
    let mut s = common::session();
    let p = s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    let events = nmr_events(&s);
    let Event::NmrClientAttachProvider { binding, .. } = events[0] else {
        panic!("first event is not the attach try: {events:?}");
    };
    // Attach ran inside NmrRegisterClient, before it returned (and wrote the out-handle).
    assert_eq!(
        events,
        [
            Event::NmrClientAttachProvider {
                binding,
                version: V1_1,
                status: Status::SUCCESS
            },
            Event::ClientAttachProvider {
                binding,
                provider: p,
                status: Status::SUCCESS
            },
            Event::NmrRegisterClient {
                status: Status::SUCCESS
            },
        ]
    );
    assert_eq!(allocations(&s), PER_BINDING);
    let mut tags: Vec<u32> = s.live_allocations().iter().map(|a| a.tag).collect();
    tags.sort_unstable();
    let mut expected = [TAG, <TestDriver as wsk_client::Client>::WORK_ITEM_TAG.raw()];
    expected.sort_unstable();
    assert_eq!(tags, expected);
    assert!(has_log(&s, "test_driver: attach tried WSK 1.1: 0x00000000"));
    assert!(has_log(&s, "test_driver: attached at WSK 1.1"));

    s.driver_unload();
    let tail = nmr_events(&s)[3..].to_vec();
    assert_eq!(
        tail,
        [
            Event::NmrDeregisterClient {
                status: Status::PENDING
            },
            Event::ClientDetachProvider {
                binding,
                status: Status::SUCCESS
            },
            Event::ClientCleanupBindingContext { binding },
            Event::NmrWaitForClientDeregisterComplete {
                status: Status::SUCCESS
            },
        ]
    );
    assert!(has_log(
        &s,
        "test_driver: detach: no call in flight, detached"
    ));
    assert!(has_log(&s, "test_driver: cleanup: binding context freed"));
    assert!(has_log(
        &s,
        "test_driver: unloaded, live pool allocations: 0"
    ));
}

#[test]
fn provider_arriving_later_attaches() {
    let mut s = started();
    assert!(s.attach_results().is_empty());
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.attach_results(), [Status::SUCCESS]);
    assert_eq!(s.attach_tries(), [(V1_1, Status::SUCCESS)]);
    assert_eq!(s.bindings().len(), 1);
    s.driver_unload();
    assert!(s.bindings().is_empty());
}

#[test]
fn fallback_from_1_1_to_1_0_reuses_the_context() {
    let mut s = started();
    s.register_provider(ProviderConfig::default_wsk().answer(V1_1, Status::NOINTERFACE));
    assert_eq!(
        s.attach_tries(),
        [(V1_1, Status::NOINTERFACE), (V1_0, Status::SUCCESS)]
    );
    assert_eq!(s.attach_results(), [Status::SUCCESS]);
    assert_eq!(allocations(&s), PER_BINDING, "the retry reuses the context");
    assert!(has_log(&s, "test_driver: fallback from WSK 1.1 to WSK 1.0"));
    assert!(has_log(&s, "test_driver: attached at WSK 1.0"));
    let version = with_provider(|p| p.version()).unwrap();
    assert_eq!(version, WskVersion::V1_0);
    s.driver_unload();
}

#[test]
fn provider_of_1_0_only_is_never_asked_for_1_1() {
    let mut s = started();
    s.register_provider(ProviderConfig::wsk(V1_0, V1_0));
    assert_eq!(s.attach_tries(), [(V1_0, Status::SUCCESS)]);
    assert!(!has_log(&s, "fallback"));
    s.driver_unload();
}

#[test]
fn newer_provider_range_attaches_at_highest_common_version() {
    let mut s = started();
    s.register_provider(provider_range(0x0100, 0x0205));
    assert_eq!(s.attach_tries(), [(V1_1, Status::SUCCESS)]);
    s.driver_unload();
}

#[test]
fn noninterface_for_every_version_frees_the_context() {
    let mut s = started();
    s.register_provider(
        ProviderConfig::default_wsk()
            .answer(V1_1, Status::NOINTERFACE)
            .answer(V1_0, Status::NOINTERFACE),
    );
    assert_eq!(
        s.attach_tries(),
        [(V1_1, Status::NOINTERFACE), (V1_0, Status::NOINTERFACE)]
    );
    assert_eq!(s.attach_results(), [Status::NOINTERFACE]);
    assert_eq!(allocations(&s), PER_BINDING);
    assert!(s.live_allocations().is_empty());
    assert!(has_log(&s, "test_driver: attach failed: 0xC00002B9"));
    s.driver_unload();
}

#[test]
fn another_error_stops_the_retries() {
    let mut s = started();
    s.register_provider(ProviderConfig::default_wsk().answer(V1_1, Status::UNSUCCESSFUL));
    assert_eq!(s.attach_tries(), [(V1_1, Status::UNSUCCESSFUL)]);
    assert_eq!(s.attach_results(), [Status::UNSUCCESSFUL]);
    assert!(s.live_allocations().is_empty());
    s.driver_unload();
}

#[test]
fn error_after_fallback_returns_the_last_status() {
    let mut s = started();
    s.register_provider(
        ProviderConfig::default_wsk()
            .answer(V1_1, Status::NOINTERFACE)
            .answer(V1_0, Status::INSUFFICIENT_RESOURCES),
    );
    assert_eq!(s.attach_results(), [Status::INSUFFICIENT_RESOURCES]);
    s.driver_unload();
}

#[test]
fn unexpected_success_code_is_not_taken_for_an_attachment() {
    let mut s = started();
    s.register_provider(ProviderConfig::default_wsk().answer(V1_1, Status::PENDING));
    assert_eq!(s.attach_tries(), [(V1_1, Status::PENDING)]);
    assert_eq!(s.attach_results(), [Status::UNSUCCESSFUL]);
    assert!(has_log(&s, "unexpected status 0x00000103"));
    s.driver_unload();
}

#[test]
fn allocation_failure_makes_no_nmr_call() {
    let mut s = started();
    s.fail_allocations(1);
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.attach_results(), [Status::INSUFFICIENT_RESOURCES]);
    assert!(s.attach_tries().is_empty());
    assert!(has_log(&s, "no pool for the binding context"));
    s.driver_unload();
}

#[test]
fn fallback_pool_routine_without_exallocatepool2() {
    let mut s = common::session();
    s.set_pool2_available(false);
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert!(has_log(
        &s,
        "pool: ExAllocatePoolWithTag(NonPagedPoolNx) fallback"
    ));
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.attach_results(), [Status::SUCCESS]);
    let routines: Vec<&str> = s
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Allocate { routine, .. } => Some(*routine),
            _ => None,
        })
        .collect();
    assert_eq!(routines, ["ExAllocatePoolWithTag"; PER_BINDING]);
    // The pool came back as 0xCD garbage; the context must still read as set by attach.
    let (version, client) = with_provider(|p| (p.version(), p.client())).unwrap();
    assert_eq!(version, WskVersion::V1_1);
    assert!(!client.is_null());
    s.driver_unload();
}

fn assert_declined(config: ProviderConfig, log_needle: &str) {
    let mut s = started();
    s.register_provider(config);
    assert_eq!(s.attach_results(), [Status::NOINTERFACE]);
    assert!(
        s.attach_tries().is_empty(),
        "no NMR call for a declined provider"
    );
    assert_eq!(
        allocations(&s),
        0,
        "nothing allocated for a declined provider"
    );
    assert!(has_log(&s, log_needle), "log: {:?}", s.log());
    s.driver_unload();
}

#[test]
fn declines_null_characteristics() {
    let mut config = ProviderConfig::default_wsk();
    config.characteristics = None;
    assert_declined(config, "attach declined: no provider characteristics");
}

#[test]
fn declines_wrong_npi_id() {
    let mut config = ProviderConfig::default_wsk();
    config.npi_id = GUID {
        Data1: 1,
        Data2: 2,
        Data3: 3,
        Data4: [4; 8],
    };
    assert_declined(config, "attach declined: provider is not WSK");
}

#[test]
fn declines_inverted_range() {
    let mut config = ProviderConfig::default_wsk();
    config.characteristics = Some(WSK_PROVIDER_CHARACTERISTICS {
        HighestVersion: V1_0,
        LowestVersion: V1_1,
    });
    assert_declined(config, "attach declined: inverted version range 1.1 > 1.0");
}

#[test]
fn declines_range_without_supported_version() {
    assert_declined(
        provider_range(0x0200, 0x0203),
        "attach declined: no supported version in WSK 2.0-2.3",
    );
    assert_declined(
        provider_range(0x0000, 0x00FF),
        "no supported version in WSK 0.0-0.255",
    );
}

#[test]
fn declines_short_registration_instance() {
    let mut config = ProviderConfig::default_wsk();
    config.instance_size = 8;
    assert_declined(config, "registration instance size 8 too small");
}

#[test]
fn provider_leaving_while_attached_and_idle() {
    let mut s = started();
    let p = s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.deregister_provider(p), [Status::SUCCESS]);
    assert!(s.bindings().is_empty());
    s.wait_work_items();
    assert!(s.live_allocations().is_empty());
    assert_eq!(
        with_provider(|_| ()).unwrap_err(),
        ProviderError::NotAttached
    );
    s.driver_unload();
    // Unload after the provider left: nothing to detach.
    assert!(matches!(
        nmr_events(&s).last(),
        Some(Event::NmrWaitForClientDeregisterComplete { .. })
    ));
}

/// Starts a call through the provider on a thread of the driver's own and holds it until
/// `release` is sent: the provider function is called before the detach begins (after it, the
/// binding hands out none), and the call is in flight until the reference goes.
fn call_in_flight(
    s: &Session,
) -> (
    thread::JoinHandle<Result<(), ProviderError>>,
    mpsc::Sender<()>,
) {
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let worker = s.driver_thread(move || {
        with_provider(|p| {
            let control = p.control_client().expect("WskControlClient");
            // SAFETY: the model's WskControlClient ignores every argument but the client.
            let status = unsafe {
                control(
                    p.client(),
                    0,
                    0,
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            assert_eq!(status, 0);
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        })
    });
    entered_rx.recv().unwrap();
    (worker, release_tx)
}

#[test]
fn provider_leaving_with_a_call_in_flight_completes_later() {
    let mut s = started();
    let p = s.register_provider(ProviderConfig::default_wsk());
    let (worker, release) = call_in_flight(&s);

    assert_eq!(s.deregister_provider(p), [Status::PENDING]);
    assert!(has_log(
        &s,
        "test_driver: detach: 1 call(s) in flight, pending"
    ));
    // Detaching: no new call may start; the context is not freed yet (the notice's work item
    // may still be running too).
    assert_eq!(with_provider(|_| ()).unwrap_err(), ProviderError::Detaching);
    s.wait_work_items();
    assert_eq!(s.live_allocations().len(), 1);

    release.send(()).unwrap();
    worker.join().unwrap().unwrap();
    s.wait_provider_unbound(p);
    let events = nmr_events(&s);
    let n = events.len();
    assert!(matches!(
        events[n - 2..],
        [
            Event::NmrClientDetachProviderComplete { .. },
            Event::ClientCleanupBindingContext { .. }
        ]
    ));
    assert!(s.events().iter().any(|e| matches!(
        e,
        Event::ProviderCall {
            name: "WskControlClient",
            ..
        }
    )));
    assert!(has_log(
        &s,
        "detach completed: last call in flight returned"
    ));
    s.driver_unload();
}

#[test]
fn no_provider_function_is_handed_out_once_the_detach_began() {
    // "After ClientDetachProvider has been called, the client module should not make any more
    // calls to any of the provider module's NPI functions": a reference held across the detach
    // stays valid (for what it already started), but gives no provider function any more.
    let mut s = started();
    let p = s.register_provider(ProviderConfig::default_wsk());
    let held = wsk_client::BindingRef::<TestDriver>::acquire().unwrap();
    assert!(held.control_client().is_some() && held.ensure_open().is_ok());
    assert_eq!(s.deregister_provider(p), [Status::PENDING]);
    assert!(held.control_client().is_none());
    assert!(held.socket().is_none() && held.get_address_info().is_none());
    assert_eq!(held.ensure_open(), Err(ProviderError::Detaching));
    drop(held);
    s.wait_provider_unbound(p);
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn unload_with_a_driver_thread_still_in_a_call_is_caught() {
    // The driver's own thread is inside a call when the unload runs, and DriverUnload does not
    // join it first: the last release lets the unload go on while that thread still runs image
    // code. Windows would unmap the image under it; the model records it. (Before binding
    // references and the unload order, this was the library's own behaviour with `with_provider`
    // on such a thread: the release completed the NMR detach from the unjoined thread.)
    let mut s = started();
    s.register_provider(ProviderConfig::default_wsk());
    let (worker, release) = call_in_flight(&s);
    let releaser = thread::spawn(move || {
        thread::sleep(std::time::Duration::from_millis(50));
        release.send(()).unwrap();
    });
    s.driver_unload();
    releaser.join().unwrap();
    worker.join().unwrap().unwrap();
    let violations = s.violations();
    assert!(
        violations
            .iter()
            .any(|v| v.starts_with("DriverUnload returned while driver code still runs")),
        "{violations:#?}"
    );
    s.forget_violations();
}

#[test]
fn unload_waits_for_a_driver_thread_it_joins_first() {
    // The same thread, joined by DriverUnload before the registration is dropped (the contract):
    // the call ends, the unload finds nothing held, and nothing runs after it.
    let mut s = started();
    s.register_provider(ProviderConfig::default_wsk());
    let (worker, release) = call_in_flight(&s);
    let worker = std::sync::Mutex::new(Some((worker, release)));
    common::stop_own_work(move |()| {
        if let Some((worker, release)) = worker.lock().unwrap().take() {
            release.send(()).unwrap();
            worker.join().unwrap().unwrap();
        }
    });
    s.driver_unload();
    assert!(has_log(
        &s,
        "test_driver: unload: 0 reference(s) outstanding"
    ));
    let events = nmr_events(&s);
    let tail: Vec<&Event> = events.iter().rev().take(4).rev().collect();
    assert!(
        matches!(
            tail[..],
            [
                Event::NmrDeregisterClient { .. },
                Event::ClientDetachProvider {
                    status: Status::SUCCESS,
                    ..
                },
                Event::ClientCleanupBindingContext { .. },
                Event::NmrWaitForClientDeregisterComplete {
                    status: Status::SUCCESS
                },
            ]
        ),
        "{tail:#?}"
    );
    assert!(s.image_unmapped());
}

/// A work item of the test driver that holds a reference until `release` is sent.
struct HoldInWorkItem {
    reference: wsk_client::BindingRef<TestDriver>,
    release: mpsc::Receiver<()>,
    entered: mpsc::Sender<()>,
}

impl wsk_client::work::Work for HoldInWorkItem {
    fn run(self) {
        self.entered.send(()).unwrap();
        self.release.recv().unwrap();
        drop(self.reference);
    }
}

#[test]
fn unload_waits_for_a_reference_held_by_a_work_item() {
    // A reference released in a work item during the unload: the unload waits for it (and for
    // the work item), then NMR finds every binding idle; the image goes only after the work item
    // returned, because the I/O manager held the client's device object for it.
    let mut s = started();
    s.register_provider(ProviderConfig::default_wsk());
    let (release_tx, release_rx) = mpsc::channel();
    let (entered_tx, entered_rx) = mpsc::channel();
    wsk_client::work::queue::<TestDriver, _>(HoldInWorkItem {
        reference: wsk_client::BindingRef::acquire().unwrap(),
        release: release_rx,
        entered: entered_tx,
    })
    .unwrap();
    entered_rx.recv().unwrap();
    let releaser = thread::spawn(move || {
        thread::sleep(std::time::Duration::from_millis(50));
        release_tx.send(()).unwrap();
    });
    s.driver_unload();
    releaser.join().unwrap();
    assert!(has_log(
        &s,
        "test_driver: unload: 1 reference(s) outstanding"
    ));
    assert!(has_log(
        &s,
        "test_driver: unload: waiting for 1 reference(s)"
    ));
    let notices = common::NOTICES.lock().unwrap().clone();
    assert_eq!(
        notices,
        [wsk_client::DetachNotice {
            reason: wsk_client::DetachReason::Unload,
            references: 1
        }]
    );
    let events = nmr_events(&s);
    assert!(
        matches!(
            events.iter().rev().nth(2),
            Some(Event::ClientDetachProvider {
                status: Status::SUCCESS,
                ..
            })
        ),
        "the detach found the binding idle: {events:#?}"
    );
    s.wait_work_items();
    assert!(s.image_unmapped());
}

#[test]
fn a_detach_notification_lets_the_client_close_what_it_holds() {
    // (a) The provider goes away while the client holds a reference, like an open socket: the
    // detach pends, the notification queues a work item that lets go, the detach completes.
    let mut s = started();
    let p = s.register_provider(ProviderConfig::default_wsk());
    *common::HELD.lock().unwrap() = Some(wsk_client::BindingRef::acquire().unwrap());
    common::on_detach(|_notice| {
        // A work item of the library's at PASSIVE_LEVEL: a close that waits could run here; this
        // one hands the reference to a work item of its own.
        wsk_client::work::queue::<TestDriver, _>(wsk_client::work::Closure(|| {
            drop(common::HELD.lock().unwrap().take());
        }))
        .unwrap();
    });
    assert_eq!(s.deregister_provider(p), [Status::PENDING]);
    s.wait_provider_unbound(p);
    assert_eq!(
        common::NOTICES.lock().unwrap()[..],
        [wsk_client::DetachNotice {
            reason: wsk_client::DetachReason::Provider,
            references: 1
        }]
    );
    s.wait_work_items();
    assert!(
        wsk_client::BindingRef::<TestDriver>::acquire().is_err(),
        "no new reference after the detach"
    );
    s.driver_unload();
}

#[test]
fn the_detach_notification_runs_outside_nmrs_callback() {
    // Embedder code never runs inside an NMR callback: NMR may call ClientDetachProvider at
    // DISPATCH_LEVEL, holding its own locks, and a close the embedder starts there may complete at
    // once and complete the detach before the callback returned STATUS_PENDING.
    let mut s = started();
    let p = s.register_provider(ProviderConfig::default_wsk());
    *common::HELD.lock().unwrap() = Some(wsk_client::BindingRef::acquire().unwrap());
    let (inside_tx, inside_rx) = mpsc::channel();
    common::on_detach(move |_notice| {
        // (The unload's notice comes later, with nobody listening.)
        let _ = inside_tx.send(wsk_host_model::inside_nmr_callback());
        // What a driver does with the notice: let go of what it holds (a socket's close that
        // completes at once drops its reference just like this).
        drop(common::HELD.lock().unwrap().take());
    });
    assert_eq!(s.deregister_provider(p), [Status::PENDING]);
    assert!(
        !inside_rx.recv().unwrap(),
        "on_detach ran inside NMR's call"
    );
    s.wait_provider_unbound(p);
    s.wait_work_items();
    s.driver_unload();
}

#[test]
fn detach_and_cleanup_at_dispatch_level_break_no_irql_rule() {
    // ClientDetachProvider and ClientCleanupBindingContext may be called at DISPATCH_LEVEL
    // (their pages); the model checks every call made from there against tests/irql-rules.txt.
    let mut s = started();
    s.call_at("ClientDetachProvider", wsk_host_model::Irql::Dispatch);
    s.call_at(
        "ClientCleanupBindingContext",
        wsk_host_model::Irql::Dispatch,
    );
    let p = s.register_provider(ProviderConfig::default_wsk());
    let (worker, release) = call_in_flight(&s);
    assert_eq!(s.deregister_provider(p), [Status::PENDING]);
    release.send(()).unwrap();
    worker.join().unwrap().unwrap();
    s.wait_provider_unbound(p);
    s.wait_work_items();
    let p = s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.deregister_provider(p), [Status::SUCCESS]);
    s.driver_unload();
}

#[test]
fn a_prepared_work_item_queues_without_allocating_and_one_dropped_unqueued_is_freed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use wsk_client::work::{Closure, Prepared};
    use wsk_host_model::Failable;

    static RAN: AtomicUsize = AtomicUsize::new(0);
    RAN.store(0, Ordering::SeqCst);
    let mut s = started();
    let run = || {
        RAN.fetch_add(1, Ordering::SeqCst);
    };
    let used = Prepared::<TestDriver, _>::new(Closure(run)).unwrap();
    let unused = Prepared::<TestDriver, _>::new(Closure(run)).unwrap();
    // Nothing can be allocated any more: queueing the prepared one still works.
    s.fail_nth(Failable::WorkItem, 0);
    s.fail_allocations(usize::MAX);
    used.queue();
    s.wait_work_items();
    assert_eq!(RAN.load(Ordering::SeqCst), 1);
    assert!(
        s.nth_failure_left(Failable::WorkItem).is_some(),
        "queue() allocated a work item"
    );
    s.fail_allocations(0);
    // The other one, dropped unqueued: freed (its work never runs), and the unload does not wait
    // for it (the model checks the work item and its context are gone).
    drop(unused);
    s.driver_unload();
    assert_eq!(RAN.load(Ordering::SeqCst), 1);
}

#[test]
fn unload_waits_for_a_client_that_ignores_the_notification() {
    // (c) The client ignores the unload's notification and lets go of its reference only later:
    // the unload waits (logging every 5 s, model time), then resumes.
    let mut s = started();
    s.register_provider(ProviderConfig::default_wsk());
    *common::HELD.lock().unwrap() = Some(wsk_client::BindingRef::acquire().unwrap());
    let late_close = thread::spawn(|| {
        // 5 s of model time (see the model's TIME_SCALE) and a bit: one "still waiting" line.
        thread::sleep(std::time::Duration::from_millis(300));
        wsk_client::work::queue::<TestDriver, _>(wsk_client::work::Closure(|| {
            drop(common::HELD.lock().unwrap().take());
        }))
    });
    s.driver_unload();
    // Queued while the unload waits for references: accepted (work items stay open until the
    // references are gone), and it is what lets the unload go on.
    late_close.join().unwrap().unwrap();
    assert!(has_log(
        &s,
        "test_driver: unload: still waiting for reference(s)"
    ));
    assert!(common::HELD.lock().unwrap().is_none());
    s.wait_work_items();
    assert!(s.image_unmapped());
}

#[test]
fn two_providers_at_once() {
    let mut s = started();
    let a = s.register_provider(ProviderConfig::default_wsk());
    let b = s.register_provider(ProviderConfig::wsk(V1_0, V1_0));
    assert_eq!(s.attach_results(), [Status::SUCCESS, Status::SUCCESS]);
    assert_eq!(s.live_allocations().len(), 2 * PER_BINDING);
    assert_eq!(s.deregister_provider(a), [Status::SUCCESS]);
    // The second binding still serves calls.
    assert_eq!(with_provider(|p| p.version()).unwrap(), WskVersion::V1_0);
    let _ = b;
    s.driver_unload();
    assert!(s.bindings().is_empty());
}

#[test]
fn reattach_after_detach() {
    let mut s = started();
    let first = s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.deregister_provider(first), [Status::SUCCESS]);
    s.register_provider(ProviderConfig::wsk(V1_0, V1_0));
    assert_eq!(s.attach_results(), [Status::SUCCESS, Status::SUCCESS]);
    assert_eq!(with_provider(|p| p.version()).unwrap(), WskVersion::V1_0);
    s.driver_unload();
    assert_eq!(allocations(&s), 2 * PER_BINDING);
}

#[test]
fn detach_before_attach_returns_is_survived() {
    let mut s = started();
    let mut config = ProviderConfig::default_wsk();
    config.detach_during_attach = true;
    s.register_provider(config);
    // NMR accepted the binding, detached and cleaned it up before NmrClientAttachProvider
    // returned; attach still reports success and touches nothing freed.
    assert_eq!(s.attach_results(), [Status::SUCCESS]);
    s.wait_work_items();
    assert!(s.live_allocations().is_empty());
    assert!(has_log(&s, "detached before the attach returned"));
    assert_eq!(
        with_provider(|_| ()).unwrap_err(),
        ProviderError::NotAttached
    );
    s.driver_unload();
}

#[test]
fn a_stale_attach_never_opens_the_slot_another_attach_reused() {
    // Attach A's binding is detached and cleaned up inside NmrClientAttachProvider (its slot is
    // freed); before A's NmrClientAttachProvider returns, attach B takes the same slot on another
    // thread and is held inside its own NmrClientAttachProvider. A's late open must fail (the
    // slot's generation changed); B, once released, must open its binding. Either generation
    // mutation (free() not bumping it, open() ignoring it) lets A open B's slot.
    use std::sync::Arc;

    let mut s = started();
    // Fill every slot but one, so that A and B must share the last.
    for _ in 1..MAX_BINDINGS {
        s.register_provider(ProviderConfig::default_wsk());
    }
    let (b_inside_tx, b_inside_rx) = mpsc::channel::<()>();
    let (b_release_tx, b_release_rx) = mpsc::channel::<()>();
    let b_inside_tx = std::sync::Mutex::new(b_inside_tx);
    let b_release_rx = std::sync::Mutex::new(b_release_rx);
    let mut b = ProviderConfig::default_wsk();
    b.during_attach = Some(wsk_host_model::AttachHook(Arc::new(move || {
        b_inside_tx.lock().unwrap().send(()).unwrap();
        b_release_rx.lock().unwrap().recv().unwrap();
    })));
    let b_thread = std::sync::Mutex::new(None);
    let b_thread = Arc::new(b_thread);
    let mut a = ProviderConfig::default_wsk();
    a.detach_during_attach = true;
    let spawn_b = Arc::clone(&b_thread);
    let b_inside_rx = std::sync::Mutex::new(b_inside_rx);
    a.during_attach = Some(wsk_host_model::AttachHook(Arc::new(move || {
        // A's binding is gone and its slot free: B takes it and stays inside its attach.
        let b = b.clone();
        let handle = thread::spawn(move || wsk_host_model::register_provider(b));
        *spawn_b.lock().unwrap() = Some(handle);
        b_inside_rx.lock().unwrap().recv().unwrap();
    })));
    s.register_provider(a);
    // A returned: its open found B's reservation and failed.
    assert!(has_log(&s, "detached before the attach returned"));
    b_release_tx.send(()).unwrap();
    let b_id = b_thread.lock().unwrap().take().unwrap().join().unwrap();
    let log = s.log();
    let attached = log
        .iter()
        .filter(|l| *l == "test_driver: attached at WSK 1.1")
        .count();
    assert_eq!(
        attached, MAX_BINDINGS,
        "B (and the others) attached: {log:#?}"
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("detached before the attach returned"))
            .count(),
        1,
        "only A was detached early: {log:#?}"
    );
    // B's binding is usable and detaches cleanly.
    assert_eq!(s.deregister_provider(b_id), [Status::SUCCESS]);
    s.driver_unload();
}

#[test]
fn a_deregistration_that_reports_success_is_still_waited_for() {
    // NmrDeregisterClient may return STATUS_SUCCESS: the unload must still wait for the
    // deregistration to complete before DriverUnload returns (NMR would otherwise call
    // cleanup into an unloaded image).
    let mut s = started();
    s.register_provider(ProviderConfig::default_wsk());
    s.deregister_client_returns_success();
    s.driver_unload();
    assert!(matches!(
        nmr_events(&s).last(),
        Some(Event::NmrWaitForClientDeregisterComplete {
            status: Status::SUCCESS
        })
    ));
}

#[test]
fn every_slot_in_use_declines_without_allocating() {
    let mut s = started();
    for _ in 0..MAX_BINDINGS {
        s.register_provider(ProviderConfig::default_wsk());
    }
    s.register_provider(ProviderConfig::default_wsk());
    let results = s.attach_results();
    assert_eq!(results.last(), Some(&Status::INSUFFICIENT_RESOURCES));
    assert_eq!(allocations(&s), MAX_BINDINGS * PER_BINDING);
    s.driver_unload();
}

#[test]
fn provider_api_exposes_the_attached_version_only() {
    let mut s = started();
    assert_eq!(
        with_provider(|_| ()).unwrap_err(),
        ProviderError::NotAttached
    );
    assert_eq!(
        wsk_client::NtStatus::from(ProviderError::NotAttached),
        wsk_client::NtStatus::DEVICE_NOT_READY
    );
    let p = s.register_provider(ProviderConfig::wsk(V1_0, V1_0));
    with_provider(|p| {
        assert_eq!(p.version(), WskVersion::V1_0);
        assert!(p.socket().is_some() && p.socket_connect().is_some());
        assert!(p.control_client().is_some());
        assert!(p.get_address_info().is_none(), "1.1 member read at 1.0");
        assert!(p.free_address_info().is_none());
        assert!(p.get_name_info().is_none());
    })
    .unwrap();
    s.deregister_provider(p);
    s.register_provider(ProviderConfig::default_wsk());
    with_provider(|p| {
        assert_eq!(p.version(), WskVersion::V1_1);
        assert!(p.get_address_info().is_some());
        assert!(p.free_address_info().is_some());
        assert!(p.get_name_info().is_some());
    })
    .unwrap();
    s.driver_unload();
}

#[test]
fn provider_without_dispatch_is_reported() {
    let mut s = started();
    let mut config = ProviderConfig::default_wsk();
    config.null_dispatch = true;
    s.register_provider(config);
    assert_eq!(
        with_provider(|_| ()).unwrap_err(),
        ProviderError::BadProvider
    );
    s.driver_unload();
}

#[test]
fn the_model_catches_a_leak() {
    // The model's own check must be able to fail: a block left live is reported.
    let mut s = common::session();
    // SAFETY: the model's pool routine, called directly.
    let block =
        unsafe { wsk_client::sys::ExAllocatePoolWithTag(wsk_client::sys::NonPagedPoolNx, 8, TAG) };
    assert_eq!(s.live_allocations().len(), 1);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.check_clean()));
    assert!(caught.is_err(), "a live block must fail the check");
    // SAFETY: the block just allocated, with its tag.
    unsafe { wsk_client::sys::ExFreePoolWithTag(block, TAG) };
    s.check_clean();
}

#[test]
fn detaches_race_with_calls_on_other_threads() {
    // Calls start and end on four threads while the provider comes and goes: every detach either
    // finds no call (STATUS_SUCCESS) or pends and is completed exactly once by the last call;
    // the model records any second completion, any completion without a pending detach, and any
    // cleanup that frees a context still in use (as a leak or a bad free).
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let mut s = started();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let calls = Arc::clone(&calls);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let result = with_provider(|p| {
                        assert!(!p.client().is_null());
                        thread::yield_now();
                    });
                    if result.is_ok() {
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let mut pending = 0;
    for _ in 0..300 {
        let p = s.register_provider(ProviderConfig::default_wsk());
        thread::yield_now();
        for status in s.deregister_provider(p) {
            assert!(matches!(status, Status::SUCCESS | Status::PENDING));
            pending += usize::from(status == Status::PENDING);
        }
        s.wait_provider_unbound(p);
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
    let completions = s
        .events()
        .iter()
        .filter(|e| matches!(e, Event::NmrClientDetachProviderComplete { .. }))
        .count();
    assert_eq!(completions, pending, "one completion per pending detach");
    assert!(calls.load(Ordering::Relaxed) > 0, "no call ever ran");
    assert!(s.violations().is_empty(), "{:#?}", s.violations());
    s.driver_unload();
    eprintln!(
        "race test: {} calls, {pending} of 300 detaches pended",
        calls.load(Ordering::Relaxed)
    );
}

#[test]
fn windows_7_gets_executable_non_paged_pool() {
    // NonPagedPoolNx does not exist before Windows 8: the model records its use there as a rule
    // broken, and NonPagedPool on Windows 8 and later too.
    let mut s = common::session();
    s.set_os_version(6, 1, 7601);
    s.set_pool2_available(false);
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert!(has_log(
        &s,
        "test_driver: pool: ExAllocatePoolWithTag(NonPagedPool) fallback, before Windows 8"
    ));
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.attach_results(), [Status::SUCCESS]);
    s.driver_unload();
    s.check_clean();
}

#[test]
fn windows_8_gets_non_executable_pool() {
    let mut s = common::session();
    s.set_os_version(6, 2, 9200);
    s.set_pool2_available(false);
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert!(has_log(
        &s,
        "test_driver: pool: ExAllocatePoolWithTag(NonPagedPoolNx) fallback"
    ));
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.attach_results(), [Status::SUCCESS]);
    s.driver_unload();
    s.check_clean();
}

#[test]
fn registered_characteristics_are_the_clients_own() {
    use wsk_client::registration::Characteristics;
    use wsk_client::sys::{MIT_GUID, NPI_WSK_INTERFACE_ID};

    let c = Characteristics::<TestDriver>::TABLE;
    assert_eq!((c.Version, usize::from(c.Length)), (0, 0x48));
    let instance = &c.ClientRegistrationInstance;
    assert_eq!((instance.Version, usize::from(instance.Size)), (0, 0x28));
    assert_eq!(instance.Number, 0);
    assert!(instance.NpiSpecificCharacteristics.is_null());
    // SAFETY: a pointer to the constant NPI id.
    let npi_id = unsafe { *instance.NpiId };
    // SAFETY: a pointer to the client's constant module id.
    let module_id = unsafe { *instance.ModuleId };
    assert_eq!(npi_id, NPI_WSK_INTERFACE_ID);
    assert_eq!(usize::from(module_id.Length), 0x18);
    assert_eq!(module_id.Type, MIT_GUID);
    // SAFETY: Type is MIT_GUID, so the union holds a GUID.
    let guid = unsafe { module_id.u.Guid };
    assert_eq!(guid, <TestDriver as wsk_client::Client>::MODULE_ID);
    // guid(0x7E57_D41E_0000_4000_8000_0000_0000_0001) is {7E57D41E-0000-4000-8000-000000000001}.
    assert_eq!(
        guid,
        GUID {
            Data1: 0x7E57_D41E,
            Data2: 0,
            Data3: 0x4000,
            Data4: [0x80, 0, 0, 0, 0, 0, 0, 1],
        }
    );
    assert!(c.ClientAttachProvider.is_some());
    assert!(c.ClientDetachProvider.is_some());
    assert!(c.ClientCleanupBindingContext.is_some());
}
