//! Property test: for random provider ranges, scripted `NmrClientAttachProvider` answers,
//! allocation failures and pool routines, attach follows the seed's rules and leaks nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::redundant_closure_for_method_calls
)]

mod common;

use common::{DriverEntry, TestDriver};
use proptest::prelude::*;
use wsk_client::sys::WSK_PROVIDER_CHARACTERISTICS;
use wsk_client::{Client, WskVersion};
use wsk_host_model::{Event, ProviderConfig, Status as NtStatus};

fn answer() -> impl Strategy<Value = NtStatus> {
    prop_oneof![
        Just(NtStatus::SUCCESS),
        Just(NtStatus::NOINTERFACE),
        Just(NtStatus::UNSUCCESSFUL),
        Just(NtStatus::INSUFFICIENT_RESOURCES),
    ]
}

/// Versions around the supported ones, so that ranges often hold 0, 1 or 2 of them.
fn version() -> impl Strategy<Value = u16> {
    prop_oneof![0x00FF_u16..=0x0102, any::<u16>()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn attach_follows_the_rules(
        lowest in version(),
        highest in version(),
        answer_1_1 in answer(),
        answer_1_0 in answer(),
        fail_allocation in any::<bool>(),
        pool2 in any::<bool>(),
    ) {
        let mut s = common::session();
        s.set_pool2_available(pool2);
        prop_assert_eq!(s.driver_entry(DriverEntry), NtStatus::SUCCESS);
        if fail_allocation {
            s.fail_allocations(1);
        }
        let mut config = ProviderConfig::default_wsk()
            .answer(WskVersion::V1_1.raw(), answer_1_1)
            .answer(WskVersion::V1_0.raw(), answer_1_0);
        config.characteristics = Some(WSK_PROVIDER_CHARACTERISTICS {
            HighestVersion: highest,
            LowestVersion: lowest,
        });
        let _provider = s.register_provider(config);

        let fitting: Vec<WskVersion> = TestDriver::VERSIONS
            .iter()
            .copied()
            .filter(|v| lowest <= v.raw() && v.raw() <= highest)
            .collect();
        let script = |v: WskVersion| if v == WskVersion::V1_1 { answer_1_1 } else { answer_1_0 };
        let allocations = s
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Allocate { ok: true, .. }))
            .count();
        let tries = s.attach_tries();
        let result = s.attach_results();
        prop_assert_eq!(result.len(), 1);
        let result = result[0];

        if fitting.is_empty() {
            // Declined without allocating or calling NMR (covers inverted ranges too).
            prop_assert_eq!(result, NtStatus::NOINTERFACE);
            prop_assert!(tries.is_empty());
            prop_assert_eq!(allocations, 0);
        } else if fail_allocation {
            prop_assert_eq!(result, NtStatus::INSUFFICIENT_RESOURCES);
            prop_assert!(tries.is_empty());
        } else {
            // Highest first; retry only after STATUS_NOINTERFACE; one context for all tries.
            let mut expected = Vec::new();
            for v in &fitting {
                let status = script(*v);
                expected.push((v.raw(), status));
                if status != NtStatus::NOINTERFACE {
                    break;
                }
            }
            prop_assert_eq!(&tries, &expected);
            // The context and its detach notice's work item.
            prop_assert_eq!(allocations, 2);
            let last = expected.last().unwrap().1;
            prop_assert_eq!(result, last);
            let attached = last == NtStatus::SUCCESS;
            prop_assert_eq!(s.live_allocations().len(), 2 * usize::from(attached));
            let version = wsk_client::provider::with_provider::<TestDriver, _>(|p| p.version()).ok();
            prop_assert_eq!(version, attached.then(|| WskVersion::from_raw(expected.last().unwrap().0)));
        }
        s.driver_unload();
        prop_assert!(s.live_allocations().is_empty());
        prop_assert!(s.violations().is_empty(), "{:?}", s.violations());
        s.check_clean();
    }
}
