/*
 * The smallest useful C host: load a plugin by path, take a lock, renew it,
 * release it, and say what happened at each step.
 *
 *   cc -std=c11 -Iinclude -Ihosts/c hosts/c/example.c -ldl -o bext-lock-example
 *   ./bext-lock-example target/debug/libbext_locking_memory.so '{}' jobs/nightly
 *
 * Arguments: PLUGIN.so [CONFIG_JSON (default {})] [KEY (default jobs/nightly)].
 * Exit status: 0 when the lock was taken, renewed and released; 2 when
 * someone else holds it (not an error); 1 on any error.
 */

#include <stdio.h>
#include <stdlib.h>

#include "bext_locking.h"
#include "bext_locking_host.h"

/* Prints a failed call: its status and the plugin's error object, then frees
 * the object with the plugin's free_string (never free()). */
static void report(const BextLockingVTable *vt, const char *what, int32_t status, char *json) {
  fprintf(stderr, "%s failed: %s (%d): %s\n", what, bext_locking_host_status_name(status),
          (int)status, json != NULL ? json : "(no error object)");
  vt->free_string(json);
}

int main(int argc, char **argv) {
  BextLockingHostPlugin plugin;
  const BextLockingVTable *vt;
  BextLockingInstance *locks = NULL;
  const char *config = argc > 2 ? argv[2] : "{}";
  const char *key = argc > 3 ? argv[3] : "jobs/nightly";
  char err[1024];
  char request[2200];
  char *out = NULL;
  char *handle = NULL;
  int32_t status;
  int exit_code = 1;

  if (argc < 2) {
    fprintf(stderr, "usage: %s PLUGIN.so [CONFIG_JSON] [KEY]\n", argv[0]);
    return 1;
  }
  if (bext_locking_host_load(argv[1], &plugin, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  vt = plugin.vtable;
  printf("loaded %s %s from %s\n", plugin.name, plugin.version, argv[1]);

  status = vt->describe(&out);
  if (status != BEXT_LOCKING_OK) {
    report(vt, "describe", status, out);
    return 1;
  }
  printf("describe: %s\n", out);
  vt->free_string(out);
  out = NULL;

  status = vt->create(config, &locks, &out);
  if (status != BEXT_LOCKING_OK) {
    report(vt, "create", status, out);
    return 1;
  }
  printf("created an instance with config %s\n", config);

  if (bext_locking_host_request_json(request, sizeof request, key, 30000) >= (int)sizeof request) {
    fprintf(stderr, "key is too long for this example\n");
    goto done;
  }
  status = vt->try_lock(locks, request, &handle);
  if (status == BEXT_LOCKING_CONTENDED) {
    /* Not an error: another holder has the lock, so skip the work. */
    printf("try_lock %s: someone else holds it; skipping\n", key);
    exit_code = 2;
    goto done;
  }
  if (status != BEXT_LOCKING_OK) {
    report(vt, "try_lock", status, handle);
    handle = NULL;
    goto done;
  }
  printf("try_lock %s: acquired, handle %s\n", key, handle);

  /* Locks are not reentrant: the same instance asking again is contention. */
  status = vt->try_lock(locks, request, &out);
  printf("try_lock again from the same instance: %s\n", bext_locking_host_status_name(status));
  vt->free_string(out);
  out = NULL;

  /* ... the protected work runs here; renew before the TTL runs out ... */
  status = vt->renew(locks, handle, &out);
  if (status != BEXT_LOCKING_OK) {
    /* An error from renew means the lock is lost: stop the work. */
    report(vt, "renew", status, out);
    out = NULL;
    goto done;
  }
  printf("renew: the TTL restarted\n");

  status = vt->release(locks, handle, &out);
  if (status != BEXT_LOCKING_OK) {
    report(vt, "release", status, out);
    out = NULL;
    goto done;
  }
  printf("release: done\n");
  exit_code = 0;

done:
  vt->free_string(handle);
  status = vt->cleanup(locks, &out);
  if (status != BEXT_LOCKING_OK) report(vt, "cleanup", status, out);
  else vt->free_string(out);
  vt->destroy(locks);
  printf("destroyed the instance\n");
  return exit_code;
}
