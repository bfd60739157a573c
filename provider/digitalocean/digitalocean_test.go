package digitalocean_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/provider/digitalocean"
)

// TestPowerOffOutlastingTimeout: a shutdown that takes longer than the
// timeout is still running when the forced power-off is asked for, which
// DigitalOcean refuses ("pending event"); the driver waits for it instead
// of failing, and the droplet ends off.
func TestPowerOffOutlastingTimeout(t *testing.T) {
	d := lab.FastDurations()
	d.Shutdown = 2 * time.Second
	l := labtest.Start(t, lab.Config{Durations: d})
	id, _, err := l.Seeder().Droplet(context.Background(), "web-1", "s-1vcpu-1gb", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ep := l.Endpoints()
	drv, err := digitalocean.New(digitalocean.Config{Token: ep.Token, BaseURL: ep.DigitalOceanAPI, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.PowerOff(context.Background(), strconv.Itoa(id), 300*time.Millisecond); err != nil {
		t.Fatalf("PowerOff: %v", err)
	}
	s, err := drv.GetServer(context.Background(), strconv.Itoa(id))
	if err != nil || s.Status != provider.StatusOff {
		t.Fatalf("after PowerOff: %+v %v", s, err)
	}
}

// TestPowerOffRacingTheShutdown: the shutdown ends right as its timeout
// does, so the forced power-off meets either the shutdown still pending or
// a droplet already off ("Droplet is already powered off", as the kill
// matrix met it under load). Both mean the droplet is off: no error.
func TestPowerOffRacingTheShutdown(t *testing.T) {
	d := lab.FastDurations()
	d.Shutdown = 300 * time.Millisecond
	l := labtest.Start(t, lab.Config{Durations: d})
	ep := l.Endpoints()
	drv, err := digitalocean.New(digitalocean.Config{Token: ep.Token, BaseURL: ep.DigitalOceanAPI, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i, timeout := range []time.Duration{280, 290, 300, 310, 320} {
		id, _, err := l.Seeder().Droplet(context.Background(), fmt.Sprintf("web-%d", i), "s-1vcpu-1gb", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := drv.PowerOff(context.Background(), strconv.Itoa(id), timeout*time.Millisecond); err != nil {
			t.Fatalf("PowerOff with a %dms timeout: %v", timeout, err)
		}
	}
}
