package digitalocean_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/loadbalancer/digitalocean"
	"github.com/vmswap/vmswap/loadbalancer/lbtest"
)

func TestConformance(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx := context.Background()
	id1, _, err := l.Seeder().Droplet(ctx, "web-1", "s-1vcpu-1gb", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	id2, _, err := l.Seeder().Droplet(ctx, "web-2", "s-1vcpu-1gb", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	lbID, _, err := l.Seeder().LoadBalancer(ctx, "lb", []int{id1})
	if err != nil {
		t.Fatal(err)
	}
	p := digitalocean.New(digitalocean.Config{Client: labtest.Godo(t, l)})
	lbtest.Run(t, p, lbID, loadbalancer.Member{ServerID: strconv.Itoa(id1)}, loadbalancer.Member{ServerID: strconv.Itoa(id2)})
}
