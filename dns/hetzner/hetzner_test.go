package hetzner_test

import (
	"context"
	"testing"
	"time"

	"github.com/vmswap/vmswap/dns/dnstest"
	"github.com/vmswap/vmswap/dns/hetzner"
	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	hz "github.com/vmswap/vmswap/provider/hetzner"
)

// TestConformance runs the DNS conformance suite against the driver on the
// lab's Hetzner API, with the changes checked at the lab's DNS server.
func TestConformance(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	sd := l.Seeder()
	if _, err := sd.HetznerZone(ctx, "shop.test", 300); err != nil {
		t.Fatal(err)
	}
	if err := sd.HetznerRecord(ctx, "shop.test", "www", "A", []string{"127.0.0.10"}, 60); err != nil {
		t.Fatal(err)
	}
	ep := l.Endpoints()
	c, err := hz.NewClient(hz.Config{Token: ep.Token, BaseURL: ep.HetznerAPI, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	p := hetzner.New(hetzner.Config{Client: c, Nameserver: ep.DNS, PollInterval: 50 * time.Millisecond})
	dnstest.Run(t, p, "www.shop.test", []string{"127.0.0.10"}, 60)
}
