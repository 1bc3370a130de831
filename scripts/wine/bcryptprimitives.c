/* A stand-in for Windows' bcryptprimitives.dll, for running ksspictl.exe under
 * Wine 8.0 only (never shipped, never on Windows).
 *
 * Rust's standard library (1.78 and later) on Windows fills its random state
 * with ProcessPrng from bcryptprimitives.dll. Wine 8.0 has no such DLL, so the
 * exe does not start. This DLL, placed beside the exe, exports ProcessPrng over
 * BCryptGenRandom with the system's preferred generator, which Wine has.
 * Built by scripts/windows-harness-wine.sh with mingw-w64 gcc. */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x80000000u ? 0x80000000u : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
