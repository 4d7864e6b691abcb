//! The `WskRegister` backend against the host model: the same API (references, notification,
//! unload order) on `WskRegister` / `WskCaptureProviderNPI` / `WskReleaseProviderNPI` /
//! `WskDeregister`, a capture that never blocks `DriverEntry`, and the version fallback when the
//! provider cannot be asked for its range.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{WskTestDriver, driver_entry};
use wsk_client::{BindingRef, WskVersion};
use wsk_host_model::{Event, ProviderConfig, Session, Status, WSK_1_0, WSK_1_1};

fn wsk_events(s: &Session) -> Vec<Event> {
    s.events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::WskRegister { .. }
                    | Event::WskCaptureProviderNPI { .. }
                    | Event::WskReleaseProviderNPI
                    | Event::WskDeregister
            )
        })
        .collect()
}

fn has_log(s: &Session, line: &str) -> bool {
    s.log().iter().any(|l| l == line)
}

#[test]
fn capture_at_registration_and_release_at_unload() {
    let mut s = common::session();
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(
        s.driver_entry(driver_entry::<WskTestDriver>),
        Status::SUCCESS
    );
    assert!(has_log(
        &s,
        "wsk_test_driver: captured the WSK provider NPI, attached at WSK 1.1"
    ));
    let reference = BindingRef::<WskTestDriver>::acquire().unwrap();
    assert_eq!(reference.version(), WskVersion::V1_1);
    assert!(!reference.client().is_null());
    drop(reference);
    s.driver_unload();
    assert_eq!(
        wsk_events(&s),
        [
            Event::WskRegister {
                version: WSK_1_1,
                status: Status::SUCCESS
            },
            Event::WskCaptureProviderNPI {
                status: Status::SUCCESS
            },
            Event::WskReleaseProviderNPI,
            Event::WskDeregister,
        ]
    );
    assert!(s.image_unmapped());
}

#[test]
fn a_provider_not_ready_is_captured_later_without_blocking_driver_entry() {
    let mut s = common::session();
    assert_eq!(
        s.driver_entry(driver_entry::<WskTestDriver>),
        Status::SUCCESS
    );
    // DriverEntry returned with the provider missing: the capture went to a task, which tries
    // again each second without waiting in a work item (the model's work item rule is on).
    assert!(has_log(
        &s,
        "wsk_test_driver: WSK provider not ready (0xC00000A3): capturing from a task, every 1000 ms"
    ));
    assert!(BindingRef::<WskTestDriver>::acquire().is_err());
    s.register_provider(ProviderConfig::default_wsk());
    // The next try (a second of model time later) captures it.
    let captured = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(10));
        BindingRef::<WskTestDriver>::acquire().is_ok()
    });
    assert!(captured, "the capture task never captured the provider");
    let capture_calls = wsk_events(&s)
        .iter()
        .filter(|e| matches!(e, Event::WskCaptureProviderNPI { .. }))
        .count();
    assert!(
        capture_calls >= 2,
        "one in DriverEntry, one or more in the task"
    );
    s.driver_unload();
}

#[test]
fn unload_before_the_provider_arrives_stops_the_capture() {
    let mut s = common::session();
    assert_eq!(
        s.driver_entry(driver_entry::<WskTestDriver>),
        Status::SUCCESS
    );
    s.driver_unload();
    assert!(has_log(
        &s,
        "wsk_test_driver: capture: given up, the unload began"
    ));
    assert!(!wsk_events(&s).contains(&Event::WskReleaseProviderNPI));
    s.wait_work_items();
    assert!(s.image_unmapped());
}

#[test]
fn a_capture_refused_for_the_version_falls_back() {
    // The client does not ask for the provider's range (Wine's WskQueryProviderCharacteristics
    // kills the caller): a capture answered STATUS_NOINTERFACE re-registers with the next version.
    let mut s = common::session();
    s.register_provider(ProviderConfig::default_wsk().answer(WSK_1_1, Status::NOINTERFACE));
    assert_eq!(
        s.driver_entry(driver_entry::<WskTestDriver>),
        Status::SUCCESS
    );
    assert_eq!(
        wsk_events(&s),
        [
            Event::WskRegister {
                version: WSK_1_1,
                status: Status::SUCCESS
            },
            Event::WskCaptureProviderNPI {
                status: Status::NOINTERFACE
            },
            Event::WskDeregister,
            Event::WskRegister {
                version: WSK_1_0,
                status: Status::SUCCESS
            },
            Event::WskCaptureProviderNPI {
                status: Status::SUCCESS
            },
        ]
    );
    assert_eq!(
        BindingRef::<WskTestDriver>::acquire().unwrap().version(),
        WskVersion::V1_0
    );
    s.driver_unload();
}

#[test]
fn a_provider_of_1_0_only_is_captured_at_1_0() {
    let mut s = common::session();
    s.register_provider(ProviderConfig::wsk(WSK_1_0, WSK_1_0));
    assert_eq!(
        s.driver_entry(driver_entry::<WskTestDriver>),
        Status::SUCCESS
    );
    assert_eq!(
        wsk_events(&s)[..4],
        [
            Event::WskRegister {
                version: WSK_1_1,
                status: Status::SUCCESS
            },
            Event::WskCaptureProviderNPI {
                status: Status::NOINTERFACE
            },
            Event::WskDeregister,
            Event::WskRegister {
                version: WSK_1_0,
                status: Status::SUCCESS
            },
        ]
    );
    assert_eq!(
        BindingRef::<WskTestDriver>::acquire().unwrap().version(),
        WskVersion::V1_0
    );
    s.driver_unload();
}

#[test]
fn a_dispatch_that_says_1_0_is_used_as_1_0() {
    // Wine's provider dispatch says 1.0 although the client registered 1.1: the binding's
    // version is the lower one, so no 1.1 member is read.
    let mut s = common::session();
    let mut config = ProviderConfig::default_wsk();
    config.dispatch_version = Some(WSK_1_0);
    s.register_provider(config);
    assert_eq!(
        s.driver_entry(driver_entry::<WskTestDriver>),
        Status::SUCCESS
    );
    let reference = BindingRef::<WskTestDriver>::acquire().unwrap();
    assert_eq!(reference.version(), WskVersion::V1_0);
    assert!(reference.get_address_info().is_none());
    drop(reference);
    s.driver_unload();
}

#[test]
fn a_failed_wsk_register_fails_driver_entry_with_nothing_left() {
    let mut s = common::session();
    s.fail_wsk_register(Status::INSUFFICIENT_RESOURCES);
    assert_eq!(
        s.driver_entry(driver_entry::<WskTestDriver>),
        Status::INSUFFICIENT_RESOURCES
    );
    assert!(s.unload_routine().is_none());
    s.check_clean();
}

#[test]
fn unload_waits_for_a_reference_then_releases_and_deregisters() {
    let mut s = common::session();
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(
        s.driver_entry(driver_entry::<WskTestDriver>),
        Status::SUCCESS
    );
    let reference = BindingRef::<WskTestDriver>::acquire().unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        wsk_client::work::queue::<WskTestDriver, _>(wsk_client::work::Closure(move || {
            drop(reference);
        }))
        .unwrap();
    });
    s.driver_unload();
    releaser.join().unwrap();
    assert!(has_log(
        &s,
        "wsk_test_driver: unload: waiting for 1 reference(s)"
    ));
    assert_eq!(
        wsk_events(&s)[2..],
        [Event::WskReleaseProviderNPI, Event::WskDeregister]
    );
    s.wait_work_items();
    assert!(s.image_unmapped());
}
