//! `wsk_echo.sys`'s own entry points against the host model: its identity, its setup and teardown
//! around the client's registration, and that it shares nothing with another client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use wsk_host_model::{Event, ProviderConfig, Status};

use super::{DRIVER_CONTEXT_TAG, DriverEntry, WskEcho};
use wsk_client::Client;

fn has_log(s: &wsk_host_model::Session, needle: &str) -> bool {
    s.log().iter().any(|line| line == needle)
}

/// The backend this build uses (`cargo test -p wsk-echo [--features wsk-register]`).
const WSK_REGISTER: bool = cfg!(feature = "wsk-register");

/// What the library logs once registered, and once detached, in this build's backend.
fn backend_lines() -> [&'static str; 3] {
    if WSK_REGISTER {
        [
            "wsk_echo: registered as WSK client (WskRegister)",
            "wsk_echo: captured the WSK provider NPI, attached at WSK 1.1",
            "wsk_echo: WskReleaseProviderNPI: binding context freed",
        ]
    } else {
        [
            "wsk_echo: registered as WSK NPI client",
            "wsk_echo: attached at WSK 1.1",
            "wsk_echo: cleanup: binding context freed",
        ]
    }
}

/// Makes this build's registration call fail.
fn fail_registration(s: &wsk_host_model::Session, status: Status) {
    if WSK_REGISTER {
        s.fail_wsk_register(status);
    } else {
        s.fail_register_client(status);
    }
}

#[test]
fn setup_register_attach_deregister_teardown_in_order() {
    let mut s = wsk_host_model::session();
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    assert!(super::connection::is_open(), "{:#?}", s.log());
    let tags: Vec<u32> = s
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Allocate { tag, ok: true, .. } => Some(*tag),
            _ => None,
        })
        .collect();
    assert_eq!(
        tags,
        [
            DRIVER_CONTEXT_TAG.raw(),
            WskEcho::POOL_TAG.raw(),
            WskEcho::WORK_ITEM_TAG.raw(),
            u32::from_le_bytes(*b"EchC"),
        ],
        "the driver context, the binding context, the connection's work item and the \
         connection, each with its own tag"
    );
    s.driver_unload();
    let log = s.log();
    let position = |line: &str| {
        log.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("missing {line:?} in {log:#?}"))
    };
    let [registered, attached, freed] = backend_lines();
    let order = [
        "wsk_echo: setup: driver context ready (start 1)",
        attached,
        registered,
        "wsk_echo: connection: holding a binding reference",
        "wsk_echo: unload: 1 reference(s) outstanding",
        "wsk_echo: connection: reference released",
        freed,
        "wsk_echo: teardown: driver context freed",
        "wsk_echo: unloaded, live pool allocations: 0",
    ];
    let positions: Vec<usize> = order.iter().map(|line| position(line)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{log:#?}");
    s.check_clean();
}

#[test]
fn registers_its_own_module_id() {
    let mut s = wsk_host_model::session();
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    let ids = s.client_module_ids();
    // The module id is an NMR registration's; WskRegister registers no NMR client of ours.
    if WSK_REGISTER {
        assert!(ids.is_empty(), "{ids:?}");
    } else {
        assert_eq!(ids, [WskEcho::MODULE_ID]);
    }
    s.driver_unload();
}

#[test]
fn a_failed_registration_tears_the_setup_down() {
    let mut s = wsk_host_model::session();
    fail_registration(&s, Status::INSUFFICIENT_RESOURCES);
    assert_eq!(s.driver_entry(DriverEntry), Status::INSUFFICIENT_RESOURCES);
    assert!(s.unload_routine().is_none());
    assert!(s.live_allocations().is_empty(), "the driver context leaked");
    s.check_clean();
}

#[test]
fn failed_setup_registers_nothing() {
    let mut s = wsk_host_model::session();
    s.fail_allocations(1);
    assert_eq!(s.driver_entry(DriverEntry), Status::INSUFFICIENT_RESOURCES);
    assert!(has_log(&s, "wsk_echo: setup failed: no pool"));
    assert!(
        !s.events().iter().any(|e| matches!(
            e,
            Event::NmrRegisterClient { .. } | Event::WskRegister { .. }
        )),
        "registered after a failed setup"
    );
    s.check_clean();
}

// WskRegister has no provider detach (the unload is the only one): an NMR-build test.
#[cfg(not(feature = "wsk-register"))]
#[test]
fn a_provider_detach_waits_for_the_connection_to_close() {
    // The provider goes away while the connection holds its reference: the detach pends, the
    // notification closes the connection from a work item, which completes the detach.
    let mut s = wsk_host_model::session();
    let provider = s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    assert!(super::connection::is_open());
    assert_eq!(s.deregister_provider(provider), [Status::PENDING]);
    s.wait_provider_unbound(provider);
    assert!(!super::connection::is_open());
    assert!(
        s.events()
            .iter()
            .any(|e| matches!(e, Event::NmrClientDetachProviderComplete { .. }))
    );
    s.driver_unload();
    s.check_clean();
}
