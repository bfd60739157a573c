package digitalocean_test

import (
	"context"
	"testing"
	"time"

	"github.com/vmswap/vmswap/dns/digitalocean"
	"github.com/vmswap/vmswap/dns/dnstest"
	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
)

func TestConformance(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	if err := l.Seeder().Record(context.Background(), "shop.test", "www", "127.0.0.10", 60); err != nil {
		t.Fatal(err)
	}
	p := digitalocean.New(digitalocean.Config{Client: labtest.Godo(t, l), Nameserver: l.Endpoints().DNS, PollInterval: 50 * time.Millisecond})
	dnstest.Run(t, p, "www.shop.test", []string{"127.0.0.10"}, 60)
}

// TestZoneOfEachName: a name is found in the domain one label up without
// listing the account's domains; an apex name, a name in a deeper domain
// and a name whose parent is not a domain are found by the list, each in
// the longest domain that holds it.
func TestZoneOfEachName(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	sd := l.Seeder()
	for _, r := range []struct{ domain, name, ip string }{
		{"shop.test", "www", "127.0.0.10"},
		{"shop.test", "@", "127.0.0.11"},
		{"eu.shop.test", "api", "127.0.0.12"},
		{"shop.test", "a.b", "127.0.0.13"},
	} {
		if err := sd.Record(ctx, r.domain, r.name, r.ip, 60); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, want string
		lists      int
	}{
		{"www.shop.test", "127.0.0.10", 0},
		{"shop.test", "127.0.0.11", 1},
		{"api.eu.shop.test", "127.0.0.12", 0},
		{"a.b.shop.test", "127.0.0.13", 1},
	} {
		p := digitalocean.New(digitalocean.Config{Client: labtest.Godo(t, l), Nameserver: l.Endpoints().DNS})
		before := len(l.Requests())
		rec, err := p.GetRecord(ctx, c.name, "A")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(rec.Values) != 1 || rec.Values[0] != c.want {
			t.Errorf("%s holds %v, want %s", c.name, rec.Values, c.want)
		}
		lists := 0
		for _, q := range l.Requests()[before:] {
			if q.Operation == "domains_list" {
				lists++
			}
		}
		if lists != c.lists {
			t.Errorf("%s: %d lists of the domains, want %d", c.name, lists, c.lists)
		}
	}
}
