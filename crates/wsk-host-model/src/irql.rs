//! IRQL: the level each thread of the model runs at, and the limits of `tests/irql-rules.txt`
//! (which the Speakeasy half reads too). Driver Verifier's IRQL checking, on the host: every
//! function the driver imports (and every provider function it calls) checks its documented
//! maximum against the calling thread's IRQL, and a function the table does not list is a rule
//! broken too, so that a new import cannot go unchecked.
//!
//! The model calls the driver at the IRQL the table's `@` lines give: `DriverEntry`,
//! `DriverUnload`, work items and `ClientAttachProvider` at `PASSIVE_LEVEL`, completion routines
//! at `DISPATCH_LEVEL`, `ClientDetachProvider` and `ClientCleanupBindingContext` at
//! `PASSIVE_LEVEL` unless a test chooses `DISPATCH_LEVEL` ([`crate::Session::call_at`]). A thread
//! the model did not start (the test's own, [`crate::Session::driver_thread`]) runs at
//! `PASSIVE_LEVEL`.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::state::State;

/// An interrupt request level, as far as a WSK client meets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Irql {
    /// `PASSIVE_LEVEL` (0).
    Passive,
    /// `APC_LEVEL` (1).
    Apc,
    /// `DISPATCH_LEVEL` (2).
    Dispatch,
    /// Any device IRQL (`DIRQL`): above `DISPATCH_LEVEL`.
    Device,
}

impl Irql {
    /// The C name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Passive => "PASSIVE_LEVEL",
            Self::Apc => "APC_LEVEL",
            Self::Dispatch => "DISPATCH_LEVEL",
            Self::Device => "DIRQL",
        }
    }

    /// The `KIRQL` value (a device IRQL is given as 3, the lowest one).
    #[must_use]
    pub const fn level(self) -> u8 {
        match self {
            Self::Passive => 0,
            Self::Apc => 1,
            Self::Dispatch => 2,
            Self::Device => 3,
        }
    }

    /// The level of a `KIRQL` value.
    #[must_use]
    pub const fn from_level(level: u8) -> Self {
        match level {
            0 => Self::Passive,
            1 => Self::Apc,
            2 => Self::Dispatch,
            _ => Self::Device,
        }
    }

    fn parse(word: &str) -> Option<Self> {
        [Self::Passive, Self::Apc, Self::Dispatch, Self::Device]
            .into_iter()
            .find(|irql| irql.name() == word)
    }
}

/// A condition under which a function has a stricter limit (the file's `<condition>=` words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    /// `KeWaitForSingleObject` with a NULL or non-zero timeout.
    Wait,
    /// `WskCaptureProviderNPI` with a `WaitTimeout` other than `WSK_NO_WAIT`.
    Blocking,
}

impl Condition {
    const fn name(self) -> &'static str {
        match self {
            Self::Wait => "wait",
            Self::Blocking => "blocking",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        [Self::Wait, Self::Blocking]
            .into_iter()
            .find(|condition| condition.name() == word)
    }
}

/// One function's limits.
#[derive(Clone, Debug)]
pub struct Limit {
    /// The highest IRQL it may be called at.
    pub max: Irql,
    /// Stricter limits under conditions.
    pub conditions: Vec<(Condition, Irql)>,
}

/// The table.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Functions by C name.
    pub functions: HashMap<String, Limit>,
    /// Callbacks by name (`DriverEntry`, `CompletionRoutine`, ...): the IRQLs the system calls
    /// them at, the default first.
    pub callbacks: HashMap<String, Vec<Irql>>,
}

/// The table's text.
pub const TEXT: &str = include_str!("../../../tests/irql-rules.txt");

/// The rules of [`TEXT`]; panics on a malformed line (a test parses it).
#[must_use]
pub fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES
        .get_or_init(|| parse(TEXT).unwrap_or_else(|error| panic!("tests/irql-rules.txt: {error}")))
}

/// Parses the table's format.
///
/// # Errors
/// A line that is not `<Name> <IRQL> [<condition>=<IRQL>...]` or `@<Callback> <IRQL>...`, an
/// unknown IRQL or condition, a name listed twice, or a condition that is not stricter.
pub fn parse(text: &str) -> Result<Rules, String> {
    let mut rules = Rules::default();
    for (line, at) in crate::failure_matrix::table_lines(text) {
        let mut words = line.split_whitespace();
        let name = words.next().ok_or_else(|| at("no name"))?;
        let irql = |word: &str| Irql::parse(word).ok_or_else(|| at("unknown IRQL"));
        if let Some(callback) = name.strip_prefix('@') {
            let levels = words.map(irql).collect::<Result<Vec<_>, _>>()?;
            if levels.is_empty() {
                return Err(at("no IRQL"));
            }
            if rules.callbacks.insert(callback.into(), levels).is_some() {
                return Err(at("listed twice"));
            }
            continue;
        }
        let max = irql(words.next().ok_or_else(|| at("no IRQL"))?)?;
        let mut conditions = Vec::new();
        for word in words {
            let (condition, level) = word.split_once('=').ok_or_else(|| at("not cond=IRQL"))?;
            let condition = Condition::parse(condition).ok_or_else(|| at("unknown condition"))?;
            let level = irql(level)?;
            if level >= max {
                return Err(at("a condition's limit must be stricter"));
            }
            conditions.push((condition, level));
        }
        if rules
            .functions
            .insert(name.into(), Limit { max, conditions })
            .is_some()
        {
            return Err(at("listed twice"));
        }
    }
    Ok(rules)
}

std::thread_local! {
    /// The IRQL this thread runs at.
    static CURRENT: Cell<Irql> = const { Cell::new(Irql::Passive) };
}

/// The calling thread's IRQL.
#[must_use]
pub fn current() -> Irql {
    CURRENT.with(Cell::get)
}

/// Sets this thread's IRQL (a spin lock's raise and lower); returns the one before.
pub(crate) fn set(irql: Irql) -> Irql {
    CURRENT.with(|c| c.replace(irql))
}

/// Runs `f` at `irql` on this thread (as the system calls a callback at its level), then goes
/// back to the level before.
pub(crate) fn at<R>(irql: Irql, f: impl FnOnce() -> R) -> R {
    let outer = CURRENT.with(|c| c.replace(irql));
    let result = f();
    CURRENT.with(|c| c.set(outer));
    result
}

/// The IRQL the system calls `callback` at in this session: the test's choice, or the table's
/// default.
pub(crate) fn callback(s: &State, callback: &'static str) -> Irql {
    s.callback_irql.get(callback).copied().unwrap_or_else(|| {
        rules()
            .callbacks
            .get(callback)
            .and_then(|levels| levels.first().copied())
            .unwrap_or_else(|| panic!("tests/irql-rules.txt has no @{callback}"))
    })
}

/// Checks a call of `what` at the calling thread's IRQL (every call the driver makes).
pub(crate) fn check(s: &mut State, what: &str) {
    check_limit(s, what, None);
}

/// Checks a call of `what` under `condition` (a stricter limit when the table gives one).
pub(crate) fn check_condition(s: &mut State, what: &str, condition: Condition) {
    check_limit(s, what, Some(condition));
}

fn check_limit(s: &mut State, what: &str, condition: Option<Condition>) {
    let Some(limit) = rules().functions.get(what) else {
        s.violation(format!(
            "{what} is called but not listed in tests/irql-rules.txt (add its documented IRQL)"
        ));
        return;
    };
    let (max, why) = match condition {
        None => (limit.max, String::new()),
        Some(condition) => {
            let Some((_, max)) = limit.conditions.iter().find(|(c, _)| *c == condition) else {
                s.violation(format!(
                    "tests/irql-rules.txt gives {what} no '{}' limit",
                    condition.name()
                ));
                return;
            };
            (*max, format!(" ({})", condition.name()))
        }
    };
    let now = current();
    if now > max {
        s.violation(format!(
            "{what}{why} called at {}: its limit is {} (tests/irql-rules.txt; Driver Verifier: \
             IRQL_NOT_LESS_OR_EQUAL)",
            now.name(),
            max.name()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::{Condition, Irql, at, parse, rules};
    use crate::state;

    #[test]
    fn the_table_parses_and_names_every_callback_the_model_calls() {
        let rules = rules();
        for callback in [
            "DriverEntry",
            "DriverUnload",
            "WorkItemRoutine",
            "CompletionRoutine",
            "ClientAttachProvider",
            "ClientDetachProvider",
            "ClientCleanupBindingContext",
        ] {
            assert!(rules.callbacks.contains_key(callback), "{callback}");
        }
        let wait = &rules.functions["KeWaitForSingleObject"];
        assert_eq!(wait.max, Irql::Dispatch);
        assert_eq!(wait.conditions, [(Condition::Wait, Irql::Apc)]);
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "Foo",
            "Foo HIGH",
            "Foo PASSIVE_LEVEL wait=DISPATCH_LEVEL",
            "Foo DISPATCH_LEVEL sleep=PASSIVE_LEVEL",
            "Foo DISPATCH_LEVEL\nFoo PASSIVE_LEVEL",
            "@Cb",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// The check itself, on the model's own functions (the drivers' calls are checked by every
    /// other test): what Driver Verifier would stop on.
    #[test]
    fn calls_above_their_limit_and_unlisted_calls_are_rules_broken() {
        let session = crate::session();
        // A PASSIVE_LEVEL function from a completion routine's level.
        // SAFETY: an unknown handle is refused by the model's ZwClose.
        at(Irql::Dispatch, || unsafe {
            crate::registry::ZwClose(std::ptr::null_mut())
        });
        // KeWaitForSingleObject at DISPATCH_LEVEL: legal with a zero timeout only.
        let mut event = wsk_sys::KEVENT { Header: [0; 3] };
        // SAFETY: an event on this stack, initialised here, waited for without blocking.
        unsafe { crate::sync::KeInitializeEvent(&raw mut event, wsk_sys::NotificationEvent, 1) };
        let zero = 0_i64;
        let mut wait = |timeout: *const i64| {
            // SAFETY: the event above, signalled: neither wait blocks.
            at(Irql::Dispatch, || unsafe {
                crate::sync::KeWaitForSingleObject((&raw mut event).cast(), 0, 0, 0, timeout)
            })
        };
        wait(&raw const zero);
        let one_second = -10_000_000_i64;
        wait(&raw const one_second);
        state::with(|s| super::check(s, "NoSuchFunction"));
        let violations: Vec<String> = session
            .violations()
            .into_iter()
            .filter(|v| v.contains("tests/irql-rules.txt"))
            .collect();
        session.forget_violations();
        assert_eq!(violations.len(), 3, "{violations:#?}");
        assert!(
            violations[0]
                .starts_with("ZwClose called at DISPATCH_LEVEL: its limit is PASSIVE_LEVEL")
        );
        assert!(violations[1].starts_with(
            "KeWaitForSingleObject (wait) called at DISPATCH_LEVEL: its limit is APC_LEVEL"
        ));
        assert!(violations[2].starts_with("NoSuchFunction is called but not listed"));
    }
}
