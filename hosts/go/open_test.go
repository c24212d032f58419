package bextlock_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

func TestOpenMissingFileCarriesDlerror(t *testing.T) {
	path := filepath.Join(t.TempDir(), "libbext_locking_nothing.so")
	_, err := bextlock.Open(path)
	var oe *bextlock.OpenError
	if !errors.As(err, &oe) || !errors.Is(err, bextlock.ErrDlopen) {
		t.Fatalf("want an *OpenError wrapping ErrDlopen, got %T %v", err, err)
	}
	if oe.Path != path {
		t.Errorf("Path = %q, want %q", oe.Path, path)
	}
	// glibc: "<path>: cannot open shared object file: No such file or directory"
	if msg := err.Error(); !strings.Contains(msg, "No such file") || !strings.Contains(msg, path) {
		t.Errorf("the error does not carry dlerror's text: %q", msg)
	}
}

func TestOpenNotASharedLibrary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "garbage.so")
	if err := os.WriteFile(path, []byte("this is not an ELF file, just text long enough to be read\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := bextlock.Open(path)
	if !errors.Is(err, bextlock.ErrDlopen) {
		t.Fatalf("want ErrDlopen, got %v", err)
	}
	if !strings.Contains(err.Error(), "ELF") && !strings.Contains(err.Error(), "too short") {
		t.Errorf("the error does not carry dlerror's text: %q", err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	// dlopen(NULL) or dlopen("") would open the main program; refuse instead.
	for _, path := range []string{"", "a\x00b"} {
		if _, err := bextlock.Open(path); !errors.Is(err, bextlock.ErrDlopen) {
			t.Errorf("Open(%q): want ErrDlopen, got %v", path, err)
		}
	}
}

func TestOpenLibraryWithoutEntry(t *testing.T) {
	path := optionalLib(t, "fixture-no-entry")
	_, err := bextlock.Open(path)
	if !errors.Is(err, bextlock.ErrNotPlugin) {
		t.Fatalf("want ErrNotPlugin, got %v", err)
	}
	if !strings.Contains(err.Error(), "bext_locking_plugin_entry") {
		t.Errorf("the error should name the missing symbol: %q", err)
	}
}

func TestOpenRejectsBadVTables(t *testing.T) {
	cases := []struct {
		fixture string
		want    error
		mention string
	}{
		{"fixture-bad-abi", bextlock.ErrABIMismatch, "ABI"},
		{"fixture-small-struct", bextlock.ErrBadVTable, "struct_size"},
		{"fixture-null-slot", bextlock.ErrBadVTable, "renew"},
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			path := optionalLib(t, c.fixture)
			p, err := bextlock.Open(path)
			if !errors.Is(err, c.want) {
				t.Fatalf("want %v, got plugin %v, error %v", c.want, p, err)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("the error should mention %q: %q", c.mention, err)
			}
		})
	}
}

func TestOpenSamePathTwice(t *testing.T) {
	a := openMemory(t)
	b := openMemory(t)
	if a.Name() != "memory" || b.Name() != "memory" || a.Version() == "" {
		t.Fatalf("names %q %q, version %q", a.Name(), b.Name(), a.Version())
	}
	if a.Path() != memoryPath {
		t.Errorf("Path() = %q", a.Path())
	}
}

func TestDescribe(t *testing.T) {
	p := openMemory(t)
	d, err := p.Describe()
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != p.Name() || d.Version != p.Version() || d.ABIVersion != 1 || d.Description == "" {
		t.Errorf("unexpected description %+v", d)
	}
	if !d.Fencing {
		t.Errorf("the memory backend fences, describe says it does not")
	}
	if !strings.Contains(string(d.ConfigSchema), `"namespace"`) {
		t.Errorf("config schema does not list namespace: %s", d.ConfigSchema)
	}
}
