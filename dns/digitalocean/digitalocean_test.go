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
