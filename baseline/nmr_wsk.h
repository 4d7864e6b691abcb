/*
 * nmr_wsk.h: the NMR and WSK types both C comparators use (wsk_attach_baseline.c, the seed's;
 * wsk_echo_baseline.c, the echo client's), declared by hand from shared/reference/nmr-wsk-abi.md
 * (x64 layout; crates/wsk-sys tests every size and offset of its own declarations). No WDK
 * header: the includer declares the base types first (UCHAR, USHORT, ULONG, LONG, NTSTATUS,
 * PVOID, HANDLE) and NTAPI.
 */
#ifndef WSK_ATTACH_BASELINE_NMR_WSK_H
#define WSK_ATTACH_BASELINE_NMR_WSK_H

typedef struct _GUID {
    ULONG Data1;
    USHORT Data2;
    USHORT Data3;
    UCHAR Data4[8];
} GUID, NPIID;

typedef enum _NPI_MODULEID_TYPE { MIT_GUID = 1, MIT_IF_LUID } NPI_MODULEID_TYPE;

typedef struct _NPI_MODULEID {
    USHORT Length;
    NPI_MODULEID_TYPE Type;
    union {
        GUID Guid;
        struct {
            ULONG LowPart;
            LONG HighPart;
        } IfLuid;
    };
} NPI_MODULEID;

typedef struct _NPI_REGISTRATION_INSTANCE {
    USHORT Version;
    USHORT Size;
    const NPIID *NpiId;
    const NPI_MODULEID *ModuleId;
    ULONG Number;
    const void *NpiSpecificCharacteristics;
} NPI_REGISTRATION_INSTANCE;

typedef NTSTATUS NTAPI NPI_CLIENT_ATTACH_PROVIDER_FN(HANDLE NmrBindingHandle, PVOID ClientContext,
                                                     const NPI_REGISTRATION_INSTANCE *Provider);
typedef NTSTATUS NTAPI NPI_CLIENT_DETACH_PROVIDER_FN(PVOID ClientBindingContext);
typedef void NTAPI NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN(PVOID ClientBindingContext);

typedef struct _NPI_CLIENT_CHARACTERISTICS {
    USHORT Version;
    USHORT Length;
    NPI_CLIENT_ATTACH_PROVIDER_FN *ClientAttachProvider;
    NPI_CLIENT_DETACH_PROVIDER_FN *ClientDetachProvider;
    NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN *ClientCleanupBindingContext;
    NPI_REGISTRATION_INSTANCE ClientRegistrationInstance;
} NPI_CLIENT_CHARACTERISTICS;

#define MAKE_WSK_VERSION(Mj, Mn) ((USHORT)((Mj) << 8) | (USHORT)((Mn)&0xff))

typedef struct _WSK_CLIENT_DISPATCH {
    USHORT Version;
    USHORT Reserved;
    PVOID WskClientEvent; /* PFN_WSK_CLIENT_EVENT; none */
} WSK_CLIENT_DISPATCH;

typedef struct _WSK_PROVIDER_CHARACTERISTICS {
    USHORT HighestVersion;
    USHORT LowestVersion;
} WSK_PROVIDER_CHARACTERISTICS;

#endif
