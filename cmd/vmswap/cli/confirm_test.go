package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/runner"
)

// confirmWorld is a lab with web-1 on a reserved IP, and the flags of an
// upgrade of it.
type confirmWorld struct {
	l     *lab.Lab
	dir   string
	flags []string
	// seeded counts the lab's changes made by seeding it.
	seeded int
}

func newConfirmWorld(t *testing.T) *confirmWorld {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	id, _, err := l.Seeder().Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, map[string]string{"index.html": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	ip, err := l.Seeder().ReservedIP(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	w := &confirmWorld{l: l, dir: t.TempDir()}
	w.seeded = w.mutations()
	w.flags = []string{"--endpoint", l.Endpoints().DigitalOceanAPI, "--source", "web-1", "--size", "s-2vcpu-4gb",
		"--reserved-ip", ip, "--probe-url", fmt.Sprintf("http://%s:%d/", ip, l.HTTPPort()), "--observe", "1s", "--drain", "100ms", "--keep-for", "24h"}
	return w
}

// run runs vmswap with a terminal (or not) whose user types input.
func (w *confirmWorld) run(terminal bool, input io.Reader, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	f := &Factory{IO: &IOStreams{In: input, Out: &out, ErrOut: &errb, IsTerminal: terminal}, Getenv: func(k string) string {
		if k == "DIGITALOCEAN_TOKEN" {
			return w.l.Token()
		}
		return ""
	}}
	code := Main(args, f)
	return code, out.String(), errb.String()
}

func (w *confirmWorld) mutations() int {
	n := -w.seeded
	for _, r := range w.l.Requests() {
		if r.Mutating() {
			n++
		}
	}
	return n
}

// TestUpgradeAsksFirst: upgrade shows what it will do and asks; only "yes"
// goes on. Anything else, or no terminal without --yes, exits 2 with
// nothing changed — without a terminal, before any call to the provider.
func TestUpgradeAsksFirst(t *testing.T) {
	for _, answer := range []string{"no\n", "\n", "", "yes please\n"} {
		t.Run(fmt.Sprintf("%q", answer), func(t *testing.T) {
			t.Parallel()
			w := newConfirmWorld(t)
			planFile := filepath.Join(w.dir, "p.yaml")
			code, _, stderr := w.run(true, strings.NewReader(answer), append([]string{"upgrade", "--plan-file", planFile}, w.flags...)...)
			if code != runner.ExitBadInput || !strings.Contains(stderr, "Do you want to perform these actions? Only 'yes' will be accepted:") || !strings.Contains(stderr, "nothing was changed") {
				t.Fatalf("exit %d:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, "apply will:") || !strings.Contains(stderr, "$6.00 a month now, $24.00 after: +$18.00 a month") {
				t.Fatalf("the question came without the changes and their cost:\n%s", stderr)
			}
			if n := w.mutations(); n != 0 {
				t.Fatalf("%d changes made in the lab after the answer %q", n, answer)
			}
		})
	}
	t.Run("no terminal", func(t *testing.T) {
		t.Parallel()
		w := newConfirmWorld(t)
		before := len(w.l.Requests())
		code, _, stderr := w.run(false, strings.NewReader("yes\n"), append([]string{"upgrade"}, w.flags...)...)
		if code != runner.ExitBadInput || !strings.Contains(stderr, "pass --yes") {
			t.Fatalf("exit %d:\n%s", code, stderr)
		}
		if n := len(w.l.Requests()) - before; n != 0 {
			t.Fatalf("%d provider calls before refusing", n)
		}
	})
	t.Run("yes, then rollback asks too", func(t *testing.T) {
		t.Parallel()
		w := newConfirmWorld(t)
		planFile := filepath.Join(w.dir, "p.yaml")
		code, _, stderr := w.run(true, strings.NewReader("yes\n"), append([]string{"upgrade", "--plan-file", planFile}, w.flags...)...)
		if code != 0 || !strings.Contains(stderr, "Only 'yes' will be accepted") {
			t.Fatalf("exit %d:\n%s", code, stderr)
		}
		// apply of a saved plan never asks: the plan was the review.
		code, _, stderr = w.run(true, readerThatFails{t}, "apply", planFile)
		if code != 0 || strings.Contains(stderr, "Do you want") {
			t.Fatalf("apply: exit %d:\n%s", code, stderr)
		}
		before := w.mutations()
		code, _, stderr = w.run(false, strings.NewReader(""), "rollback", planFile)
		if code != runner.ExitBadInput || !strings.Contains(stderr, "pass --yes") || w.mutations() != before {
			t.Fatalf("rollback without a terminal: exit %d, %d changes:\n%s", code, w.mutations()-before, stderr)
		}
		code, _, stderr = w.run(true, strings.NewReader("no\n"), "rollback", planFile)
		if code != runner.ExitBadInput || !strings.Contains(stderr, "move traffic back to it from") || w.mutations() != before {
			t.Fatalf("rollback answered no: exit %d, %d changes:\n%s", code, w.mutations()-before, stderr)
		}
		code, _, stderr = w.run(true, strings.NewReader("yes\n"), "rollback", planFile)
		if code != 0 || !strings.Contains(stderr, "reverted") && !strings.Contains(stderr, "serves again") {
			t.Fatalf("rollback answered yes: exit %d:\n%s", code, stderr)
		}
	})
}

type readerThatFails struct{ t *testing.T }

func (r readerThatFails) Read([]byte) (int, error) {
	r.t.Error("apply read from stdin: a saved plan must never ask")
	return 0, io.EOF
}

// TestPlanShowsCost: the plan's cost comes from the sizes API: both monthly
// prices and the difference, the swap's own cost, the retired server kept
// powered off for keep_for; the same figures as JSON fields.
func TestPlanShowsCost(t *testing.T) {
	w := newConfirmWorld(t)
	code, stdout, stderr := w.run(false, strings.NewReader(""), append([]string{"plan", "--format", "json", "-o", filepath.Join(w.dir, "p.yaml")}, w.flags...)...)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	var ev struct {
		Event string `json:"event"`
		Swaps []struct {
			Cost plans.Cost `json:"cost"`
		} `json:"swaps"`
	}
	if err := json.Unmarshal([]byte(stdout), &ev); err != nil || ev.Event != "plan" || len(ev.Swaps) != 1 {
		t.Fatalf("plan event: %v\n%s", err, stdout)
	}
	c := ev.Swaps[0].Cost
	// The lab's sizes are DigitalOcean's: s-1vcpu-1gb $6, s-2vcpu-4gb $24
	// a month, hourly a 672nd of that.
	if c.Currency != "USD" || *c.SourceMonthly != 6 || *c.TargetMonthly != 24 || *c.MonthlyDifference != 18 || c.KeepHours != 24 || *c.Kept != 0.2141 || c.SnapshotGB != 25 {
		t.Fatalf("cost: %+v", c)
	}
	if c.Overlap == nil || *c.Overlap <= 0 || *c.Overlap > 0.05 {
		t.Fatalf("both servers during the swap: %v", c.Overlap)
	}
	code, _, stderr = w.run(false, strings.NewReader(""), append([]string{"plan", "-o", filepath.Join(w.dir, "q.yaml")}, w.flags...)...)
	for _, want := range []string{"$6.00 a month now, $24.00 after: +$18.00 a month", "the retired server kept 24h: $0.21", "billed while powered off, as if it ran", "its price is not reported by the API"} {
		if code != 0 || !strings.Contains(stderr, want) {
			t.Fatalf("exit %d; the plan's cost lacks %q:\n%s", code, want, stderr)
		}
	}
	// Downsizing is a change in cost too: a CPU-optimized c-2 ($42) down to
	// s-1vcpu-1gb ($6), whose 25 GB disk the image fits.
	ctx := context.Background()
	id, _, err := w.l.Seeder().Droplet(ctx, "big-1", "c-2", nil, map[string]string{"index.html": "hi"})
	if err != nil {
		t.Fatal(err)
	}
	ip, err := w.l.Seeder().ReservedIP(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr = w.run(false, strings.NewReader(""), "plan", "--endpoint", w.l.Endpoints().DigitalOceanAPI, "--source", "big-1", "--size", "s-1vcpu-1gb",
		"--reserved-ip", ip, "-o", filepath.Join(w.dir, "r.yaml"))
	if code != 0 || !strings.Contains(stderr, "$42.00 a month now, $6.00 after: -$36.00 a month") {
		t.Fatalf("exit %d; a downsize's cost:\n%s", code, stderr)
	}
	// A size the image cannot fit (a smaller disk) is refused before
	// anything changes, naming the sizes that would do.
	code, _, stderr = w.run(false, strings.NewReader(""), "plan", "--endpoint", w.l.Endpoints().DigitalOceanAPI, "--source", "web-1", "--size", "s-1vcpu-512mb-10gb",
		"--reserved-ip", w.flags[7], "-o", filepath.Join(w.dir, "s.yaml"))
	if code != 2 || !strings.Contains(stderr, "sizes whose disk fits: s-1vcpu-2gb (1 vCPU, 2048 MB, 50 GB, $12/mo)") {
		t.Fatalf("exit %d; a size too small for the image:\n%s", code, stderr)
	}
}
