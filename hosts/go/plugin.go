package bextlock

import (
	"bytes"
	"encoding/json"
	"sync"
	"syscall"
)

// Plugin is an opened plugin library with a validated vtable.
//
// A Plugin is safe for concurrent use and needs no closing: the library is
// never unloaded (plugins are linked so that it could not be anyway), so
// Lockers may outlive the Plugin value they came from.
type Plugin struct {
	path    string
	vt      *cVTable
	name    string
	version string

	driftOnce sync.Once
	drift     ClockDrift
	driftErr  error
}

// Description is what a plugin's describe slot reports.
type Description struct {
	// Name is the plugin's name, e.g. "redis".
	Name string `json:"name"`
	// Version is the plugin's own semver.
	Version string `json:"version"`
	// ABIVersion is the ABI version it was built for.
	ABIVersion uint32 `json:"abi_version"`
	// Description is one sentence about the backend.
	Description string `json:"description"`
	// Fencing says whether the default configuration hands out fences;
	// each Handle says whether it carries one.
	Fencing bool `json:"fencing"`
	// ConfigSchema is the JSON Schema of the config object New accepts.
	ConfigSchema json.RawMessage `json:"config_schema"`
	// ClockDrift is the clock-drift allowance the plugin states, or nil:
	// then RedlockDrift applies (see [Description.ClockDriftOrDefault]).
	ClockDrift *ClockDrift `json:"clock_drift,omitempty"`
	// ABIMinor is the ABI revision the plugin was built for: 1 since
	// revision 1.1, 0 for a 1.0 plugin (which does not say).
	ABIMinor uint32 `json:"abi_minor,omitempty"`
	// Capabilities names what the backend implements in at least one of
	// its modes: "owner" (TryLock stores the owner, Inspect returns it),
	// "inspect", "force_release", "stats". Empty for a 1.0 plugin.
	Capabilities []string `json:"capabilities,omitempty"`
}

// Has reports whether the description lists the capability.
func (d Description) Has(capability string) bool {
	for _, c := range d.Capabilities {
		if c == capability {
			return true
		}
	}
	return false
}

// ClockDriftOrDefault is the allowance to count leases with: the stated one,
// or RedlockDrift.
func (d Description) ClockDriftOrDefault() ClockDrift {
	if d.ClockDrift != nil {
		return *d.ClockDrift
	}
	return RedlockDrift
}

// Open loads the plugin library at path, calls its entry point with ABI
// version 1 and validates the vtable it returns (ABI version, struct size,
// no NULL slots or strings).
//
// First the file goes through the permission rule every host applies (see
// docs/LOADER.md): the file (a symlink's target), the folder holding it and
// every folder above must belong to root or to this process's user, and the
// file and its folder must not be writable by group or others (folders
// further up only with the sticky bit, like /tmp); a symlink's own folder is
// checked too. A refused file is an [*OpenError] wrapping ErrInsecure;
// [OpenWith] with AllowInsecure skips the rule.
//
// path is given to dlopen as is: use a path containing a slash, since a bare
// file name is searched for on the library path. The library is opened with
// RTLD_NOW|RTLD_LOCAL and never closed. Opening the same path twice returns
// the code loaded the first time, even if the file changed since; to load a
// newer build, write it to a new path (write, then rename; never overwrite a
// loaded file in place).
//
// On failure the error is an [*OpenError] wrapping ErrInsecure, ErrDlopen
// (with the dynamic loader's message), ErrNotPlugin, ErrABIMismatch or
// ErrBadVTable.
func Open(path string) (*Plugin, error) {
	return OpenWith(path, OpenOptions{})
}

// OpenWith is [Open] with options.
func OpenWith(path string, options OpenOptions) (*Plugin, error) {
	openPath := path
	var checked syscall.Stat_t
	wasChecked := false
	if !options.AllowInsecure && path != "" {
		target, st, ok, err := checkFile(path)
		if err != nil {
			return nil, &OpenError{Path: path, Err: err}
		}
		// The checked file by its real path: the checks mean nobody else
		// can replace it or a folder on the way.
		if ok {
			openPath, checked, wasChecked = target, st, true
		}
	}
	vt, name, version, err := openVTable(openPath)
	if err != nil {
		return nil, &OpenError{Path: path, Err: err}
	}
	if wasChecked {
		var now syscall.Stat_t
		if syscall.Stat(openPath, &now) != nil || now.Dev != checked.Dev || now.Ino != checked.Ino {
			return nil, &OpenError{Path: path, Err: &insecure{"the file was replaced while it was being loaded"}}
		}
	}
	return &Plugin{path: path, vt: vt, name: name, version: version}, nil
}

// Name is the plugin's name from its vtable, e.g. "memory".
func (p *Plugin) Name() string { return p.name }

// Version is the plugin's version from its vtable.
func (p *Plugin) Version() string { return p.version }

// Path is the file the plugin was opened from.
func (p *Plugin) Path() string { return p.path }

// ABIMinor is the ABI revision the plugin's vtable covers, from its
// struct_size alone: 0 for a plugin built for ABI 1.0, which has none of the
// slots of revision 1.1 (Inspect, ForceRelease and Stats then return
// ErrUnsupported without calling anything).
func (p *Plugin) ABIMinor() uint32 { return abiMinor(p.vt) }

// HasSlot reports whether the plugin has the vtable slot name: "inspect",
// "force_release" or "stats" (since ABI 1.1, optional); the 1.0 slots
// ("try_lock", "renew", "release", ...) always. A slot can be present while
// the backend's mode still answers ErrUnsupported when called.
func (p *Plugin) HasSlot(name string) bool {
	switch name {
	case "describe", "create", "try_lock", "renew", "release", "cleanup", "destroy", "free_string":
		return true
	}
	for _, s := range optionalSlots {
		if s.String() == name {
			return hasSlot(p.vt, s)
		}
	}
	return false
}

// Describe calls the plugin's describe slot.
func (p *Plugin) Describe() (Description, error) {
	status, out, hasOut := callDescribe(p.vt)
	switch {
	case status < 0:
		return Description{}, statusError(p.name, "describe", status, out, hasOut)
	case status != int32(StatusOK):
		return Description{}, protocolError(p.name, "describe", status, "unexpected status %d", status)
	case !hasOut:
		return Description{}, protocolError(p.name, "describe", status, "OK without a description")
	}
	var d Description
	if err := json.Unmarshal(out, &d); err != nil {
		return Description{}, protocolError(p.name, "describe", status, "the description is not valid JSON: %v", err)
	}
	return d, nil
}

// clockDrift is the plugin's clock-drift allowance, asked once.
func (p *Plugin) clockDrift() (ClockDrift, error) {
	p.driftOnce.Do(func() {
		d, err := p.Describe()
		if err == nil {
			p.drift = d.ClockDriftOrDefault()
			if cerr := p.drift.check(); cerr != nil {
				err = protocolError(p.name, "describe", int32(StatusOK), "clock_drift: %v", cerr)
			}
		}
		p.driftErr = err
	})
	return p.drift, p.driftErr
}

// New creates an instance of the backend.
//
// config is marshalled with encoding/json and must give a JSON object (a
// struct, a map, or a json.RawMessage holding an object); nil means {}. Each
// backend lists its keys in [Description.ConfigSchema]; an unknown key is an
// error naming it. A refused config gives an error matching ErrInvalid, an
// unreachable backend one matching ErrBackend.
//
// Close the Locker when done with it.
func (p *Plugin) New(config any) (*Locker, error) {
	text := []byte("{}")
	if config != nil {
		var err error
		if text, err = json.Marshal(config); err != nil {
			return nil, invalidError(p.name, "create", "the config cannot be marshalled to JSON: %v", err)
		}
		if bytes.Equal(text, []byte("null")) {
			text = []byte("{}")
		}
	}
	inst, status, errJSON, hasErr := callCreate(p.vt, text)
	switch {
	case status < 0:
		if inst != nil {
			// An instance despite the error: not ours to leak.
			callDestroy(p.vt, inst)
		}
		return nil, statusError(p.name, "create", status, errJSON, hasErr)
	case status != int32(StatusOK):
		if inst != nil {
			callDestroy(p.vt, inst)
		}
		return nil, protocolError(p.name, "create", status, "unexpected status %d", status)
	case inst == nil:
		return nil, protocolError(p.name, "create", status, "OK without an instance")
	}
	l := &Locker{plugin: p, inst: inst}
	l.owner.Store(DefaultOwner())
	return l, nil
}
