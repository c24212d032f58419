package bextlock_test

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// realAdmin are the backends whose Inspect, ForceRelease and Stats must give
// real answers in the mode these tests configure (all of them today); a
// backend left out may answer ErrUnsupported for inspect and force_release
// (a mode that cannot serve them) and passes either way.
var realAdmin = map[string]bool{"memory": true, "sqlite": true, "redis": true, "pg": true, "etcd": true, "mysql": true, "nats": true}

// TestBackendsAdmin runs the ABI 1.1 calls against every landed backend
// whose library is built.
func TestBackendsAdmin(t *testing.T) {
	for _, b := range backends {
		b := b
		t.Run(b.name, func(t *testing.T) {
			var p *bextlock.Plugin
			if b.name == "memory" {
				p = openMemory(t)
			} else {
				var err error
				if p, err = bextlock.Open(optionalLib(t, b.name)); err != nil {
					t.Fatal(err)
				}
			}
			config := b.setup(t)
			t.Run("slots", func(t *testing.T) { suiteSlots(t, p) })
			t.Run("owner_input", func(t *testing.T) { suiteOwnerInput(t, p, config) })
			t.Run("inspect", func(t *testing.T) { suiteInspect(t, p, config, realAdmin[b.name]) })
			t.Run("force_release", func(t *testing.T) { suiteForceRelease(t, p, config, realAdmin[b.name]) })
			t.Run("stats", func(t *testing.T) { suiteStats(t, p, config) })
		})
	}
}

func suiteSlots(t *testing.T, p *bextlock.Plugin) {
	d, err := p.Describe()
	if err != nil {
		t.Fatal(err)
	}
	if p.ABIMinor() != 2 || d.ABIMinor != 2 {
		t.Errorf("ABIMinor %d, describe abi_minor %d; want 2 for a plugin built with this tree", p.ABIMinor(), d.ABIMinor)
	}
	for _, s := range []string{"inspect", "force_release", "stats", "lock_wait", "cancel_wait", "renew_for", "try_lock", "free_string"} {
		if !p.HasSlot(s) {
			t.Errorf("HasSlot(%q) is false", s)
		}
	}
	if p.HasSlot("teleport") {
		t.Error("HasSlot of an unknown slot is true")
	}
	if !d.Has("stats") {
		t.Errorf("capabilities %v lack stats, which the ffi layer counts for every plugin", d.Capabilities)
	}
}

// unsupportedOK reports whether err is ErrUnsupported, which a backend
// without real admin answers may give; it fails the test for a backend that
// must answer, or for any other error.
func unsupportedOK(t *testing.T, err error, real bool, what string) bool {
	t.Helper()
	if err == nil {
		return false
	}
	if !real && errors.Is(err, bextlock.ErrUnsupported) {
		var e *bextlock.Error
		if !errors.As(err, &e) || e.Code != "unsupported" || e.Message == "" {
			t.Errorf("%s: ErrUnsupported without a code and message: %#v", what, err)
		}
		t.Logf("%s: unsupported by this backend: %v", what, err)
		return true
	}
	t.Fatalf("%s: %v", what, err)
	return true
}

func suiteOwnerInput(t *testing.T, p *bextlock.Plugin, config func() any) {
	l := newLocker(t, p, config())
	if got := l.Owner(); got != bextlock.DefaultOwner() {
		t.Errorf("a new Locker's owner is %q, want the default %q", got, bextlock.DefaultOwner())
	}
	key := uniqueName("go-owner-input")
	long := strings.Repeat("o", bextlock.MaxOwnerBytes+1)
	for _, owner := range []string{long, strings.Repeat("€", 86), "a\xffb"} {
		if _, ok, err := l.TryLockAs(key, time.Second, owner); ok || !errors.Is(err, bextlock.ErrInvalid) || !strings.Contains(err.Error(), "owner") {
			t.Errorf("TryLockAs with owner %q: ok %v, err %v; want ErrInvalid naming owner", owner[:8], ok, err)
		}
		if err := l.SetOwner(owner); !errors.Is(err, bextlock.ErrInvalid) {
			t.Errorf("SetOwner(%q...): %v, want ErrInvalid", owner[:8], err)
		}
	}
	if l.Owner() != bextlock.DefaultOwner() {
		t.Errorf("a refused SetOwner changed the owner to %q", l.Owner())
	}
	h, ok, err := l.TryLockAs(key, 10*time.Second, strings.Repeat("o", bextlock.MaxOwnerBytes))
	if err != nil || !ok {
		t.Fatalf("an owner of exactly MaxOwnerBytes: ok %v, err %v", ok, err)
	}
	if err := l.Release(h); err != nil {
		t.Fatal(err)
	}
}

func suiteInspect(t *testing.T, p *bextlock.Plugin, config func() any, real bool) {
	d, err := p.Describe()
	if err != nil {
		t.Fatal(err)
	}
	a, b := newLocker(t, p, config()), newLocker(t, p, config())
	free := uniqueName("go-inspect-free")
	info, err := b.Inspect(free)
	if unsupportedOK(t, err, real, "Inspect of a free key") {
		return
	}
	if info.Key != free || info.Held || info.Owner != nil || info.Fence != nil {
		t.Errorf("Inspect of a key never locked: %+v, want held false and nothing else", info)
	}

	key := uniqueName("go-inspect")
	if err := a.SetOwner("go-test:" + strconv.Itoa(os.Getpid()) + ":inspect"); err != nil {
		t.Fatal(err)
	}
	h := mustLock(t, a, key, 10*time.Second)
	info, err = b.Inspect(key)
	if err != nil {
		t.Fatal(err)
	}
	if !info.Held || info.Key != key {
		t.Fatalf("Inspect of a held key: %+v", info)
	}
	if fence, ok := h.Fence(); ok && (info.Fence == nil || *info.Fence != fence) {
		t.Errorf("Inspect fence %v, the holder's is %d", info.Fence, fence)
	}
	if d.Has("owner") || real {
		if info.Owner == nil || *info.Owner != a.Owner() {
			t.Errorf("Inspect owner %v, want %q", info.Owner, a.Owner())
		}
	}
	if info.ExpiresIn != nil && (*info.ExpiresIn > 10*time.Second || *info.ExpiresIn <= 0) {
		t.Errorf("ExpiresIn %v for a 10s lease just taken", *info.ExpiresIn)
	}
	// etcd has no clock a client can read, so it never says how long a lock
	// has been held (docs/backends/etcd.md); every other backend does.
	if real && (info.ExpiresIn == nil || (info.HeldFor == nil && p.Name() != "etcd")) {
		t.Errorf("Inspect of %s gives no expiry or held-for: %+v", p.Name(), info)
	}
	if strings.Contains(info.String(), h.LockID()) {
		t.Errorf("LockInfo shows the lock id: %s", info)
	}
	if err := a.Release(h); err != nil {
		t.Fatal(err)
	}
	if info, err = b.Inspect(key); err != nil || info.Held {
		t.Errorf("Inspect after release: %+v, %v; want held false", info, err)
	}
	// The default owner is what TryLock sends.
	c := newLocker(t, p, config())
	h = mustLock(t, c, key, 10*time.Second)
	defer func() { _ = c.Release(h) }()
	if info, err = b.Inspect(key); err != nil {
		t.Fatal(err)
	}
	if (d.Has("owner") || real) && (info.Owner == nil || *info.Owner != bextlock.DefaultOwner()) {
		t.Errorf("Inspect owner %v, want the default %q", info.Owner, bextlock.DefaultOwner())
	}
	if _, err := b.Inspect(""); !errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("Inspect of an empty key: %v, want ErrInvalid", err)
	}
	if _, err := b.Inspect("k\xff"); !errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("Inspect of a key that is not UTF-8: %v, want ErrInvalid", err)
	}
}

func suiteForceRelease(t *testing.T, p *bextlock.Plugin, config func() any, real bool) {
	a, b := newLocker(t, p, config()), newLocker(t, p, config())
	key := uniqueName("go-force")
	r, err := b.ForceRelease(key)
	if unsupportedOK(t, err, real, "ForceRelease of a free key") {
		return
	}
	if r.Released {
		t.Errorf("ForceRelease of a free key: %+v, want released false", r)
	}
	h := mustLock(t, a, key, 30*time.Second)
	fence, fenced := h.Fence()
	if fenced {
		r, err = b.ForceReleaseIfFence(key, fence+1)
		if err != nil || r.Released {
			t.Errorf("ForceReleaseIfFence with another fence: %+v, %v; want released false", r, err)
		}
		mustContend(t, b, key)
		r, err = b.ForceReleaseIfFence(key, fence)
	} else {
		r, err = b.ForceRelease(key)
	}
	if err != nil || !r.Released {
		t.Fatalf("ForceRelease of a held key: %+v, %v", r, err)
	}
	if fenced && (r.Fence == nil || *r.Fence != fence) {
		t.Errorf("ForceRelease reports fence %v, the broken holder's is %d", r.Fence, fence)
	}
	if err := a.Renew(h); !errors.Is(err, bextlock.ErrBackend) {
		t.Errorf("the broken holder's Renew: %v, want ErrBackend", err)
	}
	h2 := mustLock(t, b, key, 30*time.Second)
	if f2, ok := h2.Fence(); fenced && ok && f2 <= fence {
		t.Errorf("the fence after a break is %d, not above the broken holder's %d", f2, fence)
	}
	if err := a.Release(h); err != nil {
		t.Errorf("the broken holder's Release: %v, want nil (a no-op)", err)
	}
	mustContend(t, a, key)
	if err := b.Release(h2); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ForceRelease(""); !errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("ForceRelease of an empty key: %v, want ErrInvalid", err)
	}
}

func suiteStats(t *testing.T, p *bextlock.Plugin, config func() any) {
	l := newLocker(t, p, config())
	other := newLocker(t, p, config())
	key := uniqueName("go-stats")
	h := mustLock(t, l, key, 10*time.Second)
	mustContend(t, l, key)
	if err := l.Renew(h); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.TryLock("", time.Second); !errors.Is(err, bextlock.ErrInvalid) {
		t.Fatalf("an empty key: %v", err)
	}
	if err := l.Release(h); err != nil {
		t.Fatal(err)
	}
	s, err := l.Stats()
	if err != nil {
		t.Fatalf("Stats (every plugin built with this tree counts): %v", err)
	}
	// The empty key is refused by the plugin (TryLock does not check the
	// length itself), so it is counted.
	if s.Acquired != 1 || s.Contended != 1 || s.Renewed != 1 || s.Released != 1 || s.Errors["invalid_argument"] != 1 {
		t.Errorf("stats of one instance: %+v; want 1 acquired, contended, renewed, released, invalid_argument", s)
	}
	var n uint64
	for _, c := range s.Latency.TryLock {
		n += c
	}
	if n != 3 || len(s.Latency.TryLock) != len(s.Latency.BoundsMicros)+1 {
		t.Errorf("try_lock histogram %v (bounds %v): want 3 calls", s.Latency.TryLock, s.Latency.BoundsMicros)
	}
	// Counters are per instance.
	if s2, err := other.Stats(); err != nil || s2.Acquired != 0 {
		t.Errorf("another instance's stats: %+v, %v; want zero", s2, err)
	}
	var buf bytes.Buffer
	if err := l.WritePrometheus(&buf, bextlock.Label{Name: "instance", Value: "go"}); err != nil {
		t.Fatal(err)
	}
	want := `bext_locking_acquired_total{plugin="` + p.Name() + `",instance="go"} 1`
	if !strings.Contains(buf.String(), want+"\n") {
		t.Errorf("missing %q in:\n%s", want, buf.String())
	}
	_ = l.Close()
	if _, err := l.Stats(); !errors.Is(err, bextlock.ErrClosed) {
		t.Errorf("Stats after Close: %v, want ErrClosed", err)
	}
}

// TestABI10Plugin loads a plugin built from a frozen copy of the 1.0
// vtable: its 1.0 slots work, and the 1.1 calls are ErrUnsupported with a
// message naming the slot, found without calling anything.
func TestABI10Plugin(t *testing.T) {
	path := libPath("fixture-abi-1-0")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run `cargo build -p bext-locking-fixture-abi-1-0` (make go-test does)", path)
	}
	p, err := bextlock.Open(path)
	if err != nil {
		t.Fatalf("a 1.0 plugin must load: %v", err)
	}
	if p.ABIMinor() != 0 {
		t.Errorf("ABIMinor %d, want 0", p.ABIMinor())
	}
	for _, s := range []string{"inspect", "force_release", "stats"} {
		if p.HasSlot(s) {
			t.Errorf("HasSlot(%q) is true for a 1.0 plugin", s)
		}
	}
	d, err := p.Describe()
	if err != nil {
		t.Fatal(err)
	}
	if d.ABIMinor != 0 || len(d.Capabilities) != 0 {
		t.Errorf("a 1.0 description: abi_minor %d, capabilities %v", d.ABIMinor, d.Capabilities)
	}
	ns := uniqueName("go-abi-1-0")
	a := newLocker(t, p, map[string]any{"namespace": ns})
	b := newLocker(t, p, map[string]any{"namespace": ns})
	key := uniqueName("go-1-0")
	// TryLock sends the default owner, which a 1.0 plugin ignores.
	h := mustLock(t, a, key, 10*time.Second)
	mustContend(t, b, key)
	if err := a.Renew(h); err != nil {
		t.Errorf("Renew on a 1.0 plugin: %v", err)
	}
	checkUnsupported := func(op string, err error) {
		t.Helper()
		want := "plugin `" + p.Name() + "` (ABI 1.0) has no `" + op + "` slot"
		var e *bextlock.Error
		if !errors.Is(err, bextlock.ErrUnsupported) || !errors.As(err, &e) || e.Op != op || e.Code != "unsupported" || e.Message != want {
			t.Errorf("%s on a 1.0 plugin: %#v, want ErrUnsupported %q", op, err, want)
		}
		if errors.Is(err, bextlock.ErrProtocol) || errors.Is(err, bextlock.ErrBackend) {
			t.Errorf("%s: ErrUnsupported also matches another kind: %v", op, err)
		}
	}
	_, err = b.Inspect(key)
	checkUnsupported("inspect", err)
	_, err = b.ForceRelease(key)
	checkUnsupported("force_release", err)
	_, err = b.ForceReleaseIfFence(key, 1)
	checkUnsupported("force_release", err)
	_, err = a.Stats()
	checkUnsupported("stats", err)
	checkUnsupported("stats", a.WritePrometheus(&bytes.Buffer{}))
	// Nothing was broken: the lock is still held, and releases normally.
	mustContend(t, b, key)
	if err := a.Release(h); err != nil {
		t.Errorf("Release on a 1.0 plugin: %v", err)
	}
	h = mustLock(t, b, key, time.Second)
	if err := b.Release(h); err != nil {
		t.Error(err)
	}
	_ = a.Close()
	if _, err := a.Inspect(key); !errors.Is(err, bextlock.ErrClosed) {
		t.Errorf("Inspect after Close: %v, want ErrClosed", err)
	}
}

func TestWritePrometheus(t *testing.T) {
	bounds := []uint64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000, 2000000, 5000000}
	zeros := func() []uint64 { return make([]uint64, len(bounds)+1) }
	s := bextlock.Stats{Acquired: 3, Contended: 2, RenewFailures: 1, Errors: map[string]uint64{"backend": 4, "timeout": 2}}
	s.Latency = bextlock.Latencies{BoundsMicros: bounds, TryLock: zeros(), Renew: zeros(), Release: zeros()}
	s.Latency.TryLock[0] = 1
	s.Latency.TryLock[2] = 2
	s.Latency.TryLock[len(bounds)] = 1
	var buf bytes.Buffer
	if err := s.WritePrometheus(&buf, "redis", bextlock.Label{Name: "instance", Value: "a\"b"}); err != nil {
		t.Fatal(err)
	}
	text := buf.String()
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	has := map[string]bool{}
	for _, l := range lines {
		has[l] = true
	}
	for _, want := range []string{
		"# TYPE bext_locking_acquired_total counter",
		`bext_locking_acquired_total{plugin="redis",instance="a\"b"} 3`,
		`bext_locking_contended_total{plugin="redis",instance="a\"b"} 2`,
		`bext_locking_renew_failures_total{plugin="redis",instance="a\"b"} 1`,
		`bext_locking_errors_total{plugin="redis",instance="a\"b",code="backend"} 4`,
		`bext_locking_errors_total{plugin="redis",instance="a\"b",code="panic"} 0`,
		`bext_locking_errors_total{plugin="redis",instance="a\"b",code="timeout"} 2`,
		"# TYPE bext_locking_call_duration_seconds histogram",
		`bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="0.000001"} 1`,
		`bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="0.000002"} 1`,
		`bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="0.000005"} 3`,
		`bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="5"} 3`,
		`bext_locking_call_duration_seconds_bucket{plugin="redis",instance="a\"b",call="try_lock",le="+Inf"} 4`,
		`bext_locking_call_duration_seconds_count{plugin="redis",instance="a\"b",call="try_lock"} 4`,
		`bext_locking_call_duration_seconds_count{plugin="redis",instance="a\"b",call="release"} 0`,
	} {
		if !has[want] {
			t.Errorf("missing %q in:\n%s", want, text)
		}
	}
	if n := strings.Count(text, "_bucket{"); n != 3*(len(bounds)+1) {
		t.Errorf("%d bucket lines, want %d", n, 3*(len(bounds)+1))
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if _, err := strconv.ParseUint(l[i+1:], 10, 64); err != nil {
			t.Errorf("sample is not `name{labels} integer`: %q", l)
		}
	}
	for _, bad := range []bextlock.Label{{Name: "1st", Value: "x"}, {Name: "le", Value: "x"}, {Name: "a-b", Value: "x"}} {
		var out bytes.Buffer
		if err := s.WritePrometheus(&out, "redis", bad); err == nil || out.Len() != 0 {
			t.Errorf("label %q: err %v, wrote %d bytes; want an error and nothing written", bad.Name, err, out.Len())
		}
	}
}

func TestDefaultOwner(t *testing.T) {
	owner := bextlock.DefaultOwner()
	i := strings.LastIndexByte(owner, ':')
	if i <= 0 || owner[i+1:] != strconv.Itoa(os.Getpid()) || len(owner) > bextlock.MaxOwnerBytes {
		t.Errorf("DefaultOwner() = %q, want hostname:%d", owner, os.Getpid())
	}
	if host, err := os.Hostname(); err == nil && host != "" && len(host) < 200 && owner[:i] != host {
		t.Errorf("DefaultOwner() = %q, want host %q", owner, host)
	}
}
