/*
 * wsk_echo_baseline.sys: the C comparator of the Rust echo driver (examples/wsk-echo), issue 20
 * item 2. A WDM driver written the way a careful, performance-minded C author would write it:
 * one system thread, IRPs, buffers and MDLs allocated once, events set by completion routines.
 *
 * Same identity as wsk_echo.sys (service `wsk_echo`, log prefix `wsk_echo: `, DbgPrintEx
 * component DPFLTR_IHVDRIVER_ID, the same result lines), so the Wine harness's `wsk_echo`
 * profile drives it unchanged. Two registration modes from this one source:
 *   default         raw NMR: NmrRegisterClient (NPI_WSK_INTERFACE_ID), ClientAttachProvider with
 *                   the provider's version range checked, WSK 1.1 then 1.0 on STATUS_NOINTERFACE;
 *                   Microsoft's detach pattern (an in-progress count with a DETACHING flag);
 *                   NmrDeregisterClient + NmrWaitForClientDeregisterComplete at unload;
 *   -DWSK_REGISTER  WskRegister, WskCaptureProviderNPI (bounded waits), WskReleaseProviderNPI,
 *                   WskDeregister.
 *
 * DriverEntry  reads Parameters (Host: a dotted IPv4 literal only, no name resolution; Port;
 *              Message, sent as its UTF-8 bytes as the Rust driver does; optional Bytes: bulk
 *              mode; optional RoundTrips, 1..1000000: latency mode; both together are refused),
 *              creates an unnamed device object (IoSetCompletionRoutineEx needs one; its
 *              IRP_MJ_INTERNAL_DEVICE_CONTROL completes an IRP that a provider's stub never took),
 *              registers, and starts the connection thread (PsCreateSystemThread, its thread
 *              object referenced). A bad or missing value is logged and the driver loads, echoing
 *              nothing.
 * The thread  waits for the provider (NMR: the attach's event; WskRegister: 100 ms captures),
 *              takes a binding reference, then: without parameters it holds it until the stop;
 *              with them it allocates its IRPs (send, receive, close), buffers and MDLs once,
 *              WskSocket, WskBind 0.0.0.0:0, WskConnect, one exchange (one message, bulk or
 *              latency), WskDisconnect (STATUS_NOT_IMPLEMENTED tolerated: Wine), WskCloseSocket,
 *              frees everything, lets the reference go and ends.
 * Each request IoReuseIrp, KeClearEvent, IoSetCompletionRoutineEx (SDV's
 *              IoSetCompletionRoutineNonPnpDriver), the WSK call; the routine only sets the
 *              request's event and returns STATUS_MORE_PROCESSING_REQUIRED (no WSK call in it).
 *              A wait takes at most 5 s and ends at the stop: then every request in flight is
 *              cancelled (IoCancelIrp), and if one does not end within a second the socket is
 *              closed (providers complete a socket's requests at its close; Wine ignores the
 *              cancel).
 * DriverUnload sets the stop event, waits for the thread object, deregisters, deletes the device
 *              object and logs `unloaded, live pool allocations: N` (its own count of pool blocks).
 *
 * No WDK header: the types are declared here (x64 layout, as crates/wsk-sys declares and tests
 * them). Imports: ntoskrnl.exe and NETIO.SYS (mingw-w64's libntoskrnl.a / libnetio.a);
 * KeQueryPerformanceCounter is looked up by name (Wine 8 exports it from hal.dll only).
 */

typedef unsigned char UCHAR;
typedef unsigned short USHORT;
typedef unsigned short WCHAR;
typedef unsigned long ULONG; /* LLP64: 32 bits */
typedef long LONG;
typedef long long LONGLONG;
typedef unsigned long long ULONGLONG;
typedef unsigned long long ULONG_PTR;
typedef unsigned long long SIZE_T;
typedef LONG NTSTATUS;
typedef UCHAR BOOLEAN;
typedef void *PVOID;
typedef void *HANDLE;
typedef char CCHAR;
typedef LONGLONG LARGE_INTEGER; /* only its QuadPart is used */

#define NTAPI __stdcall
#define NULL ((void *)0)
#define TRUE 1
#define FALSE 0

#define STATUS_SUCCESS ((NTSTATUS)0x00000000L)
#define STATUS_WAIT_0 ((NTSTATUS)0x00000000L)
#define STATUS_WAIT_1 ((NTSTATUS)0x00000001L)
#define STATUS_TIMEOUT ((NTSTATUS)0x00000102L)
#define STATUS_PENDING ((NTSTATUS)0x00000103L)
#define STATUS_UNSUCCESSFUL ((NTSTATUS)0xC0000001L)
#define STATUS_NOT_IMPLEMENTED ((NTSTATUS)0xC0000002L)
#define STATUS_MORE_PROCESSING_REQUIRED ((NTSTATUS)0xC0000016L)
#define STATUS_OBJECT_NAME_NOT_FOUND ((NTSTATUS)0xC0000034L)
#define STATUS_INSUFFICIENT_RESOURCES ((NTSTATUS)0xC000009AL)
#define STATUS_DEVICE_NOT_READY ((NTSTATUS)0xC00000A3L)
#define STATUS_IO_TIMEOUT ((NTSTATUS)0xC00000B5L)
#define STATUS_CANCELLED ((NTSTATUS)0xC0000120L)
#define STATUS_CONNECTION_ABORTED ((NTSTATUS)0xC0000241L)
#define STATUS_NOINTERFACE ((NTSTATUS)0xC00002B9L)
#define NT_SUCCESS(Status) (((NTSTATUS)(Status)) >= 0)

#define DPFLTR_IHVDRIVER_ID 77
#define DPFLTR_ERROR_LEVEL 0
#define DPFLTR_WARNING_LEVEL 1
#define DPFLTR_INFO_LEVEL 3

/* ------------------------------------------------------------------------------------------ */
/* Kernel types (x64)                                                                          */

typedef struct _UNICODE_STRING {
    USHORT Length;
    USHORT MaximumLength;
    WCHAR *Buffer;
} UNICODE_STRING;

typedef struct _OBJECT_ATTRIBUTES {
    ULONG Length;
    HANDLE RootDirectory;
    UNICODE_STRING *ObjectName;
    ULONG Attributes;
    PVOID SecurityDescriptor;
    PVOID SecurityQualityOfService;
} OBJECT_ATTRIBUTES;
_Static_assert(sizeof(OBJECT_ATTRIBUTES) == 48, "OBJECT_ATTRIBUTES");
#define OBJ_CASE_INSENSITIVE 0x00000040L
#define OBJ_KERNEL_HANDLE 0x00000200L
#define KEY_READ 0x00020019L
#define THREAD_ALL_ACCESS 0x001FFFFFL
#define KeyValuePartialInformation 2
#define REG_SZ 1
#define REG_DWORD 4

typedef struct _KEY_VALUE_PARTIAL_INFORMATION {
    ULONG TitleIndex;
    ULONG Type;
    ULONG DataLength;
    UCHAR Data[1];
} KEY_VALUE_PARTIAL_INFORMATION;

/* KEVENT: a 24-byte DISPATCHER_HEADER. */
typedef struct _KEVENT {
    ULONGLONG Header[3];
} KEVENT;
_Static_assert(sizeof(KEVENT) == 24, "KEVENT");
typedef enum _EVENT_TYPE { NotificationEvent = 0, SynchronizationEvent = 1 } EVENT_TYPE;
typedef enum _WAIT_TYPE { WaitAll = 0, WaitAny = 1 } WAIT_TYPE;
#define Executive 0
#define KernelMode 0
#define IO_NO_INCREMENT 0

typedef struct _DEVICE_OBJECT DEVICE_OBJECT; /* opaque */
typedef struct _MDL MDL;                     /* opaque */
typedef struct _OBJECT_TYPE *POBJECT_TYPE;   /* opaque */

typedef struct _IO_STATUS_BLOCK {
    union {
        NTSTATUS Status;
        PVOID Pointer;
    };
    ULONG_PTR Information;
} IO_STATUS_BLOCK;

typedef struct _IRP IRP;
typedef NTSTATUS NTAPI IO_COMPLETION_ROUTINE(DEVICE_OBJECT *DeviceObject, IRP *Irp, PVOID Context);

typedef struct _IO_STACK_LOCATION {
    UCHAR MajorFunction;
    UCHAR MinorFunction;
    UCHAR Flags;
    UCHAR Control;
    PVOID Parameters[4];
    DEVICE_OBJECT *DeviceObject;
    PVOID FileObject;
    IO_COMPLETION_ROUTINE *CompletionRoutine;
    PVOID Context;
} IO_STACK_LOCATION;
_Static_assert(sizeof(IO_STACK_LOCATION) == 0x48, "IO_STACK_LOCATION");

/* IRP (x64): the fields read here; Tail is its Overlay view (then the rest of its KAPC). */
struct _IRP {
    short Type;
    USHORT Size;
    USHORT AllocationProcessorNumber;
    USHORT Reserved;
    PVOID MdlAddress;
    ULONG Flags;
    PVOID AssociatedIrp;
    PVOID ThreadListEntry[2];
    IO_STATUS_BLOCK IoStatus;
    CCHAR RequestorMode;
    BOOLEAN PendingReturned;
    CCHAR StackCount;
    CCHAR CurrentLocation;
    BOOLEAN Cancel;
    UCHAR CancelIrql;
    CCHAR ApcEnvironment;
    UCHAR AllocationFlags;
    PVOID UserIosb;
    PVOID UserEvent;
    PVOID Overlay[2];
    PVOID CancelRoutine;
    PVOID UserBuffer;
    PVOID DriverContext[4];
    PVOID Thread;
    PVOID AuxiliaryBuffer;
    PVOID ListEntry[2];
    IO_STACK_LOCATION *CurrentStackLocation;
    PVOID OriginalFileObject;
    UCHAR ApcRest[8];
};
_Static_assert(sizeof(IRP) == 0xD0, "IRP");
_Static_assert(__builtin_offsetof(IRP, IoStatus) == 0x30, "IRP.IoStatus");
_Static_assert(__builtin_offsetof(IRP, CurrentLocation) == 0x43, "IRP.CurrentLocation");
_Static_assert(__builtin_offsetof(IRP, CurrentStackLocation) == 0xB8, "IRP.Tail.Overlay.CSL");

#define IRP_MJ_INTERNAL_DEVICE_CONTROL 0x0F
#define FILE_DEVICE_UNKNOWN 0x00000022
#define FILE_DEVICE_SECURE_OPEN 0x00000100

typedef struct _DRIVER_OBJECT DRIVER_OBJECT;
typedef void NTAPI DRIVER_UNLOAD(DRIVER_OBJECT *DriverObject);
typedef NTSTATUS NTAPI DRIVER_DISPATCH(DEVICE_OBJECT *DeviceObject, IRP *Irp);
struct _DRIVER_OBJECT {
    UCHAR Header[0x68];
    DRIVER_UNLOAD *DriverUnload;
    DRIVER_DISPATCH *MajorFunction[28];
};
_Static_assert(__builtin_offsetof(DRIVER_OBJECT, MajorFunction) == 0x70, "DRIVER_OBJECT");

typedef void NTAPI KSTART_ROUTINE(PVOID StartContext);
typedef LONGLONG NTAPI KE_QUERY_PERFORMANCE_COUNTER(LARGE_INTEGER *Frequency);

typedef enum _POOL_TYPE { NonPagedPool = 0, NonPagedPoolNx = 512 } POOL_TYPE;

/* ------------------------------------------------------------------------------------------ */
/* NMR and WSK types (x64)                                                                     */

#include "nmr_wsk.h"

typedef struct _SOCKADDR_IN {
    USHORT sin_family;
    USHORT sin_port; /* network byte order */
    ULONG sin_addr;  /* network byte order */
    UCHAR sin_zero[8];
} SOCKADDR_IN;
_Static_assert(sizeof(SOCKADDR_IN) == 16, "SOCKADDR_IN");

typedef struct _WSK_BUF {
    MDL *Mdl;
    ULONG Offset;
    SIZE_T Length;
} WSK_BUF;
_Static_assert(sizeof(WSK_BUF) == 24, "WSK_BUF");

typedef struct _WSK_SOCKET {
    const void *Dispatch;
} WSK_SOCKET;

typedef PVOID PWSK_CLIENT;

typedef NTSTATUS NTAPI WSK_SOCKET_FN(PWSK_CLIENT Client, USHORT AddressFamily, USHORT SocketType,
                                     ULONG Protocol, ULONG Flags, PVOID SocketContext,
                                     const void *Dispatch, PVOID OwningProcess,
                                     PVOID OwningThread, PVOID SecurityDescriptor, IRP *Irp);
typedef NTSTATUS NTAPI WSK_CLOSE_SOCKET_FN(WSK_SOCKET *Socket, IRP *Irp);
typedef NTSTATUS NTAPI WSK_ADDRESS_FN(WSK_SOCKET *Socket, SOCKADDR_IN *Address, ULONG Flags,
                                      IRP *Irp);
typedef NTSTATUS NTAPI WSK_BUFFER_FN(WSK_SOCKET *Socket, WSK_BUF *Buffer, ULONG Flags, IRP *Irp);

/* WSK_PROVIDER_DISPATCH: the WSK 1.0 members (all this driver reads). */
typedef struct _WSK_PROVIDER_DISPATCH {
    USHORT Version;
    USHORT Reserved;
    WSK_SOCKET_FN *WskSocket;
    PVOID WskSocketConnect;
    PVOID WskControlClient;
} WSK_PROVIDER_DISPATCH;
_Static_assert(sizeof(WSK_PROVIDER_DISPATCH) == 32, "WSK_PROVIDER_DISPATCH 1.0");

/* WSK_PROVIDER_CONNECTION_DISPATCH, up to WskDisconnect. */
typedef struct _WSK_PROVIDER_CONNECTION_DISPATCH {
    PVOID WskControlSocket;
    WSK_CLOSE_SOCKET_FN *WskCloseSocket;
    WSK_ADDRESS_FN *WskBind;
    WSK_ADDRESS_FN *WskConnect;
    PVOID WskGetLocalAddress;
    PVOID WskGetRemoteAddress;
    WSK_BUFFER_FN *WskSend;
    WSK_BUFFER_FN *WskReceive;
    WSK_BUFFER_FN *WskDisconnect;
} WSK_PROVIDER_CONNECTION_DISPATCH;

typedef struct _WSK_CLIENT_NPI {
    PVOID ClientContext;
    const WSK_CLIENT_DISPATCH *Dispatch;
} WSK_CLIENT_NPI;

typedef struct _WSK_REGISTRATION {
    ULONGLONG ReservedRegistrationState;
    PVOID ReservedRegistrationContext;
    ULONG_PTR ReservedRegistrationLock;
} WSK_REGISTRATION;
_Static_assert(sizeof(WSK_REGISTRATION) == 24, "WSK_REGISTRATION");

typedef struct _WSK_PROVIDER_NPI {
    PWSK_CLIENT Client;
    const WSK_PROVIDER_DISPATCH *Dispatch;
} WSK_PROVIDER_NPI;

#define AF_INET 2
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define WSK_FLAG_CONNECTION_SOCKET 0x00000002

/* ------------------------------------------------------------------------------------------ */
/* Imports                                                                                     */

/* ntoskrnl.exe */
__declspec(dllimport) ULONG __cdecl DbgPrintEx(ULONG ComponentId, ULONG Level, const char *Format,
                                               ...);
__declspec(dllimport) PVOID NTAPI ExAllocatePoolWithTag(POOL_TYPE PoolType, SIZE_T NumberOfBytes,
                                                        ULONG Tag);
__declspec(dllimport) void NTAPI ExFreePoolWithTag(PVOID P, ULONG Tag);
__declspec(dllimport) void NTAPI KeInitializeEvent(KEVENT *Event, EVENT_TYPE Type, BOOLEAN State);
__declspec(dllimport) LONG NTAPI KeSetEvent(KEVENT *Event, LONG Increment, BOOLEAN Wait);
__declspec(dllimport) void NTAPI KeClearEvent(KEVENT *Event);
__declspec(dllimport) LONG NTAPI KeReadStateEvent(KEVENT *Event);
__declspec(dllimport) NTSTATUS NTAPI KeWaitForSingleObject(PVOID Object, int WaitReason,
                                                           CCHAR WaitMode, BOOLEAN Alertable,
                                                           LARGE_INTEGER *Timeout);
__declspec(dllimport) NTSTATUS NTAPI KeWaitForMultipleObjects(ULONG Count, PVOID Object[],
                                                              WAIT_TYPE WaitType, int WaitReason,
                                                              CCHAR WaitMode, BOOLEAN Alertable,
                                                              LARGE_INTEGER *Timeout,
                                                              PVOID WaitBlockArray);
__declspec(dllimport) NTSTATUS NTAPI PsCreateSystemThread(HANDLE *ThreadHandle, ULONG DesiredAccess,
                                                          OBJECT_ATTRIBUTES *ObjectAttributes,
                                                          HANDLE ProcessHandle, PVOID ClientId,
                                                          KSTART_ROUTINE *StartRoutine,
                                                          PVOID StartContext);
__declspec(dllimport) NTSTATUS NTAPI PsTerminateSystemThread(NTSTATUS ExitStatus);
/* A data export, imported through the IAT: dllimport makes `PsThreadType` the exported variable
 * itself (wdm.h's `extern POBJECT_TYPE *PsThreadType`, no dllimport, names the IAT slot, hence
 * its `*PsThreadType`). */
__declspec(dllimport) extern POBJECT_TYPE PsThreadType;
__declspec(dllimport) NTSTATUS NTAPI ObReferenceObjectByHandle(HANDLE Handle, ULONG DesiredAccess,
                                                               POBJECT_TYPE ObjectType,
                                                               CCHAR AccessMode, PVOID *Object,
                                                               PVOID HandleInformation);
__declspec(dllimport) LONGLONG NTAPI ObfDereferenceObject(PVOID Object);
__declspec(dllimport) NTSTATUS NTAPI ZwClose(HANDLE Handle);
__declspec(dllimport) NTSTATUS NTAPI ZwOpenKey(HANDLE *KeyHandle, ULONG DesiredAccess,
                                               OBJECT_ATTRIBUTES *ObjectAttributes);
__declspec(dllimport) NTSTATUS NTAPI ZwQueryValueKey(HANDLE KeyHandle, UNICODE_STRING *ValueName,
                                                     int KeyValueInformationClass,
                                                     PVOID KeyValueInformation, ULONG Length,
                                                     ULONG *ResultLength);
__declspec(dllimport) void NTAPI RtlInitUnicodeString(UNICODE_STRING *Destination,
                                                      const WCHAR *Source);
__declspec(dllimport) NTSTATUS NTAPI RtlUnicodeToUTF8N(char *Destination, ULONG MaxBytes,
                                                       ULONG *ActualBytes, const WCHAR *Source,
                                                       ULONG SourceBytes);
__declspec(dllimport) NTSTATUS NTAPI RtlIpv4StringToAddressW(const WCHAR *S, BOOLEAN Strict,
                                                             const WCHAR **Terminator,
                                                             ULONG *Address /* IN_ADDR */);
__declspec(dllimport) SIZE_T NTAPI RtlCompareMemory(const void *Source1, const void *Source2,
                                                    SIZE_T Length);
__declspec(dllimport) PVOID NTAPI MmGetSystemRoutineAddress(UNICODE_STRING *SystemRoutineName);
__declspec(dllimport) NTSTATUS NTAPI IoCreateDevice(DRIVER_OBJECT *DriverObject,
                                                    ULONG DeviceExtensionSize,
                                                    UNICODE_STRING *DeviceName, ULONG DeviceType,
                                                    ULONG DeviceCharacteristics, BOOLEAN Exclusive,
                                                    DEVICE_OBJECT **DeviceObject);
__declspec(dllimport) void NTAPI IoDeleteDevice(DEVICE_OBJECT *DeviceObject);
__declspec(dllimport) IRP *NTAPI IoAllocateIrp(CCHAR StackSize, BOOLEAN ChargeQuota);
__declspec(dllimport) void NTAPI IoFreeIrp(IRP *Irp);
__declspec(dllimport) void NTAPI IoReuseIrp(IRP *Irp, NTSTATUS Iostatus);
__declspec(dllimport) NTSTATUS NTAPI IoSetCompletionRoutineEx(
    DEVICE_OBJECT *DeviceObject, IRP *Irp, IO_COMPLETION_ROUTINE *CompletionRoutine, PVOID Context,
    BOOLEAN InvokeOnSuccess, BOOLEAN InvokeOnError, BOOLEAN InvokeOnCancel);
__declspec(dllimport) BOOLEAN NTAPI IoCancelIrp(IRP *Irp);
__declspec(dllimport) NTSTATUS NTAPI IofCallDriver(DEVICE_OBJECT *DeviceObject, IRP *Irp);
__declspec(dllimport) void NTAPI IofCompleteRequest(IRP *Irp, CCHAR PriorityBoost);
__declspec(dllimport) MDL *NTAPI IoAllocateMdl(PVOID VirtualAddress, ULONG Length,
                                               BOOLEAN SecondaryBuffer, BOOLEAN ChargeQuota,
                                               IRP *Irp);
__declspec(dllimport) void NTAPI IoFreeMdl(MDL *Mdl);
__declspec(dllimport) void NTAPI MmBuildMdlForNonPagedPool(MDL *MemoryDescriptorList);

/* NETIO.SYS */
#ifndef WSK_REGISTER
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
#else
__declspec(dllimport) NTSTATUS NTAPI WskRegister(const WSK_CLIENT_NPI *WskClientNpi,
                                                 WSK_REGISTRATION *WskRegistration);
__declspec(dllimport) NTSTATUS NTAPI WskCaptureProviderNPI(WSK_REGISTRATION *WskRegistration,
                                                           ULONG WaitTimeout,
                                                           WSK_PROVIDER_NPI *WskProviderNpi);
__declspec(dllimport) void NTAPI WskReleaseProviderNPI(WSK_REGISTRATION *WskRegistration);
__declspec(dllimport) void NTAPI WskDeregister(WSK_REGISTRATION *WskRegistration);
#define WSK_NO_WAIT 0
#endif

/* ------------------------------------------------------------------------------------------ */
/* The driver                                                                                  */

#define ECHO_LOG(Level, Format, ...)                                                           \
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, Level, "wsk_echo: " Format "\n", ##__VA_ARGS__)

/* Pool tags, one per purpose ('EchB' reads E c h B in memory, as poolmon shows it). */
#define ECHO_TAG(a, b, c, d) ((ULONG)(a) | (ULONG)(b) << 8 | (ULONG)(c) << 16 | (ULONG)(d) << 24)
#define TAG_BINDING ECHO_TAG('E', 'c', 'h', 'B')   /* the NMR binding context */
#define TAG_SEND ECHO_TAG('E', 'c', 'h', 'S')      /* the send buffer */
#define TAG_RECEIVE ECHO_TAG('E', 'c', 'h', 'R')   /* the receive buffer */
#define TAG_HISTOGRAM ECHO_TAG('E', 'c', 'h', 'H') /* the latency histogram */

#define ECHO_MAX_MESSAGE 512         /* Message, in UTF-8 bytes (as the Rust driver) */
#define ECHO_CHUNK (64 * 1024)       /* the most one send or receive moves in bulk mode */
#define ECHO_MAX_ROUND_TRIPS 1000000 /* RoundTrips: 1 to this */
#define ECHO_BUCKETS 10001           /* 1 us buckets 0..9999, then the overflow (10000) */
#define ECHO_MS(ms) ((LONGLONG)(ms) * -10000) /* a relative timeout, in 100 ns units */
#define ECHO_STEP_MS 5000                     /* the most one step may take */
#define ECHO_DISCONNECT_MS 500                /* the graceful disconnect's grace */
#define ECHO_CANCEL_MS 1000                   /* after IoCancelIrp, before the close */
#define ECHO_ATTACH_TRIES 100                 /* 10 s for a provider, 100 ms apart */
#define ECHO_ATTACH_RETRY_MS 100

/* What the Parameters key asks for (read in DriverEntry, then read-only). */
typedef struct _ECHO_PARAMETERS {
    SOCKADDR_IN Remote;
    UCHAR Message[ECHO_MAX_MESSAGE];
    ULONG MessageLength;
    ULONG Bytes;      /* bulk mode: this many bytes; 0: not */
    ULONG RoundTrips; /* latency mode: this many round trips; 0: not */
} ECHO_PARAMETERS;

/* One request slot: an IRP allocated once, reused for each request it carries. */
typedef struct _ECHO_REQUEST {
    IRP *Irp;
    KEVENT Done;      /* set by EchoCompletion */
    BOOLEAN InFlight; /* handed to the provider, its completion not yet waited for */
    WSK_BUF Buffer;   /* the send's or receive's buffer (valid until completion) */
} ECHO_REQUEST;

/* The slots: one per request that may be in flight at once. Socket, bind, connect and the
 * disconnect go in the send slot (nothing else is in flight then); the close has its own, as it
 * may have to end a pending send and receive. */
enum { REQ_SEND, REQ_RECEIVE, REQ_CLOSE, REQ_COUNT };

/* The connection thread's state. */
typedef struct _ECHO_CONNECTION {
    WSK_PROVIDER_NPI Provider;
    WSK_SOCKET *Socket;
    const WSK_PROVIDER_CONNECTION_DISPATCH *Dispatch;
    ECHO_REQUEST Request[REQ_COUNT];
    UCHAR *Out; /* what is sent: Message, or a bulk chunk of it repeated */
    MDL *OutMdl;
    ULONG OutLength;
    UCHAR *Back; /* what comes back */
    MDL *BackMdl;
    ULONG BackLength;
    ULONG *Histogram; /* latency mode: ECHO_BUCKETS counts */
    SOCKADDR_IN Local;
    SOCKADDR_IN Remote;
    KE_QUERY_PERFORMANCE_COUNTER *Clock; /* NULL: none found */
    ULONGLONG Frequency;
} ECHO_CONNECTION;

static DEVICE_OBJECT *EchoDevice; /* for IoSetCompletionRoutineEx, and EchoDispatchOwn */
static volatile LONG EchoLivePool; /* pool blocks allocated and not yet freed */
static KEVENT EchoStop;            /* notification: the unload or a provider's detach began */
static PVOID EchoThread;           /* the connection thread's object, referenced */
static ECHO_PARAMETERS EchoParams;
static BOOLEAN EchoHaveParams;
static ECHO_CONNECTION EchoConnection;
/* A registry value, read into this (DriverEntry only): room for the longest Message. */
static ULONG EchoValue[(sizeof(KEY_VALUE_PARTIAL_INFORMATION) + 2 * (ECHO_MAX_MESSAGE + 1) + 3) /
                       4];

static DRIVER_UNLOAD DriverUnload;
static KSTART_ROUTINE EchoThreadMain;
static IO_COMPLETION_ROUTINE EchoCompletion;
static DRIVER_DISPATCH EchoDispatchOwn;

static PVOID EchoAlloc(SIZE_T Size, ULONG Tag)
{
    PVOID p = ExAllocatePoolWithTag(NonPagedPoolNx, Size, Tag);
    if (p != NULL)
        __sync_add_and_fetch(&EchoLivePool, 1);
    return p;
}

static void EchoFree(PVOID P, ULONG Tag)
{
    ExFreePoolWithTag(P, Tag);
    __sync_sub_and_fetch(&EchoLivePool, 1);
}

static BOOLEAN EchoStopped(void)
{
    return KeReadStateEvent(&EchoStop) != 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Registration: raw NMR (default) or WskRegister                                              */

#ifndef WSK_REGISTER
/* {2227E803-8D8B-11D4-ABAD-009027719E09} */
static const NPIID NPI_WSK_INTERFACE_ID = {
    0x2227E803, 0x8D8B, 0x11D4, {0xAB, 0xAD, 0x00, 0x90, 0x27, 0x71, 0x9E, 0x09}};

/* The echo driver's module id: {9A3C5E21-6B7D-4F80-A1B2-C3D4E5F60718} (examples/wsk-echo). */
static const NPI_MODULEID EchoModuleId = {
    sizeof(NPI_MODULEID),
    MIT_GUID,
    {{0x9A3C5E21, 0x6B7D, 0x4F80, {0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0x07, 0x18}}}};

/* The in-progress count's flag: set while no binding may be used (none yet, or detaching). */
#define BINDING_DETACHING 0x40000000L

/* The binding context: NMR's ClientBindingContext; one binding at a time. */
typedef struct _ECHO_BINDING {
    HANDLE NmrBindingHandle;
    PVOID WskClient;                           /* written by NMR */
    const WSK_PROVIDER_DISPATCH *WskDispatch;  /* written by NMR */
} ECHO_BINDING;

static HANDLE EchoNmrHandle;
static KEVENT EchoAttached;               /* notification: a provider is attached */
static ECHO_BINDING *volatile EchoBinding; /* the attached provider's, or NULL */
/* Calls in flight through EchoBinding | BINDING_DETACHING. Global, not in the context, so that
 * the thread never touches a context a cleanup may free: it dereferences EchoBinding only while
 * its count is held. */
static volatile LONG EchoInProgress = BINDING_DETACHING;

/* The versions this driver speaks, highest first. */
static const WSK_CLIENT_DISPATCH EchoDispatch[] = {
    {MAKE_WSK_VERSION(1, 1), 0, NULL}, /* No WskClientEvent callback */
    {MAKE_WSK_VERSION(1, 0), 0, NULL},
};
#define ECHO_VERSIONS (sizeof(EchoDispatch) / sizeof(EchoDispatch[0]))

static NPI_CLIENT_ATTACH_PROVIDER_FN ClientAttachProvider;
static NPI_CLIENT_DETACH_PROVIDER_FN ClientDetachProvider;
static NPI_CLIENT_CLEANUP_BINDING_CONTEXT_FN ClientCleanupBindingContext;

/* NMR reads these until NmrWaitForClientDeregisterComplete returns: a static. */
static const NPI_CLIENT_CHARACTERISTICS EchoCharacteristics = {
    0,
    sizeof(NPI_CLIENT_CHARACTERISTICS),
    ClientAttachProvider,
    ClientDetachProvider,
    ClientCleanupBindingContext,
    {0, sizeof(NPI_REGISTRATION_INSTANCE), &NPI_WSK_INTERFACE_ID, &EchoModuleId, 0, NULL}};

static int GuidEqual(const GUID *a, const GUID *b)
{
    const ULONG *x = (const ULONG *)a, *y = (const ULONG *)b;
    return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

/* Takes a reference on the binding: 0 when there is none or it is detaching. */
static int BindingAcquire(void)
{
    LONG old = EchoInProgress;
    for (;;) {
        LONG seen;
        if (old & BINDING_DETACHING)
            return 0;
        seen = __sync_val_compare_and_swap(&EchoInProgress, old, old + 1);
        if (seen == old)
            return 1;
        old = seen;
    }
}

/* Lets the reference go; the last one of a detaching binding completes the detach. */
static void BindingRelease(void)
{
    HANDLE Handle = EchoBinding->NmrBindingHandle; /* read while the reference is held */
    if (__sync_sub_and_fetch(&EchoInProgress, 1) == BINDING_DETACHING)
        NmrClientDetachProviderComplete(Handle);
}

/* ClientAttachProvider NMR API callback function. PASSIVE_LEVEL. */
static NTSTATUS NTAPI ClientAttachProvider(HANDLE NmrBindingHandle, PVOID ClientContext,
                                           const NPI_REGISTRATION_INSTANCE *Provider)
{
    const WSK_PROVIDER_CHARACTERISTICS *Range;
    ECHO_BINDING *Binding;
    USHORT Highest, Lowest;
    NTSTATUS Status = STATUS_NOINTERFACE;
    unsigned i;

    (void)ClientContext;
    if (Provider == NULL || Provider->Size < sizeof(NPI_REGISTRATION_INSTANCE) ||
        Provider->NpiId == NULL || !GuidEqual(Provider->NpiId, &NPI_WSK_INTERFACE_ID))
        return STATUS_NOINTERFACE;
    Range = Provider->NpiSpecificCharacteristics;
    if (Range == NULL)
        return STATUS_NOINTERFACE;
    Highest = Range->HighestVersion;
    Lowest = Range->LowestVersion;
    if (Lowest > Highest || Lowest > EchoDispatch[0].Version ||
        Highest < EchoDispatch[ECHO_VERSIONS - 1].Version)
        return STATUS_NOINTERFACE;
    if (EchoBinding != NULL) /* one provider at a time */
        return STATUS_NOINTERFACE;

    Binding = EchoAlloc(sizeof(ECHO_BINDING), TAG_BINDING);
    if (Binding == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    Binding->NmrBindingHandle = NmrBindingHandle;
    Binding->WskClient = NULL;
    Binding->WskDispatch = NULL;
    /* Usable from the attach on (a detach may come at once); the thread waits for the event. */
    EchoBinding = Binding;
    __sync_lock_test_and_set(&EchoInProgress, 0);

    for (i = 0; i < ECHO_VERSIONS; i++) {
        USHORT Version = EchoDispatch[i].Version;
        if (Version > Highest || Version < Lowest)
            continue;
        Status = NmrClientAttachProvider(NmrBindingHandle, Binding, &EchoDispatch[i],
                                         &Binding->WskClient, (const void **)&Binding->WskDispatch);
        if (Status == STATUS_SUCCESS) {
            ECHO_LOG(DPFLTR_INFO_LEVEL, "attach: WSK %u.%u", (ULONG)(Version >> 8),
                     (ULONG)(Version & 0xFF));
            KeSetEvent(&EchoAttached, IO_NO_INCREMENT, FALSE);
            return STATUS_SUCCESS; /* NMR owns the context now */
        }
        if (Status != STATUS_NOINTERFACE)
            break;
    }
    __sync_lock_test_and_set(&EchoInProgress, BINDING_DETACHING);
    EchoBinding = NULL;
    EchoFree(Binding, TAG_BINDING);
    ECHO_LOG(DPFLTR_WARNING_LEVEL, "attach: refused: 0x%08X", (ULONG)Status);
    return Status;
}

/* ClientDetachProvider NMR API callback function. IRQL <= DISPATCH_LEVEL, never blocks. */
static NTSTATUS NTAPI ClientDetachProvider(PVOID ClientBindingContext)
{
    (void)ClientBindingContext;
    /* The connection ends (its thread closes the socket and lets its reference go). */
    KeSetEvent(&EchoStop, IO_NO_INCREMENT, FALSE);
    if (__sync_fetch_and_or(&EchoInProgress, BINDING_DETACHING) == 0)
        return STATUS_SUCCESS;
    return STATUS_PENDING; /* completed by the last BindingRelease */
}

/* ClientCleanupBindingContext NMR API callback function. IRQL <= DISPATCH_LEVEL. */
static void NTAPI ClientCleanupBindingContext(PVOID ClientBindingContext)
{
    KeClearEvent(&EchoAttached);
    EchoBinding = NULL;
    EchoFree(ClientBindingContext, TAG_BINDING);
}

static NTSTATUS EchoRegister(void)
{
    NTSTATUS Status = NmrRegisterClient(&EchoCharacteristics, NULL, &EchoNmrHandle);
    if (NT_SUCCESS(Status))
        ECHO_LOG(DPFLTR_INFO_LEVEL, "registered as WSK NPI client");
    return Status;
}

static void EchoDeregister(void)
{
    if (NT_SUCCESS(NmrDeregisterClient(EchoNmrHandle)))
        NmrWaitForClientDeregisterComplete(EchoNmrHandle);
}

/* Waits (at most 10 s, ended by the stop) for a provider, and takes a reference on it. */
static NTSTATUS EchoAcquireProvider(WSK_PROVIDER_NPI *Npi)
{
    PVOID Objects[2] = {&EchoAttached, &EchoStop};
    LARGE_INTEGER Timeout = ECHO_MS(ECHO_ATTACH_TRIES * ECHO_ATTACH_RETRY_MS);
    NTSTATUS Status = KeWaitForMultipleObjects(2, Objects, WaitAny, Executive, KernelMode, FALSE,
                                               &Timeout, NULL);
    if (Status == STATUS_WAIT_1)
        return STATUS_CANCELLED;
    if (Status != STATUS_WAIT_0 || !BindingAcquire())
        return STATUS_DEVICE_NOT_READY;
    Npi->Client = EchoBinding->WskClient;
    Npi->Dispatch = EchoBinding->WskDispatch;
    return STATUS_SUCCESS;
}

static void EchoReleaseProvider(void)
{
    BindingRelease();
}
#else /* WSK_REGISTER */
static WSK_REGISTRATION EchoRegistration;
/* WSK 1.0: everything this driver calls. */
static const WSK_CLIENT_DISPATCH EchoDispatch = {MAKE_WSK_VERSION(1, 0), 0, NULL};
static const WSK_CLIENT_NPI EchoClientNpi = {NULL, &EchoDispatch};

static NTSTATUS EchoRegister(void)
{
    NTSTATUS Status = WskRegister(&EchoClientNpi, &EchoRegistration);
    if (NT_SUCCESS(Status))
        ECHO_LOG(DPFLTR_INFO_LEVEL, "registered as WSK client (WskRegister)");
    return Status;
}

static void EchoDeregister(void)
{
    WskDeregister(&EchoRegistration);
}

/* Captures the provider: 100 tries, 100 ms apart (10 s), ended by the stop. */
static NTSTATUS EchoAcquireProvider(WSK_PROVIDER_NPI *Npi)
{
    NTSTATUS Status = STATUS_DEVICE_NOT_READY;
    unsigned Try;

    for (Try = 0; Try < ECHO_ATTACH_TRIES; Try++) {
        LARGE_INTEGER Retry = ECHO_MS(ECHO_ATTACH_RETRY_MS);
        Status = WskCaptureProviderNPI(&EchoRegistration, WSK_NO_WAIT, Npi);
        if (NT_SUCCESS(Status))
            return Status;
        if (KeWaitForSingleObject(&EchoStop, Executive, KernelMode, FALSE, &Retry) ==
            STATUS_WAIT_0)
            return STATUS_CANCELLED;
    }
    return Status;
}

static void EchoReleaseProvider(void)
{
    WskReleaseProviderNPI(&EchoRegistration);
}
#endif

/* ------------------------------------------------------------------------------------------ */
/* Requests                                                                                    */

/* The completion routine of every request: wakes its waiter. No WSK call here. */
static NTSTATUS NTAPI EchoCompletion(DEVICE_OBJECT *DeviceObject, IRP *Irp, PVOID Context)
{
    (void)DeviceObject;
    (void)Irp;
    KeSetEvent((KEVENT *)Context, IO_NO_INCREMENT, FALSE);
    return STATUS_MORE_PROCESSING_REQUIRED; /* the IRP is ours: reused, freed by the thread */
}

/* IRP_MJ_INTERNAL_DEVICE_CONTROL of the driver's device: completes a request's IRP that no
 * provider took (a stub answered without completing it), with the status set in it, so that its
 * completion routine runs (and IoSetCompletionRoutineEx's context is freed) as for any other. */
static NTSTATUS NTAPI EchoDispatchOwn(DEVICE_OBJECT *DeviceObject, IRP *Irp)
{
    NTSTATUS Status = Irp->IoStatus.Status;
    (void)DeviceObject;
    IofCompleteRequest(Irp, IO_NO_INCREMENT);
    return Status;
}

/* Readies a slot's IRP for one request. `Always`: even after the stop (the close). */
static NTSTATUS EchoPrepare(ECHO_REQUEST *Request, BOOLEAN Always)
{
    NTSTATUS Status;
    if (!Always && EchoStopped())
        return STATUS_CANCELLED;
    IoReuseIrp(Request->Irp, STATUS_UNSUCCESSFUL);
    KeClearEvent(&Request->Done);
    Status = IoSetCompletionRoutineEx(EchoDevice, Request->Irp, EchoCompletion, &Request->Done,
                                      TRUE, TRUE, TRUE);
    if (!NT_SUCCESS(Status) && Always) {
        /* The close must not fail for want of memory: the plain routine (IoSetCompletionRoutine,
         * as WDF falls back to); the driver's image outlives the thread that waits for it. */
        IO_STACK_LOCATION *Next = Request->Irp->CurrentStackLocation - 1;
        Next->CompletionRoutine = EchoCompletion;
        Next->Context = &Request->Done;
        Next->Control = 0xE0; /* SL_INVOKE_ON_SUCCESS | SL_INVOKE_ON_ERROR | SL_INVOKE_ON_CANCEL */
        Status = STATUS_SUCCESS;
    }
    return Status;
}

/* After the WSK call that took the slot's IRP and returned `Status`. */
static void EchoSubmitted(ECHO_REQUEST *Request, NTSTATUS Status)
{
    IRP *Irp = Request->Irp;
    Request->InFlight = TRUE;
    if (Status != STATUS_PENDING && !KeReadStateEvent(&Request->Done) &&
        Irp->CurrentLocation == Irp->StackCount + 1) {
        /* Answered, not completed, and its stack location untouched: a stub (Wine's
         * WskDisconnect). The driver completes it through its own device. */
        IO_STACK_LOCATION *Next = Irp->CurrentStackLocation - 1;
        Irp->IoStatus.Status = Status;
        Irp->IoStatus.Information = 0;
        Next->MajorFunction = IRP_MJ_INTERNAL_DEVICE_CONTROL;
        IofCallDriver(EchoDevice, Irp);
    }
}

static void EchoCloseSocket(ECHO_CONNECTION *c);

/* Ends every request in flight: IoCancelIrp, a second for them to end, then the close (which
 * completes a socket's requests: Wine ignores the cancel); waits for each to complete. */
static void EchoAbort(ECHO_CONNECTION *c)
{
    unsigned i;
    BOOLEAN Stuck = FALSE;

    for (i = 0; i < REQ_CLOSE; i++)
        if (c->Request[i].InFlight)
            IoCancelIrp(c->Request[i].Irp);
    for (i = 0; i < REQ_CLOSE; i++) {
        LARGE_INTEGER Timeout = ECHO_MS(ECHO_CANCEL_MS);
        if (c->Request[i].InFlight &&
            KeWaitForSingleObject(&c->Request[i].Done, Executive, KernelMode, FALSE, &Timeout) !=
                STATUS_WAIT_0)
            Stuck = TRUE;
    }
    if (Stuck) {
        ECHO_LOG(DPFLTR_WARNING_LEVEL, "request: not completed after cancel; closing the socket");
        EchoCloseSocket(c);
    }
    for (i = 0; i < REQ_CLOSE; i++) {
        if (c->Request[i].InFlight) {
            KeWaitForSingleObject(&c->Request[i].Done, Executive, KernelMode, FALSE, NULL);
            c->Request[i].InFlight = FALSE;
        }
    }
}

/* Waits for a request in flight, at most `Ms`, ended by the stop: its status (and its
 * information). A stop or a timeout aborts every request in flight: STATUS_CANCELLED or
 * STATUS_IO_TIMEOUT. */
static NTSTATUS EchoWait(ECHO_CONNECTION *c, ECHO_REQUEST *Request, ULONG_PTR *Information,
                         ULONG Ms)
{
    PVOID Objects[2] = {&Request->Done, &EchoStop};
    LARGE_INTEGER Timeout = ECHO_MS(Ms);
    NTSTATUS Status = KeWaitForMultipleObjects(2, Objects, WaitAny, Executive, KernelMode, FALSE,
                                               &Timeout, NULL);
    if (Status != STATUS_WAIT_0) {
        EchoAbort(c);
        return Status == STATUS_WAIT_1 ? STATUS_CANCELLED : STATUS_IO_TIMEOUT;
    }
    Request->InFlight = FALSE;
    if (Information != NULL)
        *Information = Request->Irp->IoStatus.Information;
    return Request->Irp->IoStatus.Status;
}

/* WskCloseSocket, waited for to the end (the socket's requests complete by then). */
static void EchoCloseSocket(ECHO_CONNECTION *c)
{
    ECHO_REQUEST *Request = &c->Request[REQ_CLOSE];
    NTSTATUS Status;

    if (c->Socket == NULL)
        return;
    EchoPrepare(Request, TRUE);
    Status = c->Dispatch->WskCloseSocket(c->Socket, Request->Irp);
    EchoSubmitted(Request, Status);
    KeWaitForSingleObject(&Request->Done, Executive, KernelMode, FALSE, NULL);
    Request->InFlight = FALSE;
    c->Socket = NULL;
    Status = Request->Irp->IoStatus.Status;
    if (NT_SUCCESS(Status))
        ECHO_LOG(DPFLTR_INFO_LEVEL, "socket: closed");
    else
        ECHO_LOG(DPFLTR_ERROR_LEVEL, "socket: close failed: 0x%08X", (ULONG)Status);
}

/* Starts a send of the first `Length` bytes of the out buffer. */
static NTSTATUS EchoStartSend(ECHO_CONNECTION *c, ULONG Length)
{
    ECHO_REQUEST *Request = &c->Request[REQ_SEND];
    NTSTATUS Status = EchoPrepare(Request, FALSE);
    if (!NT_SUCCESS(Status))
        return Status;
    Request->Buffer.Mdl = c->OutMdl;
    Request->Buffer.Offset = 0;
    Request->Buffer.Length = Length;
    EchoSubmitted(Request, c->Dispatch->WskSend(c->Socket, &Request->Buffer, 0, Request->Irp));
    return STATUS_SUCCESS;
}

/* Starts a receive into the whole back buffer. */
static NTSTATUS EchoStartReceive(ECHO_CONNECTION *c)
{
    ECHO_REQUEST *Request = &c->Request[REQ_RECEIVE];
    NTSTATUS Status = EchoPrepare(Request, FALSE);
    if (!NT_SUCCESS(Status))
        return Status;
    Request->Buffer.Mdl = c->BackMdl;
    Request->Buffer.Offset = 0;
    Request->Buffer.Length = c->BackLength;
    EchoSubmitted(Request,
                  c->Dispatch->WskReceive(c->Socket, &Request->Buffer, 0, Request->Irp));
    return STATUS_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* The exchange                                                                                */

/* Bulk mode's chunk: as many whole messages as fit in ECHO_CHUNK, or all of `Total` when that
 * is less (every chunk then starts at the message's first byte). */
static ULONG EchoChunkLength(ULONG MessageLength, ULONG Total)
{
    ULONG Length;
    if (MessageLength == 0)
        MessageLength = 1;
    if (MessageLength > ECHO_CHUNK)
        MessageLength = ECHO_CHUNK;
    Length = ECHO_CHUNK / MessageLength * MessageLength;
    return Length < Total ? Length : Total;
}

/* Whether `Received` (`Count` bytes), which arrived at byte `At` of the stream, is what was sent
 * there: the stream is `Chunk` (`ChunkLength` bytes) over and over. */
static BOOLEAN EchoMatches(const UCHAR *Chunk, ULONG ChunkLength, ULONGLONG At,
                           const UCHAR *Received, ULONG Count)
{
    ULONG Start = (ULONG)(At % ChunkLength);
    while (Count > 0) {
        ULONG Here = ChunkLength - Start < Count ? ChunkLength - Start : Count;
        if (RtlCompareMemory(Chunk + Start, Received, Here) != Here)
            return FALSE;
        Received += Here;
        Count -= Here;
        Start = 0;
    }
    return TRUE;
}

/* `Ticks` of a counter at `Frequency` per second, in units of 1/`PerSecond` s. */
static ULONGLONG EchoTicksTo(ULONGLONG Ticks, ULONGLONG Frequency, ULONGLONG PerSecond)
{
    return Ticks / Frequency * PerSecond + Ticks % Frequency * PerSecond / Frequency;
}

/* The P-th percentile of `Count` round trips (Count >= 1) counted in `Histogram`: the smallest
 * bucket value v such that the round trips of at most v us are at least ceil(Count * P / 100)
 * of them; the overflow bucket reads 10000. */
static ULONG EchoPercentile(const ULONG *Histogram, ULONG Count, ULONG P)
{
    ULONGLONG Need = ((ULONGLONG)Count * P + 99) / 100, Seen = 0;
    ULONG v;
    for (v = 0; v < ECHO_BUCKETS - 1; v++) {
        Seen += Histogram[v];
        if (Seen >= Need)
            return v;
    }
    return ECHO_BUCKETS - 1;
}

/* One round trip of the out buffer's `Length` bytes: send them, receive until all of them are
 * back, each piece checked against what was sent there. */
static NTSTATUS EchoRoundTrip(ECHO_CONNECTION *c, ULONG Length, const char **Step)
{
    ULONG_PTR Done = 0;
    ULONG Received = 0;
    NTSTATUS Status;

    *Step = "send";
    Status = EchoStartSend(c, Length);
    if (NT_SUCCESS(Status))
        Status = EchoWait(c, &c->Request[REQ_SEND], &Done, ECHO_STEP_MS);
    if (!NT_SUCCESS(Status))
        return Status;
    if (Done != Length)
        return STATUS_UNSUCCESSFUL;
    while (Received < Length) {
        *Step = "receive";
        Status = EchoStartReceive(c);
        if (NT_SUCCESS(Status))
            Status = EchoWait(c, &c->Request[REQ_RECEIVE], &Done, ECHO_STEP_MS);
        if (!NT_SUCCESS(Status))
            return Status;
        if (Done == 0) /* the peer closed (Wine reports a reset so too) */
            return STATUS_CONNECTION_ABORTED;
        *Step = "compare";
        if (Done > Length - Received ||
            RtlCompareMemory(c->Back, c->Out + Received, Done) != Done)
            return STATUS_UNSUCCESSFUL;
        Received += (ULONG)Done;
    }
    return STATUS_SUCCESS;
}

/* Bulk mode: examples/wsk-echo/src/stream.rs's algorithm. Two chunks in flight: the send of
 * chunk k+1 goes out while chunk k comes back (a receive is pending beside it whenever bytes are
 * unanswered); the next send only while at most one chunk is unanswered; each round waits for
 * both. Timed from the first send to the last byte checked. */
static NTSTATUS EchoBulk(ECHO_CONNECTION *c, const char **Step)
{
    ULONGLONG Total = EchoParams.Bytes, Sent = 0, Received = 0;
    ULONG Chunk = c->OutLength;
    LONGLONG Started = c->Clock != NULL ? c->Clock(NULL) : 0;
    NTSTATUS Status;

    while (Received < Total) {
        ULONG Length = 0;
        BOOLEAN Sending = FALSE, Receiving = FALSE;
        ULONG_PTR Done = 0;

        if (Sent < Total && Sent - Received <= Chunk) {
            Length = Total - Sent < Chunk ? (ULONG)(Total - Sent) : Chunk;
            *Step = "send";
            Status = EchoStartSend(c, Length);
            if (!NT_SUCCESS(Status))
                return Status;
            Sending = TRUE;
        }
        if (Sent > Received) {
            *Step = "receive";
            Status = EchoStartReceive(c);
            if (!NT_SUCCESS(Status))
                return Status;
            Receiving = TRUE;
        }
        if (Sending) {
            *Step = "send";
            Status = EchoWait(c, &c->Request[REQ_SEND], &Done, ECHO_STEP_MS);
            if (!NT_SUCCESS(Status))
                return Status;
            if (Done != Length)
                return STATUS_UNSUCCESSFUL;
            Sent += Length;
        }
        if (!Receiving)
            continue;
        *Step = "receive";
        Status = EchoWait(c, &c->Request[REQ_RECEIVE], &Done, ECHO_STEP_MS);
        if (!NT_SUCCESS(Status))
            return Status;
        if (Done == 0)
            return STATUS_CONNECTION_ABORTED;
        *Step = "compare";
        if (Done > c->BackLength || Received + Done > Sent ||
            !EchoMatches(c->Out, Chunk, Received, c->Back, (ULONG)Done))
            return STATUS_UNSUCCESSFUL;
        Received += Done;
    }
    if (c->Clock != NULL) {
        ULONGLONG Ms = EchoTicksTo((ULONGLONG)(c->Clock(NULL) - Started), c->Frequency, 1000);
        ECHO_LOG(DPFLTR_INFO_LEVEL, "echo ok, %u bytes in %u ms", EchoParams.Bytes,
                 Ms > 0xFFFFFFFF ? 0xFFFFFFFFu : (ULONG)Ms);
    } else {
        ECHO_LOG(DPFLTR_INFO_LEVEL, "echo ok, %u bytes (no clock)", EchoParams.Bytes);
    }
    return STATUS_SUCCESS;
}

/* Latency mode: RoundTrips round trips of the whole message, one after the other, each timed
 * (send to last byte checked) into 1 us buckets; then p50 and p99. */
static NTSTATUS EchoLatency(ECHO_CONNECTION *c, const char **Step)
{
    ULONG i, N = EchoParams.RoundTrips;
    NTSTATUS Status;

    for (i = 0; i < N; i++) {
        LONGLONG Start = c->Clock != NULL ? c->Clock(NULL) : 0;
        Status = EchoRoundTrip(c, c->OutLength, Step);
        if (!NT_SUCCESS(Status))
            return Status;
        if (c->Clock != NULL) {
            ULONGLONG Us = EchoTicksTo((ULONGLONG)(c->Clock(NULL) - Start), c->Frequency, 1000000);
            c->Histogram[Us < ECHO_BUCKETS - 1 ? Us : ECHO_BUCKETS - 1]++;
        }
    }
    if (c->Clock != NULL)
        ECHO_LOG(DPFLTR_INFO_LEVEL, "echo ok, %u round trips, p50 %u us, p99 %u us", N,
                 EchoPercentile(c->Histogram, N, 50), EchoPercentile(c->Histogram, N, 99));
    else
        ECHO_LOG(DPFLTR_INFO_LEVEL, "echo ok, %u round trips (no clock)", N);
    return STATUS_SUCCESS;
}

/* Allocates what the exchange needs, once: the IRPs, the two buffers and their MDLs, the
 * histogram; fills the out buffer. */
static NTSTATUS EchoSetUp(ECHO_CONNECTION *c, const char **Step)
{
    ULONG Length = EchoParams.MessageLength, i;
    UNICODE_STRING Name;

    *Step = "request";
    for (i = 0; i < REQ_COUNT; i++) {
        c->Request[i].Irp = IoAllocateIrp(1, FALSE);
        if (c->Request[i].Irp == NULL)
            return STATUS_INSUFFICIENT_RESOURCES;
        KeInitializeEvent(&c->Request[i].Done, NotificationEvent, FALSE);
    }
    if (EchoParams.Bytes != 0)
        Length = EchoChunkLength(EchoParams.MessageLength, EchoParams.Bytes);
    *Step = "buffer";
    c->OutLength = c->BackLength = Length;
    c->Out = EchoAlloc(Length, TAG_SEND);
    c->Back = EchoAlloc(Length, TAG_RECEIVE);
    if (c->Out == NULL || c->Back == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    c->OutMdl = IoAllocateMdl(c->Out, Length, FALSE, FALSE, NULL);
    c->BackMdl = IoAllocateMdl(c->Back, Length, FALSE, FALSE, NULL);
    if (c->OutMdl == NULL || c->BackMdl == NULL)
        return STATUS_INSUFFICIENT_RESOURCES;
    MmBuildMdlForNonPagedPool(c->OutMdl);
    MmBuildMdlForNonPagedPool(c->BackMdl);
    for (i = 0; i < Length; i++)
        c->Out[i] = EchoParams.Message[i % EchoParams.MessageLength];
    if (EchoParams.RoundTrips != 0) {
        c->Histogram = EchoAlloc(ECHO_BUCKETS * sizeof(ULONG), TAG_HISTOGRAM);
        if (c->Histogram == NULL)
            return STATUS_INSUFFICIENT_RESOURCES;
        for (i = 0; i < ECHO_BUCKETS; i++)
            c->Histogram[i] = 0;
    }
    /* The clock: looked up by name (Wine 8 exports it from hal.dll only). */
    RtlInitUnicodeString(&Name, L"KeQueryPerformanceCounter");
    c->Clock = (KE_QUERY_PERFORMANCE_COUNTER *)MmGetSystemRoutineAddress(&Name);
    if (c->Clock != NULL) {
        LARGE_INTEGER Frequency = 0;
        c->Clock(&Frequency);
        c->Frequency = (ULONGLONG)Frequency;
        if (Frequency <= 0)
            c->Clock = NULL;
    }
    return STATUS_SUCCESS;
}

/* Frees what EchoSetUp allocated (nothing is in flight any more). */
static void EchoTearDown(ECHO_CONNECTION *c)
{
    unsigned i;
    if (c->Histogram != NULL)
        EchoFree(c->Histogram, TAG_HISTOGRAM);
    if (c->OutMdl != NULL)
        IoFreeMdl(c->OutMdl);
    if (c->BackMdl != NULL)
        IoFreeMdl(c->BackMdl);
    if (c->Out != NULL)
        EchoFree(c->Out, TAG_SEND);
    if (c->Back != NULL)
        EchoFree(c->Back, TAG_RECEIVE);
    for (i = 0; i < REQ_COUNT; i++)
        if (c->Request[i].Irp != NULL)
            IoFreeIrp(c->Request[i].Irp);
}

/* After a socket call (socket, bind, connect, disconnect: the send slot, prepared) returned
 * `CallStatus`: its completion, waited for at most `Ms`. */
static NTSTATUS EchoFinish(ECHO_CONNECTION *c, NTSTATUS CallStatus, ULONG Ms,
                           ULONG_PTR *Information)
{
    EchoSubmitted(&c->Request[REQ_SEND], CallStatus);
    return EchoWait(c, &c->Request[REQ_SEND], Information, Ms);
}

/* Socket, bind, connect, then the exchange the parameters ask for. */
static NTSTATUS EchoExchange(ECHO_CONNECTION *c, const char **Step)
{
    IRP *Irp = c->Request[REQ_SEND].Irp;
    ULONG_PTR Socket = 0;
    NTSTATUS Status;

    *Step = "socket";
    Status = EchoPrepare(&c->Request[REQ_SEND], FALSE);
    if (NT_SUCCESS(Status))
        Status = EchoFinish(c,
                            c->Provider.Dispatch->WskSocket(
                                c->Provider.Client, AF_INET, SOCK_STREAM, IPPROTO_TCP,
                                WSK_FLAG_CONNECTION_SOCKET, NULL, NULL, NULL, NULL, NULL, Irp),
                            ECHO_STEP_MS, &Socket);
    if (!NT_SUCCESS(Status))
        return Status;
    c->Socket = (WSK_SOCKET *)Socket;
    c->Dispatch = c->Socket->Dispatch;
    *Step = "bind";
    c->Local.sin_family = AF_INET; /* 0.0.0.0:0 (the rest is zero: a static) */
    Status = EchoPrepare(&c->Request[REQ_SEND], FALSE);
    if (NT_SUCCESS(Status))
        Status = EchoFinish(c, c->Dispatch->WskBind(c->Socket, &c->Local, 0, Irp), ECHO_STEP_MS,
                            NULL);
    if (!NT_SUCCESS(Status))
        return Status;
    *Step = "connect";
    c->Remote = EchoParams.Remote;
    Status = EchoPrepare(&c->Request[REQ_SEND], FALSE);
    if (NT_SUCCESS(Status))
        Status = EchoFinish(c, c->Dispatch->WskConnect(c->Socket, &c->Remote, 0, Irp),
                            ECHO_STEP_MS, NULL);
    if (!NT_SUCCESS(Status))
        return Status;
    if (EchoParams.Bytes != 0)
        return EchoBulk(c, Step);
    if (EchoParams.RoundTrips != 0)
        return EchoLatency(c, Step);
    Status = EchoRoundTrip(c, c->OutLength, Step);
    if (NT_SUCCESS(Status))
        ECHO_LOG(DPFLTR_INFO_LEVEL, "echo ok, %u bytes", c->OutLength);
    return Status;
}

/* The connection thread. */
static void NTAPI EchoThreadMain(PVOID StartContext)
{
    ECHO_CONNECTION *c = &EchoConnection;
    const char *Step = "attach";
    NTSTATUS Status;

    (void)StartContext;
    Status = EchoAcquireProvider(&c->Provider);
    if (!NT_SUCCESS(Status)) {
        ECHO_LOG(DPFLTR_WARNING_LEVEL, "connection: no provider: 0x%08X", (ULONG)Status);
        if (EchoHaveParams)
            ECHO_LOG(DPFLTR_ERROR_LEVEL, "echo failed: %s 0x%08X", Step, (ULONG)Status);
        PsTerminateSystemThread(STATUS_SUCCESS);
        return;
    }
    if (!EchoHaveParams) {
        /* Nothing to echo: the reference is held until the stop. */
        ECHO_LOG(DPFLTR_INFO_LEVEL, "connection: holding a binding reference");
        KeWaitForSingleObject(&EchoStop, Executive, KernelMode, FALSE, NULL);
    } else {
        Status = EchoSetUp(c, &Step);
        if (NT_SUCCESS(Status))
            Status = EchoExchange(c, &Step);
        if (!NT_SUCCESS(Status))
            ECHO_LOG(DPFLTR_ERROR_LEVEL, "echo failed: %s 0x%08X", Step, (ULONG)Status);
        EchoAbort(c); /* a failed bulk round may have left its other request in flight */
        if (NT_SUCCESS(Status) && c->Socket != NULL) {
            /* A graceful disconnect, given ECHO_DISCONNECT_MS. */
            Status = EchoPrepare(&c->Request[REQ_SEND], FALSE);
            if (NT_SUCCESS(Status))
                Status = EchoFinish(c,
                                    c->Dispatch->WskDisconnect(c->Socket, NULL, 0,
                                                               c->Request[REQ_SEND].Irp),
                                    ECHO_DISCONNECT_MS, NULL);
            if (Status == STATUS_NOT_IMPLEMENTED)
                ECHO_LOG(DPFLTR_WARNING_LEVEL,
                         "socket: the provider does not implement disconnect (0x%08X)",
                         (ULONG)Status);
            else if (!NT_SUCCESS(Status))
                ECHO_LOG(DPFLTR_WARNING_LEVEL, "socket: disconnect failed: 0x%08X",
                         (ULONG)Status);
        }
        EchoCloseSocket(c);
        EchoTearDown(c);
    }
    EchoReleaseProvider();
    ECHO_LOG(DPFLTR_INFO_LEVEL, "connection: reference released");
    PsTerminateSystemThread(STATUS_SUCCESS);
}

/* ------------------------------------------------------------------------------------------ */
/* Parameters                                                                                  */

#define ECHO_MALFORMED ((NTSTATUS)0xC0000024L) /* STATUS_OBJECT_TYPE_MISMATCH */
#define STATUS_BUFFER_OVERFLOW ((NTSTATUS)0x80000005L)
#define STATUS_BUFFER_TOO_SMALL ((NTSTATUS)0xC0000023L)

/* Reads value `Name` of `Key` into EchoValue. */
static NTSTATUS EchoQuery(HANDLE Key, const WCHAR *Name, KEY_VALUE_PARTIAL_INFORMATION **Info)
{
    UNICODE_STRING ValueName;
    ULONG Length = 0;
    NTSTATUS Status;

    RtlInitUnicodeString(&ValueName, Name);
    *Info = (KEY_VALUE_PARTIAL_INFORMATION *)EchoValue;
    Status = ZwQueryValueKey(Key, &ValueName, KeyValuePartialInformation, EchoValue,
                             sizeof(EchoValue), &Length);
    if (Status == STATUS_BUFFER_OVERFLOW || Status == STATUS_BUFFER_TOO_SMALL)
        return ECHO_MALFORMED; /* too long */
    return Status;
}

/* A REG_SZ value: its UTF-16 text up to the first NUL (not empty), in EchoValue. */
static NTSTATUS EchoString(HANDLE Key, const WCHAR *Name, const WCHAR **Text, ULONG *Units)
{
    KEY_VALUE_PARTIAL_INFORMATION *Info;
    NTSTATUS Status = EchoQuery(Key, Name, &Info);
    ULONG n = 0;
    if (!NT_SUCCESS(Status))
        return Status;
    if (Info->Type != REG_SZ || Info->DataLength % 2 != 0)
        return ECHO_MALFORMED;
    *Text = (const WCHAR *)Info->Data;
    while (n < Info->DataLength / 2 && (*Text)[n] != 0)
        n++;
    *Units = n;
    return n > 0 ? STATUS_SUCCESS : ECHO_MALFORMED;
}

/* A REG_DWORD value. */
static NTSTATUS EchoDword(HANDLE Key, const WCHAR *Name, ULONG *Value)
{
    KEY_VALUE_PARTIAL_INFORMATION *Info;
    NTSTATUS Status = EchoQuery(Key, Name, &Info);
    if (!NT_SUCCESS(Status))
        return Status;
    if (Info->Type != REG_DWORD || Info->DataLength != sizeof(ULONG))
        return ECHO_MALFORMED;
    *Value = *(const ULONG *)Info->Data;
    return STATUS_SUCCESS;
}

/* Logs why value `Name` is unusable (the Rust driver's lines); FALSE. */
static BOOLEAN EchoRefuse(const char *Name, NTSTATUS Status)
{
    if (Status == ECHO_MALFORMED)
        ECHO_LOG(DPFLTR_WARNING_LEVEL, "parameters: %s malformed: no echo", Name);
    else
        ECHO_LOG(DPFLTR_WARNING_LEVEL, "parameters: %s missing (0x%08X): no echo", Name,
                 (ULONG)Status);
    return FALSE;
}

/* The values under the Parameters key into EchoParams; FALSE (logged) when unusable. */
static BOOLEAN EchoReadValues(HANDLE Key)
{
    const WCHAR *Text, *End;
    WCHAR Host[16];
    ULONG Units, i, Port, Address;
    NTSTATUS Status;

    /* Host: a dotted IPv4 literal (no name resolution in this driver). */
    Status = EchoString(Key, L"Host", &Text, &Units);
    if (!NT_SUCCESS(Status))
        return EchoRefuse("Host", Status);
    if (Units >= sizeof(Host) / sizeof(Host[0]))
        return EchoRefuse("Host", ECHO_MALFORMED);
    for (i = 0; i < Units; i++)
        Host[i] = Text[i];
    Host[Units] = 0;
    if (!NT_SUCCESS(RtlIpv4StringToAddressW(Host, TRUE, &End, &Address)) || *End != 0)
        return EchoRefuse("Host", ECHO_MALFORMED);
    Status = EchoDword(Key, L"Port", &Port);
    if (!NT_SUCCESS(Status))
        return EchoRefuse("Port", Status);
    if (Port == 0 || Port > 0xFFFF)
        return EchoRefuse("Port", ECHO_MALFORMED);
    EchoParams.Remote.sin_family = AF_INET;
    EchoParams.Remote.sin_port = (USHORT)((Port & 0xFF) << 8 | Port >> 8);
    EchoParams.Remote.sin_addr = Address;
    /* Message: sent as its UTF-8 bytes, as the Rust driver does. */
    Status = EchoString(Key, L"Message", &Text, &Units);
    if (!NT_SUCCESS(Status))
        return EchoRefuse("Message", Status);
    if (RtlUnicodeToUTF8N((char *)EchoParams.Message, ECHO_MAX_MESSAGE,
                          &EchoParams.MessageLength, Text, Units * 2) != STATUS_SUCCESS ||
        EchoParams.MessageLength == 0)
        return EchoRefuse("Message", ECHO_MALFORMED);
    /* Optional: Bytes (bulk mode), RoundTrips (latency mode); never both. */
    Status = EchoDword(Key, L"Bytes", &EchoParams.Bytes);
    if (Status == STATUS_OBJECT_NAME_NOT_FOUND)
        EchoParams.Bytes = 0;
    else if (!NT_SUCCESS(Status) || EchoParams.Bytes == 0)
        return EchoRefuse("Bytes", NT_SUCCESS(Status) ? ECHO_MALFORMED : Status);
    Status = EchoDword(Key, L"RoundTrips", &EchoParams.RoundTrips);
    if (Status == STATUS_OBJECT_NAME_NOT_FOUND)
        EchoParams.RoundTrips = 0;
    else if (!NT_SUCCESS(Status) || EchoParams.RoundTrips == 0 ||
             EchoParams.RoundTrips > ECHO_MAX_ROUND_TRIPS)
        return EchoRefuse("RoundTrips", NT_SUCCESS(Status) ? ECHO_MALFORMED : Status);
    if (EchoParams.Bytes != 0 && EchoParams.RoundTrips != 0) {
        ECHO_LOG(DPFLTR_WARNING_LEVEL, "parameters: Bytes and RoundTrips together: no echo");
        return FALSE;
    }
    return TRUE;
}

/* Reads the service key's Parameters; FALSE (logged) when there is nothing to echo. */
static BOOLEAN EchoReadParameters(UNICODE_STRING *RegistryPath)
{
    OBJECT_ATTRIBUTES Attributes = {sizeof(OBJECT_ATTRIBUTES), NULL, RegistryPath,
                                    OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE, NULL, NULL};
    UNICODE_STRING Name;
    HANDLE Service, Key;
    BOOLEAN Usable;
    NTSTATUS Status = ZwOpenKey(&Service, KEY_READ, &Attributes);

    if (!NT_SUCCESS(Status))
        return EchoRefuse("the service key", Status);
    RtlInitUnicodeString(&Name, L"Parameters");
    Attributes.RootDirectory = Service;
    Attributes.ObjectName = &Name;
    Status = ZwOpenKey(&Key, KEY_READ, &Attributes);
    ZwClose(Service);
    if (!NT_SUCCESS(Status)) {
        /* The usual configuration of a driver with nothing to echo. */
        ECHO_LOG(DPFLTR_INFO_LEVEL, "parameters: no Parameters key (0x%08X): no echo",
                 (ULONG)Status);
        return FALSE;
    }
    Usable = EchoReadValues(Key);
    ZwClose(Key);
    return Usable;
}

/* ------------------------------------------------------------------------------------------ */
/* Entry points                                                                                */

/* DriverUnload: stop the thread and wait for it to end, deregister, free. PASSIVE_LEVEL. */
static void NTAPI DriverUnload(DRIVER_OBJECT *DriverObject)
{
    (void)DriverObject;
    KeSetEvent(&EchoStop, IO_NO_INCREMENT, FALSE);
    if (EchoThread != NULL) {
        KeWaitForSingleObject(EchoThread, Executive, KernelMode, FALSE, NULL);
        ObfDereferenceObject(EchoThread);
    }
    EchoDeregister();
    IoDeleteDevice(EchoDevice);
    ECHO_LOG(DPFLTR_INFO_LEVEL, "unloaded, live pool allocations: %u", (ULONG)EchoLivePool);
}

/* DriverEntry: parameters, device object, registration, the connection thread. PASSIVE_LEVEL. */
NTSTATUS NTAPI DriverEntry(DRIVER_OBJECT *DriverObject, UNICODE_STRING *RegistryPath)
{
    OBJECT_ATTRIBUTES Attributes = {sizeof(OBJECT_ATTRIBUTES), NULL, NULL, OBJ_KERNEL_HANDLE,
                                    NULL, NULL};
    HANDLE Thread;
    NTSTATUS Status;

    KeInitializeEvent(&EchoStop, NotificationEvent, FALSE);
#ifndef WSK_REGISTER
    KeInitializeEvent(&EchoAttached, NotificationEvent, FALSE);
#endif
    /* A problem with the parameters is logged; the driver loads anyway and echoes nothing. */
    EchoHaveParams = EchoReadParameters(RegistryPath);
    Status = IoCreateDevice(DriverObject, 0, NULL, FILE_DEVICE_UNKNOWN, FILE_DEVICE_SECURE_OPEN,
                            FALSE, &EchoDevice);
    if (!NT_SUCCESS(Status)) {
        ECHO_LOG(DPFLTR_ERROR_LEVEL, "setup failed: IoCreateDevice 0x%08X", (ULONG)Status);
        return Status;
    }
    DriverObject->MajorFunction[IRP_MJ_INTERNAL_DEVICE_CONTROL] = EchoDispatchOwn;
    Status = EchoRegister();
    if (!NT_SUCCESS(Status)) {
        ECHO_LOG(DPFLTR_ERROR_LEVEL, "register failed: 0x%08X", (ULONG)Status);
        IoDeleteDevice(EchoDevice);
        return Status;
    }
    DriverObject->DriverUnload = DriverUnload;

    Status = PsCreateSystemThread(&Thread, THREAD_ALL_ACCESS, &Attributes, NULL, NULL,
                                  EchoThreadMain, NULL);
    if (NT_SUCCESS(Status)) {
        Status = ObReferenceObjectByHandle(Thread, THREAD_ALL_ACCESS, PsThreadType, KernelMode,
                                           &EchoThread, NULL);
        ZwClose(Thread);
        if (!NT_SUCCESS(Status)) /* not for a handle just made; the unload could not wait */
            ECHO_LOG(DPFLTR_ERROR_LEVEL, "thread: no reference 0x%08X", (ULONG)Status);
    } else if (EchoHaveParams) {
        ECHO_LOG(DPFLTR_ERROR_LEVEL, "echo failed: start 0x%08X", (ULONG)Status);
    } else {
        ECHO_LOG(DPFLTR_ERROR_LEVEL, "connection: not kept: start 0x%08X", (ULONG)Status);
    }
    return STATUS_SUCCESS;
}
