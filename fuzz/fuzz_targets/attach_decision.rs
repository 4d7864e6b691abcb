//! A provider's registration instance and characteristics, from the input: its NPI id (WSK's or
//! another), the instance's `Size`, `WSK_PROVIDER_CHARACTERISTICS` (or none), its scripted
//! `NmrClientAttachProvider` answers for 1.1 and 1.0, an early detach inside the attach, a NULL
//! dispatch, the version its dispatch says. The test driver (the library's integration-test
//! client) loads, the provider registers, the driver unloads; whatever the provider said, the
//! model must see no rule broken, no pool, binding, client or device left, and an attach that
//! succeeded only inside the advertised range.
#![no_main]

#[path = "../../crates/wsk-client/tests/common/mod.rs"]
mod common;

use common::DriverEntry;
use libfuzzer_sys::fuzz_target;
use wsk_client::sys::WSK_PROVIDER_CHARACTERISTICS;
use wsk_host_model::{ProviderConfig, Status};

const ANSWERS: [Status; 4] = [
    Status::SUCCESS,
    Status::NOINTERFACE,
    Status::UNSUCCESSFUL,
    Status::INSUFFICIENT_RESOURCES,
];

fuzz_target!(|data: &[u8]| {
    let mut input = data.iter().copied();
    let mut next = || input.next().unwrap_or(0);
    let mut config = ProviderConfig::default_wsk();
    let flags = next();
    if flags & 1 != 0 {
        // Another NPI: the client must refuse it.
        config.npi_id.Data1 ^= u32::from(next()) | 1;
    }
    if flags & 2 != 0 {
        config.instance_size = u16::from_le_bytes([next(), next()]);
    }
    config.characteristics = if flags & 4 != 0 {
        None
    } else {
        Some(WSK_PROVIDER_CHARACTERISTICS {
            HighestVersion: u16::from_le_bytes([next(), next()]),
            LowestVersion: u16::from_le_bytes([next(), next()]),
        })
    };
    let range = config
        .characteristics
        .map(|c| (c.LowestVersion, c.HighestVersion));
    config = config
        .answer(0x0101, ANSWERS[usize::from(next() % 4)])
        .answer(0x0100, ANSWERS[usize::from(next() % 4)]);
    config.detach_during_attach = flags & 8 != 0;
    config.null_dispatch = flags & 16 != 0;
    if flags & 32 != 0 {
        config.dispatch_version = Some(u16::from_le_bytes([next(), next()]));
    }

    let mut s = common::session();
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    let _provider = s.register_provider(config);
    for (version, status) in s.attach_tries() {
        if status == Status::SUCCESS {
            let (low, high) = range.expect("no characteristics: no attach may be tried");
            assert!(
                low <= version && version <= high,
                "attached at {version:#x} outside"
            );
        }
    }
    s.driver_unload();
    s.check_clean();
});
