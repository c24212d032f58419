package bextlock_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bextlock "github.com/bext-locking/bext-locking/hosts/go"
)

// copyPlugin copies the memory plugin to dir/name with mode.
func copyPlugin(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	src, err := os.Open(optionalLib(t, "memory"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst := filepath.Join(dir, name)
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		t.Fatal(err)
	}
	out.Close()
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatal(err)
	}
	return dst
}

// refused opens path, which must be refused by the permission rule, and
// returns the message.
func refused(t *testing.T, path string) string {
	t.Helper()
	p, err := bextlock.Open(path)
	if err == nil {
		t.Fatalf("Open(%s) loaded %s; it must be refused", path, p.Name())
	}
	var oe *bextlock.OpenError
	if !errors.As(err, &oe) || !errors.Is(err, bextlock.ErrInsecure) || oe.Path != path {
		t.Fatalf("want an *OpenError for %s wrapping ErrInsecure, got %T %v", path, err, err)
	}
	if !strings.HasSuffix(err.Error(), "; only root or this user may be able to write a plugin") {
		t.Errorf("the rule is not said: %q", err)
	}
	return err.Error()
}

func TestOpenAppliesThePermissionRuleOfEveryHost(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		mode os.FileMode
		want string
	}{
		{0o666, "refused: the file is writable by group and others (mode 0666)"},
		{0o757, "refused: the file is writable by others (mode 0757)"},
		{0o775, "refused: the file is writable by its group (mode 0775)"},
	} {
		// A new file each time: dlopen hands back a library already loaded
		// from the same inode.
		path := copyPlugin(t, dir, "m"+c.mode.String()+".so", c.mode)
		if msg := refused(t, path); !strings.Contains(msg, c.want) {
			t.Errorf("mode %o: want %q in %q", c.mode, c.want, msg)
		}
		p, err := bextlock.OpenWith(path, bextlock.OpenOptions{AllowInsecure: true})
		if err != nil || p.Name() != "memory" {
			t.Errorf("AllowInsecure: %v", err)
		}
	}

	// A file in a folder others can write, sticky or not, directly or
	// through a symlink from a private folder.
	for _, mode := range []os.FileMode{0o777, 0o777 | os.ModeSticky, 0o770} {
		wide := t.TempDir()
		path := copyPlugin(t, wide, "ok.so", 0o755)
		if err := os.Chmod(wide, mode); err != nil {
			t.Fatal(err)
		}
		want := "refused: folder " + wide + " is writable by"
		if msg := refused(t, path); !strings.Contains(msg, want) {
			t.Errorf("folder %v: want %q in %q", mode, want, msg)
		}
		link := filepath.Join(t.TempDir(), "link.so")
		if err := os.Symlink(path, link); err != nil {
			t.Fatal(err)
		}
		if msg := refused(t, link); !strings.Contains(msg, want) {
			t.Errorf("symlink into folder %v: want %q in %q", mode, want, msg)
		}
	}

	// A symlink to a world-writable file names the target.
	target := copyPlugin(t, t.TempDir(), "real.so", 0o666)
	link := filepath.Join(t.TempDir(), "link.so")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if msg := refused(t, link); !strings.Contains(msg, "the symlink's target "+target+" is writable") {
		t.Errorf("%q does not name the target", msg)
	}

	// A link in a folder others can write, to a private, sound file:
	// others could replace the link, so it is refused, naming its folder.
	private := copyPlugin(t, t.TempDir(), "private.so", 0o755)
	wide := t.TempDir()
	wideLink := filepath.Join(wide, "link.so")
	if err := os.Symlink(private, wideLink); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(wide, 0o777); err != nil {
		t.Fatal(err)
	}
	if msg := refused(t, wideLink); !strings.Contains(msg, "refused: folder "+wide+" is writable") {
		t.Errorf("%q does not name the link's folder", msg)
	}

	// Files that pass load.
	fine := copyPlugin(t, t.TempDir(), "fine.so", 0o755)
	if p, err := bextlock.Open(fine); err != nil || p.Name() != "memory" {
		t.Fatalf("Open(%s): %v", fine, err)
	}
}

func TestOpenRefusesAFileOwnedByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: only root can give a file to another user")
	}
	path := copyPlugin(t, t.TempDir(), "theirs.so", 0o755)
	if err := os.Chown(path, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if msg := refused(t, path); !strings.Contains(msg, "the file is owned by uid 65534") {
		t.Errorf("%q", msg)
	}
}
