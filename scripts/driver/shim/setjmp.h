/*
 * ksspi driver build on Linux (scripts/driver-build.sh): mingw-w64's
 * setjmp.h declares `_setjmp` with two parameters, clang's MSVC-mode intrin.h
 * with one; both reach bindgen's translation unit and clang rejects the
 * conflict. The driver uses neither: mingw's declaration is renamed away.
 */
#define _setjmp ksspi_shim_mingw_setjmp
#include_next <setjmp.h>
#undef _setjmp
