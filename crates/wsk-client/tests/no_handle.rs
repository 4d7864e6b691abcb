//! `NmrRegisterClient` succeeding without a handle: the registration can never be undone, so the
//! driver must load without `DriverUnload` and its image must stay. Its own test binary: the
//! client stays registered for the rest of the process, as it would for the rest of the boot.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::DriverEntry;
use wsk_host_model::{ProviderConfig, Status};

#[test]
fn registration_without_handle_pins_the_image() {
    let mut s = common::session();
    s.register_provider(ProviderConfig::default_wsk());
    s.return_null_client_handle();
    // Before the fix DriverEntry failed here, and the model recorded that NMR would call into
    // an unloaded image (the binding made inside NmrRegisterClient stayed).
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert!(s.unload_routine().is_none(), "an unloadable driver");
    assert_eq!(
        s.attach_results(),
        [Status::SUCCESS],
        "attached inside NmrRegisterClient"
    );
    assert!(s.log().iter().any(|l| l
        == "test_driver: NmrRegisterClient returned no handle: registered for good, the image must stay loaded"));
    assert!(s.violations().is_empty(), "{:#?}", s.violations());
    assert!(!s.image_unmapped());
    s.end_with_image_pinned();
}
