/* Prints the layout of BextLockingVTable and the constants as this compiler
 * sees them through include/bext_locking.h; the Rust test compares them with
 * the ffi crate's. Compiled as C11 and as C++ with -Wpedantic -Werror. */

#include <stddef.h>
#include <stdio.h>

#include "bext_locking.h"
#include "bext_locking_host.h"

/* The entry prototype must have the type hosts cast dlsym's result to.
 * Unevaluated, so the symbol itself is not needed at link time. */
#ifdef __cplusplus
#include <type_traits>
static_assert(std::is_same<decltype(&bext_locking_plugin_entry), BextLockingEntryFn>::value,
              "bext_locking_plugin_entry does not match BextLockingEntryFn");
#else
_Static_assert(_Generic(&bext_locking_plugin_entry, BextLockingEntryFn: 1, default: 0),
               "bext_locking_plugin_entry does not match BextLockingEntryFn");
#endif

#define FIELD(f) printf(#f " %zu\n", offsetof(BextLockingVTable, f))

int main(void) {
  printf("size %zu\n", sizeof(BextLockingVTable));
  printf("v1_size %zu\n", (size_t)BEXT_LOCKING_HOST_VTABLE_V1_SIZE);
  FIELD(struct_size);
  FIELD(abi_version);
  FIELD(name);
  FIELD(version);
  FIELD(describe);
  FIELD(create);
  FIELD(try_lock);
  FIELD(renew);
  FIELD(release);
  FIELD(cleanup);
  FIELD(destroy);
  FIELD(free_string);
  FIELD(inspect);
  FIELD(force_release);
  FIELD(stats);
  FIELD(lock_wait);
  FIELD(cancel_wait);
  FIELD(renew_for);
  printf("v1_1_size %zu\n", (size_t)BEXT_LOCKING_HOST_VTABLE_V1_1_SIZE);
  printf("v1_2_size %zu\n", (size_t)BEXT_LOCKING_HOST_VTABLE_V1_2_SIZE);
  printf("BEXT_LOCKING_ABI_VERSION %lld\n", (long long)BEXT_LOCKING_ABI_VERSION);
  printf("BEXT_LOCKING_OK %lld\n", (long long)BEXT_LOCKING_OK);
  printf("BEXT_LOCKING_CONTENDED %lld\n", (long long)BEXT_LOCKING_CONTENDED);
  printf("BEXT_LOCKING_CANCELLED %lld\n", (long long)BEXT_LOCKING_CANCELLED);
  printf("BEXT_LOCKING_ERR_BACKEND %lld\n", (long long)BEXT_LOCKING_ERR_BACKEND);
  printf("BEXT_LOCKING_ERR_INVALID %lld\n", (long long)BEXT_LOCKING_ERR_INVALID);
  printf("BEXT_LOCKING_ERR_PANIC %lld\n", (long long)BEXT_LOCKING_ERR_PANIC);
  printf("BEXT_LOCKING_ERR_UNSUPPORTED %lld\n", (long long)BEXT_LOCKING_ERR_UNSUPPORTED);
  printf("BEXT_LOCKING_ABI_MINOR %lld\n", (long long)BEXT_LOCKING_ABI_MINOR);
  printf("BEXT_LOCKING_MAX_OWNER_BYTES %lld\n", (long long)BEXT_LOCKING_MAX_OWNER_BYTES);
  printf("BEXT_LOCKING_MAX_KEY_BYTES %lld\n", (long long)BEXT_LOCKING_MAX_KEY_BYTES);
  printf("BEXT_LOCKING_MAX_TTL_MS %lld\n", (long long)BEXT_LOCKING_MAX_TTL_MS);
  printf("BEXT_LOCKING_FUEL_TRY_LOCK %lld\n", (long long)BEXT_LOCKING_FUEL_TRY_LOCK);
  printf("BEXT_LOCKING_FUEL_RENEW %lld\n", (long long)BEXT_LOCKING_FUEL_RENEW);
  printf("BEXT_LOCKING_FUEL_RELEASE %lld\n", (long long)BEXT_LOCKING_FUEL_RELEASE);
  printf("BEXT_LOCKING_FUEL_CLEANUP %lld\n", (long long)BEXT_LOCKING_FUEL_CLEANUP);
  return 0;
}
