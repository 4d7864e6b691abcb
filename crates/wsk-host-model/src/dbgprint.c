/* The host model's DbgPrintEx: formats like the kernel's (C printf conversions) and hands the line
 * to the Rust log sink. In C because stable Rust cannot define a C-variadic function. */
#include <stdarg.h>
#include <stdio.h>

extern void wsk_host_log_sink(unsigned int component, unsigned int level, const char *text);

unsigned int DbgPrintEx(unsigned int component, unsigned int level, const char *format, ...)
{
    char line[512];
    va_list args;
    va_start(args, format);
    vsnprintf(line, sizeof line, format, args);
    va_end(args);
    wsk_host_log_sink(component, level, line);
    return 0; /* STATUS_SUCCESS */
}
