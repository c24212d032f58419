/* The ABI 1.1 part of hosts/c/bext_locking_host.h against one plugin:
 *
 *   admin_helper PLUGIN.so CONFIG_JSON
 *
 * Prints one line per step, "<step>: <status name>: <output or the helper's
 * message>", for the Rust test to read: the request builders, the slot
 * checks, and inspect / force_release / stats through the helper, which for
 * a 1.0 plugin must answer BEXT_LOCKING_ERR_UNSUPPORTED without calling
 * anything while the 1.0 slots keep working. Exit status 0 when every call
 * gave an answer the contract allows (checked by the test), 1 on a broken
 * step. Run under valgrind: every output is freed with free_string. */

#include <stdio.h>
#include <string.h>

#include "bext_locking.h"
#include "bext_locking_host.h"

static const BextLockingVTable *vt;
static char sentinel_byte;

/* Prints a step, frees the plugin's output, and says whether the helper
 * cleared *out when it answered for itself. */
static void say(const char *step, int32_t status, char *out, const char *err) {
  if (out == &sentinel_byte) {
    printf("%s: %s: out_json not cleared\n", step, bext_locking_host_status_name(status));
    return;
  }
  printf("%s: %s: %s\n", step, bext_locking_host_status_name(status),
         out != NULL ? out : (err != NULL && err[0] ? err : "(nothing)"));
  vt->free_string(out);
}

int main(int argc, char **argv) {
  BextLockingHostPlugin p;
  BextLockingInstance *inst = NULL;
  char err[512];
  char owner[BEXT_LOCKING_MAX_OWNER_BYTES + 1];
  char req[4096];
  char small[8];
  char *out = NULL;
  char *handle = NULL;
  int32_t status;
  int n;
  uint64_t fence = 0;
  const char *key = "c-admin/\"quoted\"\n";

  if (argc < 3) {
    fprintf(stderr, "usage: %s PLUGIN.so CONFIG_JSON\n", argv[0]);
    return 2;
  }
  if (bext_locking_host_load(argv[1], &p, err, sizeof err) != 0) {
    printf("load: %s\n", err);
    return 1;
  }
  vt = p.vtable;
  printf("loaded: %s %s, abi_minor %u\n", p.name, p.version, bext_locking_host_abi_minor(&p));
  printf("slots: inspect %d, force_release %d, stats %d, try_lock %d, nonsense %d\n",
         bext_locking_host_has_slot(&p, "inspect"), bext_locking_host_has_slot(&p, "force_release"),
         bext_locking_host_has_slot(&p, "stats"), bext_locking_host_has_slot(&p, "try_lock"),
         bext_locking_host_has_slot(&p, "nonsense"));

  /* The builders: escaping, the optional fields, and snprintf-style sizes. */
  n = bext_locking_host_default_owner(owner, sizeof owner);
  printf("default owner: %d %s\n", n, owner);
  bext_locking_host_request_json_owned(req, sizeof req, "k", 1000, "host\"1\":\t42");
  printf("request with owner: %s\n", req);
  bext_locking_host_request_json(req, sizeof req, "k", 1000);
  printf("request without owner: %s\n", req);
  bext_locking_host_inspect_json(req, sizeof req, key);
  printf("inspect request: %s\n", req);
  fence = 7;
  bext_locking_host_force_release_json(req, sizeof req, "k", &fence);
  printf("force_release request: %s\n", req);
  bext_locking_host_force_release_json(req, sizeof req, "k", NULL);
  printf("force_release request without if_fence: %s\n", req);
  n = bext_locking_host_inspect_json(small, sizeof small, "abcdefgh");
  printf("truncated: %d %s\n", n, small);
  printf("NULL key: %d %d %d %d\n", bext_locking_host_request_json_owned(req, sizeof req, NULL, 1, NULL),
         bext_locking_host_inspect_json(req, sizeof req, NULL),
         bext_locking_host_force_release_json(req, sizeof req, NULL, NULL),
         bext_locking_host_has_slot(NULL, "inspect"));

  /* A NULL plugin is the caller's mistake: ERR_INVALID, said in err. */
  out = &sentinel_byte;
  status = bext_locking_host_inspect(NULL, NULL, "{}", &out, err, sizeof err);
  say("inspect with a NULL plugin", status, out, err);
  out = &sentinel_byte;
  status = bext_locking_host_stats(NULL, NULL, &out, err, sizeof err);
  say("stats with a NULL plugin", status, out, err);

  status = vt->create(argv[2], &inst, &out);
  if (status != BEXT_LOCKING_OK) {
    say("create", status, out, NULL);
    return 1;
  }

  /* The 1.0 slots, with an owner the plugin stores or (1.0) ignores. */
  bext_locking_host_request_json_owned(req, sizeof req, key, 10000, owner);
  status = vt->try_lock(inst, req, &handle);
  printf("try_lock: %s\n", bext_locking_host_status_name(status));
  if (status != BEXT_LOCKING_OK) {
    say("try_lock", status, handle, NULL);
    vt->destroy(inst);
    return 1;
  }

  bext_locking_host_inspect_json(req, sizeof req, key);
  out = &sentinel_byte;
  status = bext_locking_host_inspect(&p, inst, req, &out, err, sizeof err);
  say("inspect", status, out, err);
  /* NULL inputs reach a plugin that has the slot, which refuses them. */
  out = &sentinel_byte;
  status = bext_locking_host_inspect(&p, NULL, req, &out, err, sizeof err);
  say("inspect with a NULL instance", status, out, err);
  out = &sentinel_byte;
  status = bext_locking_host_inspect(&p, inst, NULL, &out, err, sizeof err);
  say("inspect with a NULL request", status, out, err);
  status = bext_locking_host_inspect(&p, inst, req, NULL, err, sizeof err);
  say("inspect with a NULL out_json", status, NULL, err);

  out = &sentinel_byte;
  status = bext_locking_host_stats(&p, inst, &out, err, sizeof err);
  say("stats", status, out, err);

  bext_locking_host_force_release_json(req, sizeof req, key, NULL);
  out = &sentinel_byte;
  status = bext_locking_host_force_release(&p, inst, req, &out, err, sizeof err);
  say("force_release", status, out, err);

  out = NULL;
  status = vt->renew(inst, handle, &out);
  say("renew", status, out, NULL);
  out = NULL;
  status = vt->release(inst, handle, &out);
  say("release", status, out, NULL);
  vt->free_string(handle);
  vt->destroy(inst);
  printf("done\n");
  return 0;
}
