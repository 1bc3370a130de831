/*
 * ksspi driver build on Linux (scripts/driver-build.sh): what the WDK's
 * wdm.h declares and mingw-w64 10's ddk/wdm.h lacks, or has in another form,
 * and that wdk-sys's bindings (hence wdk-alloc and src/kmdf) need. Each is
 * written from the Microsoft documentation page named beside it. This
 * directory comes first on wdk-build's include path, so `#include <wdm.h>`
 * lands here and pulls in mingw-w64's header first.
 */

/* KeGetCurrentIrql: on x64 mingw-w64 10 defines it inline (a CR8 read),
 * where the WDK for Windows 10 and later declares the ntoskrnl.exe export
 * (which mingw-w64's own libntoskrnl.a lists) and wdk-sys binds that (its
 * paged_code! calls it). The inline definition is renamed out of the way;
 * the export is declared below. */
#define KeGetCurrentIrql ksspi_shim_mingw_KeGetCurrentIrql
#include_next <wdm.h>
#undef KeGetCurrentIrql

#ifndef KSSPI_SHIM_WDM_H
#define KSSPI_SHIM_WDM_H

/* https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kegetcurrentirql */
NTKERNELAPI KIRQL NTAPI KeGetCurrentIrql(VOID);

/* https://learn.microsoft.com/windows-hardware/drivers/kernel/pool_flags */
typedef ULONG64 POOL_FLAGS;
#define POOL_FLAG_USE_QUOTA          0x0000000000000001ULL
#define POOL_FLAG_UNINITIALIZED      0x0000000000000002ULL
#define POOL_FLAG_SESSION            0x0000000000000004ULL
#define POOL_FLAG_CACHE_ALIGNED      0x0000000000000008ULL
#define POOL_FLAG_RAISE_ON_FAILURE   0x0000000000000020ULL
#define POOL_FLAG_NON_PAGED          0x0000000000000040ULL
#define POOL_FLAG_NON_PAGED_EXECUTE  0x0000000000000080ULL
#define POOL_FLAG_PAGED              0x0000000000000100ULL

/* https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-exallocatepool2 */
NTKERNELAPI PVOID NTAPI ExAllocatePool2(POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);

/* https://learn.microsoft.com/windows-hardware/drivers/ddi/wdm/nf-wdm-kequeryinterrupttimeprecise */
NTKERNELAPI ULONG64 NTAPI KeQueryInterruptTimePrecise(PULONG64 QpcTimeStamp);

#endif /* KSSPI_SHIM_WDM_H */
