package bextlock

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Status is a status code returned by a plugin slot, as ABI v1 defines it.
type Status int32

// The status codes of ABI v1. Negative means error; codes are never reused.
const (
	// StatusOK: the call did what was asked.
	StatusOK Status = 0
	// StatusContended: try_lock only, someone else holds the key. Not an
	// error: [Locker.TryLock] reports it as (nil, false, nil).
	StatusContended Status = 1
	// StatusCancelled (ABI 1.2): lock_wait only, the wait was cancelled
	// (by cancel_wait or cleanup). Not an error: [Locker.Lock] reports it
	// as the context's error.
	StatusCancelled Status = 2
	// StatusBackend: the backend failed, or renew found the lock no longer ours.
	StatusBackend Status = -1
	// StatusInvalid: bad input (key or TTL out of range, malformed JSON, bad config).
	StatusInvalid Status = -2
	// StatusPanic: the plugin panicked; the panic was caught at the boundary.
	StatusPanic Status = -3
	// StatusUnsupported (ABI 1.1): the backend, or this instance's mode,
	// cannot serve the call or one of its fields; retrying cannot help. The
	// host reports a slot the plugin does not have (a 1.0 plugin) the same
	// way, without calling anything.
	StatusUnsupported Status = -4
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusContended:
		return "contended"
	case StatusCancelled:
		return "cancelled"
	case StatusBackend:
		return "backend"
	case StatusInvalid:
		return "invalid_argument"
	case StatusPanic:
		return "panic"
	case StatusUnsupported:
		return "unsupported"
	}
	return fmt.Sprintf("status(%d)", int32(s))
}

// Sentinels for errors.Is. A plugin call fails with an [*Error] that matches
// exactly one of ErrBackend, ErrInvalid, ErrPanic, ErrUnsupported or
// ErrProtocol; [Open]
// fails with an [*OpenError] wrapping one of the Open sentinels.
var (
	// ErrBackend matches StatusBackend: the backend is unreachable or broken,
	// or (from Renew) the lock is no longer held by this handle.
	ErrBackend = errors.New("backend error")
	// ErrInvalid matches StatusInvalid: the request or config was refused.
	ErrInvalid = errors.New("invalid argument")
	// ErrPanic matches StatusPanic: the plugin panicked and caught it.
	ErrPanic = errors.New("plugin panicked")
	// ErrUnsupported matches StatusUnsupported: the plugin has no such slot
	// (a plugin built for ABI 1.0 has no Inspect, ForceRelease or Stats), or
	// its backend or mode cannot serve the call. The message says which.
	ErrUnsupported = errors.New("unsupported")
	// ErrProtocol means the plugin's answer broke the ABI: an unknown status,
	// OK without a handle, a handle that is not valid JSON.
	ErrProtocol = errors.New("plugin broke the ABI")
	// ErrClosed is returned by calls on a Locker after Close.
	ErrClosed = errors.New("bextlock: locker is closed")

	// ErrInsecure: the permission rule refused the file (others than root or
	// this user could have written it, or its folder); the error says which
	// file or folder and why. See [OpenOptions].
	ErrInsecure = errors.New("refused by the plugin permission rule")
	// ErrDlopen: the dynamic loader could not open the file; the error
	// carries its dlerror text.
	ErrDlopen = errors.New("dlopen failed")
	// ErrNotPlugin: the library has no bext_locking_plugin_entry symbol.
	ErrNotPlugin = errors.New("not a bext-locking plugin: no bext_locking_plugin_entry symbol")
	// ErrABIMismatch: the plugin does not speak this host's ABI version.
	ErrABIMismatch = errors.New("ABI version mismatch")
	// ErrBadVTable: the vtable is too small, or a mandatory slot or string is
	// NULL or empty.
	ErrBadVTable = errors.New("invalid plugin vtable")
)

// Error is a failed plugin call: the status the slot returned and the
// plugin's error object {"code":...,"message":...}.
//
// Match the kind with errors.Is(err, ErrBackend) (or ErrInvalid, ErrPanic,
// ErrUnsupported, ErrProtocol), or take the details with errors.As.
type Error struct {
	// Plugin is the plugin's name, e.g. "memory".
	Plugin string
	// Op is the slot that failed: "create", "try_lock", "renew", ...
	Op string
	// Status is the status code the slot returned.
	Status Status
	// Code is the error object's code: "backend", "invalid_argument",
	// "panic" or "unsupported"; empty when the plugin sent no error object.
	Code string
	// Message is the error object's message, or a description of the ABI
	// violation for ErrProtocol errors.
	Message string

	protocol bool
}

func (e *Error) Error() string {
	kind := e.Code
	if kind == "" {
		kind = e.Status.String()
	}
	if e.protocol {
		kind = "protocol"
	}
	return fmt.Sprintf("bextlock: %s: %s: %s: %s", e.Plugin, e.Op, kind, e.Message)
}

// Is reports whether target is the sentinel for e's status.
func (e *Error) Is(target error) bool {
	if e.protocol {
		return target == ErrProtocol
	}
	switch target {
	case ErrBackend:
		return e.Status == StatusBackend
	case ErrInvalid:
		return e.Status == StatusInvalid
	case ErrPanic:
		return e.Status == StatusPanic
	case ErrUnsupported:
		return e.Status == StatusUnsupported
	case ErrProtocol:
		return e.Status >= 0 || e.Status < StatusUnsupported
	}
	return false
}

// statusError builds the error for a negative status and its error JSON.
func statusError(plugin, op string, status int32, errJSON []byte, hasJSON bool) *Error {
	e := &Error{Plugin: plugin, Op: op, Status: Status(status)}
	var obj struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	switch {
	case !hasJSON:
		e.Message = "(the plugin sent no error object)"
	case json.Unmarshal(errJSON, &obj) == nil && obj.Message != "":
		e.Code, e.Message = obj.Code, obj.Message
	default:
		e.Message = string(errJSON)
	}
	if Status(status) < StatusUnsupported {
		e.protocol = true
		e.Message = fmt.Sprintf("unknown status %d: %s", status, e.Message)
	}
	return e
}

// protocolError reports a plugin answer that breaks the ABI.
func protocolError(plugin, op string, status int32, format string, args ...any) *Error {
	return &Error{Plugin: plugin, Op: op, Status: Status(status), Message: fmt.Sprintf(format, args...), protocol: true}
}

// invalidError reports input this host refuses before calling the plugin,
// with the same kind the plugin would give it.
func invalidError(plugin, op, format string, args ...any) *Error {
	return &Error{Plugin: plugin, Op: op, Status: StatusInvalid, Code: "invalid_argument", Message: fmt.Sprintf(format, args...)}
}

// unsupportedError reports a slot the plugin does not have, found without
// calling anything: the same kind the plugin itself would give.
func unsupportedError(p *Plugin, op string) *Error {
	return &Error{
		Plugin: p.name, Op: op, Status: StatusUnsupported, Code: "unsupported",
		Message: fmt.Sprintf("plugin `%s` (ABI 1.%d) has no `%s` slot", p.name, abiMinor(p.vt), op),
	}
}

// OpenError is a library that could not be opened as a plugin. Err wraps one
// of ErrInsecure, ErrDlopen, ErrNotPlugin, ErrABIMismatch or ErrBadVTable.
type OpenError struct {
	// Path is the file that was being opened.
	Path string
	// Err says why, with the dynamic loader's text where there is one.
	Err error
}

func (e *OpenError) Error() string { return "bextlock: open " + e.Path + ": " + e.Err.Error() }

// Unwrap returns e.Err, so errors.Is(err, ErrNotPlugin) works.
func (e *OpenError) Unwrap() error { return e.Err }
