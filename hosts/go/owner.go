package bextlock

import (
	"fmt"
	"os"
	"strconv"
	"sync"
	"unicode/utf8"
)

// MaxOwnerBytes is BEXT_LOCKING_MAX_OWNER_BYTES: the longest owner a
// try_lock request may carry, in bytes of UTF-8.
const MaxOwnerBytes = 256

var (
	defaultOwnerOnce sync.Once
	defaultOwner     string
)

// DefaultOwner is the owner a Locker sends with TryLock unless told
// otherwise: "hostname:pid" of this process, as the Rust loader sends it.
// It is cut to MaxOwnerBytes on a character boundary should the hostname be
// absurdly long.
func DefaultOwner() string {
	defaultOwnerOnce.Do(func() {
		host, err := os.Hostname()
		if err != nil || host == "" || !utf8.ValidString(host) {
			host = "localhost"
		}
		defaultOwner = truncateOwner(host + ":" + strconv.Itoa(os.Getpid()))
	})
	return defaultOwner
}

// truncateOwner cuts s to MaxOwnerBytes without splitting a character.
func truncateOwner(s string) string {
	if len(s) <= MaxOwnerBytes {
		return s
	}
	end := MaxOwnerBytes
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end]
}

// checkOwner refuses what the plugin would refuse, before encoding/json
// could turn invalid UTF-8 into U+FFFD.
func checkOwner(owner string) error {
	if !utf8.ValidString(owner) {
		return fmt.Errorf("owner is not valid UTF-8")
	}
	if len(owner) > MaxOwnerBytes {
		return fmt.Errorf("owner is %d bytes, more than the %d allowed", len(owner), MaxOwnerBytes)
	}
	return nil
}
