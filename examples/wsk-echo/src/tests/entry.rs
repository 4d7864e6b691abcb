//! `wsk_echo.sys`'s own entry points against the host model: its identity, its setup and teardown
//! around the client's registration, and that it shares nothing with another client.

use wsk_client::sys::REG_SZ;
use wsk_host_model::{Event, ProviderConfig, Status, reg_sz};

use super::set_parameters;

use crate::{DRIVER_CONTEXT_TAG, DriverEntry, WskEcho};
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
    let mut s = super::session();
    s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    assert!(crate::connection::is_open(), "{:#?}", s.log());
    assert!(
        has_log(
            &s,
            "wsk_echo: parameters: no Parameters key (0xC0000034): no echo"
        ) && has_log(&s, "wsk_echo: connection: holding a binding reference"),
        "{:#?}",
        s.log()
    );
    let tags: Vec<u32> = s.allocated_tags();
    // The detach notice's work item exists with an NMR binding only.
    let notice = usize::from(WskEcho::BACKEND == wsk_client::Backend::Nmr);
    let expected: Vec<u32> = [DRIVER_CONTEXT_TAG.raw(), WskEcho::POOL_TAG.raw()]
        .into_iter()
        .chain([WskEcho::WORK_ITEM_TAG.raw()].into_iter().take(notice))
        .chain([WskEcho::TASK_TAG.raw()])
        .collect();
    assert_eq!(
        tags, expected,
        "the driver context, the binding context, its detach notice's work item (NMR) and the \
         connection's task, each purpose with its own tag"
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
    let mut s = super::session();
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
    let mut s = super::session();
    fail_registration(&s, Status::INSUFFICIENT_RESOURCES);
    assert_eq!(s.driver_entry(DriverEntry), Status::INSUFFICIENT_RESOURCES);
    assert!(s.unload_routine().is_none());
    assert!(s.live_allocations().is_empty(), "the driver context leaked");
    s.check_clean();
}

#[test]
fn failed_setup_registers_nothing() {
    let mut s = super::session();
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
    let mut s = super::session();
    let provider = s.register_provider(ProviderConfig::default_wsk());
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    assert!(crate::connection::is_open());
    assert_eq!(s.deregister_provider(provider), [Status::PENDING]);
    s.wait_provider_unbound(provider);
    assert!(!crate::connection::is_open());
    assert!(
        s.events()
            .iter()
            .any(|e| matches!(e, Event::NmrClientDetachProviderComplete { .. }))
    );
    s.driver_unload();
    s.check_clean();
}

fn lines_with(s: &wsk_host_model::Session, needle: &str) -> usize {
    s.log().iter().filter(|l| l.contains(needle)).count()
}

/// A session with the driver loaded and its echo made (to a model peer).
fn echoed() -> wsk_host_model::Session {
    let mut s = super::session();
    s.register_provider(ProviderConfig::default_wsk());
    set_parameters(&s, "127.0.0.1", 7, "hello, echo");
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    assert!(has_log(&s, "wsk_echo: echo ok, 11 bytes"), "{:#?}", s.log());
    s
}

#[test]
fn echoes_the_message_and_keeps_the_connection_until_stop() {
    let mut s = echoed();
    assert_eq!(
        lines_with(&s, "wsk_echo: echo "),
        1,
        "exactly one echo line"
    );
    assert_eq!(s.open_sockets(), 1, "the connection stays open");
    s.driver_unload();
    assert_eq!(s.open_sockets(), 0);
    assert!(s.events().contains(&Event::WskDisconnect));
    assert_eq!(
        s.log().last().map(String::as_str),
        Some("wsk_echo: unloaded, live pool allocations: 0"),
        "{:#?}\n{:#?}",
        s.log(),
        s.events()
    );
    s.check_clean();
}

#[test]
fn a_name_resolves_when_the_provider_can() {
    let mut s = super::session();
    s.register_provider(ProviderConfig::default_wsk());
    set_parameters(&s, "localhost", 7, "hi");
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    if WSK_REGISTER {
        // The model's provider answers 1.1 here; a provider whose dispatch says 1.0 (Wine's)
        // refuses names: that case is the next test's.
        assert!(has_log(&s, "wsk_echo: echo ok, 2 bytes"), "{:#?}", s.log());
    } else {
        assert!(has_log(&s, "wsk_echo: echo ok, 2 bytes"), "{:#?}", s.log());
    }
    s.driver_unload();
    s.check_clean();
}

#[test]
fn a_name_on_a_1_0_provider_is_an_error_logged_once() {
    let mut s = super::session();
    let mut config = ProviderConfig::default_wsk();
    config.dispatch_version = Some(wsk_host_model::WSK_1_0);
    if !WSK_REGISTER {
        config = ProviderConfig::wsk(wsk_host_model::WSK_1_0, wsk_host_model::WSK_1_0);
    }
    s.register_provider(config);
    set_parameters(&s, "localhost", 7, "hi");
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    assert!(
        has_log(&s, "wsk_echo: echo failed: resolve 0xC00000BB"),
        "{:#?}",
        s.log()
    );
    assert_eq!(lines_with(&s, "wsk_echo: echo "), 1);
    s.driver_unload();
    s.check_clean();
}

#[test]
fn a_refused_connection_is_logged_and_the_driver_unloads() {
    let mut s = super::session();
    let mut config = ProviderConfig::default_wsk();
    config.connect_failure = Some(Status::from_raw(wsk_client::sys::STATUS_CONNECTION_REFUSED));
    s.register_provider(config);
    set_parameters(&s, "127.0.0.1", 9, "x");
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    s.wait_work_items();
    assert!(
        has_log(&s, "wsk_echo: echo failed: connect 0xC0000236"),
        "{:#?}",
        s.log()
    );
    assert_eq!(s.open_sockets(), 0);
    s.driver_unload();
    s.check_clean();
}

#[test]
fn a_stop_during_a_pending_receive_unloads_without_hanging() {
    // A silent server, and a provider that ignores cancels (Wine): the unload begins while the
    // exchange waits in its receive; the receive's timeout, the cancel and then the close end it,
    // the exchange logs its failure, and the unload completes.
    let mut s = super::session();
    let mut config = ProviderConfig::default_wsk();
    config.peer_silent = true;
    config.ignores_cancel = true;
    s.register_provider(config);
    set_parameters(&s, "127.0.0.1", 7, "anyone?");
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    // Unload once the exchange waits in its receive.
    let posted = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.events().contains(&Event::WskReceive)
    });
    assert!(posted, "{:#?}", s.log());
    s.driver_unload();
    assert_eq!(lines_with(&s, "wsk_echo: echo "), 1, "{:#?}", s.log());
    assert!(
        has_log(&s, "wsk_echo: echo failed: receive 0xC0000120"),
        "{:#?}",
        s.log()
    );
    assert_eq!(s.open_sockets(), 0);
    s.check_clean();
}

#[test]
fn missing_or_malformed_parameters_are_logged_and_the_driver_loads() {
    let mut s = super::session();
    s.register_provider(ProviderConfig::default_wsk());
    s.set_parameter("Parameters", "Host", REG_SZ, &reg_sz("127.0.0.1"));
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert!(
        has_log(
            &s,
            "wsk_echo: parameters: Port missing (0xC0000034): no echo"
        ),
        "{:#?}",
        s.log()
    );
    s.driver_unload();
    s.check_clean();
    drop(s);

    let mut s = super::session();
    s.register_provider(ProviderConfig::default_wsk());
    set_parameters(&s, "127.0.0.1", 0, "x");
    assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
    assert!(
        has_log(&s, "wsk_echo: parameters: Port malformed: no echo"),
        "{:#?}",
        s.log()
    );
    s.driver_unload();
    s.check_clean();
}

/// The service key that cannot be opened is named as such, with its status, not taken for a
/// missing `Parameters` key (the Speakeasy failure matrix's `ZwOpenKey#1` cases).
#[test]
fn a_service_key_that_cannot_be_opened_is_named_with_its_status() {
    // STATUS_ACCESS_DENIED, STATUS_OBJECT_NAME_NOT_FOUND.
    for raw in [0xC000_0022_u32, 0xC000_0034] {
        let status = Status::from_raw(raw.cast_signed());
        let mut s = super::session();
        s.register_provider(ProviderConfig::default_wsk());
        set_parameters(&s, "127.0.0.1", 7, "x");
        s.fail_call("ZwOpenKey", 1, status);
        assert_eq!(s.driver_entry(DriverEntry), Status::SUCCESS);
        let line = format!("wsk_echo: parameters: the service key missing (0x{raw:08X}): no echo");
        assert!(has_log(&s, &line), "{line:?} not in {:#?}", s.log());
        s.driver_unload();
        s.check_clean();
    }
}

/// The stop path allocates no work item: the task's own was allocated when it was spawned. (The
/// driver used to queue one at stop; when that allocation failed the connection was never closed
/// and the unload waited for its reference forever.)
#[test]
fn the_stop_allocates_no_work_item() {
    use wsk_host_model::Failable;

    let mut s = echoed();
    // The next work item allocation fails, whoever asks.
    s.fail_nth(Failable::WorkItem, 0);
    s.driver_unload();
    assert!(
        s.nth_failure_left(Failable::WorkItem).is_some(),
        "the stop allocated a work item"
    );
    assert!(s.events().contains(&Event::WskDisconnect));
    assert_eq!(s.open_sockets(), 0);
    assert_eq!(
        s.log().last().map(String::as_str),
        Some("wsk_echo: unloaded, live pool allocations: 0")
    );
    s.check_clean();
}
