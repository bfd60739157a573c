// Package hetzner is vmswap's load-balancer driver for Hetzner Cloud load
// balancers (hcloud-go). Hetzner reports each target's health per service,
// so the driver implements loadbalancer.HealthReporter: the runner takes
// the old server out only once Hetzner finds the new one healthy for every
// service, with no identify header needed.
//
// Server targets are members by ID. A pool whose targets are a label
// selector is tag-selected (Pool.SelectTag is the selector, as a vmswap tag):
// a server joins it by carrying the label.
package hetzner

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/provider"
	hz "github.com/vmswap/vmswap/provider/hetzner"
)

// Config holds every setting of the driver.
type Config struct {
	// Client is an hcloud-go client (provider/hetzner.NewClient).
	Client *hcloud.Client
	// Tagger labels servers for a label-selected pool (the compute driver).
	Tagger provider.Tagger
	// Progress receives what is being waited on. May be nil.
	Progress provider.Progress
}

// Provider implements loadbalancer.Provider and loadbalancer.HealthReporter.
type Provider struct{ cfg Config }

var (
	_ loadbalancer.Provider       = (*Provider)(nil)
	_ loadbalancer.HealthReporter = (*Provider)(nil)
	_ loadbalancer.Checker        = (*Provider)(nil)
)

// New returns a Provider for cfg.
func New(cfg Config) *Provider { return &Provider{cfg: cfg} }

func (p *Provider) get(ctx context.Context, id string) (*hcloud.LoadBalancer, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("hetzner: %q is not a load balancer ID", id)
	}
	lb, _, err := p.cfg.Client.LoadBalancer.GetByID(ctx, n)
	if err != nil {
		return nil, hz.Wrap(err, "get load balancer %s", id)
	}
	if lb == nil {
		return nil, fmt.Errorf("hetzner: load balancer %s: %w", id, provider.ErrNotFound)
	}
	return lb, nil
}

// selector returns the label selector of a pool that selects its members
// by label ("" if it lists servers).
func selector(lb *hcloud.LoadBalancer) string {
	for _, t := range lb.Targets {
		if t.Type == hcloud.LoadBalancerTargetTypeLabelSelector && t.LabelSelector != nil {
			return t.LabelSelector.Selector
		}
	}
	return ""
}

// servers returns the server targets, those a label selector resolved to
// included, with their health.
func servers(lb *hcloud.LoadBalancer) []hcloud.LoadBalancerTarget {
	var out []hcloud.LoadBalancerTarget
	for _, t := range lb.Targets {
		switch t.Type {
		case hcloud.LoadBalancerTargetTypeServer:
			if t.Server != nil && t.Server.Server != nil {
				out = append(out, t)
			}
		case hcloud.LoadBalancerTargetTypeLabelSelector:
			for _, x := range t.Targets {
				if x.Server != nil && x.Server.Server != nil {
					out = append(out, x)
				}
			}
		}
	}
	return out
}

// Pool implements loadbalancer.MemberLister. The address is the LB's IPv4
// with the first HTTP(S) service's listen port when it is not 80 or 443.
// https://docs.hetzner.cloud/reference/cloud#load-balancers-get-a-load-balancer
func (p *Provider) Pool(ctx context.Context, id string) (*loadbalancer.Pool, error) {
	lb, err := p.get(ctx, id)
	if err != nil {
		return nil, err
	}
	addr := ""
	if ip := lb.PublicNet.IPv4.IP; ip != nil {
		addr = ip.String()
	}
	port := 0
	for _, s := range lb.Services {
		if s.Protocol == hcloud.LoadBalancerServiceProtocolHTTP && port == 0 {
			port = s.DestinationPort
		}
		if s.Protocol == hcloud.LoadBalancerServiceProtocolHTTP && s.ListenPort != 80 && addr != "" {
			addr = net.JoinHostPort(addr, strconv.Itoa(s.ListenPort))
			break
		}
	}
	pool := &loadbalancer.Pool{ID: id, Address: addr, Members: []loadbalancer.Member{}, ServerPort: port}
	if sel := selector(lb); sel != "" {
		if tag, ok := hz.SelectorTag(sel); ok {
			pool.SelectTag = tag
		}
	}
	for _, s := range lb.Services {
		hc := s.HealthCheck
		if after := hc.Interval*time.Duration(hc.Retries+1) + hc.Timeout; after > pool.HealthyAfter {
			pool.HealthyAfter = after
		}
	}
	for _, t := range servers(lb) {
		pool.Members = append(pool.Members, loadbalancer.Member{ServerID: strconv.FormatInt(t.Server.Server.ID, 10)})
	}
	return pool, nil
}

func memberID(m loadbalancer.Member) (int64, error) {
	n, err := strconv.ParseInt(m.ServerID, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("hetzner: %q is not a server ID", m.ServerID)
	}
	return n, nil
}

// AddMember implements loadbalancer.MemberAdder with add_target, or by
// labelling the server for a label-selected pool. A server already a
// target is a no-op.
// https://docs.hetzner.cloud/reference/cloud#load-balancer-actions-add-target
func (p *Provider) AddMember(ctx context.Context, pool string, m loadbalancer.Member) error {
	return hz.Converge(ctx, p.cfg.Progress, "add server "+m.ServerID+" to load balancer "+pool, func() error { return p.addMember(ctx, pool, m) })
}

func (p *Provider) addMember(ctx context.Context, pool string, m loadbalancer.Member) error {
	n, err := memberID(m)
	if err != nil {
		return err
	}
	lb, err := p.get(ctx, pool)
	if err != nil {
		return err
	}
	if sel := selector(lb); sel != "" {
		return p.label(ctx, sel, m.ServerID, true)
	}
	for _, t := range servers(lb) {
		if t.Server.Server.ID == n {
			return nil
		}
	}
	a, _, err := p.cfg.Client.LoadBalancer.AddServerTarget(ctx, lb, hcloud.LoadBalancerAddServerTargetOpts{Server: &hcloud.Server{ID: n}})
	if hcloud.IsError(err, hcloud.ErrorCodeTargetAlreadyDefined) {
		return nil
	}
	if err != nil {
		return hz.Wrap(err, "add server %d to load balancer %s", n, pool)
	}
	return hz.WaitAction(ctx, p.cfg.Client, p.cfg.Progress, fmt.Sprintf("add server %d to load balancer %s", n, pool), a)
}

// RemoveMember implements loadbalancer.MemberRemover with remove_target:
// Hetzner stops sending it new requests and lets those in flight finish.
// A server that is not a target is a no-op.
// https://docs.hetzner.cloud/reference/cloud#load-balancer-actions-remove-target
func (p *Provider) RemoveMember(ctx context.Context, pool string, m loadbalancer.Member) error {
	return hz.Converge(ctx, p.cfg.Progress, "remove server "+m.ServerID+" from load balancer "+pool, func() error { return p.removeMember(ctx, pool, m) })
}

func (p *Provider) removeMember(ctx context.Context, pool string, m loadbalancer.Member) error {
	n, err := memberID(m)
	if err != nil {
		return err
	}
	lb, err := p.get(ctx, pool)
	if err != nil {
		return err
	}
	if sel := selector(lb); sel != "" {
		return p.label(ctx, sel, m.ServerID, false)
	}
	found := false
	for _, t := range lb.Targets {
		if t.Type == hcloud.LoadBalancerTargetTypeServer && t.Server != nil && t.Server.Server != nil && t.Server.Server.ID == n {
			found = true
		}
	}
	if !found {
		return nil
	}
	a, _, err := p.cfg.Client.LoadBalancer.RemoveServerTarget(ctx, lb, &hcloud.Server{ID: n})
	if err != nil && !hcloud.IsError(err, hcloud.ErrorCodeNotFound) {
		return hz.Wrap(err, "remove server %d from load balancer %s", n, pool)
	}
	return hz.WaitAction(ctx, p.cfg.Client, p.cfg.Progress, fmt.Sprintf("remove server %d from load balancer %s", n, pool), a)
}

func selectable(sel string) bool { _, ok := hz.SelectorTag(sel); return ok }

// label makes a server a member of a label-selected pool, or not.
func (p *Provider) label(ctx context.Context, sel, id string, add bool) error {
	if p.cfg.Tagger == nil {
		return fmt.Errorf("hetzner: the load balancer selects servers by label %s, and this driver cannot label servers", sel)
	}
	tag, ok := hz.SelectorTag(sel)
	if !ok {
		return fmt.Errorf("hetzner: the load balancer selects servers by %q, which no single label makes a server match: give it a key=value selector, or target the servers themselves", sel)
	}
	if add {
		return p.cfg.Tagger.TagServer(ctx, id, tag)
	}
	return p.cfg.Tagger.UntagServer(ctx, id, tag)
}

// Check implements loadbalancer.Checker: before anything is created, the
// load balancer has a service to check targets with, and a label selector
// is one that labelling a server can satisfy.
func (p *Provider) Check(ctx context.Context, pool string) error {
	lb, err := p.get(ctx, pool)
	if err != nil {
		return err
	}
	if len(lb.Services) == 0 {
		return fmt.Errorf("hetzner: load balancer %s has no service: it sends no traffic and checks no target's health", lb.Name)
	}
	if sel := selector(lb); sel != "" && !selectable(sel) {
		return fmt.Errorf("hetzner: load balancer %s selects servers by %q, which no single label makes a server match: give it a key=value selector, or target the servers themselves", lb.Name, sel)
	}
	return nil
}

// MemberHealthy implements loadbalancer.HealthReporter: the server is a
// target, and Hetzner reports it healthy for every service.
func (p *Provider) MemberHealthy(ctx context.Context, pool string, m loadbalancer.Member) (bool, error) {
	n, err := memberID(m)
	if err != nil {
		return false, err
	}
	lb, err := p.get(ctx, pool)
	if err != nil {
		return false, err
	}
	for _, t := range servers(lb) {
		if t.Server.Server.ID != n {
			continue
		}
		if len(t.HealthStatus) == 0 {
			return false, nil
		}
		for _, h := range t.HealthStatus {
			if h.Status != hcloud.LoadBalancerTargetHealthStatusStatusHealthy {
				if p.cfg.Progress != nil {
					p.cfg.Progress("hetzner: load balancer %s reports server %d %s on port %d", pool, n, h.Status, h.ListenPort)
				}
				return false, nil
			}
		}
		return true, nil
	}
	return false, nil
}
