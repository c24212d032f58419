package bextlock

// Everything that touches C lives in this file. Go cannot call a C function
// pointer, so every vtable slot is called through a static trampoline below;
// and because dlerror is per OS thread (and a goroutine may move between
// threads between two cgo calls), dlopen, dlsym and dlerror happen in one
// C call.

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "bext_locking.h"

enum { BL_OPEN_OK = 0, BL_OPEN_DLOPEN = 1, BL_OPEN_NO_ENTRY = 2, BL_OPEN_REFUSED = 3 };

typedef const BextLockingVTable *(*bl_entry_fn)(uint32_t host_abi_version);

typedef struct {
	const BextLockingVTable *vtable;
	int failure;
	// malloc'd copy of dlerror's text (dlerror's own buffer is reused by the
	// next dl* call on this thread); the Go side frees it with free().
	char *message;
} bl_opened;

static char *bl_dup_dlerror(const char *fallback) {
	const char *e = dlerror();
	return strdup(e != NULL ? e : fallback);
}

// Opens the library and calls its entry. The library is never closed: the
// vtable and every instance point into its code, and plugins are linked
// -z nodelete anyway.
static bl_opened bl_open(const char *path) {
	bl_opened r = { NULL, BL_OPEN_OK, NULL };
	dlerror();
	void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) {
		r.failure = BL_OPEN_DLOPEN;
		r.message = bl_dup_dlerror("dlopen failed without a message");
		return r;
	}
	dlerror();
	void *sym = dlsym(lib, "bext_locking_plugin_entry");
	if (sym == NULL) {
		r.failure = BL_OPEN_NO_ENTRY;
		r.message = bl_dup_dlerror("the symbol's address is NULL");
		return r;
	}
	bl_entry_fn entry;
	memcpy(&entry, &sym, sizeof entry);
	r.vtable = entry(BEXT_LOCKING_ABI_VERSION);
	if (r.vtable == NULL) {
		r.failure = BL_OPEN_REFUSED;
	}
	return r;
}

typedef struct {
	int32_t status;
	char *out;
} bl_out;

static bl_out bl_describe(const BextLockingVTable *vt) {
	bl_out r = { 0, NULL };
	r.status = vt->describe(&r.out);
	return r;
}

typedef struct {
	int32_t status;
	BextLockingInstance *instance;
	char *error;
} bl_created;

static bl_created bl_create(const BextLockingVTable *vt, const char *config_json) {
	bl_created r = { 0, NULL, NULL };
	r.status = vt->create(config_json, &r.instance, &r.error);
	return r;
}

// The size of the 1.0 vtable, through its last field: the smallest a host
// accepts (sizeof(BextLockingVTable) grows with every revision).
static uint32_t bl_v1_size(void) {
	return (uint32_t)(offsetof(BextLockingVTable, free_string) + sizeof(BextLockingFreeStringFn));
}

// Whether an optional slot exists: struct_size covers it and it is not
// NULL. Nothing past struct_size is read.
#define BL_HAS(vt, field) \
	((vt)->struct_size >= offsetof(BextLockingVTable, field) + sizeof((vt)->field) && (vt)->field != NULL)

enum { BL_TRY_LOCK = 0, BL_RENEW = 1, BL_RELEASE = 2, BL_INSPECT = 3, BL_FORCE_RELEASE = 4, BL_STATS = 5,
	BL_LOCK_WAIT = 6, BL_CANCEL_WAIT = 7, BL_RENEW_FOR = 8 };

static int bl_has_slot(const BextLockingVTable *vt, int slot) {
	switch (slot) {
	case BL_TRY_LOCK: case BL_RENEW: case BL_RELEASE: return 1;
	case BL_INSPECT: return BL_HAS(vt, inspect);
	case BL_FORCE_RELEASE: return BL_HAS(vt, force_release);
	case BL_STATS: return BL_HAS(vt, stats);
	case BL_LOCK_WAIT: return BL_HAS(vt, lock_wait);
	case BL_CANCEL_WAIT: return BL_HAS(vt, cancel_wait);
	case BL_RENEW_FOR: return BL_HAS(vt, renew_for);
	}
	return 0;
}

// The Go side checks bl_has_slot first; an absent slot is refused here too,
// so nothing past struct_size is ever called.
static bl_out bl_call(const BextLockingVTable *vt, int slot, BextLockingInstance *instance, const char *input_json) {
	bl_out r = { BEXT_LOCKING_ERR_INVALID, NULL };
	if (!bl_has_slot(vt, slot)) {
		r.status = BEXT_LOCKING_ERR_UNSUPPORTED;
		return r;
	}
	switch (slot) {
	case BL_TRY_LOCK:      r.status = vt->try_lock(instance, input_json, &r.out); break;
	case BL_RENEW:         r.status = vt->renew(instance, input_json, &r.out); break;
	case BL_RELEASE:       r.status = vt->release(instance, input_json, &r.out); break;
	case BL_INSPECT:       r.status = vt->inspect(instance, input_json, &r.out); break;
	case BL_FORCE_RELEASE: r.status = vt->force_release(instance, input_json, &r.out); break;
	case BL_STATS:         r.status = vt->stats(instance, &r.out); break;
	case BL_CANCEL_WAIT:   r.status = vt->cancel_wait(instance, input_json, &r.out); break;
	case BL_RENEW_FOR:     r.status = vt->renew_for(instance, input_json, &r.out); break;
	// lock_wait has one more out-parameter: bl_lock_wait.
	}
	return r;
}

typedef struct {
	int32_t status;
	char *out;
	uint64_t sent_ago_us;
} bl_waited;

// (1.2) lock_wait, which blocks this thread until the lock is ours, the
// wait times out or cancel_wait ends it.
static bl_waited bl_lock_wait(const BextLockingVTable *vt, BextLockingInstance *instance, const char *input_json) {
	bl_waited r = { BEXT_LOCKING_ERR_UNSUPPORTED, NULL, 0 };
	if (!BL_HAS(vt, lock_wait)) {
		return r;
	}
	r.status = vt->lock_wait(instance, input_json, &r.out, &r.sent_ago_us);
	return r;
}

static bl_out bl_cleanup(const BextLockingVTable *vt, BextLockingInstance *instance) {
	bl_out r = { 0, NULL };
	r.status = vt->cleanup(instance, &r.out);
	return r;
}

static void bl_destroy(const BextLockingVTable *vt, BextLockingInstance *instance) {
	vt->destroy(instance);
}

static void bl_free_string(const BextLockingVTable *vt, char *s) {
	vt->free_string(s);
}
*/
import "C"

import (
	"bytes"
	"fmt"
	"time"
	"unicode/utf8"
	"unsafe"
)

// abiVersion is the only ABI major version this host speaks.
const abiVersion = uint32(C.BEXT_LOCKING_ABI_VERSION)

type (
	cVTable   = C.BextLockingVTable
	cInstance = C.BextLockingInstance
)

// slot selects a JSON-in, JSON-out vtable slot for callSlot.
type slot C.int

const (
	slotTryLock slot = C.BL_TRY_LOCK
	slotRenew   slot = C.BL_RENEW
	slotRelease slot = C.BL_RELEASE
	// The optional slots of ABI 1.1; slotStats takes no input.
	slotInspect      slot = C.BL_INSPECT
	slotForceRelease slot = C.BL_FORCE_RELEASE
	slotStats        slot = C.BL_STATS
	// The optional slots of ABI 1.2; slotLockWait is called through
	// callLockWait.
	slotLockWait   slot = C.BL_LOCK_WAIT
	slotCancelWait slot = C.BL_CANCEL_WAIT
	slotRenewFor   slot = C.BL_RENEW_FOR
)

// optionalSlots are the slots a plugin may lack (ABI 1.1 and later).
var optionalSlots = []slot{slotInspect, slotForceRelease, slotStats, slotLockWait, slotCancelWait, slotRenewFor}

func (s slot) String() string {
	switch s {
	case slotTryLock:
		return "try_lock"
	case slotRenew:
		return "renew"
	case slotRelease:
		return "release"
	case slotInspect:
		return "inspect"
	case slotForceRelease:
		return "force_release"
	case slotStats:
		return "stats"
	case slotLockWait:
		return "lock_wait"
	case slotCancelWait:
		return "cancel_wait"
	case slotRenewFor:
		return "renew_for"
	}
	return fmt.Sprintf("slot(%d)", int(s))
}

// openVTable dlopens path, resolves the entry and validates the vtable it
// returns, the way the Rust loader does.
func openVTable(path string) (vt *cVTable, name, version string, err error) {
	if path == "" || bytes.IndexByte([]byte(path), 0) >= 0 {
		return nil, "", "", fmt.Errorf("%w: the path is empty or contains a NUL byte", ErrDlopen)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	r := C.bl_open(cpath)
	var message string
	if r.message != nil {
		message = C.GoString(r.message)
		// Our own strdup'd copy, so it goes back to the C library's free.
		C.free(unsafe.Pointer(r.message))
	}
	switch r.failure {
	case C.BL_OPEN_OK:
	case C.BL_OPEN_DLOPEN:
		return nil, "", "", fmt.Errorf("%w: %s", ErrDlopen, message)
	case C.BL_OPEN_NO_ENTRY:
		return nil, "", "", fmt.Errorf("%w (%s)", ErrNotPlugin, message)
	case C.BL_OPEN_REFUSED:
		return nil, "", "", fmt.Errorf("%w: the entry returned NULL for ABI version %d", ErrABIMismatch, abiVersion)
	default:
		return nil, "", "", fmt.Errorf("%w: unexpected open failure %d", ErrBadVTable, int(r.failure))
	}
	vt = r.vtable
	// Read abi_version and struct_size before anything else: only once they
	// check out do we know the rest of the struct is there to read.
	if got := uint32(vt.abi_version); got != abiVersion {
		return nil, "", "", fmt.Errorf("%w: the plugin was built for ABI version %d, this host speaks %d", ErrABIMismatch, got, abiVersion)
	}
	if got, want := uint32(vt.struct_size), uint32(C.bl_v1_size()); got < want {
		return nil, "", "", fmt.Errorf("%w: struct_size is %d, smaller than the v1 vtable (%d)", ErrBadVTable, got, want)
	}
	nulls := []struct {
		field string
		null  bool
	}{
		{"name", vt.name == nil},
		{"version", vt.version == nil},
		{"describe", vt.describe == nil},
		{"create", vt.create == nil},
		{"try_lock", vt.try_lock == nil},
		{"renew", vt.renew == nil},
		{"release", vt.release == nil},
		{"cleanup", vt.cleanup == nil},
		{"destroy", vt.destroy == nil},
		{"free_string", vt.free_string == nil},
	}
	for _, f := range nulls {
		if f.null {
			return nil, "", "", fmt.Errorf("%w: the %s field is NULL", ErrBadVTable, f.field)
		}
	}
	name = C.GoString(vt.name)
	version = C.GoString(vt.version)
	for _, s := range []struct{ field, value string }{{"name", name}, {"version", version}} {
		if s.value == "" || !utf8.ValidString(s.value) {
			return nil, "", "", fmt.Errorf("%w: the %s field is empty or not UTF-8", ErrBadVTable, s.field)
		}
	}
	return vt, name, version, nil
}

// takeString copies a plugin-owned string and gives it back to the plugin's
// free_string: never to C.free, since the plugin may use another allocator.
func takeString(vt *cVTable, s *C.char) (text []byte, ok bool) {
	if s == nil {
		return nil, false
	}
	text = C.GoBytes(unsafe.Pointer(s), C.int(C.strlen(s)))
	C.bl_free_string(vt, s)
	return text, true
}

// cString returns b with a NUL appended, as Go memory the plugin may borrow
// for one call. It holds no Go pointers, so cgo allows passing it to C.
func cString(b []byte) []byte {
	out := make([]byte, len(b)+1)
	copy(out, b)
	return out
}

func charPtr(b []byte) *C.char {
	return (*C.char)(unsafe.Pointer(&b[0]))
}

func callDescribe(vt *cVTable) (status int32, out []byte, hasOut bool) {
	r := C.bl_describe(vt)
	out, hasOut = takeString(vt, r.out)
	return int32(r.status), out, hasOut
}

func callCreate(vt *cVTable, config []byte) (inst *cInstance, status int32, errJSON []byte, hasErr bool) {
	in := cString(config)
	r := C.bl_create(vt, charPtr(in))
	errJSON, hasErr = takeString(vt, r.error)
	return r.instance, int32(r.status), errJSON, hasErr
}

func callSlot(vt *cVTable, s slot, inst *cInstance, input []byte) (status int32, out []byte, hasOut bool) {
	in := cString(input)
	r := C.bl_call(vt, C.int(s), inst, charPtr(in))
	out, hasOut = takeString(vt, r.out)
	return int32(r.status), out, hasOut
}

// hasSlot says whether the validated vtable has slot s.
func hasSlot(vt *cVTable, s slot) bool {
	return C.bl_has_slot(vt, C.int(s)) != 0
}

// abiMinor is the ABI revision the vtable's struct_size covers: 0 for a 1.0
// plugin, 1 once it has room for the 1.1 slots, 2 for the 1.2 slots.
func abiMinor(vt *cVTable) uint32 {
	switch size := uintptr(vt.struct_size); {
	case size >= unsafe.Offsetof(vt.renew_for)+unsafe.Sizeof(vt.renew_for):
		return 2
	case size >= unsafe.Offsetof(vt.stats)+unsafe.Sizeof(vt.stats):
		return 1
	}
	return 0
}

// callLockWait runs the (1.2) lock_wait slot, blocking until it returns.
func callLockWait(vt *cVTable, inst *cInstance, input []byte) (status int32, out []byte, hasOut bool, sentAgo time.Duration) {
	in := cString(input)
	r := C.bl_lock_wait(vt, inst, charPtr(in))
	out, hasOut = takeString(vt, r.out)
	ago := uint64(r.sent_ago_us)
	if ago > uint64(maxTTL/time.Microsecond) {
		ago = uint64(maxTTL / time.Microsecond)
	}
	return int32(r.status), out, hasOut, time.Duration(ago) * time.Microsecond
}

func callCleanup(vt *cVTable, inst *cInstance) (status int32, out []byte, hasOut bool) {
	r := C.bl_cleanup(vt, inst)
	out, hasOut = takeString(vt, r.out)
	return int32(r.status), out, hasOut
}

func callDestroy(vt *cVTable, inst *cInstance) {
	C.bl_destroy(vt, inst)
}
