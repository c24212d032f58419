package bextlock

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Label is one extra label on every sample WritePrometheus writes, such as
// {Name: "instance", Value: "jobs"}.
type Label struct {
	Name, Value string
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// escapeLabel escapes a label value as the Prometheus text format requires.
func escapeLabel(v string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v)
}

// errorCodes are the codes of ABI 1.1, written first and always (zero
// included) so a dashboard finds every series; later codes follow, sorted.
var errorCodes = []string{"invalid_argument", "backend", "panic", "unsupported"}

// WritePrometheus writes s in the Prometheus text exposition format
// (version 0.0.4, which OpenMetrics scrapers also read), ready to append to
// a service's /metrics answer. The names and labels are those of the Rust
// loader's Stats::to_prometheus, so one dashboard serves every host.
//
// Every sample carries plugin="<plugin>" and then labels, in order, their
// values escaped; a label name that is not [a-zA-Z_][a-zA-Z0-9_]* (or is
// "plugin", "code", "call" or "le", which the samples use) is an error and
// nothing is written. Metric names start with bext_locking_: counters
// _acquired_total, _contended_total, _errors_total{code},
// _renewed_total, _renew_failures_total, _released_total,
// _force_released_total, and the histogram _call_duration_seconds
// {call="try_lock"|"renew"|"release"} with cumulative buckets at the ABI's
// fixed bounds (no _sum: the plugin counts buckets only).
func (s Stats) WritePrometheus(w io.Writer, plugin string, labels ...Label) error {
	base := `plugin="` + escapeLabel(plugin) + `"`
	for _, l := range labels {
		switch {
		case !labelName.MatchString(l.Name):
			return fmt.Errorf("bextlock: %q is not a Prometheus label name", l.Name)
		case l.Name == "plugin" || l.Name == "code" || l.Name == "call" || l.Name == "le":
			return fmt.Errorf("bextlock: the label %q is set by WritePrometheus itself", l.Name)
		}
		base += "," + l.Name + `="` + escapeLabel(l.Value) + `"`
	}
	b := bufio.NewWriter(w)
	counters := []struct {
		name, help string
		value      uint64
	}{
		{"acquired", "try_lock calls that acquired the lock", s.Acquired},
		{"contended", "try_lock calls that found the key held", s.Contended},
		{"renewed", "renew calls that restarted the lease", s.Renewed},
		{"renew_failures", "renew calls that failed: the lock is lost", s.RenewFailures},
		{"released", "release calls answered OK", s.Released},
		{"force_released", "locks broken by force_release", s.ForceReleased},
	}
	for _, c := range counters {
		fmt.Fprintf(b, "# HELP bext_locking_%s_total %s.\n", c.name, c.help)
		fmt.Fprintf(b, "# TYPE bext_locking_%s_total counter\n", c.name)
		fmt.Fprintf(b, "bext_locking_%s_total{%s} %d\n", c.name, base, c.value)
	}
	fmt.Fprintf(b, "# HELP bext_locking_errors_total Calls answered with an error, by code.\n")
	fmt.Fprintf(b, "# TYPE bext_locking_errors_total counter\n")
	codes := append([]string(nil), errorCodes...)
	var later []string
	for code := range s.Errors {
		known := false
		for _, k := range errorCodes {
			known = known || k == code
		}
		if !known {
			later = append(later, code)
		}
	}
	sort.Strings(later)
	for _, code := range append(codes, later...) {
		fmt.Fprintf(b, "bext_locking_errors_total{%s,code=\"%s\"} %d\n", base, escapeLabel(code), s.Errors[code])
	}
	const name = "bext_locking_call_duration_seconds"
	fmt.Fprintf(b, "# HELP %s Time spent in each lock call, inside the plugin.\n", name)
	fmt.Fprintf(b, "# TYPE %s histogram\n", name)
	l := s.Latency
	for _, call := range []struct {
		name   string
		counts []uint64
	}{{"try_lock", l.TryLock}, {"renew", l.Renew}, {"release", l.Release}} {
		var cumulative uint64
		for i, n := range call.counts {
			cumulative += n
			le := "+Inf"
			if i < len(l.BoundsMicros) {
				le = strconv.FormatFloat(float64(l.BoundsMicros[i])/1e6, 'f', -1, 64)
			}
			fmt.Fprintf(b, "%s_bucket{%s,call=\"%s\",le=\"%s\"} %d\n", name, base, call.name, le, cumulative)
		}
		fmt.Fprintf(b, "%s_count{%s,call=\"%s\"} %d\n", name, base, call.name, cumulative)
	}
	return b.Flush()
}

// WritePrometheus writes this Locker's Stats in the Prometheus text format,
// labelled with its plugin's name and labels (see [Stats.WritePrometheus]).
// Serve it from a service's own /metrics handler:
//
//	http.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
//		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
//		if err := locker.WritePrometheus(w, bextlock.Label{Name: "instance", Value: "jobs"}); err != nil {
//			log.Print(err)
//		}
//	})
func (l *Locker) WritePrometheus(w io.Writer, labels ...Label) error {
	s, err := l.Stats()
	if err != nil {
		return err
	}
	return s.WritePrometheus(w, l.plugin.name, labels...)
}
