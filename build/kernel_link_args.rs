// Linker arguments (lld-link / link.exe syntax) for a WDM kernel image cross-built on Linux:
// included by the drivers' build (build/driver_build.rs) and by the test NETIO.SYS's
// (tests/wine/netio-provider), so all images are linked alike. The set wdk-build passes, plus
// what a driver built without the WDK's default libraries needs (see the notes on building on Linux).

/// Linker arguments for a WDM driver image.
const KERNEL_LINK_ARGS: &[&str] = &[
    "/NODEFAULTLIB",
    "/DRIVER",
    "/KERNEL",
    "/SUBSYSTEM:NATIVE,10.00",
    "/ENTRY:DriverEntry",
    "/INTEGRITYCHECK",
    "/DYNAMICBASE",
    "/NXCOMPAT",
    "/TSAWARE:NO",
    "/MANIFEST:NO",
    "/RELEASE",
    "/OPT:REF,ICF",
    "/MERGE:.edata=.rdata",
    "/MERGE:.rustc=.data",
    "/IGNORE:4257",
    "/IGNORE:4216",
    "/MAP",
    // rustc asks for a PDB; the Linux image carries no debug directory (the Windows build makes one).
    "/DEBUG:NONE",
    // Size: unwind data in the read-only data section (one section fewer).
    "/MERGE:.pdata=.rdata",
];
