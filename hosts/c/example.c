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
 *
 * The work runs in steps, with the pattern every host follows: the lease is
 * counted on the monotonic clock from just before the request that started
 * it, less the backend's clock-drift allowance (from `describe`), and the
 * work stops a margin (a third of the TTL) before that lease end unless a
 * renewal was confirmed. A real host renews from a thread of its own and
 * checks the deadline from another, so a renew call that hangs cannot hold
 * the check up (the Rust LockGuard and Go's RunExclusive do that).
 */

#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bext_locking.h"
#include "bext_locking_host.h"

/* Prints a failed call: its status and the plugin's error object, then frees
 * the object with the plugin's free_string (never free()). */
static void report(const BextLockingVTable *vt, const char *what, int32_t status, char *json) {
  fprintf(stderr, "%s failed: %s (%d): %s\n", what, bext_locking_host_status_name(status),
          (int)status, json != NULL ? json : "(no error object)");
  vt->free_string(json);
}

/* Milliseconds on CLOCK_MONOTONIC: immune to wall-clock steps. */
static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* The clock-drift allowance for a lease of `ttl_ms`: the plugin's
 * "clock_drift":{"rate":R,"fixed_ms":F} from its describe answer, else
 * Redlock's 1 % + 2 ms. (A real host parses the JSON with a JSON library.) */
static double drift_ms(const char *describe, double ttl_ms) {
  double rate = 0.01, fixed_ms = 2;
  const char *d = strstr(describe, "\"clock_drift\":{");
  if (d != NULL) {
    const char *r = strstr(d, "\"rate\":");
    const char *f = strstr(d, "\"fixed_ms\":");
    if (r != NULL) rate = strtod(r + strlen("\"rate\":"), NULL);
    if (f != NULL) fixed_ms = strtod(f + strlen("\"fixed_ms\":"), NULL);
  }
  return ttl_ms * rate + fixed_ms;
}

int main(int argc, char **argv) {
  BextLockingHostPlugin plugin;
  const BextLockingVTable *vt;
  BextLockingInstance *locks = NULL;
  const char *config = argc > 2 ? argv[2] : "{}";
  const char *key = argc > 3 ? argv[3] : "jobs/nightly";
  char err[1024];
  char request[4096];
  char query[4096];
  char owner[BEXT_LOCKING_MAX_OWNER_BYTES + 1];
  char *out = NULL;
  char *handle = NULL;
  int32_t status;
  int exit_code = 1;
  const double ttl_ms = 30000;
  double drift = 0, sent, lease_end, stop_margin = ttl_ms / 3;
  int step;

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
  drift = drift_ms(out, ttl_ms);
  vt->free_string(out);
  out = NULL;

  status = vt->create(config, &locks, &out);
  if (status != BEXT_LOCKING_OK) {
    report(vt, "create", status, out);
    return 1;
  }
  printf("created an instance with config %s\n", config);

  /* Say who holds the lock, for whoever inspects it ("hostname:pid"). */
  if (bext_locking_host_default_owner(owner, sizeof owner) < 0) strcpy(owner, "example");
  if (bext_locking_host_request_json_owned(request, sizeof request, key, (uint64_t)ttl_ms,
                                           owner) >= (int)sizeof request) {
    fprintf(stderr, "key is too long for this example\n");
    goto done;
  }
  sent = now_ms(); /* the lease starts no earlier than this */
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
  lease_end = sent + ttl_ms - drift;
  printf("the lease ends in %.0f ms by our clock (%.0f ms TTL less %.1f ms of clock drift); "
         "stop by %.0f ms from now unless renewed\n",
         lease_end - now_ms(), ttl_ms, drift, lease_end - stop_margin - now_ms());

  /* ABI 1.1: who holds the key, as anyone may see it (never the lock_id).
   * A 1.0 plugin has no inspect slot: the helper says so without calling. */
  bext_locking_host_inspect_json(query, sizeof query, key);
  status = bext_locking_host_inspect(&plugin, locks, query, &out, err, sizeof err);
  if (status == BEXT_LOCKING_OK) {
    printf("inspect: %s\n", out);
    vt->free_string(out);
  } else if (status == BEXT_LOCKING_ERR_UNSUPPORTED && out == NULL) {
    printf("inspect: %s\n", err);
  } else {
    report(vt, "inspect", status, out);
  }
  out = NULL;

  /* Locks are not reentrant: the same instance asking again is contention. */
  status = vt->try_lock(locks, request, &out);
  printf("try_lock again from the same instance: %s\n", bext_locking_host_status_name(status));
  vt->free_string(out);
  out = NULL;

  for (step = 1; step <= 3; step++) {
    double asked;
    /* Past the deadline to stop without a confirmed renewal: stop now,
     * while the lease still covers winding down. */
    if (now_ms() >= lease_end - stop_margin) {
      fprintf(stderr, "the deadline to stop passed without a confirmed renewal: stopping\n");
      goto done;
    }
    /* ... one step of the protected work (pass the handle's fence to what
     * it writes) ... */
    printf("step %d done\n", step);
    if (step != 2) continue; /* renew a third of the way in; here, once */
    asked = now_ms();
    status = vt->renew(locks, handle, &out);
    if (status != BEXT_LOCKING_OK) {
      /* An error from renew means the lock is lost: stop the work. */
      report(vt, "renew", status, out);
      out = NULL;
      goto done;
    }
    /* Counted from before the renew was sent, never from its answer. */
    lease_end = asked + ttl_ms - drift;
    printf("renew: the TTL restarted; the lease now ends in %.0f ms\n", lease_end - now_ms());
  }

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
