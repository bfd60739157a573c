package cli

import (
	"encoding/json"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/provider"
)

// What vmswap learns of how long a provider's operations take (a snapshot
// of a 25 GB disk, a boot, a shutdown) is kept between runs in the user's
// cache directory, so that a swap asks about each operation once, when it
// should be done, instead of polling it from its start: every call counts
// against the provider's rate limit. It is a cache: a missing, unreadable
// or damaged file only means polling from the start, and nothing in it is
// secret (provider types, endpoints, durations).

// durationsEnv overrides where the file lives; "off" keeps none.
const durationsEnv = "VMSWAP_CACHE_DIR"

const (
	durationsMaxAge       = 90 * 24 * time.Hour // older entries are forgotten
	durationsMaxProviders = 32                  // the oldest beyond go
	durationsMaxBytes     = 1 << 20             // a bigger file is not read
	durationsMaxTook      = 6 * time.Hour       // longer is not a duration vmswap saw
)

type durationsFile struct {
	Version   int                           `json:"version"`
	Providers map[string]*durationsOfTarget `json:"providers"`
}

type durationsOfTarget struct {
	Saved time.Time `json:"saved"`
	// TookMS is each kind's expected duration in milliseconds.
	TookMS map[string]int64 `json:"took_ms"`
}

// durationsPath is the cache file for an environment: $VMSWAP_CACHE_DIR,
// else the platform's user cache directory read from getenv (never the
// process's own environment: tests and the demo pass theirs). "" keeps none.
func durationsPath(getenv func(string) string) string {
	if getenv == nil {
		return ""
	}
	dir := getenv(durationsEnv)
	switch {
	case dir == "off":
		return ""
	case dir != "":
	case runtime.GOOS == "windows":
		if d := getenv("LocalAppData"); d != "" {
			dir = filepath.Join(d, "vmswap")
		}
	case runtime.GOOS == "darwin":
		if h := getenv("HOME"); h != "" {
			dir = filepath.Join(h, "Library", "Caches", "vmswap")
		}
	default:
		if x := getenv("XDG_CACHE_HOME"); filepath.IsAbs(x) {
			dir = filepath.Join(x, "vmswap")
		} else if h := getenv("HOME"); h != "" {
			dir = filepath.Join(h, ".cache", "vmswap")
		}
	}
	if dir == "" {
		return ""
	}
	return filepath.Join(dir, "durations.json")
}

// durationsKey names a provider block's target: its type, endpoint and
// region (never its token: durations belong to the cloud, not the account).
func durationsKey(p plans.Provider) string {
	ep := p.Endpoint
	if u, err := url.Parse(ep); err == nil {
		// A user, password or query in the URL stays out of the file.
		u.User, u.RawQuery, u.ForceQuery, u.Fragment = nil, "", false, ""
		ep = u.String()
	} else {
		ep = "unparsed"
	}
	if ep == "" {
		ep = "default"
	}
	k := p.Type + " " + ep
	if p.Region != "" {
		k += " " + p.Region
	}
	return k
}

func readDurations(path string) *durationsFile {
	f := &durationsFile{Version: 1, Providers: map[string]*durationsOfTarget{}}
	if path == "" {
		return f
	}
	// Only a regular file is read: opening a FIFO left there would wait
	// for a writer for ever.
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() || fi.Size() > durationsMaxBytes {
		return f
	}
	fh, err := os.Open(path)
	if err != nil {
		return f
	}
	defer fh.Close()
	raw, err := io.ReadAll(io.LimitReader(fh, durationsMaxBytes+1))
	if err != nil || len(raw) > durationsMaxBytes {
		return f
	}
	var in durationsFile
	if json.Unmarshal(raw, &in) != nil || in.Version != 1 {
		return f
	}
	for k, t := range in.Providers {
		if t == nil || time.Since(t.Saved) > durationsMaxAge || time.Until(t.Saved) > time.Hour {
			continue
		}
		took := map[string]int64{}
		for kind, ms := range t.TookMS {
			if ms > 0 && time.Duration(ms)*time.Millisecond <= durationsMaxTook {
				took[kind] = ms
			}
		}
		f.Providers[k] = &durationsOfTarget{Saved: t.Saved, TookMS: took}
	}
	return f
}

// teachDurations tells each driver that learns durations what earlier
// runs against its provider saw.
func teachDurations(getenv func(string) string, p *plans.Plan, drivers map[string]*registry.Drivers) {
	f := readDurations(durationsPath(getenv))
	for name, d := range drivers {
		l, ok := d.Compute.(provider.DurationLearner)
		t := f.Providers[durationsKey(p.Providers[name])]
		if !ok || t == nil {
			continue
		}
		m := make(map[string]time.Duration, len(t.TookMS))
		for k, ms := range t.TookMS {
			m[k] = time.Duration(ms) * time.Millisecond
		}
		l.Teach(m)
	}
}

// keepDurations writes what the drivers learned this run over what the
// file held for their providers. Two runs ending at once may each keep
// their own: either is a fine guess for the next.
func keepDurations(getenv func(string) string, p *plans.Plan, drivers map[string]*registry.Drivers) {
	path := durationsPath(getenv)
	if path == "" {
		return
	}
	f := readDurations(path)
	changed := false
	for name, d := range drivers {
		l, ok := d.Compute.(provider.DurationLearner)
		if !ok {
			continue
		}
		learned := l.Learned()
		if len(learned) == 0 {
			continue
		}
		k := durationsKey(p.Providers[name])
		t := f.Providers[k]
		if t == nil {
			t = &durationsOfTarget{TookMS: map[string]int64{}}
			f.Providers[k] = t
		}
		for kind, took := range learned {
			if took <= durationsMaxTook {
				t.TookMS[kind] = max(1, took.Milliseconds())
			}
		}
		t.Saved = time.Now().UTC()
		changed = true
	}
	if !changed {
		return
	}
	if len(f.Providers) > durationsMaxProviders {
		keys := make([]string, 0, len(f.Providers))
		for k := range f.Providers {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return f.Providers[keys[i]].Saved.After(f.Providers[keys[j]].Saved) })
		for _, k := range keys[durationsMaxProviders:] {
			delete(f.Providers, k)
		}
	}
	raw, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return
	}
	if os.MkdirAll(filepath.Dir(path), 0o700) != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".durations-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(append(raw, '\n'))
	if cerr := tmp.Close(); werr != nil || cerr != nil || os.Rename(tmp.Name(), path) != nil {
		os.Remove(tmp.Name())
	}
}
