/*
 * wsk_attach_baseline.sys: the C comparator of the seed driver (issue 12, "Performance 1").
 *
 * Microsoft's "Attaching a WSK Application to the WSK Subsystem" example, completed into a whole
 * driver lifecycle the way a careful C author would write it, doing what the Rust seed driver
 * (src/lib.rs over crates/wsk-client) does at each NMR step:
 *
 *   DriverEntry             NmrRegisterClient with the seed's NPI_CLIENT_CHARACTERISTICS (same
 *                           module id GUID, NpiId = NPI_WSK_INTERFACE_ID), DriverUnload set on
 *                           success; a failure is returned.
 *   ClientAttachProvider    checks the provider (registration instance, NpiId, the
 *                           WSK_PROVIDER_CHARACTERISTICS range), allocates the binding context
 *                           (ExAllocatePoolWithTag, NonPagedPoolNx, tag 'WskA'), completes it
 *                           before NmrClientAttachProvider (NMR writes WSK_CLIENT and the
 *                           dispatch straight into it), asks for WSK 1.1 then, on
 *                           STATUS_NOINTERFACE, WSK 1.0; frees the context and returns the last
 *                           status when no try succeeded.
 *   ClientDetachProvider    Microsoft's pattern: an interlocked in-progress count with a
 *                           DETACHING flag; STATUS_SUCCESS when no call is in flight, else
 *                           STATUS_PENDING, completed by the last BindingRelease with
 *                           NmrClientDetachProviderComplete. Never blocks.
 *   ClientCleanupBindingContext  frees the context (never in detach).
 *   DriverUnload            NmrDeregisterClient, then NmrWaitForClientDeregisterComplete.
 *
 * No logging (the counterpart of the Rust driver's `no-log` build). No WDK header: the few types
 * are declared here and, those the echo comparator shares, in nmr_wsk.h, from
 * shared/reference/nmr-wsk-abi.md (x64 layout). Build: see README.md.
 */

typedef unsigned char UCHAR;
typedef unsigned short USHORT;
typedef unsigned long ULONG; /* LLP64: 32 bits */
typedef long LONG;
typedef LONG NTSTATUS;
typedef void *PVOID;
typedef void *HANDLE;
typedef unsigned long long SIZE_T;

#define NTAPI __stdcall
#define NULL ((void *)0)

#define STATUS_SUCCESS ((NTSTATUS)0x00000000L)
#define STATUS_PENDING ((NTSTATUS)0x00000103L)
#define STATUS_INSUFFICIENT_RESOURCES ((NTSTATUS)0xC000009AL)
#define STATUS_NOINTERFACE ((NTSTATUS)0xC00002B9L)
#define NT_SUCCESS(Status) (((NTSTATUS)(Status)) >= 0)

#include "nmr_wsk.h"

/* Only DriverUnload (offset 0x68 on x64) is used. */
typedef struct _DRIVER_OBJECT DRIVER_OBJECT;
typedef void NTAPI DRIVER_UNLOAD(DRIVER_OBJECT *DriverObject);
struct _DRIVER_OBJECT {
    UCHAR Header[0x68];
    DRIVER_UNLOAD *DriverUnload;
    PVOID MajorFunction[28];
};
typedef struct _UNICODE_STRING UNICODE_STRING;

typedef enum _POOL_TYPE { NonPagedPool = 0, NonPagedPoolNx = 512 } POOL_TYPE;

/* ntoskrnl.exe */
__declspec(dllimport) PVOID NTAPI ExAllocatePoolWithTag(POOL_TYPE PoolType, SIZE_T NumberOfBytes,
                                                        ULONG Tag);
__declspec(dllimport) void NTAPI ExFreePoolWithTag(PVOID P, ULONG Tag);

/* NETIO.SYS */
__declspec(dllimport) NTSTATUS NTAPI NmrRegisterClient(
    const NPI_CLIENT_CHARACTERISTICS *ClientCharacteristics, PVOID ClientContext,
    HANDLE *NmrClientHandle);
__declspec(dllimport) NTSTATUS NTAPI NmrDeregisterClient(HANDLE NmrClientHandle);
__declspec(dllimport) NTSTATUS NTAPI NmrWaitForClientDeregisterComplete(HANDLE NmrClientHandle);
__declspec(dllimport) NTSTATUS NTAPI NmrClientAttachProvider(HANDLE NmrBindingHandle,
                                                             PVOID ClientBindingContext,
                                                             const void *ClientDispatch,
                                                             PVOID *ProviderBindingContext,
                                                             const void **ProviderDispatch);
__declspec(dllimport) void NTAPI NmrClientDetachProviderComplete(HANDLE NmrBindingHandle);

/* ------------------------------------------------------------------------------------------ */

/* {2227E803-8D8B-11D4-ABAD-009027719E09} */
static const NPIID NPI_WSK_INTERFACE_ID = {
    0x2227E803, 0x8D8B, 0x11D4, {0xAB, 0xAD, 0x00, 0x90, 0x27, 0x71, 0x9E, 0x09}};

/* The seed driver's module id: {4D636F0B-B15B-48CA-8894-FB0987DBE869} (src/lib.rs). */
static const NPI_MODULEID WskAppModuleId = {
    sizeof(NPI_MODULEID),
    MIT_GUID,
    {{0x4D636F0B, 0xB15B, 0x48CA, {0x88, 0x94, 0xFB, 0x09, 0x87, 0xDB, 0xE8, 0x69}}}};

/* 'WskA' as poolmon shows it (bytes W s k A in memory): the WDK's 'AksW', spelled without a
 * multi-character constant. */
#define WSK_APP_POOL_TAG ((ULONG)'W' | (ULONG)'s' << 8 | (ULONG)'k' << 16 | (ULONG)'A' << 24)

/* The in-progress count's flag: set by detach; no new call starts once it is set. */
#define BINDING_DETACHING 0x40000000L

/* The binding context: one per attachment, NMR's ClientBindingContext. */
typedef struct _WSK_APP_BINDING_CONTEXT {
    HANDLE NmrBindingHandle;
    PVOID WskClient;                 /* PWSK_CLIENT, written by NMR */
    const void *WskProviderDispatch; /* const WSK_PROVIDER_DISPATCH *, written by NMR */
    volatile LONG InProgress;        /* calls in flight | BINDING_DETACHING */
} WSK_APP_BINDING_CONTEXT;

/* The versions the application speaks, highest first: one WSK_CLIENT_DISPATCH each. */
static const WSK_CLIENT_DISPATCH WskAppDispatch[] = {
    {MAKE_WSK_VERSION(1, 1), 0, NULL}, /* No WskClientEvent callback */
    {MAKE_WSK_VERSION(1, 0), 0, NULL},
};

static HANDLE WskAppClientHandle;

static NPI_CLIENT_ATTACH_PROVIDER_FN ClientAttachProvider;
static NPI_CLIENT_DETACH_PROVIDER_FN ClientDetachProvider;
static NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN ClientCleanupBindingContext;
static DRIVER_UNLOAD DriverUnload;

/* NMR reads these until NmrWaitForClientDeregisterComplete returns: a static. */
static const NPI_CLIENT_CHARACTERISTICS WskAppCharacteristics = {
    0,
    sizeof(NPI_CLIENT_CHARACTERISTICS),
    ClientAttachProvider,
    ClientDetachProvider,
    ClientCleanupBindingContext,
    {0, sizeof(NPI_REGISTRATION_INSTANCE), &NPI_WSK_INTERFACE_ID, &WskAppModuleId, 0, NULL}};

static int GuidEqual(const GUID *a, const GUID *b)
{
    const ULONG *x = (const ULONG *)a, *y = (const ULONG *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/*
 * A call through the binding (for the application's use of the provider; the seed makes none):
 * BindingAcquire before touching WskClient / WskProviderDispatch, BindingRelease after. Both at
 * IRQL <= DISPATCH_LEVEL, non-blocking.
 */
static inline int BindingAcquire(WSK_APP_BINDING_CONTEXT *Context)
{
    LONG old = Context->InProgress;
    for (;;) {
        LONG seen;
        if (old & BINDING_DETACHING)
            return 0;
        seen = __sync_val_compare_and_swap(&Context->InProgress, old, old + 1);
        if (seen == old)
            return 1;
        old = seen;
    }
}

static inline void BindingRelease(WSK_APP_BINDING_CONTEXT *Context)
{
    /* The last call of a detaching binding completes the detach it made pending. */
    if (__sync_sub_and_fetch(&Context->InProgress, 1) == BINDING_DETACHING)
        NmrClientDetachProviderComplete(Context->NmrBindingHandle);
}

/* ClientAttachProvider NMR API callback function. PASSIVE_LEVEL. */
static NTSTATUS NTAPI ClientAttachProvider(HANDLE NmrBindingHandle, PVOID ClientContext,
                                           const NPI_REGISTRATION_INSTANCE *ProviderRegistrationInstance)
{
    const WSK_PROVIDER_CHARACTERISTICS *WskProviderCharacteristics;
    WSK_APP_BINDING_CONTEXT *BindingContext;
    USHORT Highest, Lowest;
    NTSTATUS Status = STATUS_NOINTERFACE;
    unsigned i;

    (void)ClientContext;
    /* Can the application attach to this provider? */
    if (ProviderRegistrationInstance == NULL ||
        ProviderRegistrationInstance->Size < sizeof(NPI_REGISTRATION_INSTANCE) ||
        ProviderRegistrationInstance->NpiId == NULL ||
        !GuidEqual(ProviderRegistrationInstance->NpiId, &NPI_WSK_INTERFACE_ID))
        return STATUS_NOINTERFACE;
    WskProviderCharacteristics = ProviderRegistrationInstance->NpiSpecificCharacteristics;
    if (WskProviderCharacteristics == NULL)
        return STATUS_NOINTERFACE;
    Highest = WskProviderCharacteristics->HighestVersion;
    Lowest = WskProviderCharacteristics->LowestVersion;
    if (Lowest > Highest || Lowest > WskAppDispatch[0].Version ||
        Highest < WskAppDispatch[sizeof(WskAppDispatch) / sizeof(WskAppDispatch[0]) - 1].Version)
        return STATUS_NOINTERFACE;

    /* Allocate and initialize the binding context, complete before NMR sees it. */
    BindingContext = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(WSK_APP_BINDING_CONTEXT),
                                           WSK_APP_POOL_TAG);
    if (BindingContext == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    BindingContext->NmrBindingHandle = NmrBindingHandle;
    BindingContext->WskClient = NULL;
    BindingContext->WskProviderDispatch = NULL;
    BindingContext->InProgress = 0;

    /* Highest common version first; another try only after STATUS_NOINTERFACE. */
    for (i = 0; i < sizeof(WskAppDispatch) / sizeof(WskAppDispatch[0]); i++) {
        USHORT Version = WskAppDispatch[i].Version;
        if (Version > Highest || Version < Lowest)
            continue;
        Status = NmrClientAttachProvider(NmrBindingHandle, BindingContext, &WskAppDispatch[i],
                                         &BindingContext->WskClient,
                                         &BindingContext->WskProviderDispatch);
        if (Status == STATUS_SUCCESS)
            /* NMR owns the context now (it may detach at once): not touched again here. */
            return STATUS_SUCCESS;
        if (Status != STATUS_NOINTERFACE)
            break;
    }

    /* Attachment did not succeed: free the context, return the last status. */
    ExFreePoolWithTag(BindingContext, WSK_APP_POOL_TAG);
    return Status;
}

/* ClientDetachProvider NMR API callback function. IRQL <= DISPATCH_LEVEL, never blocks. */
static NTSTATUS NTAPI ClientDetachProvider(PVOID ClientBindingContext)
{
    WSK_APP_BINDING_CONTEXT *BindingContext = ClientBindingContext;

    /* No new call from now on; calls in flight complete the detach when the last returns. */
    if (__sync_fetch_and_or(&BindingContext->InProgress, BINDING_DETACHING) == 0)
        return STATUS_SUCCESS;
    return STATUS_PENDING;
}

/* ClientCleanupBindingContext NMR API callback function. IRQL <= DISPATCH_LEVEL. */
static void NTAPI ClientCleanupBindingContext(PVOID ClientBindingContext)
{
    ExFreePoolWithTag(ClientBindingContext, WSK_APP_POOL_TAG);
}

/* DriverUnload: deregister, and wait until every binding is detached and cleaned up. */
static void NTAPI DriverUnload(DRIVER_OBJECT *DriverObject)
{
    (void)DriverObject;
    if (NT_SUCCESS(NmrDeregisterClient(WskAppClientHandle)))
        NmrWaitForClientDeregisterComplete(WskAppClientHandle);
}

/* DriverEntry: register as a WSK NPI client. PASSIVE_LEVEL. */
NTSTATUS NTAPI DriverEntry(DRIVER_OBJECT *DriverObject, UNICODE_STRING *RegistryPath)
{
    NTSTATUS Status;

    (void)RegistryPath;
    Status = NmrRegisterClient(&WskAppCharacteristics, NULL, &WskAppClientHandle);
    if (!NT_SUCCESS(Status))
        return Status;
    DriverObject->DriverUnload = DriverUnload;
    return STATUS_SUCCESS;
}
