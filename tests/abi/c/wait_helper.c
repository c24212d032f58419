/* The ABI 1.2 part of hosts/c/bext_locking_host.h against one plugin:
 *
 *   wait_helper PLUGIN.so CONFIG_JSON
 *
 * Prints one line per step, "<step>: <status name>: <detail>", for the Rust
 * test to read: the request builders, bext_locking_host_lock_wait timing
 * out, cancelled from another pthread (and before it started), handed the
 * lock when the holder releases, bext_locking_host_renew_for, and the
 * helper's own refusals. Works the same on a plugin whose lock_wait waits
 * and on one the helper has to poll (ABI 1.0, 1.1, or a backend that
 * answers unsupported); "polled" says which. CONFIG_JSON must give two
 * instances that see each other's locks. Run under valgrind. */

#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bext_locking.h"
#include "bext_locking_host.h"

static BextLockingHostPlugin p;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* After 150 ms, cancels a wait or releases a handle on another thread. */
typedef struct {
  BextLockingInstance *inst;
  BextLockingHostWait *wait;
  const char *handle;
  int32_t status;
} Later;

static void *later_main(void *arg) {
  Later *l = (Later *)arg;
  char err[256];
  char *out = NULL;
  pause_ms(150);
  if (l->handle != NULL) {
    l->status = p.vtable->release(l->inst, l->handle, &out);
    p.vtable->free_string(out);
  } else {
    l->status = bext_locking_host_cancel_wait(&p, l->inst, l->wait, err, sizeof err);
  }
  return NULL;
}

int main(int argc, char **argv) {
  BextLockingInstance *a = NULL, *b = NULL;
  BextLockingHostWait w;
  char err[512];
  char buf[256];
  char key[128];
  char *out = NULL;
  char *held = NULL;
  uint64_t sent_ago = 0;
  uint64_t id = 42;
  int32_t status;
  long long t0;
  pthread_t thread;
  Later later;

  if (argc < 3) {
    fprintf(stderr, "usage: %s PLUGIN.so CONFIG_JSON\n", argv[0]);
    return 2;
  }
  if (bext_locking_host_load_opts(argv[1], BEXT_LOCKING_HOST_ALLOW_INSECURE, &p, err,
                                  sizeof err) != 0) {
    printf("load: %s\n", err);
    return 1;
  }
  printf("loaded: %s, abi_minor %u\n", p.name, bext_locking_host_abi_minor(&p));
  printf("slots: lock_wait %d, cancel_wait %d, renew_for %d\n",
         bext_locking_host_has_slot(&p, "lock_wait"), bext_locking_host_has_slot(&p, "cancel_wait"),
         bext_locking_host_has_slot(&p, "renew_for"));

  bext_locking_host_lock_wait_json(buf, sizeof buf, "k\"1", 1000, "me", 500, &id);
  printf("lock_wait request: %s\n", buf);
  bext_locking_host_lock_wait_json(buf, sizeof buf, "k", 1000, NULL, 0, NULL);
  printf("lock_wait request without owner and id: %s\n", buf);
  bext_locking_host_renew_for_json(buf, sizeof buf, "{\"key\":\"k\",\"lock_id\":\"x\",\"ttl_ms\":9}",
                                   5000);
  printf("renew_for request: %s\n", buf);
  printf("NULL builders: %d %d\n", bext_locking_host_lock_wait_json(buf, sizeof buf, NULL, 1, NULL, 0, NULL),
         bext_locking_host_renew_for_json(buf, sizeof buf, NULL, 1));
  bext_locking_host_wait_init(&w);
  id = w.id;
  bext_locking_host_wait_init(&w);
  printf("wait ids differ: %d\n", id != w.id);

  if (p.vtable->create(argv[2], &a, &out) != BEXT_LOCKING_OK ||
      p.vtable->create(argv[2], &b, &out) != BEXT_LOCKING_OK) {
    printf("create: %s\n", out != NULL ? out : "?");
    p.vtable->free_string(out);
    return 1;
  }
  snprintf(key, sizeof key, "c-wait/%ld", (long)now_ms());

  /* The helper's own refusals. */
  status = bext_locking_host_lock_wait(NULL, a, key, 1000, NULL, 0, NULL, &out, NULL, err,
                                       sizeof err);
  printf("lock_wait with a NULL plugin: %s: %s\n", bext_locking_host_status_name(status), err);
  status = bext_locking_host_lock_wait(&p, a, NULL, 1000, NULL, 0, NULL, &out, NULL, err,
                                       sizeof err);
  printf("lock_wait with a NULL key: %s: %s\n", bext_locking_host_status_name(status), err);
  status = bext_locking_host_lock_wait(&p, a, key, 1000, NULL, 0, NULL, NULL, NULL, err,
                                       sizeof err);
  printf("lock_wait with a NULL out_json: %s: %s\n", bext_locking_host_status_name(status), err);
  status = bext_locking_host_lock_wait(&p, a, key, 1000, NULL, BEXT_LOCKING_MAX_TTL_MS + 1, NULL,
                                       &out, NULL, err, sizeof err);
  printf("lock_wait with wait_ms over the maximum: %s: %s\n", bext_locking_host_status_name(status),
         err);
  status = bext_locking_host_cancel_wait(&p, a, NULL, err, sizeof err);
  printf("cancel_wait with a NULL wait: %s: %s\n", bext_locking_host_status_name(status), err);
  status = bext_locking_host_lock_wait(&p, a, key, 0, NULL, 0, NULL, &out, NULL, err, sizeof err);
  printf("lock_wait with ttl_ms 0: %s: %s\n", bext_locking_host_status_name(status),
         out != NULL ? out : err);
  p.vtable->free_string(out);
  out = NULL;

  /* a takes the key through the wait itself (free key: at once). */
  bext_locking_host_wait_init(&w);
  status = bext_locking_host_lock_wait(&p, a, key, 30000, "c-host:1", 5000, &w, &held, &sent_ago,
                                       err, sizeof err);
  printf("lock_wait on a free key: %s: %s\n", bext_locking_host_status_name(status),
         held != NULL ? "handle" : err);
  printf("polled: %d: %s\n", w.polled, w.why);
  if (status != BEXT_LOCKING_OK) return 1;

  bext_locking_host_wait_init(&w);
  t0 = now_ms();
  status = bext_locking_host_lock_wait(&p, b, key, 30000, NULL, 200, &w, &out, NULL, err,
                                       sizeof err);
  printf("lock_wait times out: %s: waited %s\n", bext_locking_host_status_name(status),
         now_ms() - t0 >= 150 ? "about wait_ms" : "too little");

  bext_locking_host_wait_init(&w);
  memset(&later, 0, sizeof later);
  later.inst = b;
  later.wait = &w;
  pthread_create(&thread, NULL, later_main, &later);
  t0 = now_ms();
  status = bext_locking_host_lock_wait(&p, b, key, 30000, NULL, 30000, &w, &out, NULL, err,
                                       sizeof err);
  pthread_join(thread, NULL);
  printf("lock_wait cancelled from another thread: %s: %s, cancel %s\n",
         bext_locking_host_status_name(status),
         now_ms() - t0 < 1150 ? "within 1 s" : "too late",
         bext_locking_host_status_name(later.status));

  bext_locking_host_wait_init(&w);
  status = bext_locking_host_cancel_wait(&p, b, &w, err, sizeof err);
  t0 = now_ms();
  status = bext_locking_host_lock_wait(&p, b, key, 30000, NULL, 30000, &w, &out, NULL, err,
                                       sizeof err);
  printf("lock_wait cancelled before it started: %s: %s\n", bext_locking_host_status_name(status),
         now_ms() - t0 < 1000 ? "at once" : "too late");

  status = bext_locking_host_renew_for(&p, a, held, 20000, &out, err, sizeof err);
  printf("renew_for: %s: %s\n", bext_locking_host_status_name(status), out != NULL ? out : err);
  p.vtable->free_string(out);
  out = NULL;
  status = bext_locking_host_renew_for(&p, a, NULL, 20000, &out, err, sizeof err);
  printf("renew_for with a NULL handle: %s: %s\n", bext_locking_host_status_name(status), err);

  /* Hand-off: a releases while b waits. */
  bext_locking_host_wait_init(&w);
  memset(&later, 0, sizeof later);
  later.inst = a;
  later.handle = held;
  pthread_create(&thread, NULL, later_main, &later);
  t0 = now_ms();
  status = bext_locking_host_lock_wait(&p, b, key, 30000, NULL, 30000, &w, &out, &sent_ago, err,
                                       sizeof err);
  pthread_join(thread, NULL);
  p.vtable->free_string(held);
  held = NULL;
  printf("a waiter gets the lock after release: %s: %s, sent_ago %s\n",
         bext_locking_host_status_name(status), now_ms() - t0 < 30000 ? "before wait_ms" : "late",
         sent_ago <= (uint64_t)(now_ms() - t0 + 1) * 1000 ? "within the wait" : "too long");
  if (status == BEXT_LOCKING_OK) {
    char *again = NULL;
    int32_t s2 = p.vtable->try_lock(a, "{\"key\":\"x\",\"ttl_ms\":1}", &again);
    p.vtable->free_string(again);
    (void)s2;
    snprintf(buf, sizeof buf, "{\"key\":\"%s\",\"ttl_ms\":1000}", key);
    s2 = p.vtable->try_lock(a, buf, &again);
    printf("the old holder is refused: %s\n", bext_locking_host_status_name(s2));
    p.vtable->free_string(again);
    again = NULL;
    p.vtable->release(b, out, &again);
    p.vtable->free_string(again);
    p.vtable->free_string(out);
  }
  p.vtable->destroy(a);
  p.vtable->destroy(b);
  printf("done\n");
  return 0;
}
