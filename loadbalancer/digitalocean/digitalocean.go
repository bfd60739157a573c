// Package digitalocean is vmswap's load-balancer driver for DigitalOcean load
// balancers (godo). DigitalOcean reports no per-droplet health, so it does not
// implement loadbalancer.HealthReporter: the runner proves a new member serves
// by the requests that reach it through the load balancer.
package digitalocean

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/godo"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/provider"
)

// Config holds every setting of the driver.
type Config struct {
	// Client is a godo client (provider/digitalocean.NewClient).
	Client *godo.Client
	// BatchWindow, when set, gathers the member changes that swaps running
	// at once (a fleet's wave) make within it into one call. Zero: each
	// change is its own call.
	BatchWindow time.Duration
}

// Provider implements loadbalancer.Provider.
type Provider struct {
	c             *godo.Client
	adds, removes *provider.Batcher
	// reads shares one GET between the swaps of a wave that read a load
	// balancer at once.
	reads provider.SharedReads[*godo.LoadBalancer]

	mu sync.Mutex
	// byTag is, for each load balancer read, the tag it selects its
	// members by ("" for a list of droplets): what a member change needs
	// to know, without reading it again.
	byTag map[string]string
}

var _ loadbalancer.Provider = (*Provider)(nil)

// New returns a Provider for cfg.
func New(cfg Config) *Provider {
	p := &Provider{c: cfg.Client}
	p.adds = &provider.Batcher{Window: cfg.BatchWindow, Send: func(ctx context.Context, pool string, ids []string) error { return p.send(ctx, pool, ids, true) }}
	p.removes = &provider.Batcher{Window: cfg.BatchWindow, Send: func(ctx context.Context, pool string, ids []string) error { return p.send(ctx, pool, ids, false) }}
	return p
}

// get reads a load balancer. The result is shared: it must not be
// modified.
func (p *Provider) get(ctx context.Context, id string) (*godo.LoadBalancer, error) {
	return p.recent(ctx, id, 0)
}

// recent is get, answered from a read begun less than maxAge ago if there
// is one.
func (p *Provider) recent(ctx context.Context, id string, maxAge time.Duration) (*godo.LoadBalancer, error) {
	lb, err := p.reads.Recent(ctx, id, maxAge, func(ctx context.Context) (*godo.LoadBalancer, error) {
		lb, resp, err := p.c.LoadBalancers.Get(ctx, id)
		if err != nil {
			if resp != nil && resp.StatusCode == 404 {
				return nil, fmt.Errorf("digitalocean: load balancer %s: %w", id, provider.ErrNotFound)
			}
			return nil, fmt.Errorf("digitalocean: get load balancer %s: %w", id, err)
		}
		return lb, nil
	})
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.byTag == nil {
		p.byTag = map[string]string{}
	}
	p.byTag[id] = lb.Tag
	p.mu.Unlock()
	return lb, nil
}

// Pool implements loadbalancer.MemberLister. The address is the LB's IP with
// the first HTTP forwarding rule's entry port when it is not 80.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/loadBalancers_get
func (p *Provider) Pool(ctx context.Context, id string) (*loadbalancer.Pool, error) {
	return p.RecentPool(ctx, id, 0)
}

// RecentPool implements loadbalancer.RecentLister: the swaps of a wave
// reaching their cutovers seconds apart share one read.
func (p *Provider) RecentPool(ctx context.Context, id string, maxAge time.Duration) (*loadbalancer.Pool, error) {
	lb, err := p.recent(ctx, id, maxAge)
	if err != nil {
		return nil, err
	}
	addr, port := lb.IP, 0
	for _, r := range lb.ForwardingRules {
		if r.EntryProtocol == "http" && port == 0 {
			port = r.TargetPort
		}
		if r.EntryProtocol == "http" && r.EntryPort != 80 {
			addr = net.JoinHostPort(lb.IP, strconv.Itoa(r.EntryPort))
			break
		}
	}
	pool := &loadbalancer.Pool{ID: lb.ID, Address: addr, Members: []loadbalancer.Member{}, SelectTag: lb.Tag, ServerPort: port}
	if hc := lb.HealthCheck; hc != nil {
		// One interval more than the threshold: the first check may come
		// up to an interval after the droplet joins.
		pool.HealthyAfter = time.Duration(hc.CheckIntervalSeconds*(hc.HealthyThreshold+1)) * time.Second
	}
	for _, d := range lb.DropletIDs {
		pool.Members = append(pool.Members, loadbalancer.Member{ServerID: strconv.Itoa(d)})
	}
	return pool, nil
}

// change adds or removes a member. Both calls are idempotent on
// DigitalOcean (adding a member twice or removing one that is not there
// changes nothing), so the pool is not read first unless this process has
// not read it yet: only whether it selects its members by tag matters. A
// load balancer that selects droplets by tag refuses changes by ID: its
// member is tagged or untagged instead.
func (p *Provider) change(ctx context.Context, pool string, m loadbalancer.Member, add bool) error {
	n, err := strconv.Atoi(m.ServerID)
	if err != nil {
		return fmt.Errorf("digitalocean: %q is not a droplet ID", m.ServerID)
	}
	p.mu.Lock()
	tag, known := p.byTag[pool]
	p.mu.Unlock()
	if !known {
		lb, err := p.get(ctx, pool)
		if err != nil {
			return err
		}
		if add == slices.Contains(lb.DropletIDs, n) && lb.Tag == "" {
			return nil // already as asked: no call
		}
		tag = lb.Tag
	}
	if tag != "" {
		return p.tag(ctx, tag, m.ServerID, add)
	}
	b := p.removes
	if add {
		b = p.adds
	}
	err = b.Do(ctx, pool, strconv.Itoa(n))
	var er *godo.ErrorResponse
	if b.Window > 0 && errors.As(err, &er) && er.Response != nil && er.Response.StatusCode == 422 {
		// One droplet of a wave's batch gone fails the whole batch: this
		// one alone says whether it is this one.
		err = p.send(ctx, pool, []string{strconv.Itoa(n)}, add)
	}
	if known && err != nil && !errors.Is(err, provider.ErrNotFound) {
		// Changed to select by tag since it was read? Read it and retry once.
		if lb, gerr := p.get(ctx, pool); gerr == nil && lb.Tag != "" {
			return p.tag(ctx, lb.Tag, m.ServerID, add)
		}
	}
	return err
}

// send adds or removes droplets, a wave's at once: DigitalOcean takes a
// list.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/loadBalancers_add_droplets
func (p *Provider) send(ctx context.Context, pool string, ids []string, add bool) error {
	ns := make([]int, len(ids))
	for i, id := range ids {
		ns[i], _ = strconv.Atoi(id)
	}
	var resp *godo.Response
	var err error
	if add {
		resp, err = p.c.LoadBalancers.AddDroplets(ctx, pool, ns...)
	} else {
		resp, err = p.c.LoadBalancers.RemoveDroplets(ctx, pool, ns...)
	}
	if err == nil {
		return nil
	}
	if resp != nil && resp.StatusCode == 404 {
		return fmt.Errorf("digitalocean: load balancer %s: %w", pool, provider.ErrNotFound)
	}
	verb := "remove droplet(s) %s from"
	if add {
		verb = "add droplet(s) %s to"
	}
	return fmt.Errorf("digitalocean: "+verb+" load balancer %s: %w", strings.Join(ids, ", "), pool, err)
}

// tag makes a droplet a member of a tag-selected load balancer, or not.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/tags_assign_resources
func (p *Provider) tag(ctx context.Context, tag, id string, add bool) error {
	res := []godo.Resource{{ID: id, Type: godo.DropletResourceType}}
	if add {
		if _, err := p.c.Tags.TagResources(ctx, tag, &godo.TagResourcesRequest{Resources: res}); err != nil {
			return fmt.Errorf("digitalocean: tag droplet %s with %s (the load balancer selects it): %w", id, tag, err)
		}
		return nil
	}
	if _, err := p.c.Tags.UntagResources(ctx, tag, &godo.UntagResourcesRequest{Resources: res}); err != nil {
		return fmt.Errorf("digitalocean: untag droplet %s (%s, the load balancer's tag): %w", id, tag, err)
	}
	return nil
}

// AddMember implements loadbalancer.MemberAdder.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/loadBalancers_add_droplets
func (p *Provider) AddMember(ctx context.Context, pool string, m loadbalancer.Member) error {
	return p.change(ctx, pool, m, true)
}

// RemoveMember implements loadbalancer.MemberRemover.
// https://docs.digitalocean.com/reference/api/api-reference/#operation/loadBalancers_remove_droplets
func (p *Provider) RemoveMember(ctx context.Context, pool string, m loadbalancer.Member) error {
	return p.change(ctx, pool, m, false)
}
