//! Logging through `DbgPrintEx`, with C format strings, so that no `core::fmt` machinery reaches
//! the kernel image. Every line is prefixed with the client's [`crate::Client::NAME`] and goes to
//! its [`crate::Client::DEBUG_COMPONENT`]; it may be written at any IRQL (no Unicode conversions).
//! With the feature `no-log`, the library's own lines (`log!`) are compiled out.

/// Expands to a `DbgPrintEx` call of one line, `"<NAME>: <format>\n"`, for client `C`:
/// `unsafe { dbg_print!(MyDriver, DPFLTR_INFO_LEVEL, "connected to port %u", port) }`.
///
/// The expansion calls the C variadic function, so the caller writes the `unsafe` block and its
/// `// SAFETY:` comment: the format is a C `printf` format whose conversions must match the
/// arguments' C types (`%u`/`%X`: `u32`, `%p`: a pointer, `%s`: a NUL-terminated byte string),
/// and it must not use a Unicode conversion (`%wZ`, `%ws`, `%C`, `%S`) above `PASSIVE_LEVEL`.
/// The returned `NTSTATUS` says whether the line was filtered, not whether the driver failed.
#[macro_export]
macro_rules! dbg_print {
    ($client:ty, $level:ident, $format:literal $(, $arg:expr)* $(,)?) => {
        $crate::sys::DbgPrintEx(
            <$client as $crate::Client>::DEBUG_COMPONENT,
            $crate::sys::$level,
            concat!("%s: ", $format, "\n\0").as_ptr().cast(),
            <$client as $crate::Client>::NAME.as_ptr()
            $(, $arg)*
        )
    };
}

/// Logs one line for client `C`: `log!(C, DPFLTR_INFO_LEVEL, "attached at WSK %u.%u", major,
/// minor)`. The library's own lines; their formats are checked against the arguments here.
#[cfg(not(feature = "no-log"))]
macro_rules! log {
    ($client:ty, $level:ident, $format:literal $(, $arg:expr)* $(,)?) => {{
        // SAFETY: the format is a literal whose conversions match the arguments' C types (checked
        // at every call site in this crate), with no Unicode conversion, so any IRQL is fine.
        let _ = unsafe { $crate::dbg_print!($client, $level, $format $(, $arg)*) };
    }};
}

/// Feature `no-log`: the library's lines are compiled out — no format string, no `DbgPrintEx`
/// call (the image imports none unless the driver calls [`dbg_print!`] itself). The client, the
/// level and the arguments are still named (the arguments have no side effects), so that every
/// call site compiles, and lints, the same.
#[cfg(feature = "no-log")]
macro_rules! log {
    ($client:ty, $level:ident, $format:literal $(, $arg:expr)* $(,)?) => {{
        $crate::log::discard::<$client>($crate::sys::$level, $format);
        $(let _ = $arg;)*
    }};
}

/// What a `log!` line becomes with the feature `no-log`: nothing (inlined away, and with it the
/// format string).
#[cfg(feature = "no-log")]
#[inline(always)]
pub(crate) fn discard<C: crate::Client>(_level: u32, _format: &'static str) {}

pub(crate) use log;
