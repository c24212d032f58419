package bextlock_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// backend is one landed backend: how to reach it for a test. setup returns
// a config factory whose Lockers all see the same locks, or skips.
type backend struct {
	name  string
	setup func(t *testing.T) func() any
}

var backends = []backend{
	{"memory", func(t *testing.T) func() any {
		ns := uniqueName("go-suite")
		return func() any { return map[string]any{"namespace": ns} }
	}},
	{"sqlite", func(t *testing.T) func() any {
		path := filepath.Join(t.TempDir(), "locks.db")
		return func() any { return map[string]any{"path": path} }
	}},
	{"redis", func(t *testing.T) func() any {
		u := envOr("BEXT_REDIS_URL", "redis://127.0.0.1:6379")
		if err := reachable(u, "6379"); err != nil {
			t.Skipf("SKIP: no Redis at %s (set BEXT_REDIS_URL): %v", u, err)
		}
		return func() any { return map[string]any{"url": u} }
	}},
	{"pg", func(t *testing.T) func() any {
		u := envOr("BEXT_PG_URL", "postgres://root@127.0.0.1:5432/test")
		if err := reachable(u, "5432"); err != nil {
			t.Skipf("SKIP: no PostgreSQL at the BEXT_PG_URL host: %v", err)
		}
		return func() any { return map[string]any{"url": u} }
	}},
	{"mysql", func(t *testing.T) func() any {
		u := envOr("BEXT_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
		if err := reachable(u, "3306"); err != nil {
			t.Skipf("SKIP: no MySQL/MariaDB at the BEXT_MYSQL_URL host: %v", err)
		}
		return func() any { return map[string]any{"url": u} }
	}},
	{"etcd", func(t *testing.T) func() any {
		endpoint := os.Getenv("BEXT_ETCD_ENDPOINT")
		if endpoint == "" {
			endpoint = startEtcd(t)
		}
		prefix := uniqueName("bext-go-test") + "/"
		return func() any { return map[string]any{"endpoints": []string{endpoint}, "key_prefix": prefix} }
	}},
	{"nats", func(t *testing.T) func() any {
		u := envOr("BEXT_NATS_URL", "nats://127.0.0.1:4222")
		if err := reachable(u, "4222"); err != nil {
			t.Skipf("SKIP: no NATS at %s (set BEXT_NATS_URL): %v", u, err)
		}
		prefix := strings.NewReplacer("/", "_", "-", "_").Replace(uniqueName("bext_go"))
		return func() any { return map[string]any{"servers": []string{u}, "bucket_prefix": prefix} }
	}},
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// startEtcd runs a private single-member etcd on free loopback ports for the
// test, or skips when etcd is not installed.
func startEtcd(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("SKIP: etcd is not installed and BEXT_ETCD_ENDPOINT is not set")
	}
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cmd := exec.Command(bin,
		"--name", "go-test",
		"--data-dir", filepath.Join(t.TempDir(), "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "go-test="+peer,
		"--log-level", "error")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for reachable(client, "2379") != nil {
		if time.Now().After(deadline) {
			t.Fatalf("etcd did not listen on %s within 20s", client)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return client
}

// TestBackendsABI runs the whole ABI behaviour against every landed backend
// whose library is built.
func TestBackendsABI(t *testing.T) {
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
			t.Run("describe", func(t *testing.T) { suiteDescribe(t, p, b.name) })
			t.Run("bad_config", func(t *testing.T) { suiteBadConfig(t, p) })
			t.Run("lifecycle", func(t *testing.T) { suiteLifecycle(t, p, config) })
			t.Run("expiry", func(t *testing.T) { suiteExpiry(t, p, config) })
			t.Run("invalid_input", func(t *testing.T) { suiteInvalidInput(t, p, config) })
			t.Run("handle_json", func(t *testing.T) { suiteHandleJSON(t, p, config) })
			t.Run("no_overlap", func(t *testing.T) { contend(t, p, config, 8, 25) })
			t.Run("close", func(t *testing.T) { suiteClose(t, p, config) })
			t.Run("run_exclusive", func(t *testing.T) { suiteRunExclusive(t, p, config) })
		})
	}
}

func suiteDescribe(t *testing.T, p *bextlock.Plugin, name string) {
	d, err := p.Describe()
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != name || p.Name() != name || d.Version != p.Version() || d.ABIVersion != 1 {
		t.Errorf("description %+v does not match plugin %q %q", d, p.Name(), p.Version())
	}
	var schema map[string]any
	if err := json.Unmarshal(d.ConfigSchema, &schema); err != nil {
		t.Errorf("config_schema is not a JSON object: %v", err)
	}
}

func suiteBadConfig(t *testing.T, p *bextlock.Plugin) {
	for _, config := range []any{
		map[string]any{"surely_not_a_config_key": 1},
		[]int{1, 2},
		"{}", // a JSON string, not an object: use json.RawMessage for prepared JSON
	} {
		l, err := p.New(config)
		if err == nil {
			l.Close()
			t.Errorf("New(%#v) succeeded", config)
			continue
		}
		var e *bextlock.Error
		if !errors.As(err, &e) || !errors.Is(err, bextlock.ErrInvalid) || errors.Is(err, bextlock.ErrBackend) {
			t.Errorf("New(%#v): want an *Error matching only ErrInvalid, got %T %v", config, err, err)
			continue
		}
		if e.Status != bextlock.StatusInvalid || e.Code != "invalid_argument" || e.Op != "create" || e.Plugin != p.Name() {
			t.Errorf("New(%#v): unexpected error fields %+v", config, e)
		}
	}
	_, err := p.New(map[string]any{"surely_not_a_config_key": 1})
	if err == nil || !strings.Contains(err.Error(), "surely_not_a_config_key") {
		t.Errorf("an unknown key must be named: %v", err)
	}
	// Config values Go cannot marshal are refused before the plugin sees them.
	if _, err := p.New(map[string]any{"f": func() {}}); !errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("an unmarshallable config: want ErrInvalid, got %v", err)
	}
}

func mustLock(t *testing.T, l *bextlock.Locker, key string, ttl time.Duration) *bextlock.Handle {
	t.Helper()
	h, ok, err := l.TryLock(key, ttl)
	if err != nil || !ok || h == nil {
		t.Fatalf("TryLock(%q): handle %v, ok %v, err %v", key, h, ok, err)
	}
	return h
}

func mustContend(t *testing.T, l *bextlock.Locker, key string) {
	t.Helper()
	h, ok, err := l.TryLock(key, time.Second)
	if err != nil || ok || h != nil {
		t.Fatalf("TryLock(%q): want contention (nil, false, nil), got %v, %v, %v", key, h, ok, err)
	}
}

func suiteLifecycle(t *testing.T, p *bextlock.Plugin, config func() any) {
	a := newLocker(t, p, config())
	b := newLocker(t, p, config())
	key := uniqueName("lifecycle")

	h1 := mustLock(t, a, key, 2*time.Second)
	if h1.Key() != key || h1.LockID() == "" || h1.TTL() != 2*time.Second {
		t.Fatalf("unexpected handle key %q lock id %q ttl %v", h1.Key(), h1.LockID(), h1.TTL())
	}
	mustContend(t, a, key) // not reentrant
	mustContend(t, b, key)
	if err := a.Renew(h1); err != nil {
		t.Fatalf("renew a held lock: %v", err)
	}
	if err := a.Release(h1); err != nil {
		t.Fatalf("release: %v", err)
	}

	h2 := mustLock(t, b, key, 2*time.Second)
	if h2.LockID() == h1.LockID() {
		t.Errorf("two acquisitions share lock id %q", h1.LockID())
	}
	f1, ok1 := h1.Fence()
	f2, ok2 := h2.Fence()
	if ok1 != ok2 {
		t.Errorf("one instance fences and the other does not")
	}
	if ok1 && f2 <= f1 {
		t.Errorf("fence did not rise: %d then %d", f1, f2)
	}

	// A stale handle touches nothing: release is OK, renew is an error.
	if err := a.Release(h1); err != nil {
		t.Errorf("stale release must succeed: %v", err)
	}
	mustContend(t, a, key)
	err := a.Renew(h1)
	var e *bextlock.Error
	if !errors.As(err, &e) || !errors.Is(err, bextlock.ErrBackend) || e.Status != bextlock.StatusBackend || e.Code != "backend" || e.Op != "renew" {
		t.Errorf("stale renew: want an ErrBackend *Error, got %T %v", err, err)
	}
	if err := b.Renew(h2); err != nil {
		t.Errorf("the new holder lost its lock: %v", err)
	}
	// A handle works with any Locker that sees the lock.
	if err := a.Release(h2); err != nil {
		t.Errorf("release through another locker: %v", err)
	}
	h3 := mustLock(t, a, key, time.Second)
	if err := a.Release(h3); err != nil {
		t.Error(err)
	}
}

func suiteExpiry(t *testing.T, p *bextlock.Plugin, config func() any) {
	a := newLocker(t, p, config())
	b := newLocker(t, p, config())
	key := uniqueName("expiry")
	h := mustLock(t, a, key, 200*time.Millisecond)
	// Some backends round a lease up (etcd's shortest lease is over a
	// second), so poll for the takeover with a generous bound.
	var h2 *bextlock.Handle
	for deadline := time.Now().Add(15 * time.Second); h2 == nil; {
		time.Sleep(100 * time.Millisecond)
		got, ok, err := b.TryLock(key, 5*time.Second)
		switch {
		case err != nil:
			t.Fatalf("TryLock after expiry: %v", err)
		case ok:
			h2 = got
		case time.Now().After(deadline):
			t.Fatal("the expired lock was never free to take")
		}
	}
	if err := a.Renew(h); !errors.Is(err, bextlock.ErrBackend) {
		t.Errorf("renew after expiry and takeover: want ErrBackend, got %v", err)
	}
	mustContend(t, a, key) // the failed renew did not re-acquire or disturb it
	if err := b.Release(h2); err != nil {
		t.Error(err)
	}
}

func suiteInvalidInput(t *testing.T, p *bextlock.Plugin, config func() any) {
	l := newLocker(t, p, config())
	prefix := uniqueName("inv") + "/"
	cases := []struct {
		name string
		key  string
		ttl  time.Duration
	}{
		{"empty key", "", time.Second},
		{"1025-byte key", prefix + strings.Repeat("k", 1025-len(prefix)), time.Second},
		{"invalid UTF-8", prefix + "\xff\xfe", time.Second},
		{"zero ttl", prefix + "zero", 0},
		{"negative ttl", prefix + "neg", -time.Second},
		{"sub-millisecond ttl", prefix + "tiny", time.Microsecond},
		{"ttl over 365 days", prefix + "long", 366 * 24 * time.Hour},
	}
	for _, c := range cases {
		h, ok, err := l.TryLock(c.key, c.ttl)
		var e *bextlock.Error
		if h != nil || ok || !errors.As(err, &e) || !errors.Is(err, bextlock.ErrInvalid) || e.Status != bextlock.StatusInvalid {
			t.Errorf("%s: want an ErrInvalid *Error, got %v, %v, %v", c.name, h, ok, err)
		}
	}
	for _, key := range []string{
		prefix + strings.Repeat("k", 1024-len(prefix)),
		prefix + "ключ/✓ \"quoted\" \\ <tag> \u0000 nul",
	} {
		h := mustLock(t, l, key, time.Second)
		if h.Key() != key {
			t.Errorf("handle key %q, want %q", h.Key(), key)
		}
		if err := l.Renew(h); err != nil {
			t.Errorf("renew %q: %v", key, err)
		}
		if err := l.Release(h); err != nil {
			t.Errorf("release %q: %v", key, err)
		}
	}
	if err := l.Renew(nil); !errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("renew nil: want ErrInvalid, got %v", err)
	}
	if err := l.Release(&bextlock.Handle{}); !errors.Is(err, bextlock.ErrInvalid) {
		t.Errorf("release of a zero Handle: want ErrInvalid, got %v", err)
	}
}

func suiteHandleJSON(t *testing.T, p *bextlock.Plugin, config func() any) {
	a := newLocker(t, p, config())
	b := newLocker(t, p, config())
	key := uniqueName("json")
	h := mustLock(t, a, key, 5*time.Second)

	raw := h.JSON()
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil || fields["key"] != key || fields["lock_id"] != h.LockID() {
		t.Fatalf("JSON() is not the plugin's handle: %s (%v)", raw, err)
	}
	// Marshal, as a host would to hand the lock to another process.
	sent, err := json.Marshal(struct {
		Handle *bextlock.Handle `json:"handle"`
	}{h})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"handle":` + string(raw) + `}`; string(sent) != want {
		t.Errorf("marshalled %s, want the plugin's bytes %s", sent, want)
	}
	var got struct {
		Handle *bextlock.Handle `json:"handle"`
	}
	if err := json.Unmarshal(sent, &got); err != nil {
		t.Fatal(err)
	}
	if string(got.Handle.JSON()) != string(raw) || got.Handle.LockID() != h.LockID() || got.Handle.TTL() != h.TTL() {
		t.Errorf("round trip changed the handle: %s", got.Handle.JSON())
	}
	f1, ok1 := h.Fence()
	f2, ok2 := got.Handle.Fence()
	if f1 != f2 || ok1 != ok2 {
		t.Errorf("round trip changed the fence")
	}
	// A field this host does not know travels to the plugin, which ignores it.
	extended := strings.TrimSuffix(string(raw), "}") + `,"x_go_host":{"note":[1,2]}}`
	var ext bextlock.Handle
	if err := json.Unmarshal([]byte(extended), &ext); err != nil {
		t.Fatal(err)
	}
	if string(ext.JSON()) != extended {
		t.Errorf("the handle was not kept byte for byte: %s", ext.JSON())
	}
	if err := b.Renew(&ext); err != nil {
		t.Errorf("renew through the unmarshalled handle: %v", err)
	}
	if err := b.Release(got.Handle); err != nil {
		t.Errorf("release through the unmarshalled handle: %v", err)
	}
	h2 := mustLock(t, a, key, time.Second) // the release really freed it
	_ = a.Release(h2)

	for _, bad := range []string{`{}`, `{"key":"k","ttl_ms":5}`, `[1]`, `{"key":"k","lock_id":"x"}`} {
		var hh bextlock.Handle
		if err := json.Unmarshal([]byte(bad), &hh); err == nil {
			t.Errorf("%s unmarshalled into a Handle", bad)
		}
	}
}

// contend runs workers goroutines of n TryLock calls each on one key, over
// four Lockers seeing the same locks, and fails on any overlap or error.
func contend(t *testing.T, p *bextlock.Plugin, config func() any, workers, n int) {
	lockers := make([]*bextlock.Locker, 4)
	for i := range lockers {
		lockers[i] = newLocker(t, p, config())
	}
	key := uniqueName("contend")
	var holders, acquired, contended, overlaps atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(l *bextlock.Locker) {
			defer wg.Done()
			for i := 0; i < n; i++ {
				h, ok, err := l.TryLock(key, 30*time.Second)
				if err != nil {
					t.Errorf("TryLock: %v", err)
					return
				}
				if !ok {
					contended.Add(1)
					continue
				}
				if holders.Add(1) != 1 {
					overlaps.Add(1)
				}
				acquired.Add(1)
				if i%10 == 0 {
					if err := l.Renew(h); err != nil {
						t.Errorf("renew while holding: %v", err)
					}
				}
				holders.Add(-1)
				if err := l.Release(h); err != nil {
					t.Errorf("Release: %v", err)
					return
				}
			}
		}(lockers[w%len(lockers)])
	}
	wg.Wait()
	t.Logf("%d workers x %d calls: %d acquired, %d contended", workers, n, acquired.Load(), contended.Load())
	if overlaps.Load() != 0 {
		t.Fatalf("%d overlapping holders", overlaps.Load())
	}
	if got := acquired.Load() + contended.Load(); !t.Failed() && got != int64(workers*n) {
		t.Errorf("%d outcomes for %d calls", got, workers*n)
	}
	if acquired.Load() == 0 {
		t.Errorf("nobody ever acquired the lock")
	}
}

func suiteClose(t *testing.T, p *bextlock.Plugin, config func() any) {
	l, err := p.New(config())
	if err != nil {
		t.Fatal(err)
	}
	key := uniqueName("close")
	h := mustLock(t, l, key, time.Second)
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := l.TryLock(key, time.Second); !errors.Is(err, bextlock.ErrClosed) {
		t.Errorf("TryLock after Close: want ErrClosed, got %v", err)
	}
	if err := l.Renew(h); !errors.Is(err, bextlock.ErrClosed) {
		t.Errorf("Renew after Close: want ErrClosed, got %v", err)
	}
	// Another instance can still release the lock the closed one held.
	other := newLocker(t, p, config())
	if err := other.Release(h); err != nil {
		t.Errorf("release through another locker: %v", err)
	}
}

func suiteRunExclusive(t *testing.T, p *bextlock.Plugin, config func() any) {
	a := newLocker(t, p, config())
	b := newLocker(t, p, config())
	key := uniqueName("exclusive")
	ran, err := bextlock.RunExclusive(context.Background(), a, key, 3*time.Second, func(ctx context.Context) error {
		mustContend(t, b, key)
		return nil
	})
	if !ran || err != nil {
		t.Fatalf("ran %v, err %v", ran, err)
	}
	h := mustLock(t, b, key, time.Second) // released on return
	ran, err = bextlock.RunExclusive(context.Background(), a, key, time.Second, func(context.Context) error {
		t.Error("fn ran under contention")
		return nil
	})
	if ran || err != nil {
		t.Errorf("contended: want (false, nil), got (%v, %v)", ran, err)
	}
	_ = b.Release(h)
}
