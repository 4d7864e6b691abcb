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

#[test]
fn setup_register_attach_deregister_teardown_in_order() {
    let mut s = wsk_host_model::session();
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
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
        [DRIVER_CONTEXT_TAG.raw(), WskEcho::POOL_TAG.raw()],
        "the driver context first, then the binding context, each with its own tag"
    );
    s.driver_unload();
    let log = s.log();
    let position = |line: &str| {
        log.iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("missing {line:?} in {log:#?}"))
    };
    let order = [
        "wsk_echo: setup: driver context ready (start 1)",
        "wsk_echo: registered as WSK NPI client",
        "wsk_echo: detach: no call in flight, detached",
        "wsk_echo: cleanup: binding context freed",
        "wsk_echo: teardown: driver context freed",
        "wsk_echo: unloaded, live pool allocations: 0",
    ];
    let positions: Vec<usize> = order.iter().map(|line| position(line)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{log:#?}");
    assert!(has_log(&s, "wsk_echo: attached at WSK 1.1"));
    s.check_clean();
}

#[test]
fn registers_its_own_module_id() {
    let mut s = wsk_host_model::session();
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    let ids = s.client_module_ids();
    assert_eq!(ids, [WskEcho::MODULE_ID]);
    s.driver_unload();
}

#[test]
fn a_failed_registration_tears_the_setup_down() {
    let mut s = wsk_host_model::session();
    s.fail_register_client(Status::INSUFFICIENT_RESOURCES);
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
        !s.events()
            .iter()
            .any(|e| matches!(e, Event::NmrRegisterClient { .. })),
        "registered after a failed setup"
    );
    s.check_clean();
}
