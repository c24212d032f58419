package bextlock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Handle is a held lock, as the plugin's try_lock returned it.
//
// Its fields are read-only views of the plugin's JSON; Renew and Release
// send that JSON back byte for byte, including any field this host does not
// know. A Handle may be used from any goroutine, and with any Locker of the
// same backend that can see the lock (another instance, another process:
// marshal it with encoding/json and unmarshal it there).
type Handle struct {
	raw      []byte
	key      string
	lockID   string
	ttl      time.Duration
	fence    uint64
	hasFence bool
	// sent is when the request that took the lock was sent (zero for a
	// handle read from JSON).
	sent time.Time
}

type handleFields struct {
	Key    *string `json:"key"`
	LockID *string `json:"lock_id"`
	TTLMs  *uint64 `json:"ttl_ms"`
	Fence  *uint64 `json:"fence"`
}

// parseHandle reads a handle's fields, keeping raw as the bytes to send back.
func parseHandle(raw []byte) (*Handle, error) {
	var f handleFields
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("not a lock handle: %v", err)
	}
	switch {
	case f.Key == nil:
		return nil, errors.New("not a lock handle: no key")
	case f.LockID == nil || *f.LockID == "":
		return nil, errors.New("not a lock handle: no lock_id")
	case f.TTLMs == nil:
		return nil, errors.New("not a lock handle: no ttl_ms")
	case *f.TTLMs > uint64(maxTTL/time.Millisecond):
		return nil, fmt.Errorf("not a lock handle: ttl_ms %d is out of range", *f.TTLMs)
	}
	h := &Handle{
		raw:    append([]byte(nil), raw...),
		key:    *f.Key,
		lockID: *f.LockID,
		ttl:    time.Duration(*f.TTLMs) * time.Millisecond,
	}
	if f.Fence != nil {
		h.fence, h.hasFence = *f.Fence, true
	}
	return h, nil
}

// Key is the key that was locked.
func (h *Handle) Key() string { return h.key }

// LockID is the opaque token minted for this acquisition alone.
func (h *Handle) LockID() string { return h.lockID }

// TTL is the lease length; every successful Renew restarts it.
func (h *Handle) TTL() time.Duration { return h.ttl }

// Fence returns the fencing token and true when the backend hands them out:
// a number that strictly increases with every acquisition of the key, across
// all holders. Pass it to the resource you protect so it can refuse writes
// from a holder whose lease has already ended.
func (h *Handle) Fence() (fence uint64, ok bool) { return h.fence, h.hasFence }

// Sent is the instant just before the request that took the lock was sent,
// by this process's clock: the lease ends no earlier than Sent() + TTL() by
// the holder's clock, less the backend's clock drift. For a handle from
// [Locker.Lock] it is when the winning request left, not when the wait
// began; zero for a handle read from JSON.
func (h *Handle) Sent() time.Time { return h.sent }

// JSON returns a copy of the handle exactly as the plugin returned it.
func (h *Handle) JSON() []byte { return append([]byte(nil), h.raw...) }

// String describes the handle for logs. The lock id is left out: it is the
// capability to release the lock.
func (h *Handle) String() string {
	if h.hasFence {
		return fmt.Sprintf("lock %q (ttl %v, fence %d)", h.key, h.ttl, h.fence)
	}
	return fmt.Sprintf("lock %q (ttl %v)", h.key, h.ttl)
}

// MarshalJSON returns the plugin's JSON unchanged.
func (h *Handle) MarshalJSON() ([]byte, error) {
	if h == nil || h.raw == nil {
		return []byte("null"), nil
	}
	return h.JSON(), nil
}

// UnmarshalJSON takes a handle previously produced by MarshalJSON (or by a
// plugin) and keeps its bytes to send back as they are.
func (h *Handle) UnmarshalJSON(b []byte) error {
	parsed, err := parseHandle(bytes.TrimSpace(b))
	if err != nil {
		return fmt.Errorf("bextlock: %v", err)
	}
	*h = *parsed
	return nil
}
