/*
 * ksspi driver build on Linux (scripts/driver-build.sh): declarations that
 * the WDK's wdm.h has and mingw-w64 10's ddk/wdm.h lacks, and that wdk-sys's
 * bindings (hence wdk-alloc and src/kmdf) need. Each is written from
 * the Microsoft documentation page named beside it. This directory comes
 * first on wdk-build's include path, so `#include <wdm.h>` lands here and the
 * real header is pulled in first.
 */
#include_next <wdm.h>

#ifndef KSSPI_SHIM_WDM_H
#define KSSPI_SHIM_WDM_H

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
