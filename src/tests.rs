//! The seed driver's own entry points against the host model: its identity, what `DriverEntry`
//! and `DriverUnload` log, and the cases where the driver (not the library) decides.
//! The library's behaviour is tested in `crates/wsk-client`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use wsk_host_model::{ProviderConfig, Status};

use super::{DriverEntry, WskAttach};
use wsk_client::Client;

fn has_log(s: &wsk_host_model::Session, needle: &str) -> bool {
    s.log().iter().any(|line| line == needle)
}

#[test]
fn the_seed_lifecycle_logs_as_the_template_promises() {
    let mut s = wsk_host_model::session();
    s.register_provider(
        ProviderConfig::default_wsk().answer(wsk_host_model::WSK_1_1, Status::NOINTERFACE),
    );
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert!(s.unload_routine().is_some());
    for line in [
        "wsk_attach: pool: ExAllocatePool2",
        "wsk_attach: attach tried WSK 1.1: 0xC00002B9",
        "wsk_attach: fallback from WSK 1.1 to WSK 1.0",
        "wsk_attach: attached at WSK 1.0",
        "wsk_attach: registered as WSK NPI client",
    ] {
        assert!(has_log(&s, line), "missing {line:?} in {:#?}", s.log());
    }
    s.driver_unload();
    assert!(has_log(&s, "wsk_attach: cleanup: binding context freed"));
    assert_eq!(
        s.log().last().map(String::as_str),
        Some("wsk_attach: unloaded, live pool allocations: 0")
    );
    let tags: Vec<u32> = s.allocated_tags();
    // The binding context and its detach notice's work item.
    assert_eq!(
        tags,
        [u32::from_le_bytes(*b"WskA"), u32::from_le_bytes(*b"WskW")]
    );
    s.check_clean();
}

#[test]
fn registers_its_own_module_id() {
    let mut s = wsk_host_model::session();
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert_eq!(
        s.client_module_ids(),
        [wsk_client::guid(0x4D63_6F0B_B15B_48CA_8894_FB09_87DB_E869)]
    );
    assert_eq!(WskAttach::POOL_TAG.raw().to_le_bytes(), *b"WskA");
    s.driver_unload();
}

#[test]
fn a_failed_registration_fails_driver_entry_without_unload() {
    let mut s = wsk_host_model::session();
    s.fail_register_client(Status::INSUFFICIENT_RESOURCES);
    assert_eq!(s.driver_entry(DriverEntry), Status::INSUFFICIENT_RESOURCES);
    assert!(s.unload_routine().is_none(), "DriverUnload set on failure");
    assert!(has_log(
        &s,
        "wsk_attach: NmrRegisterClient failed: 0xC000009A"
    ));
    s.check_clean();
}
