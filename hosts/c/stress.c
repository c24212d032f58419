/*
 * C stress test: 8 pthreads contend for one key through a plugin and must
 * never hold it at the same time.
 *
 *   cc -std=c11 -pthread -Iinclude -Ihosts/c hosts/c/stress.c -ldl -o bext-lock-c-stress
 *   ./bext-lock-c-stress target/debug/libbext_locking_memory.so '{"namespace":"s"}' 200
 *
 * Arguments: PLUGIN.so CONFIG_JSON [ROUNDS_PER_THREAD (default 200)]
 *   CONFIG_JSON must give instances that see each other's locks.
 *
 * Two phases: first the 8 threads share one instance (the ABI lets try_lock,
 * renew and release run concurrently on it), then each thread creates its
 * own instance (8 "hosts"). A holder counter, changed atomically around each
 * critical section, must never exceed 1; when handles carry fences, each
 * holder's fence must exceed the previous holder's. Exits 1 on any overlap,
 * backend error or fence going backwards, and prints what it saw.
 */

#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bext_locking.h"
#include "bext_locking_host.h"

#define THREADS 8

static const BextLockingVTable *vt;
static const char *config;
static char request[512];
static long rounds;

static atomic_int holders;      /* threads inside the critical section now */
static atomic_int max_holders;  /* the most ever seen at once */
static atomic_long acquired;    /* successful try_locks */
static atomic_long contended;   /* CONTENDED answers */
static atomic_long errors;      /* any negative status */
/* Written only by the current holder, so the lock itself orders it. A
 * plain variable would do if the lock worked; atomics keep a broken lock's
 * report free of undefined behaviour. */
static atomic_ullong last_fence;
static atomic_long fence_regressions;

typedef struct {
  BextLockingInstance *shared; /* NULL: create an own instance */
  int id;
} Worker;

static void pause_us(long us) {
  struct timespec ts;
  ts.tv_sec = 0;
  ts.tv_nsec = us * 1000L;
  nanosleep(&ts, NULL);
}

/* The fence in a handle, or 0 when it has none. Handles are the plugin's
 * compact JSON; "fence" is a top-level integer when present. */
static unsigned long long fence_of(const char *handle) {
  const char *p = strstr(handle, "\"fence\":");
  return p != NULL ? strtoull(p + 8, NULL, 10) : 0;
}

static void report_error(int id, const char *what, int32_t status, char *json) {
  atomic_fetch_add(&errors, 1);
  fprintf(stderr, "thread %d: %s: %s (%d): %s\n", id, what,
          bext_locking_host_status_name(status), (int)status, json != NULL ? json : "");
  vt->free_string(json);
}

static void *work(void *arg) {
  Worker *w = (Worker *)arg;
  BextLockingInstance *inst = w->shared;
  char *out = NULL;
  long i;
  int32_t status;

  if (inst == NULL) {
    status = vt->create(config, &inst, &out);
    if (status != BEXT_LOCKING_OK) {
      report_error(w->id, "create", status, out);
      return NULL;
    }
  }
  for (i = 0; i < rounds; i++) {
    char *handle = NULL;
    int now;
    unsigned long long fence, prev;
    status = vt->try_lock(inst, request, &handle);
    if (status == BEXT_LOCKING_CONTENDED) {
      atomic_fetch_add(&contended, 1);
      pause_us(50);
      continue;
    }
    if (status != BEXT_LOCKING_OK) {
      report_error(w->id, "try_lock", status, handle);
      continue;
    }
    now = atomic_fetch_add(&holders, 1) + 1;
    {
      int seen = atomic_load(&max_holders);
      while (now > seen && !atomic_compare_exchange_weak(&max_holders, &seen, now)) {
      }
    }
    atomic_fetch_add(&acquired, 1);
    fence = fence_of(handle);
    prev = atomic_load(&last_fence);
    if (fence != 0) {
      if (fence <= prev) {
        atomic_fetch_add(&fence_regressions, 1);
        fprintf(stderr, "thread %d: fence %llu after %llu\n", w->id, fence, prev);
      }
      atomic_store(&last_fence, fence);
    }
    pause_us(100); /* hold it for a moment so others really contend */
    if (i % 4 == 0) {
      status = vt->renew(inst, handle, &out);
      if (status != BEXT_LOCKING_OK) report_error(w->id, "renew", status, out);
      else vt->free_string(out);
      out = NULL;
    }
    atomic_fetch_sub(&holders, 1);
    status = vt->release(inst, handle, &out);
    if (status != BEXT_LOCKING_OK) report_error(w->id, "release", status, out);
    else vt->free_string(out);
    out = NULL;
    vt->free_string(handle);
  }
  if (w->shared == NULL) vt->destroy(inst);
  return NULL;
}

static int run_phase(const char *name, BextLockingInstance *shared) {
  pthread_t threads[THREADS];
  Worker workers[THREADS];
  int i;
  long got, busy;
  atomic_store(&acquired, 0);
  atomic_store(&contended, 0);
  /* A backend may restart its fence counter once no instance holds its data
   * (the memory backend does when the last instance of a namespace goes). */
  atomic_store(&last_fence, 0);
  for (i = 0; i < THREADS; i++) {
    workers[i].shared = shared;
    workers[i].id = i;
    if (pthread_create(&threads[i], NULL, work, &workers[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      exit(1);
    }
  }
  for (i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
  got = atomic_load(&acquired);
  busy = atomic_load(&contended);
  printf("%s: %d threads x %ld rounds: %ld acquired, %ld contended, at most %d holder(s)\n",
         name, THREADS, rounds, got, busy, atomic_load(&max_holders));
  return got > 0;
}

int main(int argc, char **argv) {
  BextLockingHostPlugin plugin;
  BextLockingInstance *shared = NULL;
  char err[1024];
  char key[256];
  char *out = NULL;
  int32_t status;
  int ok;
  struct timespec now;

  if (argc < 3) {
    fprintf(stderr, "usage: %s PLUGIN.so CONFIG_JSON [ROUNDS_PER_THREAD]\n", argv[0]);
    return 2;
  }
  config = argv[2];
  rounds = argc > 3 ? atol(argv[3]) : 200;
  if (bext_locking_host_load(argv[1], &plugin, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  vt = plugin.vtable;
  clock_gettime(CLOCK_REALTIME, &now);
  snprintf(key, sizeof key, "c-stress/%ld-%ld", (long)getpid(), (long)now.tv_nsec);
  /* A TTL far longer than the run: overlap can only come from a broken lock,
   * never from a lease running out under a slow (valgrind) thread. */
  bext_locking_host_request_json(request, sizeof request, key, 60000);
  printf("stress %s %s on key %s\n", plugin.name, plugin.version, key);

  status = vt->create(config, &shared, &out);
  if (status != BEXT_LOCKING_OK) {
    fprintf(stderr, "create: %s\n", out != NULL ? out : "");
    vt->free_string(out);
    return 1;
  }
  ok = run_phase("one shared instance", shared);
  vt->destroy(shared);
  ok &= run_phase("an instance per thread", NULL);

  if (atomic_load(&max_holders) > 1 || atomic_load(&errors) > 0 ||
      atomic_load(&fence_regressions) > 0 || !ok) {
    printf("FAIL: max holders %d, errors %ld, fence regressions %ld, phases acquired: %s\n",
           atomic_load(&max_holders), atomic_load(&errors), atomic_load(&fence_regressions),
           ok ? "yes" : "no");
    return 1;
  }
  printf("ok: never more than one holder\n");
  return 0;
}
