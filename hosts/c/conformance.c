/*
 * C ABI conformance: checks a plugin against every rule in docs/ABI.md,
 * written only against that page and include/bext_locking.h (it does not use
 * bext_locking_host.h, so it also checks what a loader must check).
 *
 *   cc -std=c11 -Iinclude hosts/c/conformance.c -ldl -o bext-lock-c-conformance
 *   ./bext-lock-c-conformance target/debug/libbext_locking_memory.so '{"namespace":"c"}'
 *
 * Arguments: PLUGIN.so CONFIG_JSON [--panicky]
 *   CONFIG_JSON must give instances that see each other's locks (two "hosts":
 *   a namespace for memory, the same file for sqlite, the same server for
 *   redis, pg and mysql). Keys are unique per run, so a shared server is fine.
 *   --panicky also checks the panic boundary with the panicky test fixture
 *   (create panics on {"panic_in_create":true}, try_lock on keys "panic...").
 *
 * Prints one "ok" or "FAIL" line per check and exits 1 when any failed.
 * Run it under valgrind: every string is freed with the plugin's free_string.
 */

#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bext_locking.h"

/* The size of the 1.0 vtable, through its last field: the smallest a host
 * accepts (sizeof(BextLockingVTable) grows with every revision). */
#define VTABLE_V1_SIZE (offsetof(BextLockingVTable, free_string) + sizeof(BextLockingFreeStringFn))
/* The size of the 1.1 vtable: through its last slot. */
#define VTABLE_V1_1_SIZE (offsetof(BextLockingVTable, stats) + sizeof(BextLockingCleanupFn))

static const BextLockingVTable *vt;
static int passed, failed;
static char prefix[96];

/* A value no plugin returns: shows whether a slot cleared its out-parameter. */
static char sentinel_byte;
#define SENTINEL (&sentinel_byte)

static void check(int ok, const char *name, const char *fmt, ...) {
  va_list ap;
  if (ok) {
    passed++;
    printf("ok   %s\n", name);
    return;
  }
  failed++;
  printf("FAIL %s: ", name);
  va_start(ap, fmt);
  vprintf(fmt, ap);
  va_end(ap);
  printf("\n");
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Frees an output string unless it is still the sentinel (a slot that did
 * not clear its out-parameter has already been reported). */
static void drop(char **out) {
  if (*out != SENTINEL) vt->free_string(*out);
  *out = NULL;
}

static const char *show(const char *s) {
  if (s == SENTINEL) return "(out-parameter not cleared)";
  return s != NULL ? s : "(NULL)";
}

/* ---- a small, strict JSON reader: enough to check shapes ---------------- */

typedef enum { J_OBJ, J_ARR, J_STR, J_NUM, J_TRUE, J_FALSE, J_NULL } JType;
typedef struct {
  JType type;
  const char *start; /* first byte of the value */
  const char *end;   /* one past its last byte */
} JVal;

static const char *j_ws(const char *p) {
  while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
  return p;
}

static const char *j_string(const char *p) {
  if (*p != '"') return NULL;
  for (p++; *p != '"'; p++) {
    if ((unsigned char)*p < 0x20) return NULL;
    if (*p == '\\') {
      p++;
      if (*p == 'u') {
        int i;
        for (i = 1; i <= 4; i++) {
          char c = p[i];
          if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return NULL;
        }
        p += 4;
      } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
        return NULL;
      }
    }
  }
  return p + 1;
}

static const char *j_number(const char *p) {
  if (*p == '-') p++;
  if (*p == '0') p++;
  else if (*p >= '1' && *p <= '9') while (*p >= '0' && *p <= '9') p++;
  else return NULL;
  if (*p == '.') {
    p++;
    if (!(*p >= '0' && *p <= '9')) return NULL;
    while (*p >= '0' && *p <= '9') p++;
  }
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!(*p >= '0' && *p <= '9')) return NULL;
    while (*p >= '0' && *p <= '9') p++;
  }
  return p;
}

static const char *j_value(const char *p, JVal *v, int depth) {
  JVal tmp;
  p = j_ws(p);
  v->start = p;
  if (depth > 64) return NULL;
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    v->type = *p == '{' ? J_OBJ : J_ARR;
    p = j_ws(p + 1);
    if (*p != close) {
      for (;;) {
        if (v->type == J_OBJ) {
          p = j_string(j_ws(p));
          if (p == NULL) return NULL;
          p = j_ws(p);
          if (*p++ != ':') return NULL;
        }
        p = j_value(p, &tmp, depth + 1);
        if (p == NULL) return NULL;
        p = j_ws(p);
        if (*p == ',') {
          p++;
          continue;
        }
        if (*p != close) return NULL;
        break;
      }
    }
    v->end = p + 1;
    return v->end;
  }
  if (*p == '"') {
    v->type = J_STR;
    v->end = j_string(p);
    return v->end;
  }
  if (strncmp(p, "true", 4) == 0) { v->type = J_TRUE; v->end = p + 4; return v->end; }
  if (strncmp(p, "false", 5) == 0) { v->type = J_FALSE; v->end = p + 5; return v->end; }
  if (strncmp(p, "null", 4) == 0) { v->type = J_NULL; v->end = p + 4; return v->end; }
  v->type = J_NUM;
  v->end = j_number(p);
  return v->end;
}

/* Parses a whole document. */
static int j_parse(const char *text, JVal *v) {
  const char *end;
  if (text == NULL || text == SENTINEL) return 0;
  end = j_value(text, v, 0);
  return end != NULL && *j_ws(end) == '\0';
}

/* Finds a member of an object by its (unescaped ASCII) name. */
static int j_member(const JVal *obj, const char *name, JVal *out) {
  const char *p;
  size_t n = strlen(name);
  if (obj->type != J_OBJ) return 0;
  p = j_ws(obj->start + 1);
  while (*p == '"') {
    const char *key = p + 1;
    const char *after = j_string(p);
    int match = (size_t)(after - 1 - key) == n && strncmp(key, name, n) == 0;
    p = j_ws(after);
    p++; /* ':' (already validated) */
    p = j_value(p, out, 1);
    if (match) return 1;
    p = j_ws(p);
    if (*p == ',') p = j_ws(p + 1);
  }
  return 0;
}

static int j_str_is(const JVal *v, const char *s) {
  size_t n = strlen(s);
  return v->type == J_STR && (size_t)(v->end - v->start) == n + 2 &&
         strncmp(v->start + 1, s, n) == 0;
}

static int j_uint(const JVal *v, unsigned long long *out) {
  const char *p;
  if (v->type != J_NUM) return 0;
  for (p = v->start; p < v->end; p++)
    if (*p < '0' || *p > '9') return 0;
  *out = strtoull(v->start, NULL, 10);
  return 1;
}

/* Copies a string member's raw contents (escapes kept) into buf. */
static int j_member_str(const JVal *obj, const char *name, char *buf, size_t len) {
  JVal v;
  size_t n;
  if (!j_member(obj, name, &v) || v.type != J_STR) return 0;
  n = (size_t)(v.end - v.start) - 2;
  if (n >= len) return 0;
  memcpy(buf, v.start + 1, n);
  buf[n] = '\0';
  return 1;
}

/* ---- checks shared by many calls ---------------------------------------- */

static const char *code_for(int32_t status) {
  switch (status) {
    case BEXT_LOCKING_ERR_BACKEND: return "backend";
    case BEXT_LOCKING_ERR_INVALID: return "invalid_argument";
    case BEXT_LOCKING_ERR_PANIC: return "panic";
    case BEXT_LOCKING_ERR_UNSUPPORTED: return "unsupported";
    default: return "?";
  }
}

/* A negative status must come with {"code":...,"message":...} whose code
 * matches it. Frees *out. Returns whether the message contains `needle`
 * (always true when needle is NULL). */
static int expect_error(const char *name, int32_t want, int32_t got, char **out,
                        const char *needle) {
  JVal doc, code, message;
  int ok_shape;
  int found = 1;
  if (got != want) {
    check(0, name, "status %d, want %d; output %s", (int)got, (int)want, show(*out));
    drop(out);
    return 0;
  }
  ok_shape = j_parse(*out, &doc) && doc.type == J_OBJ && j_member(&doc, "code", &code) &&
             j_str_is(&code, code_for(want)) && j_member(&doc, "message", &message) &&
             message.type == J_STR && message.end - message.start > 2;
  if (ok_shape && needle != NULL) found = strstr(*out, needle) != NULL;
  check(ok_shape && found, name,
        ok_shape ? "error message does not mention `%s`: %s"
                 : "want {\"code\":\"%s\",\"message\":\"...\"}, got %s",
        ok_shape ? needle : code_for(want), show(*out));
  drop(out);
  return ok_shape && found;
}

/* OK with no payload: *out must be NULL. */
static void expect_ok_empty(const char *name, int32_t got, char **out) {
  check(got == BEXT_LOCKING_OK && *out == NULL, name, "status %d, output %s", (int)got,
        show(*out));
  drop(out);
}

static void expect_contended(const char *name, int32_t got, char **out) {
  check(got == BEXT_LOCKING_CONTENDED && *out == NULL, name,
        "status %d (want CONTENDED with *out_json NULL), output %s", (int)got, show(*out));
  drop(out);
}

static int32_t try_lock(BextLockingInstance *inst, const char *key, unsigned long long ttl,
                        char **out) {
  char req[4400];
  snprintf(req, sizeof req, "{\"key\":\"%s\",\"ttl_ms\":%llu}", key, ttl);
  *out = SENTINEL;
  return vt->try_lock(inst, req, out);
}

static int32_t call(BextLockingCallFn slot, BextLockingInstance *inst, const char *input,
                    char **out) {
  *out = SENTINEL;
  return slot(inst, input, out);
}

static void key_for(char *buf, size_t len, const char *suffix) {
  snprintf(buf, len, "%s%s", prefix, suffix);
}

/* A held lock's handle, parsed. */
typedef struct {
  char *json; /* plugin-owned */
  char lock_id[256];
  int has_fence;
  unsigned long long fence;
} Handle;

/* Checks the outcome of a try_lock on `key` that had to succeed: status OK
 * and a well-formed handle in h->json. Returns 0 (and frees) otherwise. */
static int expect_handle(const char *name, int32_t status, const char *key,
                         unsigned long long ttl, Handle *h) {
  JVal doc, v;
  unsigned long long n;
  char got_key[2200];
  memset(h->lock_id, 0, sizeof h->lock_id);
  h->has_fence = 0;
  if (status != BEXT_LOCKING_OK || h->json == NULL || h->json == SENTINEL) {
    check(0, name, "try_lock %s: status %d, output %s", key, (int)status, show(h->json));
    drop(&h->json);
    return 0;
  }
  if (!j_parse(h->json, &doc) || doc.type != J_OBJ ||
      !j_member_str(&doc, "key", got_key, sizeof got_key) || strcmp(got_key, key) != 0 ||
      !j_member_str(&doc, "lock_id", h->lock_id, sizeof h->lock_id) || h->lock_id[0] == '\0' ||
      !j_member(&doc, "ttl_ms", &v) || !j_uint(&v, &n) || n != ttl) {
    check(0, name, "bad handle for key %s, ttl %llu: %s", key, ttl, h->json);
    drop(&h->json);
    return 0;
  }
  if (j_member(&doc, "fence", &v)) {
    if (!j_uint(&v, &h->fence)) {
      check(0, name, "fence is not a non-negative integer: %s", h->json);
      drop(&h->json);
      return 0;
    }
    h->has_fence = 1;
  }
  check(1, name, "");
  return 1;
}

/* Takes `key` and checks the handle's shape; returns 0 when not acquired. */
static int acquire(const char *name, BextLockingInstance *inst, const char *key,
                   unsigned long long ttl, Handle *h) {
  int32_t status = try_lock(inst, key, ttl, &h->json);
  return expect_handle(name, status, key, ttl, h);
}

static void release(BextLockingInstance *inst, Handle *h) {
  char *out = SENTINEL;
  int32_t status = vt->release(inst, h->json, &out);
  if (status != BEXT_LOCKING_OK) check(0, "release", "status %d: %s", (int)status, show(out));
  drop(&out);
  drop(&h->json);
}

/* `config` with one more, unknown, top-level key. */
static void with_unknown_key(const char *config, char *buf, size_t len) {
  const char *brace = strchr(config, '{');
  const char *rest = brace != NULL ? j_ws(brace + 1) : "}";
  snprintf(buf, len, "{\"bext_no_such_key\":true%s%s", *rest == '}' ? "" : ",", rest);
}

/* ---- the checks ----------------------------------------------------------- */

static void check_table(const char *path, void *lib) {
  void *sym;
  BextLockingEntryFn entry;
  const BextLockingVTable *again;
  (void)dlerror();
  sym = dlsym(lib, "bext_locking_plugin_entry");
  check(sym != NULL, "entry symbol bext_locking_plugin_entry is exported", "%s: %s", path,
        dlerror());
  if (sym == NULL) exit(1);
  memcpy(&entry, &sym, sizeof entry);
  vt = entry(BEXT_LOCKING_ABI_VERSION);
  check(vt != NULL, "entry(BEXT_LOCKING_ABI_VERSION) returns a vtable", "got NULL");
  if (vt == NULL) exit(1);
  again = entry(BEXT_LOCKING_ABI_VERSION);
  check(again == vt, "entry is idempotent (same static table)", "%p then %p", (const void *)vt,
        (const void *)again);
  check(vt->abi_version == BEXT_LOCKING_ABI_VERSION, "vtable abi_version is 1", "got %u",
        (unsigned)vt->abi_version);
  check(vt->struct_size >= VTABLE_V1_SIZE, "vtable struct_size covers v1",
        "got %u, want >= %u", (unsigned)vt->struct_size, (unsigned)VTABLE_V1_SIZE);
  check(vt->name != NULL && vt->name[0] && vt->version != NULL && vt->version[0],
        "vtable name and version are non-empty strings", "NULL or empty");
  check(vt->describe && vt->create && vt->try_lock && vt->renew && vt->release && vt->cleanup &&
            vt->destroy && vt->free_string,
        "every mandatory slot is non-NULL", "a slot is NULL");
  if (vt->abi_version != BEXT_LOCKING_ABI_VERSION || vt->struct_size < VTABLE_V1_SIZE ||
      !vt->describe || !vt->create || !vt->try_lock || !vt->renew || !vt->release ||
      !vt->cleanup || !vt->destroy || !vt->free_string || !vt->name || !vt->version) {
    printf("the vtable is unusable; stopping\n");
    exit(1);
  }
}

static void check_describe(void) {
  char *out = SENTINEL;
  int32_t status;
  JVal doc, v;
  unsigned long long n;
  status = vt->describe(NULL);
  check(status == BEXT_LOCKING_ERR_INVALID, "describe(NULL) is ERR_INVALID", "got %d",
        (int)status);
  status = vt->describe(&out);
  check(status == BEXT_LOCKING_OK && j_parse(out, &doc) && doc.type == J_OBJ,
        "describe returns a JSON object", "status %d, output %s", (int)status, show(out));
  if (status == BEXT_LOCKING_OK && j_parse(out, &doc) && doc.type == J_OBJ) {
    check(j_member(&doc, "name", &v) && j_str_is(&v, vt->name), "describe name is the vtable's",
          "%s", out);
    check(j_member(&doc, "version", &v) && j_str_is(&v, vt->version),
          "describe version is the vtable's", "%s", out);
    check(j_member(&doc, "abi_version", &v) && j_uint(&v, &n) && n == BEXT_LOCKING_ABI_VERSION,
          "describe abi_version is 1", "%s", out);
    check(j_member(&doc, "description", &v) && v.type == J_STR && v.end - v.start > 2,
          "describe has a description", "%s", out);
    check(j_member(&doc, "fencing", &v) && (v.type == J_TRUE || v.type == J_FALSE),
          "describe fencing is a bool", "%s", out);
    check(j_member(&doc, "config_schema", &v) && v.type == J_OBJ,
          "describe config_schema is an object", "%s", out);
  }
  drop(&out);
}

static void check_create(const char *config) {
  BextLockingInstance *inst;
  BextLockingInstance *other;
  char *err;
  char buf[4096];
  int32_t status, status_empty;
  static const struct {
    const char *name;
    const char *config;
  } bad[] = {
      {"create with malformed JSON is ERR_INVALID", "{\"path\":"},
      {"create with a JSON array is ERR_INVALID", "[]"},
      {"create with a JSON string is ERR_INVALID", "\"x\""},
      {"create with invalid UTF-8 is ERR_INVALID", "{\"\xff\xfe\":1}"},
  };
  size_t i;

  err = SENTINEL;
  status = vt->create(config, NULL, &err);
  check(status == BEXT_LOCKING_ERR_INVALID && err == NULL,
        "create with NULL out_instance is ERR_INVALID and writes no error", "status %d, %s",
        (int)status, show(err));
  drop(&err);

  inst = (BextLockingInstance *)(void *)SENTINEL;
  status = vt->create(config, &inst, NULL);
  check(status == BEXT_LOCKING_ERR_INVALID && inst == NULL,
        "create with NULL out_error_json is ERR_INVALID and makes no instance",
        "status %d, instance %p", (int)status, (void *)inst);
  if (inst != NULL && inst != (BextLockingInstance *)(void *)SENTINEL) vt->destroy(inst);

  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    inst = (BextLockingInstance *)(void *)SENTINEL;
    err = SENTINEL;
    status = vt->create(bad[i].config, &inst, &err);
    if (inst != NULL) {
      check(0, bad[i].name, "*out_instance is not NULL");
      if (inst != (BextLockingInstance *)(void *)SENTINEL) vt->destroy(inst);
      drop(&err);
      continue;
    }
    expect_error(bad[i].name, BEXT_LOCKING_ERR_INVALID, status, &err, NULL);
  }

  with_unknown_key(config, buf, sizeof buf);
  inst = NULL;
  err = SENTINEL;
  status = vt->create(buf, &inst, &err);
  if (inst != NULL) vt->destroy(inst);
  expect_error("create with an unknown config key is invalid_argument naming it",
               BEXT_LOCKING_ERR_INVALID, status, &err, "bext_no_such_key");

  /* NULL means {}: both give the same answer, whatever the plugin needs. */
  inst = NULL;
  err = SENTINEL;
  status = vt->create(NULL, &inst, &err);
  drop(&err);
  other = NULL;
  err = SENTINEL;
  status_empty = vt->create("{}", &other, &err);
  drop(&err);
  check(status == status_empty && (status == BEXT_LOCKING_OK) == (inst != NULL),
        "create(NULL) behaves as create(\"{}\")", "NULL gave %d, {} gave %d", (int)status,
        (int)status_empty);
  if (inst != NULL) vt->destroy(inst);
  if (other != NULL) vt->destroy(other);
}

static void check_bad_requests(BextLockingInstance *a) {
  static const struct {
    const char *name;
    const char *request;
  } bad[] = {
      {"try_lock with invalid UTF-8 is ERR_INVALID", "{\"key\":\"k\xc3\x28\",\"ttl_ms\":1000}"},
      {"try_lock with invalid UTF-8 in an ignored field is ERR_INVALID",
       "{\"key\":\"k\",\"ttl_ms\":1000,\"note\":\"\xff\"}"},
      {"try_lock with malformed JSON is ERR_INVALID", "{\"key\":"},
      {"try_lock with text that is not JSON is ERR_INVALID", "lock please"},
      {"try_lock with a JSON array is ERR_INVALID", "[\"k\",1000]"},
      {"try_lock without ttl_ms is ERR_INVALID", "{\"key\":\"k\"}"},
      {"try_lock without key is ERR_INVALID", "{\"ttl_ms\":1000}"},
      {"try_lock with a string ttl_ms is ERR_INVALID", "{\"key\":\"k\",\"ttl_ms\":\"1000\"}"},
      {"try_lock with a negative ttl_ms is ERR_INVALID", "{\"key\":\"k\",\"ttl_ms\":-1}"},
      {"try_lock with a fractional ttl_ms is ERR_INVALID", "{\"key\":\"k\",\"ttl_ms\":1.5}"},
      {"try_lock with a ttl_ms past u64 is ERR_INVALID",
       "{\"key\":\"k\",\"ttl_ms\":18446744073709551616}"},
      {"try_lock with a number key is ERR_INVALID", "{\"key\":5,\"ttl_ms\":1000}"},
      {"try_lock with ttl_ms in exponent form is ERR_INVALID", "{\"key\":\"k\",\"ttl_ms\":1e3}"},
      {"try_lock with the key given twice is ERR_INVALID",
       "{\"key\":\"k\",\"key\":\"j\",\"ttl_ms\":1000}"},
      {"try_lock with a lone surrogate escape in the key is ERR_INVALID",
       "{\"key\":\"\\ud800\",\"ttl_ms\":1000}"},
      {"try_lock with JSON cut short by an interior NUL is ERR_INVALID",
       "{\"key\":\"k\"\0,\"ttl_ms\":1000}"},
      {"try_lock with JSON null is ERR_INVALID", "null"},
      {"try_lock with an empty string is ERR_INVALID", ""},
  };
  char key[2100];
  char req[2300];
  char *out;
  int32_t status;
  size_t i;
  Handle h;

  /* A NULL out_json must be refused before anything happens: the key stays free. */
  key_for(key, sizeof key, "null-out");
  snprintf(req, sizeof req, "{\"key\":\"%s\",\"ttl_ms\":10000}", key);
  status = vt->try_lock(a, req, NULL);
  check(status == BEXT_LOCKING_ERR_INVALID, "try_lock with NULL out_json is ERR_INVALID",
        "got %d", (int)status);
  if (acquire("try_lock with NULL out_json took nothing", a, key, 10000, &h)) release(a, &h);

  status = call(vt->try_lock, NULL, "{\"key\":\"k\",\"ttl_ms\":1000}", &out);
  expect_error("try_lock with a NULL instance is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  status = call(vt->try_lock, a, NULL, &out);
  expect_error("try_lock with a NULL request is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    status = call(vt->try_lock, a, bad[i].request, &out);
    expect_error(bad[i].name, BEXT_LOCKING_ERR_INVALID, status, &out, NULL);
  }
}

static void check_limits(BextLockingInstance *a) {
  char key[2100];
  char *out;
  int32_t status;
  Handle h;
  size_t plen = strlen(prefix), i;

  status = try_lock(a, "", 1000, &out);
  expect_error("an empty key is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out, NULL);

  /* Exactly BEXT_LOCKING_MAX_KEY_BYTES bytes, ASCII. */
  key_for(key, sizeof key, "");
  for (i = plen; i < BEXT_LOCKING_MAX_KEY_BYTES; i++) key[i] = 'k';
  key[BEXT_LOCKING_MAX_KEY_BYTES] = '\0';
  if (acquire("a key of BEXT_LOCKING_MAX_KEY_BYTES bytes is accepted", a, key, 10000, &h))
    release(a, &h);
  key[BEXT_LOCKING_MAX_KEY_BYTES] = 'k';
  key[BEXT_LOCKING_MAX_KEY_BYTES + 1] = '\0';
  status = try_lock(a, key, 1000, &out);
  expect_error("a key one byte too long is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out,
               NULL);

  /* The limit counts bytes, not characters: fill with two-byte "é". */
  key_for(key, sizeof key, "");
  if ((BEXT_LOCKING_MAX_KEY_BYTES - plen) % 2) key[plen++] = 'k';
  for (i = plen; i < BEXT_LOCKING_MAX_KEY_BYTES; i += 2) {
    key[i] = (char)0xc3;
    key[i + 1] = (char)0xa9;
  }
  key[BEXT_LOCKING_MAX_KEY_BYTES] = '\0';
  if (acquire("a multi-byte key of exactly the byte limit is accepted", a, key, 10000, &h))
    release(a, &h);
  key[BEXT_LOCKING_MAX_KEY_BYTES - 2] = 'k';
  key[BEXT_LOCKING_MAX_KEY_BYTES - 1] = (char)0xc3;
  key[BEXT_LOCKING_MAX_KEY_BYTES] = (char)0xa9;
  key[BEXT_LOCKING_MAX_KEY_BYTES + 1] = '\0';
  status = try_lock(a, key, 1000, &out);
  expect_error("a multi-byte key one byte over the limit is ERR_INVALID",
               BEXT_LOCKING_ERR_INVALID, status, &out, NULL);

  key_for(key, sizeof key, "ttl");
  status = try_lock(a, key, 0, &out);
  expect_error("ttl_ms 0 is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out, NULL);
  status = try_lock(a, key, BEXT_LOCKING_MAX_TTL_MS + 1ULL, &out);
  expect_error("ttl_ms past BEXT_LOCKING_MAX_TTL_MS is ERR_INVALID", BEXT_LOCKING_ERR_INVALID,
               status, &out, NULL);
  if (acquire("ttl_ms of BEXT_LOCKING_MAX_TTL_MS is accepted", a, key, BEXT_LOCKING_MAX_TTL_MS,
              &h))
    release(a, &h);

  {
    char req[2300];
    key_for(key, sizeof key, "unknown-fields");
    snprintf(req, sizeof req, "{\"note\":{\"x\":[1,2]},\"key\":\"%s\",\"ttl_ms\":5000,\"zz\":null}",
             key);
    status = call(vt->try_lock, a, req, &out);
    check(status == BEXT_LOCKING_OK && out != NULL && out != SENTINEL,
          "unknown fields in a request are ignored", "status %d, output %s", (int)status,
          show(out));
    if (status == BEXT_LOCKING_OK && out != SENTINEL && out != NULL) {
      Handle t;
      t.json = out;
      release(a, &t);
    } else {
      drop(&out);
    }
  }
}

/* The handle with one unknown field added, to pass back. */
static void with_extra_field(const char *handle, char *buf, size_t len) {
  snprintf(buf, len, "{\"host_note\":\"kept by the host\",%s", handle + 1);
}

static void check_bad_handles(BextLockingInstance *a, const Handle *h) {
  static const char *bad[] = {
      "{\"key\":",
      "[]",
      "{\"key\":\"k\"}",
      "{\"key\":\"k\",\"lock_id\":\"x\"}",
      "{\"key\":\"k\xff\",\"lock_id\":\"x\",\"ttl_ms\":1000}",
      "{\"key\":\"\",\"lock_id\":\"x\",\"ttl_ms\":1000}",
      "{\"key\":\"k\",\"lock_id\":\"x\",\"ttl_ms\":0}",
      "{\"key\":\"k\",\"lock_id\":\"x\",\"ttl_ms\":31536000001}",
      "{\"key\":\"k\",\"lock_id\":\"x\xff\",\"ttl_ms\":1000}",
      "{\"key\":\"k\",\"lock_id\":\"x\",\"ttl_ms\":1000,\"note\":\"\xc3\"}",
      "{\"key\":\"k\",\"lock_id\":5,\"ttl_ms\":1000}",
      "{\"key\":\"k\",\"lock_id\":\"x\",\"ttl_ms\":1000,\"fence\":-1}",
      "{\"key\":\"k\",\"lock_id\":\"x\",\"ttl_ms\":1000,\"key\":\"j\"}",
      "{\"key\":\"k\",\"lock_id\":\"x\"\0,\"ttl_ms\":1000}",
  };
  const BextLockingCallFn slots[2] = {vt->renew, vt->release};
  const char *slot_names[2] = {"renew", "release"};
  char name[160];
  char *out;
  int32_t status;
  size_t i, s;
  for (s = 0; s < 2; s++) {
    status = slots[s](a, h->json, NULL);
    snprintf(name, sizeof name, "%s with NULL out_json is ERR_INVALID", slot_names[s]);
    check(status == BEXT_LOCKING_ERR_INVALID, name, "got %d", (int)status);
    status = call(slots[s], NULL, h->json, &out);
    snprintf(name, sizeof name, "%s with a NULL instance is ERR_INVALID", slot_names[s]);
    expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, NULL);
    status = call(slots[s], a, NULL, &out);
    snprintf(name, sizeof name, "%s with a NULL handle is ERR_INVALID", slot_names[s]);
    expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, NULL);
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
      status = call(slots[s], a, bad[i], &out);
      snprintf(name, sizeof name, "%s with a bad handle is ERR_INVALID (#%u)", slot_names[s],
               (unsigned)i);
      expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, NULL);
    }
  }
}

/* Well-formed handles that are not the holder's: another lock_id on the
 * held key, and the holder's lock_id on another key. Renew fails with
 * ERR_BACKEND and never acquires; release is OK and touches nothing. */
static void check_forged_handles(BextLockingInstance *a, BextLockingInstance *b,
                                 const char *key, const Handle *h) {
  char other[2100];
  char buf[4400];
  char *out;
  int32_t status;
  Handle h2;
  snprintf(buf, sizeof buf,
           "{\"key\":\"%s\",\"lock_id\":\"00000000-0000-4000-8000-000000000000\",\"ttl_ms\":10000}",
           key);
  status = call(vt->renew, a, buf, &out);
  expect_error("renew with another lock_id is ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND, status, &out,
               NULL);
  status = call(vt->release, b, buf, &out);
  expect_ok_empty("release with another lock_id is OK", status, &out);

  key_for(other, sizeof other, "forged-other-key");
  snprintf(buf, sizeof buf, "{\"key\":\"%s\",\"lock_id\":\"%s\",\"ttl_ms\":10000}", other,
           h->lock_id);
  status = call(vt->renew, a, buf, &out);
  expect_error("renew of another key with the holder's lock_id is ERR_BACKEND",
               BEXT_LOCKING_ERR_BACKEND, status, &out, NULL);
  status = call(vt->release, a, buf, &out);
  expect_ok_empty("release of another key with the holder's lock_id is OK", status, &out);
  if (acquire("a forged renew did not acquire the other key", b, other, 10000, &h2))
    release(b, &h2);
  status = try_lock(b, key, 10000, &out);
  expect_contended("forged renew/release calls leave the lock held", status, &out);
}

#define HUGE_BYTES (1024 * 1024 + 1)
#define DEEP 100000

/* A new string: prefix, `a` n times, middle, `b` n times, suffix. */
static char *build(const char *prefix, const char *a, size_t n, const char *middle, const char *b,
                   const char *suffix) {
  size_t lp = strlen(prefix), la = strlen(a), lm = strlen(middle), lb = strlen(b);
  size_t ls = strlen(suffix), i;
  char *s = (char *)malloc(lp + (la + lb) * n + lm + ls + 1);
  char *p = s;
  if (s == NULL) {
    printf("out of memory\n");
    exit(1);
  }
  memcpy(p, prefix, lp);
  p += lp;
  for (i = 0; i < n; i++, p += la) memcpy(p, a, la);
  memcpy(p, middle, lm);
  p += lm;
  for (i = 0; i < n; i++, p += lb) memcpy(p, b, lb);
  memcpy(p, suffix, ls + 1);
  return s;
}

/* Inputs past 1 MiB and nested 100000 deep get an answer, never a crash. */
static void check_huge_inputs(BextLockingInstance *a, const char *config) {
  char key[2100];
  char prefix[2300];
  char *text, *out;
  int32_t status;
  BextLockingInstance *inst;
  Handle h;

  text = build("{\"key\":\"", "k", HUGE_BYTES, "\",\"ttl_ms\":1000}", "", "");
  status = call(vt->try_lock, a, text, &out);
  expect_error("a 1 MiB key is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out, NULL);
  free(text);

  text = build("{\"key\":\"", "k", HUGE_BYTES, "\",\"lock_id\":\"x\",\"ttl_ms\":1000}", "", "");
  status = call(vt->renew, a, text, &out);
  expect_error("renew with a 1 MiB key is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out,
               NULL);
  status = call(vt->release, a, text, &out);
  expect_error("release with a 1 MiB key is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out,
               NULL);
  free(text);

  key_for(key, sizeof key, "huge-field");
  snprintf(prefix, sizeof prefix, "{\"key\":\"%s\",\"ttl_ms\":10000,\"pad\":\"", key);
  text = build(prefix, "x", HUGE_BYTES, "\"}", "", "");
  status = call(vt->try_lock, a, text, &h.json);
  if (expect_handle("a request with a 1 MiB ignored field is served", status, key, 10000, &h))
    release(a, &h);
  free(text);

  text = build("{\"ttl_ms\":1000,\"key\":", "[", DEEP, "0", "]", "}");
  status = call(vt->try_lock, a, text, &out);
  expect_error("a key nested 100000 deep is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out,
               NULL);
  free(text);

  /* Deep nesting in an ignored field is valid JSON: served or refused. */
  key_for(key, sizeof key, "deep-field");
  snprintf(prefix, sizeof prefix, "{\"key\":\"%s\",\"ttl_ms\":10000,\"deep\":", key);
  text = build(prefix, "{\"a\":[", DEEP, "", "]}", "}");
  status = call(vt->try_lock, a, text, &out);
  if (status == BEXT_LOCKING_OK && out != NULL && out != SENTINEL) {
    check(1, "an ignored field nested 100000 deep is served or ERR_INVALID", "");
    h.json = out;
    release(a, &h);
  } else {
    expect_error("an ignored field nested 100000 deep is served or ERR_INVALID",
                 BEXT_LOCKING_ERR_INVALID, status, &out, NULL);
  }
  free(text);

  text = build("{\"bext_deep\":", "[", DEEP, "", "]", "}");
  inst = (BextLockingInstance *)(void *)SENTINEL;
  out = SENTINEL;
  status = vt->create(text, &inst, &out);
  check(inst == NULL, "a config nested 100000 deep makes no instance", "got %p", (void *)inst);
  if (inst != NULL && inst != (BextLockingInstance *)(void *)SENTINEL) vt->destroy(inst);
  expect_error("a config nested 100000 deep is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  free(text);

  text = build("{\"bext_", "x", HUGE_BYTES, "\":true}", "", "");
  inst = NULL;
  out = SENTINEL;
  status = vt->create(text, &inst, &out);
  if (inst != NULL) vt->destroy(inst);
  expect_error("a config with a 1 MiB unknown key is ERR_INVALID", BEXT_LOCKING_ERR_INVALID,
               status, &out, NULL);
  free(text);

  /* The real config with 1 MiB of space around it still works. */
  text = build("", " ", HUGE_BYTES, config, "", "");
  inst = NULL;
  out = SENTINEL;
  status = vt->create(text, &inst, &out);
  check(status == BEXT_LOCKING_OK && inst != NULL, "the config padded with 1 MiB of spaces works",
        "status %d: %s", (int)status, show(out));
  drop(&out);
  if (inst != NULL) vt->destroy(inst);
  free(text);
}

static void check_locking(BextLockingInstance *a, BextLockingInstance *b) {
  char key[2100];
  char buf[4400];
  char *out;
  int32_t status;
  long waited;
  Handle h, h2, h3;

  key_for(key, sizeof key, "basic");
  if (!acquire("try_lock acquires a free key with a well-formed handle", a, key, 10000, &h))
    return;
  status = try_lock(a, key, 10000, &out);
  expect_contended("locks are not reentrant: same instance gets CONTENDED", status, &out);
  status = try_lock(b, key, 10000, &out);
  expect_contended("another instance gets CONTENDED with *out_json NULL", status, &out);

  check_bad_handles(a, &h);
  check_forged_handles(a, b, key, &h);
  /* The bad calls above must have left the lock alone. */
  status = try_lock(b, key, 10000, &out);
  expect_contended("bad renew/release calls leave the lock held", status, &out);

  status = call(vt->renew, a, h.json, &out);
  expect_ok_empty("renew of a held lock is OK with *out_json NULL", status, &out);
  with_extra_field(h.json, buf, sizeof buf);
  status = call(vt->renew, a, buf, &out);
  expect_ok_empty("renew ignores unknown fields in the handle", status, &out);
  status = call(vt->release, a, h.json, &out);
  expect_ok_empty("release of a held lock is OK with *out_json NULL", status, &out);
  if (acquire("release frees the key for another instance", b, key, 10000, &h2)) {
    release(b, &h2);
  }
  status = call(vt->release, a, h.json, &out);
  expect_ok_empty("releasing an already released handle is OK", status, &out);
  status = call(vt->renew, a, h.json, &out);
  expect_error("renew after release is ERR_BACKEND (never re-acquires)", BEXT_LOCKING_ERR_BACKEND,
               status, &out, NULL);
  if (acquire("renew after release did not re-acquire the key", b, key, 10000, &h2)) {
    release(b, &h2);
  }
  drop(&h.json);

  /* Renew restarts the TTL: 900 + 900 ms outlives a 1500 ms TTL only if it
   * was renewed. */
  key_for(key, sizeof key, "renew-keeps");
  if (acquire("try_lock with a 1500 ms TTL", a, key, 1500, &h)) {
    sleep_ms(900);
    status = call(vt->renew, a, h.json, &out);
    expect_ok_empty("renew before expiry is OK", status, &out);
    sleep_ms(900);
    status = try_lock(b, key, 10000, &out);
    expect_contended("renew restarts the TTL (still held past the first TTL)", status, &out);
    release(a, &h);
  }

  /* Expiry, then stale handles. */
  key_for(key, sizeof key, "stale");
  if (!acquire("try_lock with a 200 ms TTL", a, key, 200, &h)) return;
  /* Backends may round a TTL up (etcd leases count whole seconds), so poll
   * for the expiry, within a bound far above any rounding. */
  sleep_ms(300);
  for (waited = 300; waited < 15000; waited += 100) {
    status = try_lock(b, key, 10000, &h2.json);
    if (status != BEXT_LOCKING_CONTENDED) break;
    drop(&h2.json);
    sleep_ms(100);
  }
  if (!expect_handle("an expired lock can be taken by another instance", status, key, 10000,
                     &h2)) {
    printf("     (waited %ld ms for a 200 ms TTL, last status %d)\n", waited, (int)status);
    drop(&h.json);
    return;
  }
  if (waited > 1000) printf("     (the 200 ms lock expired after about %ld ms)\n", waited);
  check(strcmp(h.lock_id, h2.lock_id) != 0, "each acquisition gets a new lock_id", "%s twice",
        h.lock_id);
  if (h.has_fence && h2.has_fence)
    check(h2.fence > h.fence, "fence strictly increases across holders", "%llu then %llu",
          h.fence, h2.fence);
  status = call(vt->release, a, h.json, &out);
  expect_ok_empty("release of a stale handle is OK", status, &out);
  status = try_lock(a, key, 10000, &out);
  expect_contended("a stale release leaves the new holder's lock alone", status, &out);
  status = call(vt->renew, a, h.json, &out);
  expect_error("renew of a stale handle is ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND, status, &out,
               NULL);
  status = call(vt->renew, b, h2.json, &out);
  expect_ok_empty("the new holder can still renew after stale calls", status, &out);
  release(b, &h2);
  if (acquire("the key is free again after the new holder releases", a, key, 10000, &h3)) {
    if (h.has_fence && h3.has_fence)
      check(h3.fence > h2.fence, "fence keeps increasing", "%llu then %llu", h2.fence, h3.fence);
    release(a, &h3);
  }
  drop(&h.json);
}

/* ---- revision 1.1: owner, inspect, force_release, stats ----------------- */

/* What the plugin's vtable and describe say it has (docs/ABI.md, 1.1). */
static int has_inspect, has_force_release, has_stats;
static int cap_owner, cap_inspect, cap_force_release;

/* Whether a JSON array holds the string s. */
static int j_array_has(const JVal *arr, const char *s) {
  const char *p;
  JVal item;
  if (arr->type != J_ARR) return 0;
  p = j_ws(arr->start + 1);
  while (*p != ']') {
    p = j_value(p, &item, 1);
    if (p == NULL) return 0;
    if (j_str_is(&item, s)) return 1;
    p = j_ws(p);
    if (*p == ',') p = j_ws(p + 1);
  }
  return 0;
}

/* A slot of revision 1.1 exists when struct_size covers it and it is not NULL. */
#define HAS_SLOT(field)                                                            \
  (vt->struct_size >= offsetof(BextLockingVTable, field) + sizeof(vt->field) && \
   vt->field != NULL)

static void check_revision(void) {
  char *out = SENTINEL;
  JVal doc, v;
  unsigned long long minor = 0;
  int32_t status;
  has_inspect = HAS_SLOT(inspect);
  has_force_release = HAS_SLOT(force_release);
  has_stats = HAS_SLOT(stats);
  status = vt->describe(&out);
  if (status == BEXT_LOCKING_OK && j_parse(out, &doc) && doc.type == J_OBJ) {
    if (j_member(&doc, "abi_minor", &v))
      check(j_uint(&v, &minor), "describe abi_minor is a non-negative integer", "%s", out);
    if (j_member(&doc, "capabilities", &v)) {
      check(v.type == J_ARR, "describe capabilities is an array", "%s", out);
      cap_owner = j_array_has(&v, "owner");
      cap_inspect = j_array_has(&v, "inspect");
      cap_force_release = j_array_has(&v, "force_release");
      if (j_array_has(&v, "stats"))
        check(has_stats, "a plugin listing the stats capability has the stats slot", "%s", out);
    }
  }
  drop(&out);
  if (minor >= 1 || vt->struct_size >= VTABLE_V1_1_SIZE)
    check(vt->struct_size >= VTABLE_V1_1_SIZE && minor >= 1,
          "a 1.1 plugin has the 1.1 struct_size and says abi_minor 1 in describe",
          "struct_size %u, abi_minor %llu", (unsigned)vt->struct_size, minor);
  if (cap_inspect)
    check(has_inspect, "a plugin listing the inspect capability has the inspect slot", "");
  if (cap_force_release)
    check(has_force_release,
          "a plugin listing the force_release capability has the force_release slot", "");
  printf("     (revision 1.%llu: inspect %s, force_release %s, stats %s; capabilities:%s%s%s)\n",
         minor, has_inspect ? "yes" : "no", has_force_release ? "yes" : "no",
         has_stats ? "yes" : "no", cap_owner ? " owner" : "", cap_inspect ? " inspect" : "",
         cap_force_release ? " force_release" : "");
}

/* A try_lock request with an owner field given as raw JSON text. */
static int32_t try_lock_owner_raw(BextLockingInstance *inst, const char *key,
                                  const char *owner_json, char **out) {
  char req[4400];
  snprintf(req, sizeof req, "{\"key\":\"%s\",\"ttl_ms\":10000,\"owner\":%s}", key, owner_json);
  *out = SENTINEL;
  return vt->try_lock(inst, req, out);
}

/* An owner that is refused (over the limit, not a string, not UTF-8) must be
 * ERR_INVALID naming `owner` from a plugin with the "owner" capability; one
 * without it may ignore the field (and then takes the lock). */
static void expect_owner_refused(const char *name, BextLockingInstance *a, const char *key,
                                 const char *owner_json) {
  char *out;
  int32_t status = try_lock_owner_raw(a, key, owner_json, &out);
  if (!cap_owner && status == BEXT_LOCKING_OK && out != NULL && out != SENTINEL) {
    Handle h;
    char ignored[300];
    snprintf(ignored, sizeof ignored, "%s (or ignored without the owner capability)", name);
    check(1, ignored, "");
    h.json = out;
    release(a, &h);
    return;
  }
  expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, "owner");
}

static void check_owner_input(BextLockingInstance *a) {
  char key[2100];
  char owner[BEXT_LOCKING_MAX_OWNER_BYTES + 8];
  char owner_json[BEXT_LOCKING_MAX_OWNER_BYTES + 16];
  char *out;
  int32_t status;
  Handle h;
  size_t i;

  key_for(key, sizeof key, "owner-input");
  for (i = 0; i < BEXT_LOCKING_MAX_OWNER_BYTES; i++) owner[i] = 'o';
  owner[BEXT_LOCKING_MAX_OWNER_BYTES] = '\0';
  snprintf(owner_json, sizeof owner_json, "\"%s\"", owner);
  status = try_lock_owner_raw(a, key, owner_json, &h.json);
  if (expect_handle("an owner of BEXT_LOCKING_MAX_OWNER_BYTES bytes is accepted", status, key,
                    10000, &h))
    release(a, &h);
  owner[BEXT_LOCKING_MAX_OWNER_BYTES] = 'o';
  owner[BEXT_LOCKING_MAX_OWNER_BYTES + 1] = '\0';
  snprintf(owner_json, sizeof owner_json, "\"%s\"", owner);
  expect_owner_refused("an owner one byte over 256 bytes is ERR_INVALID naming owner", a, key,
                       owner_json);
  /* 86 three-byte characters: 258 bytes but only 86 characters. */
  owner_json[0] = '"';
  for (i = 0; i < 86; i++) memcpy(owner_json + 1 + 3 * i, "\xe2\x82\xac", 3);
  memcpy(owner_json + 1 + 3 * 86, "\"", 2);
  expect_owner_refused("an owner over 256 bytes in multi-byte characters is ERR_INVALID", a, key,
                       owner_json);
  expect_owner_refused("a number owner is ERR_INVALID naming owner", a, key, "42");
  expect_owner_refused("an object owner is ERR_INVALID naming owner", a, key, "{\"host\":\"x\"}");
  expect_owner_refused("an owner with a lone surrogate escape is ERR_INVALID", a, key,
                       "\"\\ud800\"");
  status = try_lock_owner_raw(a, key, "\"a\xff\"", &out);
  expect_error("an owner that is not UTF-8 is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out,
               NULL);
  status = try_lock_owner_raw(a, key, "null", &h.json);
  if (expect_handle("an owner of null is the same as none", status, key, 10000, &h))
    release(a, &h);
}

/* The inputs every keyed 1.1 slot (inspect, force_release) refuses. */
static void check_keyed_slot_input(const char *slot_name, BextLockingCallFn slot,
                                   BextLockingInstance *a) {
  static const struct {
    const char *what;
    const char *request;
    const char *needle;
  } bad[] = {
      {"malformed JSON", "{\"key\":", NULL},
      {"text that is not JSON", "who holds it?", NULL},
      {"a JSON array", "[\"k\"]", NULL},
      {"JSON null", "null", NULL},
      {"an empty string", "", NULL},
      {"invalid UTF-8", "{\"key\":\"k\xc3\x28\"}", NULL},
      {"invalid UTF-8 in an ignored field", "{\"key\":\"k\",\"note\":\"\xff\"}", NULL},
      {"JSON cut short by an interior NUL", "{\"key\":\"k\"\0}", NULL},
      {"no key", "{}", "key"},
      {"a number key", "{\"key\":7}", "key"},
      {"a null key", "{\"key\":null}", "key"},
      {"an empty key", "{\"key\":\"\"}", "key"},
      {"a lone surrogate escape in the key", "{\"key\":\"\\udc00\"}", NULL},
      {"the key given twice", "{\"key\":\"k\",\"key\":\"j\"}", NULL},
  };
  char name[200];
  char key[BEXT_LOCKING_MAX_KEY_BYTES + 64];
  char *out;
  int32_t status;
  size_t i;

  status = slot(a, "{\"key\":\"k\"}", NULL);
  snprintf(name, sizeof name, "%s with NULL out_json is ERR_INVALID", slot_name);
  check(status == BEXT_LOCKING_ERR_INVALID, name, "got %d", (int)status);
  status = call(slot, NULL, "{\"key\":\"k\"}", &out);
  snprintf(name, sizeof name, "%s with a NULL instance is ERR_INVALID", slot_name);
  expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, NULL);
  status = call(slot, a, NULL, &out);
  snprintf(name, sizeof name, "%s with a NULL request is ERR_INVALID", slot_name);
  expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, NULL);
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    status = call(slot, a, bad[i].request, &out);
    snprintf(name, sizeof name, "%s with %s is ERR_INVALID%s", slot_name, bad[i].what,
             bad[i].needle != NULL ? " naming key" : "");
    expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, bad[i].needle);
  }
  snprintf(key, sizeof key, "{\"key\":\"");
  for (i = strlen(key); i < 8 + BEXT_LOCKING_MAX_KEY_BYTES + 1; i++) key[i] = 'k';
  memcpy(key + i, "\"}", 3);
  status = call(slot, a, key, &out);
  snprintf(name, sizeof name, "%s with a key one byte too long is ERR_INVALID naming key",
           slot_name);
  expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, "key");
}

static void check_if_fence_input(BextLockingInstance *a) {
  static const struct {
    const char *what;
    const char *value;
  } bad[] = {
      {"negative", "-1"},
      {"fractional", "1.5"},
      {"in exponent form", "1e3"},
      {"past u64", "18446744073709551616"},
      {"a string", "\"7\""},
      {"a bool", "true"},
      {"null", "null"},
      {"an array", "[7]"},
  };
  char key[2100];
  char req[2300];
  char name[200];
  char *out;
  int32_t status;
  size_t i;
  key_for(key, sizeof key, "if-fence-input");
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(req, sizeof req, "{\"key\":\"%s\",\"if_fence\":%s}", key, bad[i].value);
    status = call(vt->force_release, a, req, &out);
    snprintf(name, sizeof name, "force_release with if_fence %s is ERR_INVALID naming if_fence",
             bad[i].what);
    expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, "if_fence");
  }
}

/* Reads the answer of an inspect that must succeed (or, from a plugin not
 * listing the capability, be ERR_UNSUPPORTED). Returns 1 with *doc parsed
 * and *text to drop, 0 otherwise (reported and freed). */
static int inspect_answer(const char *name, BextLockingInstance *inst, const char *key,
                          char **text, JVal *doc) {
  char req[2300];
  JVal v;
  int32_t status;
  snprintf(req, sizeof req, "{\"key\":\"%s\"}", key);
  status = call(vt->inspect, inst, req, text);
  if (status == BEXT_LOCKING_ERR_UNSUPPORTED && !cap_inspect) {
    expect_error(name, BEXT_LOCKING_ERR_UNSUPPORTED, status, text, NULL);
    return 0;
  }
  if (status != BEXT_LOCKING_OK || !j_parse(*text, doc) || doc->type != J_OBJ ||
      !j_member(doc, "key", &v) || !j_str_is(&v, key) || !j_member(doc, "held", &v) ||
      (v.type != J_TRUE && v.type != J_FALSE) || j_member(doc, "lock_id", &v)) {
    check(0, name, "want OK with {\"key\",\"held\",...} and no lock_id: status %d, %s",
          (int)status, show(*text));
    drop(text);
    return 0;
  }
  return 1;
}

static void check_inspect(BextLockingInstance *a, BextLockingInstance *b) {
  char key[2100];
  char *text;
  char owner_json[64];
  JVal doc, v;
  unsigned long long n;
  int32_t status;
  Handle h;

  key_for(key, sizeof key, "inspect-never-locked");
  if (inspect_answer("inspect of a key never locked is OK with held false", b, key, &text, &doc)) {
    check(j_member(&doc, "held", &v) && v.type == J_FALSE && !j_member(&doc, "owner", &v) &&
              !j_member(&doc, "fence", &v),
          "inspect of a key never locked is OK with held false", "%s", text);
    drop(&text);
  }
  key_for(key, sizeof key, "inspect-held");
  snprintf(owner_json, sizeof owner_json, "\"c-conformance:%ld\"", (long)getpid());
  status = try_lock_owner_raw(a, key, owner_json, &h.json);
  if (!expect_handle("try_lock with an owner", status, key, 10000, &h)) return;
  if (inspect_answer("inspect of a held key (from another instance)", b, key, &text, &doc)) {
    int ok = j_member(&doc, "held", &v) && v.type == J_TRUE;
    if (ok && h.has_fence) ok = j_member(&doc, "fence", &v) && j_uint(&v, &n) && n == h.fence;
    if (ok && cap_owner)
      ok = j_member(&doc, "owner", &v) && (size_t)(v.end - v.start) == strlen(owner_json) &&
           strncmp(v.start, owner_json, strlen(owner_json)) == 0;
    if (ok && j_member(&doc, "expires_in_ms", &v)) ok = j_uint(&v, &n) && n <= 10000;
    if (ok && j_member(&doc, "held_for_ms", &v)) ok = j_uint(&v, &n);
    check(ok, "inspect of a held key: held, the holder's fence and owner, no lock_id",
          "owner %s, fence %llu: %s", owner_json, h.fence, text);
    check(strstr(text, h.lock_id) == NULL, "inspect never reveals the lock_id", "%s", text);
    drop(&text);
  }
  release(a, &h);
  if (inspect_answer("inspect of a released key is OK with held false", b, key, &text, &doc)) {
    check(j_member(&doc, "held", &v) && v.type == J_FALSE,
          "inspect of a released key is OK with held false", "%s", text);
    drop(&text);
  }
}

static void check_force_release(BextLockingInstance *a, BextLockingInstance *b) {
  char key[2100];
  char req[2300];
  char *out;
  JVal doc, v;
  unsigned long long n;
  int32_t status;
  Handle h, h2;

  key_for(key, sizeof key, "force-free");
  snprintf(req, sizeof req, "{\"key\":\"%s\"}", key);
  status = call(vt->force_release, b, req, &out);
  if (status == BEXT_LOCKING_ERR_UNSUPPORTED && !cap_force_release) {
    expect_error("force_release is ERR_UNSUPPORTED with an error object",
                 BEXT_LOCKING_ERR_UNSUPPORTED, status, &out, NULL);
    return;
  }
  check(status == BEXT_LOCKING_OK && j_parse(out, &doc) && j_member(&doc, "released", &v) &&
            v.type == J_FALSE,
        "force_release of a free key is OK with released false", "status %d, %s", (int)status,
        show(out));
  drop(&out);

  key_for(key, sizeof key, "force-held");
  if (!acquire("try_lock before force_release", a, key, 10000, &h)) return;
  if (h.has_fence) {
    snprintf(req, sizeof req, "{\"key\":\"%s\",\"if_fence\":%llu}", key, h.fence + 1);
    status = call(vt->force_release, b, req, &out);
    check(status == BEXT_LOCKING_OK && j_parse(out, &doc) && j_member(&doc, "released", &v) &&
              v.type == J_FALSE,
          "force_release with another if_fence is OK with released false", "status %d, %s",
          (int)status, show(out));
    drop(&out);
    status = try_lock(b, key, 10000, &out);
    expect_contended("force_release with another if_fence leaves the lock held", status, &out);
    snprintf(req, sizeof req, "{\"key\":\"%s\",\"if_fence\":%llu}", key, h.fence);
  } else {
    snprintf(req, sizeof req, "{\"key\":\"%s\"}", key);
  }
  status = call(vt->force_release, b, req, &out);
  {
    int ok = status == BEXT_LOCKING_OK && j_parse(out, &doc) &&
             j_member(&doc, "released", &v) && v.type == J_TRUE;
    if (ok && h.has_fence) ok = j_member(&doc, "fence", &v) && j_uint(&v, &n) && n == h.fence;
    check(ok, "force_release of a held key is OK with released true and the holder's fence",
          "status %d, %s", (int)status, show(out));
  }
  drop(&out);
  status = call(vt->renew, a, h.json, &out);
  expect_error("the broken holder's renew is ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND, status, &out,
               NULL);
  if (acquire("the key is free after force_release", b, key, 10000, &h2)) {
    if (h.has_fence && h2.has_fence)
      check(h2.fence > h.fence, "the next fence after force_release is higher",
            "%llu then %llu", h.fence, h2.fence);
    status = call(vt->release, a, h.json, &out);
    expect_ok_empty("the broken holder's release is OK", status, &out);
    status = try_lock(a, key, 10000, &out);
    expect_contended("the broken holder's release leaves the new holder's lock alone", status,
                     &out);
    release(b, &h2);
  }
  drop(&h.json);
}

static void check_stats(BextLockingInstance *a) {
  char *out = SENTINEL;
  JVal doc, v, lat, list;
  unsigned long long n;
  int32_t status;

  status = vt->stats(a, NULL);
  check(status == BEXT_LOCKING_ERR_INVALID, "stats with NULL out_json is ERR_INVALID", "got %d",
        (int)status);
  out = SENTINEL;
  status = vt->stats(NULL, &out);
  expect_error("stats of a NULL instance is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out,
               NULL);
  out = SENTINEL;
  status = vt->stats(a, &out);
  if (status == BEXT_LOCKING_ERR_UNSUPPORTED) {
    expect_error("stats is OK or ERR_UNSUPPORTED with an error object",
                 BEXT_LOCKING_ERR_UNSUPPORTED, status, &out, NULL);
    return;
  }
  {
    int ok = status == BEXT_LOCKING_OK && j_parse(out, &doc) && doc.type == J_OBJ;
    static const char *const counters[] = {"acquired", "contended", "renewed", "renew_failures",
                                           "released", "force_released"};
    size_t i;
    for (i = 0; ok && i < sizeof counters / sizeof counters[0]; i++)
      ok = j_member(&doc, counters[i], &v) && j_uint(&v, &n);
    ok = ok && j_member(&doc, "acquired", &v) && j_uint(&v, &n) && n > 0;
    ok = ok && j_member(&doc, "errors", &v) && v.type == J_OBJ &&
         j_member(&v, "invalid_argument", &list) && j_uint(&list, &n) && n > 0;
    ok = ok && j_member(&doc, "latency_us", &lat) && lat.type == J_OBJ &&
         j_member(&lat, "bounds", &list) && list.type == J_ARR &&
         j_member(&lat, "try_lock", &list) && list.type == J_ARR &&
         j_member(&lat, "renew", &list) && list.type == J_ARR &&
         j_member(&lat, "release", &list) && list.type == J_ARR;
    check(ok,
          "stats is an object with the counters, errors by code and latency histograms "
          "(acquired and invalid_argument counted)",
          "status %d, %s", (int)status, show(out));
  }
  drop(&out);
}

/* Every 1.1 check that needs a live instance, before cleanup. */
static void check_admin(BextLockingInstance *a, BextLockingInstance *b) {
  check_owner_input(a);
  if (has_inspect) {
    check_keyed_slot_input("inspect", vt->inspect, a);
    check_inspect(a, b);
  }
  if (has_force_release) {
    check_keyed_slot_input("force_release", vt->force_release, a);
    check_if_fence_input(a);
    check_force_release(a, b);
  }
  if (has_stats) check_stats(a);
  if (!has_inspect && !has_force_release && !has_stats)
    printf("     (no 1.1 slots: the inspect, force_release and stats checks do not apply)\n");
}

/* ---- revision 1.2: lock_wait, cancel_wait, renew_for -------------------- */

static int has_lock_wait, has_cancel_wait, has_renew_for;
static int cap_lock_wait, cap_renew_ttl;
/* Whether this backend's lock_wait waits (rather than answering
 * ERR_UNSUPPORTED): the behaviour checks run only then. */
static int waits_here;
/* Wait ids, unique in this run. */
static unsigned long long next_wait_id = 1000;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int32_t lock_wait_raw(BextLockingInstance *inst, const char *req, char **out,
                             uint64_t *sent_ago) {
  *out = SENTINEL;
  return vt->lock_wait(inst, req, out, sent_ago);
}

/* A lock_wait request for key with the given wait_ms text and wait id (0:
 * none). */
static void wait_request(char *buf, size_t len, const char *key, unsigned long long ttl,
                         const char *wait_ms, unsigned long long id) {
  if (id != 0)
    snprintf(buf, len, "{\"key\":\"%s\",\"ttl_ms\":%llu,\"wait_ms\":%s,\"wait_id\":%llu}", key,
             ttl, wait_ms, id);
  else
    snprintf(buf, len, "{\"key\":\"%s\",\"ttl_ms\":%llu,\"wait_ms\":%s}", key, ttl, wait_ms);
}

static void check_revision_1_2(void) {
  char *out = SENTINEL;
  JVal doc, v;
  has_lock_wait = HAS_SLOT(lock_wait);
  has_cancel_wait = HAS_SLOT(cancel_wait);
  has_renew_for = HAS_SLOT(renew_for);
  if (vt->describe(&out) == BEXT_LOCKING_OK && j_parse(out, &doc) && doc.type == J_OBJ &&
      j_member(&doc, "capabilities", &v)) {
    cap_lock_wait = j_array_has(&v, "lock_wait");
    cap_renew_ttl = j_array_has(&v, "renew_ttl");
    if (j_array_has(&v, "fifo"))
      check(cap_lock_wait, "a plugin listing fifo also lists lock_wait", "%s", out);
  }
  drop(&out);
  if (cap_lock_wait)
    check(has_lock_wait && has_cancel_wait,
          "a plugin listing the lock_wait capability has the lock_wait and cancel_wait slots", "");
  if (cap_renew_ttl)
    check(has_renew_for, "a plugin listing the renew_ttl capability has the renew_for slot", "");
  if (has_lock_wait || has_cancel_wait || has_renew_for)
    check(vt->struct_size >= offsetof(BextLockingVTable, renew_for) + sizeof(vt->renew_for),
          "a plugin with 1.2 slots has the 1.2 struct_size", "struct_size %u",
          (unsigned)vt->struct_size);
  printf("     (revision 1.2: lock_wait %s, cancel_wait %s, renew_for %s; capabilities:%s%s)\n",
         has_lock_wait ? "yes" : "no", has_cancel_wait ? "yes" : "no",
         has_renew_for ? "yes" : "no", cap_lock_wait ? " lock_wait" : "",
         cap_renew_ttl ? " renew_ttl" : "");
}

/* The bad inputs of lock_wait: every one is refused before anything
 * waits, whatever the backend. */
static void check_lock_wait_input(BextLockingInstance *a) {
  static const struct {
    const char *what;
    const char *wait_ms;
  } bad[] = {
      {"-1", "-1"},
      {"1.5", "1.5"},
      {"a string", "\"3\""},
      {"null", "null"},
      {"over BEXT_LOCKING_MAX_TTL_MS", "31536000001"},
      {"past u64", "18446744073709551616"},
  };
  char key[2100];
  char req[2400];
  char name[200];
  char *out;
  uint64_t sent_ago = 7;
  int32_t status;
  size_t i;
  key_for(key, sizeof key, "lock-wait-input");
  wait_request(req, sizeof req, key, 1000, "0", 0);
  status = vt->lock_wait(a, req, NULL, NULL);
  check(status == BEXT_LOCKING_ERR_INVALID, "lock_wait with NULL out_json is ERR_INVALID",
        "got %d", (int)status);
  status = lock_wait_raw(NULL, req, &out, &sent_ago);
  expect_error("lock_wait with a NULL instance is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  check(sent_ago == 0, "lock_wait sets *out_sent_ago_us to 0 on entry", "got %llu",
        (unsigned long long)sent_ago);
  status = lock_wait_raw(a, NULL, &out, NULL);
  expect_error("lock_wait with a NULL request is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  status = lock_wait_raw(a, "{\"key\":", &out, NULL);
  expect_error("lock_wait with malformed JSON is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  snprintf(req, sizeof req, "{\"key\":\"%s\",\"ttl_ms\":1000}", key);
  status = lock_wait_raw(a, req, &out, NULL);
  expect_error("lock_wait with wait_ms missing is ERR_INVALID naming wait_ms",
               BEXT_LOCKING_ERR_INVALID, status, &out, "wait_ms");
  for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    wait_request(req, sizeof req, key, 1000, bad[i].wait_ms, 0);
    status = lock_wait_raw(a, req, &out, NULL);
    snprintf(name, sizeof name, "lock_wait with wait_ms %s is ERR_INVALID naming wait_ms",
             bad[i].what);
    expect_error(name, BEXT_LOCKING_ERR_INVALID, status, &out, "wait_ms");
  }
  snprintf(req, sizeof req, "{\"key\":\"%s\",\"ttl_ms\":1000,\"wait_ms\":0,\"wait_id\":\"x\"}",
           key);
  status = lock_wait_raw(a, req, &out, NULL);
  expect_error("lock_wait with a string wait_id is ERR_INVALID naming wait_id",
               BEXT_LOCKING_ERR_INVALID, status, &out, "wait_id");
  wait_request(req, sizeof req, key, 0, "0", 0);
  status = lock_wait_raw(a, req, &out, NULL);
  expect_error("lock_wait with ttl_ms 0 is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out,
               NULL);
  wait_request(req, sizeof req, "", 1000, "0", 0);
  status = lock_wait_raw(a, req, &out, NULL);
  expect_error("lock_wait with an empty key is ERR_INVALID naming key", BEXT_LOCKING_ERR_INVALID,
               status, &out, "key");
  /* A lock_wait on a free key with wait_ms 0 is one try: it either gets
   * the lock or says this mode cannot wait. */
  wait_request(req, sizeof req, key, 1000, "0", 0);
  status = lock_wait_raw(a, req, &out, &sent_ago);
  if (status == BEXT_LOCKING_ERR_UNSUPPORTED && !cap_lock_wait) {
    drop(&out);
    printf("     (lock_wait is unsupported by this backend: hosts poll; the wait checks do not "
           "apply)\n");
    return;
  }
  waits_here = 1;
  {
    Handle h;
    h.json = out;
    if (expect_handle("lock_wait with wait_ms 0 on a free key takes it", status, key, 1000, &h)) {
      check(sent_ago < 60000000ull, "lock_wait's *out_sent_ago_us is a plausible duration",
            "%llu us", (unsigned long long)sent_ago);
      release(a, &h);
    }
  }
}

static void check_cancel_wait_input(BextLockingInstance *a) {
  char *out;
  int32_t status;
  status = vt->cancel_wait(a, "{\"wait_id\":1}", NULL);
  check(status == BEXT_LOCKING_ERR_INVALID, "cancel_wait with NULL out_json is ERR_INVALID",
        "got %d", (int)status);
  status = call(vt->cancel_wait, NULL, "{\"wait_id\":1}", &out);
  expect_error("cancel_wait with a NULL instance is ERR_INVALID", BEXT_LOCKING_ERR_INVALID,
               status, &out, NULL);
  status = call(vt->cancel_wait, a, NULL, &out);
  expect_error("cancel_wait with a NULL request is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  status = call(vt->cancel_wait, a, "{}", &out);
  expect_error("cancel_wait with wait_id missing is ERR_INVALID naming wait_id",
               BEXT_LOCKING_ERR_INVALID, status, &out, "wait_id");
  status = call(vt->cancel_wait, a, "{\"wait_id\":-1}", &out);
  expect_error("cancel_wait with wait_id -1 is ERR_INVALID naming wait_id",
               BEXT_LOCKING_ERR_INVALID, status, &out, "wait_id");
  status = call(vt->cancel_wait, a, "{\"wait_id\":987654321}", &out);
  expect_ok_empty("cancel_wait of an unknown wait id is OK and writes nothing", status, &out);
  status = call(vt->cancel_wait, a, "{\"wait_id\":987654321}", &out);
  expect_ok_empty("cancel_wait of the same unknown id again is OK", status, &out);
}

static void check_renew_for_input(BextLockingInstance *a, BextLockingInstance *b) {
  char key[2100];
  char req[6000];
  char *out;
  int32_t status;
  Handle h;
  status = vt->renew_for(a, "{}", NULL);
  check(status == BEXT_LOCKING_ERR_INVALID, "renew_for with NULL out_json is ERR_INVALID",
        "got %d", (int)status);
  status = call(vt->renew_for, NULL, "{}", &out);
  expect_error("renew_for with a NULL instance is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  status = call(vt->renew_for, a, NULL, &out);
  expect_error("renew_for with a NULL request is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  status = call(vt->renew_for, a, "{\"ttl_ms\":1000}", &out);
  expect_error("renew_for with no handle is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out,
               NULL);
  key_for(key, sizeof key, "renew-for");
  if (!acquire("try_lock before renew_for", a, key, 10000, &h)) return;
  snprintf(req, sizeof req, "{\"handle\":%s,\"ttl_ms\":0}", h.json);
  status = call(vt->renew_for, a, req, &out);
  expect_error("renew_for with ttl_ms 0 is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status, &out,
               NULL);
  snprintf(req, sizeof req, "{\"handle\":%s}", h.json);
  status = call(vt->renew_for, a, req, &out);
  expect_error("renew_for with ttl_ms missing is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  snprintf(req, sizeof req, "{\"handle\":%s,\"ttl_ms\":20000}", h.json);
  status = call(vt->renew_for, a, req, &out);
  if (status == BEXT_LOCKING_ERR_UNSUPPORTED && !cap_renew_ttl) {
    expect_error("renew_for without the renew_ttl capability is ERR_UNSUPPORTED",
                 BEXT_LOCKING_ERR_UNSUPPORTED, status, &out, NULL);
  } else {
    expect_ok_empty("renew_for of a held lock is OK", status, &out);
    status = try_lock(b, key, 10000, &out);
    expect_contended("after renew_for the lock is still held", status, &out);
  }
  release(a, &h);
}

/* A thread that, after delay_ms, cancels wait `id` on `inst`, or releases
 * `handle` there. */
typedef struct {
  BextLockingInstance *inst;
  unsigned long long id;
  const char *handle;
  long delay_ms;
  int32_t status;
} Later;

static void *later_main(void *arg) {
  Later *l = (Later *)arg;
  char req[64];
  char *out = NULL;
  sleep_ms(l->delay_ms);
  if (l->handle != NULL) {
    l->status = vt->release(l->inst, l->handle, &out);
  } else {
    snprintf(req, sizeof req, "{\"wait_id\":%llu}", l->id);
    l->status = vt->cancel_wait(l->inst, req, &out);
  }
  vt->free_string(out);
  return NULL;
}

/* Waiting, on a backend whose lock_wait waits: timeout, cancel from another
 * thread, an early cancel, the hand-off to a waiter after release. */
static void check_waiting(BextLockingInstance *a, BextLockingInstance *b) {
  char key[2100];
  char req[2400];
  char *out;
  uint64_t sent_ago = 0;
  int32_t status;
  long long t0, took;
  Handle h, w;
  pthread_t thread;
  Later later;

  if (!waits_here) return;
  key_for(key, sizeof key, "waiting");
  if (!acquire("try_lock before the wait checks", a, key, 30000, &h)) return;

  wait_request(req, sizeof req, key, 10000, "200", next_wait_id++);
  t0 = now_ms();
  status = lock_wait_raw(b, req, &out, NULL);
  took = now_ms() - t0;
  expect_contended("lock_wait on a held key returns CONTENDED when wait_ms passes", status, &out);
  check(took >= 150, "a timed-out lock_wait waited about wait_ms", "returned after %lld ms", took);

  memset(&later, 0, sizeof later);
  later.inst = b;
  later.id = next_wait_id++;
  later.delay_ms = 150;
  wait_request(req, sizeof req, key, 10000, "30000", later.id);
  if (pthread_create(&thread, NULL, later_main, &later) != 0) {
    check(0, "pthread_create", "failed");
    release(a, &h);
    return;
  }
  t0 = now_ms();
  status = lock_wait_raw(b, req, &out, NULL);
  took = now_ms() - t0;
  pthread_join(thread, NULL);
  check(status == BEXT_LOCKING_CANCELLED && out == NULL,
        "cancel_wait from another thread ends a wait on a held key with CANCELLED",
        "status %d, output %s", (int)status, show(out));
  drop(&out);
  check(later.status == BEXT_LOCKING_OK, "cancel_wait of a live wait is OK", "status %d",
        (int)later.status);
  check(took < 1000 + later.delay_ms, "a cancelled wait returns within 1 s of cancel_wait",
        "returned %lld ms after it started, cancelled at %ld ms", took, later.delay_ms);

  later.id = next_wait_id++;
  snprintf(req, sizeof req, "{\"wait_id\":%llu}", later.id);
  status = call(vt->cancel_wait, b, req, &out);
  expect_ok_empty("cancel_wait before its wait started is OK", status, &out);
  wait_request(req, sizeof req, key, 10000, "30000", later.id);
  t0 = now_ms();
  status = lock_wait_raw(b, req, &out, NULL);
  took = now_ms() - t0;
  check(status == BEXT_LOCKING_CANCELLED && out == NULL && took < 1000,
        "a cancel that came before its wait still cancels it", "status %d after %lld ms, %s",
        (int)status, took, show(out));
  drop(&out);

  status = try_lock(b, key, 10000, &out);
  expect_contended("timed-out and cancelled waits took nothing: the key is still held", status,
                   &out);

  /* Hand-off: a releases while b waits. */
  memset(&later, 0, sizeof later);
  later.inst = a;
  later.handle = h.json;
  later.delay_ms = 150;
  if (pthread_create(&thread, NULL, later_main, &later) != 0) {
    check(0, "pthread_create", "failed");
    release(a, &h);
    return;
  }
  wait_request(req, sizeof req, key, 10000, "30000", next_wait_id++);
  t0 = now_ms();
  w.json = SENTINEL;
  status = vt->lock_wait(b, req, &w.json, &sent_ago);
  took = now_ms() - t0;
  pthread_join(thread, NULL);
  drop(&h.json);
  if (expect_handle("a waiter gets the lock after the holder releases", status, key, 10000, &w)) {
    check(took < 30000, "the hand-off came before wait_ms", "after %lld ms", took);
    check(sent_ago <= (unsigned long long)took * 1000 + 1000,
          "*out_sent_ago_us is no longer than the wait", "%llu us after a %lld ms wait",
          (unsigned long long)sent_ago, took);
    status = try_lock(a, key, 10000, &out);
    expect_contended("the waiter holds the key: the old holder is refused", status, &out);
    release(b, &w);
  }
}

/* A thread blocked in lock_wait until cleanup of its instance. */
typedef struct {
  BextLockingInstance *inst;
  char req[2400];
  int32_t status;
  char *out;
} Blocked;

static void *blocked_main(void *arg) {
  Blocked *w = (Blocked *)arg;
  w->out = NULL;
  w->status = vt->lock_wait(w->inst, w->req, &w->out, NULL);
  return NULL;
}

/* Starts a wait on `a` for a key `b` holds; cleanup_and_join_waiter ends
 * it. Returns 1 when started. */
static int start_waiter_for_cleanup(BextLockingInstance *a, BextLockingInstance *b, Blocked *w,
                                    pthread_t *thread, Handle *held) {
  char key[2100];
  if (!waits_here) return 0;
  key_for(key, sizeof key, "cleanup-wait");
  if (!acquire("try_lock before the cleanup wait", b, key, 30000, held)) return 0;
  w->inst = a;
  wait_request(w->req, sizeof w->req, key, 10000, "30000", next_wait_id++);
  if (pthread_create(thread, NULL, blocked_main, w) != 0) {
    release(b, held);
    return 0;
  }
  /* Time for the waiter to reach the plugin before the cleanup: under
   * valgrind on a busy machine a thread can take this long to start, and a
   * lock_wait that arrives after cleanup is refused, not cancelled. */
  sleep_ms(400);
  return 1;
}

static void join_waiter_after_cleanup(BextLockingInstance *b, Blocked *w, pthread_t thread,
                                      Handle *held, long long cleaned_at) {
  long long took;
  pthread_join(thread, NULL);
  took = now_ms() - cleaned_at;
  check(w->status == BEXT_LOCKING_CANCELLED && w->out == NULL,
        "cleanup cancels a wait in flight (CANCELLED)", "status %d, %s", (int)w->status,
        show(w->out));
  check(took < 1000, "the wait cleanup cancelled returned within 1 s", "%lld ms", took);
  drop(&w->out);
  release(b, held);
}

static void check_revision_1_2_slots(BextLockingInstance *a, BextLockingInstance *b) {
  if (has_lock_wait) check_lock_wait_input(a);
  if (has_cancel_wait) check_cancel_wait_input(a);
  if (has_renew_for) check_renew_for_input(a, b);
  if (has_lock_wait && has_cancel_wait) check_waiting(a, b);
  if (!has_lock_wait && !has_cancel_wait && !has_renew_for)
    printf("     (no 1.2 slots: the lock_wait, cancel_wait and renew_for checks do not apply)\n");
}

/* After cleanup: inspect and force_release fail as every call does; stats
 * still answers. */
static void check_admin_after_cleanup(BextLockingInstance *a) {
  char key[2100];
  char req[2300];
  char *out;
  int32_t status;
  key_for(key, sizeof key, "admin-after-cleanup");
  snprintf(req, sizeof req, "{\"key\":\"%s\"}", key);
  if (has_inspect) {
    status = call(vt->inspect, a, req, &out);
    if (status != BEXT_LOCKING_ERR_UNSUPPORTED || cap_inspect)
      expect_error("inspect after cleanup is ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND, status, &out,
                   NULL);
    else
      drop(&out);
  }
  if (has_force_release) {
    status = call(vt->force_release, a, req, &out);
    if (status != BEXT_LOCKING_ERR_UNSUPPORTED || cap_force_release)
      expect_error("force_release after cleanup is ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND,
                   status, &out, NULL);
    else
      drop(&out);
  }
  if (has_stats) {
    out = SENTINEL;
    status = vt->stats(a, &out);
    check(status == BEXT_LOCKING_OK || status == BEXT_LOCKING_ERR_UNSUPPORTED,
          "stats still answers after cleanup", "status %d, %s", (int)status, show(out));
    drop(&out);
  }
}

static void check_cleanup(BextLockingInstance *a, BextLockingInstance *b) {
  char key[2100];
  char *out;
  int32_t status;
  Handle h;
  Blocked blocked;
  Handle held;
  pthread_t thread;
  int waiting;
  long long cleaned_at;

  key_for(key, sizeof key, "cleanup");
  if (!acquire("try_lock before cleanup", a, key, 10000, &h)) return;
  status = vt->cleanup(a, NULL);
  check(status == BEXT_LOCKING_ERR_INVALID, "cleanup with NULL out_json is ERR_INVALID",
        "got %d", (int)status);
  status = call(vt->renew, a, h.json, &out);
  expect_ok_empty("cleanup with NULL out_json did nothing (renew still OK)", status, &out);
  out = SENTINEL;
  status = vt->cleanup(NULL, &out);
  expect_error("cleanup of a NULL instance is ERR_INVALID", BEXT_LOCKING_ERR_INVALID, status,
               &out, NULL);
  waiting = start_waiter_for_cleanup(a, b, &blocked, &thread, &held);
  out = SENTINEL;
  cleaned_at = now_ms();
  status = vt->cleanup(a, &out);
  expect_ok_empty("cleanup is OK with *out_json NULL", status, &out);
  if (waiting) join_waiter_after_cleanup(b, &blocked, thread, &held, cleaned_at);
  check_admin_after_cleanup(a);
  if (has_lock_wait) {
    char req[2400];
    key_for(key, sizeof key, "wait-after-cleanup");
    wait_request(req, sizeof req, key, 1000, "0", 0);
    status = lock_wait_raw(a, req, &out, NULL);
    if (status != BEXT_LOCKING_ERR_UNSUPPORTED || cap_lock_wait)
      expect_error("lock_wait after cleanup is ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND, status,
                   &out, NULL);
    else
      drop(&out);
  }

  key_for(key, sizeof key, "after-cleanup");
  status = try_lock(a, key, 10000, &out);
  expect_error("try_lock after cleanup is ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND, status, &out,
               NULL);
  status = call(vt->renew, a, h.json, &out);
  expect_error("renew after cleanup is ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND, status, &out,
               NULL);
  status = call(vt->release, a, h.json, &out);
  expect_error("release after cleanup is ERR_BACKEND", BEXT_LOCKING_ERR_BACKEND, status, &out,
               NULL);
  out = SENTINEL;
  status = vt->cleanup(a, &out);
  check(status == BEXT_LOCKING_OK || status == BEXT_LOCKING_ERR_BACKEND,
        "a second cleanup does not crash", "got %d", (int)status);
  drop(&out);
  drop(&h.json);
}

static void check_panics(const char *config) {
  BextLockingInstance *inst = (BextLockingInstance *)(void *)SENTINEL;
  char *err = SENTINEL;
  char key[2100];
  int32_t status;
  Handle h;

  status = vt->create("{\"panic_in_create\":true}", &inst, &err);
  check(inst == NULL, "a panicking create leaves *out_instance NULL", "got %p", (void *)inst);
  expect_error("a panic in create is ERR_PANIC with code panic", BEXT_LOCKING_ERR_PANIC, status,
               &err, NULL);
  inst = NULL;
  err = SENTINEL;
  status = vt->create(config, &inst, &err);
  check(status == BEXT_LOCKING_OK && inst != NULL, "create works after a caught panic",
        "status %d: %s", (int)status, show(err));
  drop(&err);
  if (inst == NULL) return;
  snprintf(key, sizeof key, "panic/%s", prefix);
  status = try_lock(inst, key, 1000, &err);
  expect_error("a panic in try_lock is ERR_PANIC with code panic", BEXT_LOCKING_ERR_PANIC, status,
               &err, NULL);
  key_for(key, sizeof key, "after-panic");
  if (acquire("try_lock works after a caught panic", inst, key, 1000, &h)) release(inst, &h);
  vt->destroy(inst);
}

int main(int argc, char **argv) {
  void *lib;
  const char *config;
  int panicky = 0;
  BextLockingInstance *a = NULL, *b = NULL;
  char *err;
  int32_t status;
  struct timespec now;

  if (argc < 3) {
    fprintf(stderr, "usage: %s PLUGIN.so CONFIG_JSON [--panicky]\n", argv[0]);
    return 2;
  }
  config = argv[2];
  panicky = argc > 3 && strcmp(argv[3], "--panicky") == 0;
  clock_gettime(CLOCK_REALTIME, &now);
  snprintf(prefix, sizeof prefix, "c-conformance/%ld-%ld-%ld/", (long)getpid(),
           (long)now.tv_sec, (long)now.tv_nsec);

  lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    printf("FAIL dlopen %s: %s\n", argv[1], dlerror());
    return 1;
  }
  check_table(argv[1], lib);
  printf("plugin %s %s, config %s\n", vt->name, vt->version, config);

  vt->free_string(NULL);
  check(1, "free_string(NULL) is a no-op", "");
  check_describe();
  check_revision();
  check_revision_1_2();
  check_create(config);

  err = SENTINEL;
  status = vt->create(config, &a, &err);
  check(status == BEXT_LOCKING_OK && a != NULL && err == NULL,
        "create returns an instance and leaves *out_error_json NULL", "status %d: %s",
        (int)status, show(err));
  drop(&err);
  err = SENTINEL;
  status = vt->create(config, &b, &err);
  check(status == BEXT_LOCKING_OK && b != NULL, "create a second instance (another host)",
        "status %d: %s", (int)status, show(err));
  drop(&err);
  if (a == NULL || b == NULL) {
    if (a != NULL) vt->destroy(a);
    if (b != NULL) vt->destroy(b);
    printf("c-conformance: cannot create instances; %d ok, %d failed\n", passed, failed);
    return 1;
  }

  check_bad_requests(a);
  check_limits(a);
  check_huge_inputs(a, config);
  check_locking(a, b);
  check_admin(a, b);
  check_revision_1_2_slots(a, b);
  check_cleanup(a, b);
  if (panicky) check_panics(config);

  vt->destroy(a);
  vt->destroy(b); /* not cleaned up first: destroy must do it */
  check(1, "destroy after cleanup, and destroy without cleanup", "");

  printf("c-conformance %s: %d ok, %d failed\n", vt->name, passed, failed);
  return failed == 0 ? 0 : 1;
}
