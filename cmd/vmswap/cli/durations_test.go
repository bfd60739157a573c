package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmswap/vmswap/plans"
)

// TestDurationsFileThatIsNoCache: what is not a small regular file of
// the right shape at the cache's path is read as an empty cache, at once.
func TestDurationsFileThatIsNoCache(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]func(string) error{
		"a directory": func(p string) error { return os.Mkdir(p, 0o700) },
		"garbage":     func(p string) error { return os.WriteFile(p, []byte("\x00{{not json"), 0o600) },
		"too big": func(p string) error {
			return os.WriteFile(p, []byte(`{"version":1,"providers":{}}`+strings.Repeat(" ", durationsMaxBytes)), 0o600)
		},
		"another version": func(p string) error { return os.WriteFile(p, []byte(`{"version":2,"providers":{"x":{}}}`), 0o600) },
		"absurd values": func(p string) error {
			return os.WriteFile(p, []byte(`{"version":1,"providers":{"x":{"saved":"2026-12-01T00:00:00Z","took_ms":{"boot":-5,"rename":99999999999}}}}`), 0o600)
		},
	}
	for name, make := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"), "durations.json")
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := make(p); err != nil {
			t.Fatal(err)
		}
		f := readDurations(p)
		for k, v := range f.Providers {
			if len(v.TookMS) > 0 {
				t.Errorf("%s: read %s: %v", name, k, v.TookMS)
			}
		}
	}
}

// TestDurationsKeyHasNoSecret: a user, password or query in an endpoint
// stays out of the cache's keys.
func TestDurationsKeyHasNoSecret(t *testing.T) {
	k := durationsKey(plans.Provider{Type: "digitalocean", Endpoint: "https://user:hunter2@api.example.test/v2/?token=s3cret#frag"})
	if strings.Contains(k, "hunter2") || strings.Contains(k, "s3cret") || strings.Contains(k, "user") || k != "digitalocean https://api.example.test/v2/" {
		t.Fatalf("key %q", k)
	}
	if k := durationsKey(plans.Provider{Type: "digitalocean"}); k != "digitalocean default" {
		t.Fatalf("key %q", k)
	}
}
