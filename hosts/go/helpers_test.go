package bextlock_test

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// targetDir is the cargo profile folder holding the plugin libraries:
// $BEXT_TARGET_DIR (set by mk/go.mk), else $CARGO_TARGET_DIR/debug, else the
// repository's target/debug (go test runs in this package's folder).
var targetDir = func() string {
	if d := os.Getenv("BEXT_TARGET_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("CARGO_TARGET_DIR"); d != "" {
		return filepath.Join(d, "debug")
	}
	d, err := filepath.Abs(filepath.Join("..", "..", "target", "debug"))
	if err != nil {
		panic(err)
	}
	return d
}()

// libPath is the library file of a backend ("memory") or fixture
// ("fixture-panicky").
func libPath(name string) string {
	return filepath.Join(targetDir, "libbext_locking_"+strings.ReplaceAll(name, "-", "_")+".so")
}

// memoryPath is the memory backend's library, which every test run needs.
var memoryPath = libPath("memory")

// optionalLib returns the library's path, or skips the test saying how to
// build it.
func optionalLib(t *testing.T, name string) string {
	t.Helper()
	p := libPath(name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("SKIP: %s is not built (run `cargo build -p bext-locking-%s`)", p, name)
	}
	return p
}

// openMemory opens the memory plugin, failing (not skipping) when it is
// missing: it is the reference backend every run must exercise.
func openMemory(t testing.TB) *bextlock.Plugin {
	t.Helper()
	if _, err := os.Stat(memoryPath); err != nil {
		t.Fatalf("%s is missing: run `cargo build -p bext-locking-memory` (make go-test does)", memoryPath)
	}
	p, err := bextlock.Open(memoryPath)
	if err != nil {
		t.Fatalf("open memory plugin: %v", err)
	}
	return p
}

func newLocker(t testing.TB, p *bextlock.Plugin, config any) *bextlock.Locker {
	t.Helper()
	l, err := p.New(config)
	if err != nil {
		t.Fatalf("New(%v): %v", config, err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

var uniq atomic.Int64

// uniqueName is unique across tests and runs, for keys on shared servers
// and memory namespaces.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s/go-%d-%d-%d", prefix, os.Getpid(), time.Now().UnixNano(), uniq.Add(1))
}

// reachable says whether a TCP connection to the URL's host succeeds.
func reachable(rawURL, defaultPort string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	host := u.Host
	if at := strings.LastIndex(host, "@"); at >= 0 {
		host = host[at+1:]
	}
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), defaultPort)
	}
	c, err := net.DialTimeout("tcp", host, 2*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
