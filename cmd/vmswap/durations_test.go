package main_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDurationsKeptBetweenRuns: what a run learns of how long the lab's
// actions take is kept in the cache directory (with no secret in it), and
// the next run asks about each action when it should be done: it polls
// far less than the first, which started from nothing. A damaged cache
// file is only a cache: the run after it polls from the start and
// succeeds.
func TestDurationsKeptBetweenRuns(t *testing.T) {
	t.Parallel()
	w := newCutoverWorld(t, "", "loadbalancer")
	cache := t.TempDir()
	env := append(w.env[:len(w.env):len(w.env)], "VMSWAP_CACHE_DIR="+cache)
	polls := func(from int) int {
		n := 0
		for _, q := range w.l.Requests()[from:] {
			if q.Operation == "dropletActions_get" || q.Operation == "droplets_get" {
				n++
			}
		}
		return n
	}
	before := len(w.l.Requests())
	must(t, vmswap(t, env, "apply", "--poll", "50ms", w.planFile), 0, "vmswap: succeeded")
	cold := polls(before)

	file := filepath.Join(cache, "durations.json")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), w.l.Endpoints().Token) {
		t.Fatalf("the cache holds the token:\n%s", raw)
	}
	var f struct {
		Providers map[string]struct {
			TookMS map[string]int64 `json:"took_ms"`
		} `json:"providers"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	took := f.Providers["digitalocean "+w.l.Endpoints().DigitalOceanAPI].TookMS
	for _, kind := range []string{"boot", "snapshot of 25 GB", "shut down", "rename"} {
		if took[kind] <= 0 {
			t.Errorf("no duration kept for %q: %s", kind, raw)
		}
	}

	must(t, vmswap(t, env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	before = len(w.l.Requests())
	must(t, vmswap(t, env, "apply", "--poll", "50ms", w.planFile), 0, "vmswap: succeeded")
	// Snapshot, boot, shutdown and two renames: one read each when the
	// durations are known, a few more where the lab's timing wobbles.
	if taught := polls(before); taught > 8 || taught >= cold {
		t.Errorf("the taught run polled %d times, the first %d", taught, cold)
	}

	if err := os.WriteFile(file, []byte("{\"version\":1,\"providers\":{\"x\":"), 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, vmswap(t, env, "rollback", "--yes", "--poll", "50ms", w.planFile), 0, "vmswap: reverted")
	if raw, err := os.ReadFile(file); err != nil || !json.Valid(raw) {
		t.Fatalf("the damaged cache was not written anew: %v\n%s", err, raw)
	}
}
