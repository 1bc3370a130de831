/*
 * STAND-IN for the WDK's WdfDriverEntry.lib (KMDF 1.33, x64), which exists
 * only in the WDK. It is NOT the real loader stub and must never ship: it
 * exists so that scripts/driver-build.sh can finish the link on Linux and
 * check the image. It defines what a KMDF driver takes from WdfDriverEntry.lib
 * (the FxDriverEntry entry point and the globals that wdf.h and
 * wdffuncenum.h declare extern) and calls the two WdfLdr.sys functions the
 * real stub calls, so the image's WdfLdr.sys imports are the real ones. The
 * layouts follow fxldr.h in microsoft/Windows-Driver-Frameworks (MIT).
 * On Windows, `cargo make` links the real library instead.
 */

typedef long NTSTATUS;
typedef unsigned long ULONG;
typedef unsigned char BOOLEAN;
typedef void (*WDFFUNC)(void);

typedef struct {
    ULONG Major;
    ULONG Minor;
    ULONG Build;
} WDF_VERSION;

typedef struct {
    ULONG Size;
    unsigned short *Component;
    WDF_VERSION Version;
    ULONG FuncCount;
    WDFFUNC *FuncTable;
    void *Module;
} WDF_BIND_INFO;

/* The driver's DriverEntry (src/kmdf/driver.rs) and WdfLdr.sys's exports. */
extern NTSTATUS DriverEntry(void *DriverObject, void *RegistryPath);
extern NTSTATUS WdfVersionBind(void *DriverObject, void *RegistryPath,
                               WDF_BIND_INFO *BindInfo, void **Globals);
extern NTSTATUS WdfVersionUnbind(void *RegistryPath, WDF_BIND_INFO *BindInfo,
                                 void *Globals);

/* wdf.h: `#define WdfFunctions WdfFunctions_01033`, filled in by the bind. */
const WDFFUNC *WdfFunctions_01033;
/* wdffuncenum.h's externs. */
void *WdfDriverGlobals;
BOOLEAN WdfClientVersionHigherThanFramework;
ULONG WdfFunctionCount;
ULONG WdfStructureCount;
const unsigned long long *WdfStructures;

static unsigned short component[] = {'K', 'm', 'd', 'f', 'L', 'i', 'b', 'r', 'a', 'r', 'y', 0};
static WDF_BIND_INFO bind_info = {
    sizeof(WDF_BIND_INFO), component, {1, 33, 0}, 0, (WDFFUNC *)&WdfFunctions_01033, 0,
};

/* The image's entry point (/ENTRY:FxDriverEntry): bind, then DriverEntry. */
NTSTATUS FxDriverEntry(void *DriverObject, void *RegistryPath)
{
    NTSTATUS status = WdfVersionBind(DriverObject, RegistryPath, &bind_info, &WdfDriverGlobals);
    if (status < 0) {
        return status;
    }
    status = DriverEntry(DriverObject, RegistryPath);
    if (status < 0) {
        WdfVersionUnbind(RegistryPath, &bind_info, WdfDriverGlobals);
    }
    return status;
}
