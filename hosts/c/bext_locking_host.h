/*
 * bext_locking_host.h: load a bext-locking plugin from C, checked the way the
 * Rust loader checks it. Header-only: include it and link with -ldl. It uses
 * POSIX calls (realpath, stat, lstat, geteuid) and compiles with a strict
 * -std=c11 whatever was included before it.
 *
 *     BextLockingHostPlugin p;
 *     char err[512];
 *     if (bext_locking_host_load("/usr/local/lib/bext-locking/libbext_locking_memory.so",
 *                                &p, err, sizeof err) != 0) {
 *         fprintf(stderr, "%s\n", err);   // "<path>: <reason>", with dlerror() text
 *         return 1;
 *     }
 *     // p.vtable->create(...), ->try_lock(...), ...; free every output string
 *     // with p.vtable->free_string, never free().
 *
 * What bext_locking_host_load checks, in this order (the same as
 * bext-locking-loader, with the same wording):
 *   0. the permission rule every host applies (docs/LOADER.md): the file (a
 *      symlink's target), the folder holding it and every folder above
 *      belong to root or to this process's user; the file and its folder are
 *      not writable by group or others; folders further up may be only when
 *      sticky (like /tmp); a symlink's own folder is checked too. Else
 *      "refused: <what> ...; only root or this user may be able to write a
 *      plugin". bext_locking_host_load_opts(path, BEXT_LOCKING_HOST_ALLOW_INSECURE,
 *      ...) skips this step (for tests, or files vetted some other way);
 *   1. dlopen(path, RTLD_NOW | RTLD_LOCAL) succeeds (else: dlerror text);
 *   2. the library exports bext_locking_plugin_entry (else: "not a bext-locking
 *      plugin", plus dlerror text);
 *   3. entry(BEXT_LOCKING_ABI_VERSION) is not NULL;
 *   4. vtable->abi_version == BEXT_LOCKING_ABI_VERSION;
 *   5. vtable->struct_size >= the size of the v1 vtable;
 *   6. name, version and every slot are non-NULL;
 *   7. name and version are non-empty, valid UTF-8.
 *
 * Libraries are never dlclose'd, also after a failed check (plugins are linked
 * -z nodelete, and their vtable and instances point into their code). The
 * functions are thread-safe: dlopen is, and dlerror() is read on the calling
 * thread right after the call that failed.
 *
 * ABI 1.1 adds optional slots; a 1.0 plugin still loads. For them use
 * bext_locking_host_inspect, bext_locking_host_force_release and
 * bext_locking_host_stats, which report an absent slot as
 * BEXT_LOCKING_ERR_UNSUPPORTED without calling anything, and
 * bext_locking_host_request_json_owned / bext_locking_host_default_owner for
 * the try_lock request with an owner.
 *
 * ABI 1.2 adds lock_wait, cancel_wait and renew_for; use
 * bext_locking_host_lock_wait (which polls try_lock when the plugin cannot
 * wait), bext_locking_host_cancel_wait and bext_locking_host_renew_for.
 *
 * The contract itself is in bext_locking.h (generated) and docs/ABI.md.
 */

#ifndef BEXT_LOCKING_HOST_H
#define BEXT_LOCKING_HOST_H

#if !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE) && !defined(_GNU_SOURCE) && \
    !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <poll.h>
#include <time.h>

#include "bext_locking.h"

#ifdef __cplusplus
extern "C" {
#else
/* realpath and lstat are POSIX.1-2008, but glibc declares them only for some
 * feature macros, which a strict -std=c11 program that included a system
 * header first has not set; a second, compatible declaration is harmless. */
extern char *realpath(const char *path, char *resolved);
extern int lstat(const char *path, struct stat *st);
#endif

/* Path buffers: PATH_MAX where <limits.h> gives it (strict C may hide it). */
#ifdef PATH_MAX
#define BEXT_LOCKING_HOST_PATH_MAX_ PATH_MAX
#else
#define BEXT_LOCKING_HOST_PATH_MAX_ 4096
#endif
#ifdef O_CLOEXEC
#define BEXT_LOCKING_HOST_CLOEXEC_ O_CLOEXEC
#else
#define BEXT_LOCKING_HOST_CLOEXEC_ 0
#endif

/* The size of the v1 vtable: the smallest struct_size a host accepts. Spelled
 * through the last v1 field so it stays right when later versions append. */
#define BEXT_LOCKING_HOST_VTABLE_V1_SIZE \
  (offsetof(BextLockingVTable, free_string) + sizeof(BextLockingFreeStringFn))

/* A validated plugin. Plain data: copy it freely; it stays valid for the life
 * of the process. */
typedef struct BextLockingHostPlugin {
  void *library;                   /* the dlopen handle (never closed) */
  const BextLockingVTable *vtable; /* static table, checked */
  const char *name;                /* == vtable->name, valid UTF-8 */
  const char *version;             /* == vtable->version, valid UTF-8 */
} BextLockingHostPlugin;

/* Writes "<path>: <reason>" into err (when err_len > 0), truncating. */
static inline void bext_locking_host_fail_(char *err, size_t err_len, const char *path,
                                           const char *fmt, ...) {
  va_list ap;
  int n;
  if (err == NULL || err_len == 0) return;
  n = snprintf(err, err_len, "%s: ", path != NULL ? path : "(null)");
  if (n < 0 || (size_t)n >= err_len) return;
  va_start(ap, fmt);
  vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
  va_end(ap);
}

/* Strict UTF-8 (what Rust's str accepts): no overlong forms, no surrogates,
 * nothing above U+10FFFF. */
static inline int bext_locking_host_is_utf8(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    unsigned char c = *p;
    size_t n;
    uint32_t cp;
    size_t i;
    if (c < 0x80) { p++; continue; }
    if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
    else return 0;
    for (i = 1; i <= n; i++) {
      if ((p[i] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return 0;
    p += n + 1;
  }
  return 1;
}

/* A flag of bext_locking_host_load_opts: skip the permission rule. */
#define BEXT_LOCKING_HOST_ALLOW_INSECURE 1u

/* The end of every refusal: what the rule is. */
#define BEXT_LOCKING_HOST_RULE_ "only root or this user may be able to write a plugin"

/* Checks who owns st and whether others may write it; on failure writes the
 * reason ("<what> is writable by its group (mode 0664)") into why. */
static inline int bext_locking_host_owner_mode_(const char *what, const struct stat *st,
                                                int sticky_ok, char *why, size_t why_len) {
  unsigned long me = (unsigned long)geteuid();
  unsigned long owner = (unsigned long)st->st_uid;
  unsigned mode = (unsigned)(st->st_mode & 07777);
  if (owner != 0 && owner != me) {
    snprintf(why, why_len,
             "%s is owned by uid %lu, which is neither root nor this process's user (uid %lu)",
             what, owner, me);
    return -1;
  }
  if ((mode & 022) != 0 && !(sticky_ok && (mode & 01000) != 0)) {
    const char *who = (mode & 020) && (mode & 002) ? "group and others"
                      : (mode & 020)               ? "its group"
                                                   : "others";
    snprintf(why, why_len, "%s is writable by %s (mode %04o)", what, who, mode);
    return -1;
  }
  return 0;
}

/* Checks the canonical folder dir (strictly) and every folder above it
 * (group/other-writable only when sticky). */
static inline int bext_locking_host_check_folder_(const char *dir, char *why, size_t why_len) {
  char buf[BEXT_LOCKING_HOST_PATH_MAX_];
  char what[BEXT_LOCKING_HOST_PATH_MAX_ + 16];
  struct stat st;
  int sticky_ok = 0;
  if (strlen(dir) >= sizeof buf) {
    snprintf(why, why_len, "cannot inspect folder: its name is too long");
    return -1;
  }
  strcpy(buf, dir);
  for (;;) {
    char *slash;
    if (stat(buf, &st) != 0) {
      snprintf(why, why_len, "cannot inspect folder %s: %s", buf, strerror(errno));
      return -1;
    }
    snprintf(what, sizeof what, "folder %s", buf);
    if (bext_locking_host_owner_mode_(what, &st, sticky_ok, why, why_len) != 0) return -1;
    /* Only the folder holding the plugin must be strictly private: a sticky
     * folder further up cannot have ours renamed away. */
    sticky_ok = 1;
    slash = strrchr(buf, '/');
    if (slash == NULL || strcmp(buf, "/") == 0) return 0;
    if (slash == buf) buf[1] = '\0';
    else *slash = '\0';
  }
}

/* The permission rule for path. Returns 0 and fills target (the canonical
 * path, BEXT_LOCKING_HOST_PATH_MAX_ bytes) and *st, or -1 with the reason in why; *refused is
 * 1 when the file is refused (rather than unreadable). */
static inline int bext_locking_host_check_file_(const char *path, char *target, struct stat *st,
                                                int *refused, char *why, size_t why_len) {
  char parent[BEXT_LOCKING_HOST_PATH_MAX_];
  char parent_real[BEXT_LOCKING_HOST_PATH_MAX_];
  char target_dir[BEXT_LOCKING_HOST_PATH_MAX_];
  char what[BEXT_LOCKING_HOST_PATH_MAX_ + 32];
  struct stat link_st;
  char *slash;
  int fd;
  int is_link;
  *refused = 0;
  if (realpath(path, target) == NULL) {
    snprintf(why, why_len, "cannot resolve the file: %s", strerror(errno));
    return -1;
  }
  fd = open(target, O_RDONLY | BEXT_LOCKING_HOST_CLOEXEC_);
  if (fd < 0) {
    snprintf(why, why_len, "cannot open the file: %s", strerror(errno));
    return -1;
  }
  if (fstat(fd, st) != 0) {
    snprintf(why, why_len, "cannot inspect the file: %s", strerror(errno));
    close(fd);
    return -1;
  }
  close(fd);
  if (!S_ISREG(st->st_mode)) {
    snprintf(why, why_len, "not a regular file");
    return -1;
  }
  *refused = 1;
  /* The folder the path names (a symlink's own folder) and those above. */
  if (strlen(path) >= sizeof parent) {
    snprintf(why, why_len, "cannot inspect the folder: the path is too long");
    return -1;
  }
  strcpy(parent, path);
  slash = strrchr(parent, '/');
  if (slash == NULL) strcpy(parent, ".");
  else if (slash == parent) parent[1] = '\0';
  else *slash = '\0';
  if (realpath(parent, parent_real) == NULL) {
    snprintf(why, why_len, "cannot resolve folder %s: %s", parent, strerror(errno));
    return -1;
  }
  if (bext_locking_host_check_folder_(parent_real, why, why_len) != 0) return -1;
  is_link = lstat(path, &link_st) == 0 && S_ISLNK(link_st.st_mode);
  if (is_link) snprintf(what, sizeof what, "the symlink's target %s", target);
  else snprintf(what, sizeof what, "the file");
  if (bext_locking_host_owner_mode_(what, st, 0, why, why_len) != 0) return -1;
  /* A symlink may lead out of that folder: the folder that really holds the
   * code must pass the same checks. */
  strcpy(target_dir, target);
  slash = strrchr(target_dir, '/');
  if (slash == target_dir) target_dir[1] = '\0';
  else if (slash != NULL) *slash = '\0';
  if (strcmp(target_dir, parent_real) != 0 &&
      bext_locking_host_check_folder_(target_dir, why, why_len) != 0)
    return -1;
  return 0;
}

static inline int bext_locking_host_open_(const char *path, const char *open_path,
                                          BextLockingHostPlugin *out, char *err, size_t err_len);

/* Loads and checks the plugin at path, as bext_locking_host_load, with
 * flags: 0, or BEXT_LOCKING_HOST_ALLOW_INSECURE to skip the permission rule. */
static inline int bext_locking_host_load_opts(const char *path, unsigned flags,
                                              BextLockingHostPlugin *out, char *err,
                                              size_t err_len) {
  char target[BEXT_LOCKING_HOST_PATH_MAX_];
  char why[2 * BEXT_LOCKING_HOST_PATH_MAX_ + 160];
  struct stat st;
  struct stat now;
  int refused;
  int rc;
  if (err != NULL && err_len > 0) err[0] = '\0';
  if (path == NULL || out == NULL) {
    bext_locking_host_fail_(err, err_len, path, "bext_locking_host_load: %s is NULL",
                            path == NULL ? "path" : "out");
    return -1;
  }
  if (flags & BEXT_LOCKING_HOST_ALLOW_INSECURE) return bext_locking_host_open_(path, path, out, err, err_len);
  if (bext_locking_host_check_file_(path, target, &st, &refused, why, sizeof why) != 0) {
    if (refused)
      bext_locking_host_fail_(err, err_len, path, "refused: %s; " BEXT_LOCKING_HOST_RULE_, why);
    else
      bext_locking_host_fail_(err, err_len, path, "cannot load library: %s", why);
    return -1;
  }
  /* The checked file by its real path: the checks mean nobody else can
   * replace it or a folder on the way; the inode is compared once more. */
  rc = bext_locking_host_open_(path, target, out, err, err_len);
  if (rc == 0 && (stat(target, &now) != 0 || now.st_dev != st.st_dev || now.st_ino != st.st_ino)) {
    bext_locking_host_fail_(err, err_len, path,
                            "refused: the file was replaced while it was being loaded; "
                            BEXT_LOCKING_HOST_RULE_);
    return -1;
  }
  return rc;
}

/* Loads and checks the plugin at path. Returns 0 and fills *out, or -1 and
 * writes the reason (naming the file) into err. *out is untouched on failure. */
static inline int bext_locking_host_load(const char *path, BextLockingHostPlugin *out,
                                         char *err, size_t err_len) {
  return bext_locking_host_load_opts(path, 0, out, err, err_len);
}

/* dlopen(open_path) and the vtable checks; messages name path. */
static inline int bext_locking_host_open_(const char *path, const char *open_path,
                                          BextLockingHostPlugin *out, char *err, size_t err_len) {
  void *lib;
  void *sym;
  const char *dl;
  BextLockingEntryFn entry;
  const BextLockingVTable *vt;
  const char *null_field = NULL;

  lib = dlopen(open_path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    dl = dlerror();
    bext_locking_host_fail_(err, err_len, path, "cannot load library: %s",
                            dl != NULL ? dl : "unknown dlopen error");
    return -1;
  }
  (void)dlerror(); /* clear, so a NULL result below is told apart from an error */
  sym = dlsym(lib, "bext_locking_plugin_entry");
  dl = dlerror();
  if (sym == NULL || dl != NULL) {
    bext_locking_host_fail_(err, err_len, path,
                            "not a bext-locking plugin (no `bext_locking_plugin_entry` symbol): %s",
                            dl != NULL ? dl : "the symbol is NULL");
    return -1;
  }
  /* ISO C has no conversion from void * to a function pointer; POSIX
   * guarantees the representation, so copy the bits. */
  memcpy(&entry, &sym, sizeof entry);
  vt = entry(BEXT_LOCKING_ABI_VERSION);
  if (vt == NULL) {
    bext_locking_host_fail_(err, err_len, path, "plugin refused host ABI version %u",
                            (unsigned)BEXT_LOCKING_ABI_VERSION);
    return -1;
  }
  if (vt->abi_version != BEXT_LOCKING_ABI_VERSION) {
    bext_locking_host_fail_(err, err_len, path,
                            "plugin is built for ABI version %u, this host speaks version %u",
                            (unsigned)vt->abi_version, (unsigned)BEXT_LOCKING_ABI_VERSION);
    return -1;
  }
  if (vt->struct_size < BEXT_LOCKING_HOST_VTABLE_V1_SIZE) {
    bext_locking_host_fail_(err, err_len, path,
                            "vtable struct_size is %u bytes, smaller than the %u bytes of ABI v1",
                            (unsigned)vt->struct_size, (unsigned)BEXT_LOCKING_HOST_VTABLE_V1_SIZE);
    return -1;
  }
  if (vt->name == NULL) null_field = "name";
  else if (vt->version == NULL) null_field = "version";
  else if (vt->describe == NULL) null_field = "describe";
  else if (vt->create == NULL) null_field = "create";
  else if (vt->try_lock == NULL) null_field = "try_lock";
  else if (vt->renew == NULL) null_field = "renew";
  else if (vt->release == NULL) null_field = "release";
  else if (vt->cleanup == NULL) null_field = "cleanup";
  else if (vt->destroy == NULL) null_field = "destroy";
  else if (vt->free_string == NULL) null_field = "free_string";
  if (null_field != NULL) {
    bext_locking_host_fail_(err, err_len, path, "vtable field `%s` is NULL", null_field);
    return -1;
  }
  if (vt->name[0] == '\0' || !bext_locking_host_is_utf8(vt->name)) {
    bext_locking_host_fail_(err, err_len, path, "vtable `name` is empty or not valid UTF-8");
    return -1;
  }
  if (vt->version[0] == '\0' || !bext_locking_host_is_utf8(vt->version)) {
    bext_locking_host_fail_(err, err_len, path, "vtable `version` is empty or not valid UTF-8");
    return -1;
  }
  out->library = lib;
  out->vtable = vt;
  out->name = vt->name;
  out->version = vt->version;
  return 0;
}

/* The constant's name for a status code, for logs. */
static inline const char *bext_locking_host_status_name(int32_t status) {
  switch (status) {
    case BEXT_LOCKING_OK: return "BEXT_LOCKING_OK";
    case BEXT_LOCKING_CONTENDED: return "BEXT_LOCKING_CONTENDED";
    case BEXT_LOCKING_CANCELLED: return "BEXT_LOCKING_CANCELLED";
    case BEXT_LOCKING_ERR_BACKEND: return "BEXT_LOCKING_ERR_BACKEND";
    case BEXT_LOCKING_ERR_INVALID: return "BEXT_LOCKING_ERR_INVALID";
    case BEXT_LOCKING_ERR_PANIC: return "BEXT_LOCKING_ERR_PANIC";
    case BEXT_LOCKING_ERR_UNSUPPORTED: return "BEXT_LOCKING_ERR_UNSUPPORTED";
    default: return status < 0 ? "unknown error status" : "unknown status";
  }
}

/* ---- requests ------------------------------------------------------------
 * The builders below write a JSON request into buf and return the length the
 * full request needs (without the NUL), like snprintf: the request was
 * truncated when that is >= len (buf may be NULL with len 0 to measure).
 * They return -1 when a required string is NULL. Strings are escaped as
 * JSON; their limits (key, owner) are checked by the plugin, which names the
 * field it refuses. */

/* Appends one character, counting it even when buf is full. */
static inline void bext_locking_host_put_(char *buf, size_t len, size_t *n, char ch) {
  if (buf != NULL && *n + 1 < len) buf[*n] = ch;
  (*n)++;
}

static inline void bext_locking_host_put_raw_(char *buf, size_t len, size_t *n, const char *s) {
  for (; *s; s++) bext_locking_host_put_(buf, len, n, *s);
}

/* Appends s as the contents of a JSON string (quotes not included). Bytes
 * from 0x80 up are copied as they are: the plugin checks they are UTF-8. */
static inline void bext_locking_host_put_escaped_(char *buf, size_t len, size_t *n,
                                                  const char *s) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *k = (const unsigned char *)s;
  for (; *k; k++) {
    if (*k == '"' || *k == '\\') {
      bext_locking_host_put_(buf, len, n, '\\');
      bext_locking_host_put_(buf, len, n, (char)*k);
    } else if (*k < 0x20) {
      bext_locking_host_put_raw_(buf, len, n, "\\u00");
      bext_locking_host_put_(buf, len, n, hex[*k >> 4]);
      bext_locking_host_put_(buf, len, n, hex[*k & 15]);
    } else {
      bext_locking_host_put_(buf, len, n, (char)*k);
    }
  }
}

static inline int bext_locking_host_finish_(char *buf, size_t len, size_t n) {
  if (buf != NULL && len > 0) buf[n < len ? n : len - 1] = '\0';
  return (int)n;
}

/* Writes the try_lock request {"key":"...","ttl_ms":N,"owner":"..."} into
 * buf; owner NULL leaves it out (the plugin then stores no owner). Since
 * ABI 1.1 a plugin with the "owner" capability stores the owner and inspect
 * returns it; older plugins ignore the field. Returns -1 when key is NULL. */
static inline int bext_locking_host_request_json_owned(char *buf, size_t len, const char *key,
                                                       uint64_t ttl_ms, const char *owner) {
  size_t n = 0;
  char tail[48];
  if (key == NULL) return -1;
  bext_locking_host_put_raw_(buf, len, &n, "{\"key\":\"");
  bext_locking_host_put_escaped_(buf, len, &n, key);
  snprintf(tail, sizeof tail, "\",\"ttl_ms\":%llu", (unsigned long long)ttl_ms);
  bext_locking_host_put_raw_(buf, len, &n, tail);
  if (owner != NULL) {
    bext_locking_host_put_raw_(buf, len, &n, ",\"owner\":\"");
    bext_locking_host_put_escaped_(buf, len, &n, owner);
    bext_locking_host_put_(buf, len, &n, '"');
  }
  bext_locking_host_put_(buf, len, &n, '}');
  return bext_locking_host_finish_(buf, len, n);
}

/* Writes the try_lock request {"key":"...","ttl_ms":N} into buf, without an
 * owner (see bext_locking_host_request_json_owned). Returns -1 when key is
 * NULL. */
static inline int bext_locking_host_request_json(char *buf, size_t len, const char *key,
                                                 uint64_t ttl_ms) {
  return bext_locking_host_request_json_owned(buf, len, key, ttl_ms, NULL);
}

/* Writes the inspect request {"key":"..."} into buf. Returns -1 when key is
 * NULL. */
static inline int bext_locking_host_inspect_json(char *buf, size_t len, const char *key) {
  size_t n = 0;
  if (key == NULL) return -1;
  bext_locking_host_put_raw_(buf, len, &n, "{\"key\":\"");
  bext_locking_host_put_escaped_(buf, len, &n, key);
  bext_locking_host_put_raw_(buf, len, &n, "\"}");
  return bext_locking_host_finish_(buf, len, n);
}

/* Writes the force_release request {"key":"...","if_fence":N} into buf;
 * if_fence NULL leaves it out (break whoever holds the key). Returns -1
 * when key is NULL. */
static inline int bext_locking_host_force_release_json(char *buf, size_t len, const char *key,
                                                       const uint64_t *if_fence) {
  size_t n = 0;
  char tail[48];
  if (key == NULL) return -1;
  bext_locking_host_put_raw_(buf, len, &n, "{\"key\":\"");
  bext_locking_host_put_escaped_(buf, len, &n, key);
  bext_locking_host_put_(buf, len, &n, '"');
  if (if_fence != NULL) {
    snprintf(tail, sizeof tail, ",\"if_fence\":%llu", (unsigned long long)*if_fence);
    bext_locking_host_put_raw_(buf, len, &n, tail);
  }
  bext_locking_host_put_(buf, len, &n, '}');
  return bext_locking_host_finish_(buf, len, n);
}

/* Writes the default owner, "hostname:pid" (as the Rust loader and the Go
 * package send it), into buf, truncating like snprintf and never past
 * BEXT_LOCKING_MAX_OWNER_BYTES. Returns the length it needs, or -1 when the
 * system will not tell. The hostname is uname's nodename, which is what
 * gethostname returns on Linux, and is available in strict ISO C builds. */
static inline int bext_locking_host_default_owner(char *buf, size_t len) {
  struct utsname u;
  const char *host = "localhost";
  char owner[BEXT_LOCKING_MAX_OWNER_BYTES + 1];
  int n;
  if (uname(&u) == 0 && u.nodename[0] != '\0' && bext_locking_host_is_utf8(u.nodename))
    host = u.nodename;
  n = snprintf(owner, sizeof owner, "%s:%ld", host, (long)getpid());
  if (n < 0) return -1;
  /* Cut on a UTF-8 character boundary, as the other hosts do. */
  if ((size_t)n > BEXT_LOCKING_MAX_OWNER_BYTES) {
    size_t end = BEXT_LOCKING_MAX_OWNER_BYTES;
    while (end > 0 && ((unsigned char)owner[end] & 0xC0) == 0x80) end--;
    owner[end] = '\0';
    n = (int)end;
  }
  return snprintf(buf, len, "%s", owner) < 0 ? -1 : n;
}

/* ---- the optional slots of ABI 1.1 ---------------------------------------
 * A 1.0 plugin's vtable ends at free_string; a slot exists when struct_size
 * covers it and its pointer is not NULL. The helpers below check that and,
 * when the slot is absent, call nothing: they return
 * BEXT_LOCKING_ERR_UNSUPPORTED and write a message such as
 * "plugin `abi-1-0` (ABI 1.0) has no `inspect` slot" into err. */

/* Whether the vtable covers field (and it is not NULL). Reads nothing past
 * struct_size. */
#define BEXT_LOCKING_HOST_HAS_SLOT(vt, field)                                 \
  ((vt) != NULL &&                                                            \
   (vt)->struct_size >= offsetof(BextLockingVTable, field) + sizeof((vt)->field) && \
   (vt)->field != NULL)

/* The sizes of the 1.1 and 1.2 vtables, through their last slots. */
#define BEXT_LOCKING_HOST_VTABLE_V1_1_SIZE \
  (offsetof(BextLockingVTable, stats) + sizeof(BextLockingCleanupFn))
#define BEXT_LOCKING_HOST_VTABLE_V1_2_SIZE \
  (offsetof(BextLockingVTable, renew_for) + sizeof(BextLockingCallFn))

/* The ABI revision the plugin's vtable covers: 0 for a 1.0 plugin, 1 when it
 * has room for the 1.1 slots, 2 for the 1.2 slots. */
static inline unsigned bext_locking_host_abi_minor(const BextLockingHostPlugin *p) {
  if (p == NULL || p->vtable == NULL) return 0;
  if (p->vtable->struct_size >= BEXT_LOCKING_HOST_VTABLE_V1_2_SIZE) return 2u;
  return p->vtable->struct_size >= BEXT_LOCKING_HOST_VTABLE_V1_1_SIZE ? 1u : 0u;
}

/* Whether the plugin has the slot named `slot` ("inspect", "force_release",
 * "stats", "lock_wait", "cancel_wait", "renew_for"; the 1.0 slots always). 0 for an unknown name or a NULL p. */
static inline int bext_locking_host_has_slot(const BextLockingHostPlugin *p, const char *slot) {
  static const char *const v1_0[] = {"describe", "create",  "try_lock", "renew",
                                     "release",  "cleanup", "destroy",  "free_string"};
  size_t i;
  if (p == NULL || p->vtable == NULL || slot == NULL) return 0;
  if (strcmp(slot, "inspect") == 0) return BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, inspect);
  if (strcmp(slot, "force_release") == 0)
    return BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, force_release);
  if (strcmp(slot, "stats") == 0) return BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, stats);
  if (strcmp(slot, "lock_wait") == 0) return BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, lock_wait);
  if (strcmp(slot, "cancel_wait") == 0) return BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, cancel_wait);
  if (strcmp(slot, "renew_for") == 0) return BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, renew_for);
  for (i = 0; i < sizeof v1_0 / sizeof v1_0[0]; i++)
    if (strcmp(slot, v1_0[i]) == 0) return 1;
  return 0;
}

/* Writes msg (printf-style) into err when err_len > 0. */
static inline void bext_locking_host_say_(char *err, size_t err_len, const char *fmt, ...) {
  va_list ap;
  if (err == NULL || err_len == 0) return;
  va_start(ap, fmt);
  vsnprintf(err, err_len, fmt, ap);
  va_end(ap);
}

/* The checks every optional-slot helper makes before calling: clears
 * *out_json and err, refuses a NULL plugin (ERR_INVALID), reports an absent
 * slot (ERR_UNSUPPORTED). Returns BEXT_LOCKING_OK when the slot may be
 * called. */
static inline int32_t bext_locking_host_precheck_(const BextLockingHostPlugin *p, int present,
                                                  const char *slot, char **out_json, char *err,
                                                  size_t err_len) {
  if (err != NULL && err_len > 0) err[0] = '\0';
  if (out_json != NULL) *out_json = NULL;
  if (p == NULL || p->vtable == NULL) {
    bext_locking_host_say_(err, err_len, "bext_locking_host_%s: the plugin is NULL", slot);
    return BEXT_LOCKING_ERR_INVALID;
  }
  if (!present) {
    bext_locking_host_say_(err, err_len, "plugin `%s` (ABI 1.%u) has no `%s` slot", p->name,
                           bext_locking_host_abi_minor(p), slot);
    return BEXT_LOCKING_ERR_UNSUPPORTED;
  }
  return BEXT_LOCKING_OK;
}

/* inspect(instance, request_json, out_json) when the plugin has the slot.
 * On BEXT_LOCKING_OK *out_json is {"key","held","fence"?,"owner"?,
 * "expires_in_ms"?,"held_for_ms"?}; on a plugin's error status it is the
 * plugin's error object. Either way free it with p->vtable->free_string.
 * When the helper itself refuses (absent slot: ERR_UNSUPPORTED; NULL p:
 * ERR_INVALID) *out_json stays NULL and the reason is in err. NULL instance,
 * request or out_json are passed on: the plugin answers ERR_INVALID. */
static inline int32_t bext_locking_host_inspect(const BextLockingHostPlugin *p,
                                                BextLockingInstance *instance,
                                                const char *request_json, char **out_json,
                                                char *err, size_t err_len) {
  int32_t status = bext_locking_host_precheck_(
      p, p != NULL && BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, inspect), "inspect", out_json, err,
      err_len);
  if (status != BEXT_LOCKING_OK) return status;
  return p->vtable->inspect(instance, request_json, out_json);
}

/* force_release(instance, request_json, out_json) when the plugin has the
 * slot: on BEXT_LOCKING_OK *out_json is {"released":bool,"fence"?}.
 * Otherwise as bext_locking_host_inspect. */
static inline int32_t bext_locking_host_force_release(const BextLockingHostPlugin *p,
                                                      BextLockingInstance *instance,
                                                      const char *request_json, char **out_json,
                                                      char *err, size_t err_len) {
  int32_t status = bext_locking_host_precheck_(
      p, p != NULL && BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, force_release), "force_release",
      out_json, err, err_len);
  if (status != BEXT_LOCKING_OK) return status;
  return p->vtable->force_release(instance, request_json, out_json);
}

/* stats(instance, out_json) when the plugin has the slot: on
 * BEXT_LOCKING_OK *out_json is the statistics object (docs/ABI.md).
 * Otherwise as bext_locking_host_inspect. */
static inline int32_t bext_locking_host_stats(const BextLockingHostPlugin *p,
                                              BextLockingInstance *instance, char **out_json,
                                              char *err, size_t err_len) {
  int32_t status = bext_locking_host_precheck_(
      p, p != NULL && BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, stats), "stats", out_json, err,
      err_len);
  if (status != BEXT_LOCKING_OK) return status;
  return p->vtable->stats(instance, out_json);
}

/* ---- the optional slots of ABI 1.2: waiting, cancelling, renew_for -------
 * bext_locking_host_lock_wait waits for a key with the plugin's lock_wait
 * slot, woken by the backend's own notification, and falls back to polling
 * try_lock with jittered backoff (10 ms doubling to 250 ms, as the Rust
 * loader does) when the plugin has no such slot (ABI 1.0, 1.1) or its slot
 * answers BEXT_LOCKING_ERR_UNSUPPORTED. Either way another thread can end the
 * wait with bext_locking_host_cancel_wait:
 *
 *     BextLockingHostWait w;
 *     bext_locking_host_wait_init(&w);
 *     // thread A:
 *     status = bext_locking_host_lock_wait(&p, inst, "jobs/nightly", 30000, owner,
 *                                          60000, &w, &handle, &sent_ago_us, err, sizeof err);
 *     // thread B, any time (also before A got into the call):
 *     bext_locking_host_cancel_wait(&p, inst, &w, err, sizeof err);
 *
 * A wait struct is for one wait: init it again (a new id) for the next. */

/* Pauses of the polling fallback, in milliseconds (the Rust loader's
 * POLL_FIRST and POLL_MAX), and the longest slice a pause is slept in
 * before the cancel flag is looked at again. */
#define BEXT_LOCKING_HOST_POLL_FIRST_MS 10u
#define BEXT_LOCKING_HOST_POLL_MAX_MS 250u
#define BEXT_LOCKING_HOST_POLL_SLICE_MS 20u

/* One wait that another thread may cancel. Initialise it with
 * bext_locking_host_wait_init; read `polled` after the wait. */
typedef struct BextLockingHostWait {
  uint64_t id;   /* sent as "wait_id"; unique in the process (see wait_init) */
  int cancelled; /* set by bext_locking_host_cancel_wait; read atomically */
  int polled;    /* 1 when the helper waited by polling try_lock, with the reason in why */
  char why[160]; /* why it polled: "it has no lock_wait slot (ABI 1.1)", ... */
} BextLockingHostWait;

/* A monotonic clock in microseconds (CLOCK_MONOTONIC where <time.h> gives
 * it, else C11's timespec_get). */
static inline uint64_t bext_locking_host_now_us_(void) {
  struct timespec ts;
#ifdef CLOCK_MONOTONIC
  if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) return 0;
#else
  if (timespec_get(&ts, TIME_UTC) != TIME_UTC) return 0;
#endif
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Gives w a fresh id and clears its flags. Ids come from a counter tagged
 * with the counter's own address, so the ids of two files that each
 * include this header (each has its own counter) do not collide either. */
static inline void bext_locking_host_wait_init(BextLockingHostWait *w) {
  static uint64_t counter;
  uint64_t n;
  uint64_t tag;
  if (w == NULL) return;
  n = __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
  tag = (uint64_t)(uintptr_t)&counter;
  tag ^= tag >> 29;
  tag *= 0xbf58476d1ce4e5b9ull;
  tag ^= tag >> 32;
  /* 31 bits of tag, 32 of count: stays a JSON-safe integer below 2^63. */
  w->id = ((tag & 0x7fffffffull) << 32) | (n & 0xffffffffull);
  __atomic_store_n(&w->cancelled, 0, __ATOMIC_SEQ_CST);
  w->polled = 0;
  w->why[0] = '\0';
}

/* Whether w was cancelled. */
static inline int bext_locking_host_wait_cancelled(const BextLockingHostWait *w) {
  return w != NULL && __atomic_load_n(&w->cancelled, __ATOMIC_SEQ_CST) != 0;
}

/* Writes the lock_wait request {"key","ttl_ms","owner"?,"wait_ms",
 * "wait_id"?} into buf, like the other builders; owner NULL or wait_id NULL
 * leaves the field out. Returns -1 when key is NULL. */
static inline int bext_locking_host_lock_wait_json(char *buf, size_t len, const char *key,
                                                   uint64_t ttl_ms, const char *owner,
                                                   uint64_t wait_ms, const uint64_t *wait_id) {
  size_t n = 0;
  char tail[96];
  if (key == NULL) return -1;
  bext_locking_host_put_raw_(buf, len, &n, "{\"key\":\"");
  bext_locking_host_put_escaped_(buf, len, &n, key);
  snprintf(tail, sizeof tail, "\",\"ttl_ms\":%llu,\"wait_ms\":%llu", (unsigned long long)ttl_ms,
           (unsigned long long)wait_ms);
  bext_locking_host_put_raw_(buf, len, &n, tail);
  if (wait_id != NULL) {
    snprintf(tail, sizeof tail, ",\"wait_id\":%llu", (unsigned long long)*wait_id);
    bext_locking_host_put_raw_(buf, len, &n, tail);
  }
  if (owner != NULL) {
    bext_locking_host_put_raw_(buf, len, &n, ",\"owner\":\"");
    bext_locking_host_put_escaped_(buf, len, &n, owner);
    bext_locking_host_put_(buf, len, &n, '"');
  }
  bext_locking_host_put_(buf, len, &n, '}');
  return bext_locking_host_finish_(buf, len, n);
}

/* Writes the renew_for request {"handle":HANDLE,"ttl_ms":N} into buf; the
 * handle is copied as the plugin wrote it. Returns -1 when handle_json is
 * NULL. */
static inline int bext_locking_host_renew_for_json(char *buf, size_t len, const char *handle_json,
                                                   uint64_t ttl_ms) {
  size_t n = 0;
  char tail[48];
  if (handle_json == NULL) return -1;
  bext_locking_host_put_raw_(buf, len, &n, "{\"handle\":");
  bext_locking_host_put_raw_(buf, len, &n, handle_json);
  snprintf(tail, sizeof tail, ",\"ttl_ms\":%llu}", (unsigned long long)ttl_ms);
  bext_locking_host_put_raw_(buf, len, &n, tail);
  return bext_locking_host_finish_(buf, len, n);
}

/* Sleeps ms milliseconds in slices, returning early (1) once w is
 * cancelled; 0 when the whole pause was slept. */
static inline int bext_locking_host_pause_(const BextLockingHostWait *w, uint64_t ms) {
  while (ms > 0) {
    uint64_t slice = ms < BEXT_LOCKING_HOST_POLL_SLICE_MS ? ms : BEXT_LOCKING_HOST_POLL_SLICE_MS;
    if (bext_locking_host_wait_cancelled(w)) return 1;
    (void)poll(NULL, 0, (int)slice);
    ms -= slice;
  }
  return bext_locking_host_wait_cancelled(w);
}

/* The polling fallback: try_lock with jittered backoff until the lock is
 * ours, the deadline passes or w is cancelled. */
static inline int32_t bext_locking_host_poll_wait_(const BextLockingHostPlugin *p,
                                                   BextLockingInstance *instance,
                                                   const char *request, uint64_t deadline_us,
                                                   const BextLockingHostWait *w, char **out_json,
                                                   uint64_t *out_sent_ago_us) {
  uint64_t backoff = BEXT_LOCKING_HOST_POLL_FIRST_MS;
  uint64_t seed = bext_locking_host_now_us_() ^ (w != NULL ? w->id * 0x9e3779b97f4a7c15ull : 1u);
  for (;;) {
    uint64_t sent, now, half, pause;
    int32_t status;
    if (bext_locking_host_wait_cancelled(w)) return BEXT_LOCKING_CANCELLED;
    sent = bext_locking_host_now_us_();
    status = p->vtable->try_lock(instance, request, out_json);
    now = bext_locking_host_now_us_();
    if (status == BEXT_LOCKING_OK) {
      if (out_sent_ago_us != NULL) *out_sent_ago_us = now > sent ? now - sent : 0;
      return status;
    }
    if (status != BEXT_LOCKING_CONTENDED) return status;
    if (now >= deadline_us) return BEXT_LOCKING_CONTENDED;
    /* Full jitter on the upper half of the backoff, so that waiters that
     * collided once do not collide again in step (xorshift64). */
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    half = backoff / 2;
    pause = half + (half > 0 ? seed % half : 0);
    if (pause * 1000u > deadline_us - now) pause = (deadline_us - now + 999u) / 1000u;
    backoff = backoff * 2 < BEXT_LOCKING_HOST_POLL_MAX_MS ? backoff * 2 : BEXT_LOCKING_HOST_POLL_MAX_MS;
    if (bext_locking_host_pause_(w, pause)) return BEXT_LOCKING_CANCELLED;
  }
}

/* Waits up to wait_ms for key (ABI 1.2 lock_wait, or polling; see above).
 * owner NULL sends none. w may be NULL (the wait then cannot be
 * cancelled); otherwise it must have been initialised, and it must stay
 * alive until the call returns.
 *
 * Returns BEXT_LOCKING_OK with the handle in *out_json (free it with
 * p->vtable->free_string; renew and release it as a try_lock handle) and,
 * when out_sent_ago_us is not NULL, how many microseconds before the return
 * the request that took the lock was sent: date the lease from then.
 * BEXT_LOCKING_CONTENDED when wait_ms passed, BEXT_LOCKING_CANCELLED when w
 * was cancelled (*out_json NULL for both). A negative status is the
 * plugin's error, with its error object in *out_json, or the helper's own
 * refusal (NULL p, key or out_json, wait_ms over BEXT_LOCKING_MAX_TTL_MS,
 * no memory), with *out_json NULL and the reason in err. When it polled,
 * w->polled is 1 and w->why says why: a host shows that in its verbose
 * output. */
static inline int32_t bext_locking_host_lock_wait(const BextLockingHostPlugin *p,
                                                  BextLockingInstance *instance, const char *key,
                                                  uint64_t ttl_ms, const char *owner,
                                                  uint64_t wait_ms, BextLockingHostWait *w,
                                                  char **out_json, uint64_t *out_sent_ago_us,
                                                  char *err, size_t err_len) {
  uint64_t start = bext_locking_host_now_us_();
  int32_t status;
  int need;
  char *request;
  const uint64_t *id = w != NULL ? &w->id : NULL;
  if (err != NULL && err_len > 0) err[0] = '\0';
  if (out_sent_ago_us != NULL) *out_sent_ago_us = 0;
  if (out_json != NULL) *out_json = NULL;
  if (p == NULL || p->vtable == NULL || key == NULL || out_json == NULL) {
    bext_locking_host_say_(err, err_len, "bext_locking_host_lock_wait: %s is NULL",
                           p == NULL || p->vtable == NULL ? "the plugin"
                           : key == NULL                  ? "key"
                                                          : "out_json");
    return BEXT_LOCKING_ERR_INVALID;
  }
  if (wait_ms > BEXT_LOCKING_MAX_TTL_MS) {
    bext_locking_host_say_(err, err_len, "`wait_ms` is %llu, over the longest wait (%llu ms)",
                           (unsigned long long)wait_ms,
                           (unsigned long long)BEXT_LOCKING_MAX_TTL_MS);
    return BEXT_LOCKING_ERR_INVALID;
  }
  if (bext_locking_host_wait_cancelled(w)) return BEXT_LOCKING_CANCELLED;
  if (BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, lock_wait)) {
    need = bext_locking_host_lock_wait_json(NULL, 0, key, ttl_ms, owner, wait_ms, id);
    request = (char *)malloc((size_t)need + 1);
    if (request == NULL) {
      bext_locking_host_say_(err, err_len, "bext_locking_host_lock_wait: out of memory");
      return BEXT_LOCKING_ERR_INVALID;
    }
    bext_locking_host_lock_wait_json(request, (size_t)need + 1, key, ttl_ms, owner, wait_ms, id);
    status = p->vtable->lock_wait(instance, request, out_json, out_sent_ago_us);
    free(request);
    if (status != BEXT_LOCKING_ERR_UNSUPPORTED) return status;
    if (w != NULL) {
      /* The error object's message, without the JSON around it. */
      const char *m = *out_json != NULL ? strstr(*out_json, "\"message\":\"") : NULL;
      size_t n = 0;
      if (m != NULL) {
        m += 11;
        while (m[n] != '\0' && m[n] != '"' && n < 110) n++;
      }
      snprintf(w->why, sizeof w->why, "its lock_wait is unsupported here: %.*s", (int)n,
               m != NULL ? m : "");
    }
    p->vtable->free_string(*out_json);
    *out_json = NULL;
  } else if (w != NULL) {
    snprintf(w->why, sizeof w->why, "it has no lock_wait slot (ABI 1.%u)",
             bext_locking_host_abi_minor(p));
  }
  if (w != NULL) w->polled = 1;
  need = bext_locking_host_request_json_owned(NULL, 0, key, ttl_ms, owner);
  request = (char *)malloc((size_t)need + 1);
  if (request == NULL) {
    bext_locking_host_say_(err, err_len, "bext_locking_host_lock_wait: out of memory");
    return BEXT_LOCKING_ERR_INVALID;
  }
  bext_locking_host_request_json_owned(request, (size_t)need + 1, key, ttl_ms, owner);
  status = bext_locking_host_poll_wait_(p, instance, request, start + wait_ms * 1000u, w,
                                        out_json, out_sent_ago_us);
  free(request);
  return status;
}

/* Cancels the wait w, from any thread: a bext_locking_host_lock_wait with w
 * returns BEXT_LOCKING_CANCELLED soon (within 100 ms on the plugin's slot,
 * within a polling slice otherwise), also when it has not started yet.
 * Calls the plugin's cancel_wait slot when it has one (which leaves
 * nothing on the server); returns its status, or BEXT_LOCKING_OK when the
 * plugin has no such slot. NULL p or w: BEXT_LOCKING_ERR_INVALID. */
static inline int32_t bext_locking_host_cancel_wait(const BextLockingHostPlugin *p,
                                                    BextLockingInstance *instance,
                                                    BextLockingHostWait *w, char *err,
                                                    size_t err_len) {
  char request[48];
  char *out = NULL;
  int32_t status;
  if (err != NULL && err_len > 0) err[0] = '\0';
  if (p == NULL || p->vtable == NULL || w == NULL) {
    bext_locking_host_say_(err, err_len, "bext_locking_host_cancel_wait: %s is NULL",
                           w == NULL ? "the wait" : "the plugin");
    return BEXT_LOCKING_ERR_INVALID;
  }
  __atomic_store_n(&w->cancelled, 1, __ATOMIC_SEQ_CST);
  if (!BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, cancel_wait)) return BEXT_LOCKING_OK;
  snprintf(request, sizeof request, "{\"wait_id\":%llu}", (unsigned long long)w->id);
  status = p->vtable->cancel_wait(instance, request, &out);
  if (status != BEXT_LOCKING_OK)
    bext_locking_host_say_(err, err_len, "cancel_wait failed: %s", out != NULL ? out : "");
  p->vtable->free_string(out);
  return status;
}

/* renew_for with {"handle":handle_json,"ttl_ms":ttl_ms} when the plugin
 * has the slot: sets the lease's remaining time to ttl_ms once. OK writes
 * nothing; an error means the lock is lost, as for renew (the plugin's
 * error object in *out_json), or BEXT_LOCKING_ERR_UNSUPPORTED when the
 * backend cannot. An absent slot (ABI 1.0, 1.1) is ERR_UNSUPPORTED with
 * "plugin `X` (ABI 1.1) has no `renew_for` slot" in err and nothing
 * called; so is a NULL p (ERR_INVALID) or handle_json (ERR_INVALID). */
static inline int32_t bext_locking_host_renew_for(const BextLockingHostPlugin *p,
                                                  BextLockingInstance *instance,
                                                  const char *handle_json, uint64_t ttl_ms,
                                                  char **out_json, char *err, size_t err_len) {
  int need;
  char *request;
  int32_t status = bext_locking_host_precheck_(
      p, p != NULL && BEXT_LOCKING_HOST_HAS_SLOT(p->vtable, renew_for), "renew_for", out_json,
      err, err_len);
  if (status != BEXT_LOCKING_OK) return status;
  if (handle_json == NULL) {
    bext_locking_host_say_(err, err_len, "bext_locking_host_renew_for: handle_json is NULL");
    return BEXT_LOCKING_ERR_INVALID;
  }
  need = bext_locking_host_renew_for_json(NULL, 0, handle_json, ttl_ms);
  request = (char *)malloc((size_t)need + 1);
  if (request == NULL) {
    bext_locking_host_say_(err, err_len, "bext_locking_host_renew_for: out of memory");
    return BEXT_LOCKING_ERR_INVALID;
  }
  bext_locking_host_renew_for_json(request, (size_t)need + 1, handle_json, ttl_ms);
  status = p->vtable->renew_for(instance, request, out_json);
  free(request);
  return status;
}

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* BEXT_LOCKING_HOST_H */
