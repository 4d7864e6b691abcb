//! Logging through `DbgPrintEx`, with C format strings, so that no `core::fmt` machinery reaches
//! the kernel image. Every line is prefixed `wsk_attach: `, goes to component
//! `DPFLTR_IHVDRIVER_ID`, and may be written at any IRQL (no Unicode conversions are used).

/// Logs one line: `log!(DPFLTR_INFO_LEVEL, "attached at WSK %u.%u", major, minor)`.
///
/// The format is a C `printf` format; each argument must be a C-variadic-compatible value of the
/// type its conversion expects (`%u`/`%X`: `u32`, `%p`: a pointer). The `DbgPrintEx` return value
/// (`STATUS_SUCCESS` or an error when the line was filtered or dropped) is not a failure of the
/// driver's operation, so it is deliberately not propagated.
macro_rules! log {
    ($level:ident, $format:literal $(, $arg:expr)* $(,)?) => {{
        // SAFETY: the format is a NUL-terminated literal whose conversions match the arguments'
        // C types (checked at every call site), with no Unicode conversion, so any IRQL is fine.
        let _ = unsafe {
            $crate::abi::DbgPrintEx(
                $crate::abi::DPFLTR_IHVDRIVER_ID,
                $crate::abi::$level,
                concat!("wsk_attach: ", $format, "\n\0").as_ptr().cast(),
                $($arg),*
            )
        };
    }};
}

pub(crate) use log;
