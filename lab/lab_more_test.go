package lab_test

import (
	"context"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
)

// TestRestartMidActionFreesTheDroplet: a lab stopped while a snapshot
// action runs comes back with that action errored (what it would have made
// was never made) and the droplet unlocked, so the next action is accepted.
func TestRestartMidActionFreesTheDroplet(t *testing.T) {
	dir := t.TempDir()
	d := lab.FastDurations()
	d.Snapshot = time.Hour
	l := labtest.Start(t, lab.Config{StateDir: dir, Durations: d})
	ctx := context.Background()
	id, _, err := l.Seeder().Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, map[string]string{"index.html": "x"})
	if err != nil {
		t.Fatal(err)
	}
	c := labtest.Godo(t, l)
	a, _, err := c.DropletActions.Snapshot(ctx, id, "snap")
	if err != nil || a.Status != "in-progress" {
		t.Fatalf("snapshot: %+v %v", a, err)
	}
	if dr, _, _ := c.Droplets.Get(ctx, id); !dr.Locked {
		t.Fatal("droplet not locked during its action")
	}
	l.Close()

	l2 := labtest.Start(t, lab.Config{StateDir: dir})
	c2 := labtest.Godo(t, l2)
	got, _, err := c2.DropletActions.Get(ctx, id, a.ID)
	if err != nil || got.Status != "errored" {
		t.Fatalf("the action after a restart: %+v %v", got, err)
	}
	dr, _, err := c2.Droplets.Get(ctx, id)
	if err != nil || dr.Locked {
		t.Fatalf("droplet after a restart: locked %v, %v", dr != nil && dr.Locked, err)
	}
	if _, _, err := c2.DropletActions.Snapshot(ctx, id, "snap2"); err != nil {
		t.Fatalf("a new action after the restart: %v", err)
	}
}

// TestRecordDataMatchesType: the lab refuses an A record whose data is not
// IPv4 and an AAAA record whose data is not IPv6, as DigitalOcean does.
func TestRecordDataMatchesType(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	c := labtest.Godo(t, l)
	if _, _, err := c.Domains.Create(ctx, &godo.DomainCreateRequest{Name: "v6.test"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		typ, data string
		ok        bool
	}{{"AAAA", "2001:db8::5", true}, {"AAAA", "127.0.0.5", false}, {"A", "2001:db8::5", false}, {"A", "127.0.0.5", true}} {
		_, _, err := c.Domains.CreateRecord(ctx, "v6.test", &godo.DomainRecordEditRequest{Type: tc.typ, Name: "www", Data: tc.data, TTL: 60})
		if (err == nil) != tc.ok {
			t.Fatalf("%s %s: %v", tc.typ, tc.data, err)
		}
	}
}
