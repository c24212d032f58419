package bextlock

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// OpenOptions changes how [OpenWith] treats the file it is given.
type OpenOptions struct {
	// AllowInsecure skips the permission rule: loads a file that group or
	// others can write, or that another non-root user owns, or that sits in
	// such a folder. Off by default, as in every host: whoever can write the
	// file can run code in this process. For tests, and for files vetted some
	// other way.
	AllowInsecure bool
}

// The end of every refusal: what the rule is.
const onlyTrustedWriters = "only root or this user may be able to write a plugin"

// insecure is the reason a file was refused; it matches ErrInsecure.
type insecure struct{ why string }

func (e *insecure) Error() string { return "refused: " + e.why + "; " + onlyTrustedWriters }

func (e *insecure) Is(target error) bool { return target == ErrInsecure }

// ownerAndMode checks who owns st and whether others may write it.
func ownerAndMode(what string, st *syscall.Stat_t, stickyOK bool) error {
	me := uint32(os.Geteuid())
	if st.Uid != 0 && st.Uid != me {
		return &insecure{fmt.Sprintf("%s is owned by uid %d, which is neither root nor this process's user (uid %d)", what, st.Uid, me)}
	}
	mode := st.Mode & 0o7777
	if mode&0o022 != 0 && !(stickyOK && mode&0o1000 != 0) {
		who := "others"
		switch {
		case mode&0o020 != 0 && mode&0o002 != 0:
			who = "group and others"
		case mode&0o020 != 0:
			who = "its group"
		}
		return &insecure{fmt.Sprintf("%s is writable by %s (mode %04o)", what, who, mode)}
	}
	return nil
}

// checkFolder checks the canonical folder dir strictly and every folder above
// it (those only need the sticky bit when group/other-writable, like /tmp).
func checkFolder(dir string) error {
	stickyOK := false
	for {
		var st syscall.Stat_t
		if err := syscall.Stat(dir, &st); err != nil {
			return &insecure{fmt.Sprintf("cannot inspect folder %s: %v", dir, err)}
		}
		if err := ownerAndMode("folder "+dir, &st, stickyOK); err != nil {
			return err
		}
		// Only the folder holding the plugin must be strictly private: a
		// sticky folder further up cannot have ours renamed away.
		stickyOK = true
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

// checkFile applies the permission rule of every host (docs/LOADER.md) to
// path: the folder the path names (a symlink's own folder) and those above,
// the file (a symlink's target), and the folder really holding it. It
// returns the canonical path to open and the checked file's status; ok is
// false (with no error) when the file cannot be resolved, so that dlopen
// reports the missing file in its own words.
func checkFile(path string) (target string, st syscall.Stat_t, ok bool, err error) {
	target, rerr := filepath.EvalSymlinks(path)
	if rerr != nil {
		return "", st, false, nil
	}
	if target, rerr = filepath.Abs(target); rerr != nil {
		return "", st, false, nil
	}
	f, oerr := os.Open(target)
	if oerr != nil {
		return "", st, false, nil
	}
	defer f.Close()
	if serr := syscall.Fstat(int(f.Fd()), &st); serr != nil {
		return "", st, false, nil
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return "", st, false, fmt.Errorf("%w: not a regular file", ErrDlopen)
	}
	abs, aerr := filepath.Abs(path)
	if aerr != nil {
		return "", st, false, nil
	}
	own, derr := filepath.EvalSymlinks(filepath.Dir(abs))
	if derr != nil {
		return "", st, false, &insecure{fmt.Sprintf("cannot resolve folder %s: %v", filepath.Dir(abs), derr)}
	}
	if err := checkFolder(own); err != nil {
		return "", st, false, err
	}
	what := "the file"
	if li, lerr := os.Lstat(path); lerr == nil && li.Mode()&os.ModeSymlink != 0 {
		what = "the symlink's target " + target
	}
	if err := ownerAndMode(what, &st, false); err != nil {
		return "", st, false, err
	}
	// A symlink may lead out of that folder: the folder that really holds
	// the code must pass the same checks.
	if real := filepath.Dir(target); real != own {
		if err := checkFolder(real); err != nil {
			return "", st, false, err
		}
	}
	return target, st, true, nil
}
