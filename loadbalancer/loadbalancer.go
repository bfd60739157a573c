// Package loadbalancer defines what vmswap needs from a load balancer to move
// traffic: list its members, add one, remove one, and where possible ask
// whether a member is healthy. Drivers live in subpackages.
//
// Every method honours ctx, is safe for concurrent use, and returns errors
// that never contain credentials.
package loadbalancer

import (
	"context"
	"slices"
	"time"
)

// Pool is a load balancer's backend pool as vmswap sees it.
type Pool struct {
	ID string `json:"id" yaml:"id"`
	// Address is the public entry point (host or host:port) the probe uses.
	Address string `json:"address" yaml:"address"`
	// Members are the servers the pool sends to.
	Members []Member `json:"members" yaml:"members"`
	// HealthyAfter is how long the pool's health checks take to find a new
	// member healthy (interval x healthy threshold), for providers that do
	// not report per-member health.
	HealthyAfter time.Duration `json:"healthy_after,omitempty" yaml:"healthy_after,omitempty"`
	// SelectTag is set when the pool is every server carrying this tag
	// (DigitalOcean's tag-selected load balancers): adding a member tags
	// it, and a server launched with the tag joins the pool at once.
	SelectTag string `json:"select_tag,omitempty" yaml:"select_tag,omitempty"`
	// ServerPort is the port the pool's first HTTP rule sends to on its
	// members, 0 where the driver does not say: where a new server is
	// waited for when the plan names no URL.
	ServerPort int `json:"server_port,omitempty" yaml:"server_port,omitempty"`
}

// Member is a server in a pool: by the provider's server ID where the load
// balancer knows servers by ID (DigitalOcean, ELBv2 instance targets), by
// address where it knows them by address (HAProxy).
type Member struct {
	ServerID string `json:"server_id,omitempty" yaml:"server_id,omitempty"`
	Address  string `json:"address,omitempty" yaml:"address,omitempty"`
	// Lines are the load balancer's own names for the member where it may
	// declare one server several times (HAProxy's server lines); removing
	// the member removes every one.
	Lines []string `json:"lines,omitempty" yaml:"lines,omitempty"`
	// Like, given to AddMember, is the member the new one replaces: a
	// driver that declares members with settings of their own (nginx's
	// port, weight, max_fails) gives the new one the same.
	Like *Member `json:"-" yaml:"-"`
}

// Is reports whether m is the server with this ID and address.
func (m Member) Is(serverID, address string) bool {
	if m.ServerID != "" {
		return m.ServerID == serverID
	}
	return m.Address == address
}

// Key identifies the member for comparisons.
func (m Member) Key() string {
	if m.ServerID != "" {
		return "id:" + m.ServerID
	}
	return "addr:" + m.Address
}

// Has reports whether the pool has the server with this ID and address.
func (p *Pool) Has(serverID, address string) bool {
	for _, m := range p.Members {
		if m.Is(serverID, address) {
			return true
		}
	}
	return false
}

// Keys returns the members' keys, sorted.
func (p *Pool) Keys() []string {
	out := make([]string, len(p.Members))
	for i, m := range p.Members {
		out[i] = m.Key()
	}
	slices.Sort(out)
	return out
}

// MemberLister reads a pool.
type MemberLister interface {
	// Pool returns the pool with the ID, or an error wrapping
	// provider.ErrNotFound.
	Pool(ctx context.Context, id string) (*Pool, error)
}

// MemberAdder adds members.
type MemberAdder interface {
	// AddMember adds the server to the pool. Adding a member already in the
	// pool is a no-op. It returns once the provider accepted the change, not
	// when the member is healthy.
	AddMember(ctx context.Context, pool string, m Member) error
}

// MemberRemover removes members.
type MemberRemover interface {
	// RemoveMember takes the server out of the pool: it gets no new
	// requests, and requests in flight complete (the provider drains it).
	// Removing a member not in the pool is a no-op.
	RemoveMember(ctx context.Context, pool string, m Member) error
}

// HealthReporter is implemented by load balancers that report per-member
// health (ELBv2, HAProxy). Without it, the runner proves a new member serves
// by sending requests through the pool.
type HealthReporter interface {
	// MemberHealthy reports whether the pool routes to the member.
	MemberHealthy(ctx context.Context, pool string, m Member) (bool, error)
}

// Checker is implemented by load balancers that can say, before anything
// is created, whether a cutover through the pool can work (nginx: it runs,
// its configuration passes nginx -t, the pool's file is one vmswap edits).
type Checker interface {
	Check(ctx context.Context, pool string) error
}

// RecentLister is a MemberLister that can answer from a read of the pool
// that this process began at most maxAge ago (for another swap of a wave)
// instead of making a call: for a check that a little age does not weaken,
// such as whether the source is still in the pool just before the cutover.
// A check of what the caller changed itself must call Pool.
type RecentLister interface {
	RecentPool(ctx context.Context, id string, maxAge time.Duration) (*Pool, error)
}

// RecentPool is lb's RecentPool when it has one, else its Pool.
func RecentPool(ctx context.Context, lb MemberLister, id string, maxAge time.Duration) (*Pool, error) {
	if r, ok := lb.(RecentLister); ok {
		return r.RecentPool(ctx, id, maxAge)
	}
	return lb.Pool(ctx, id)
}

// Provider is everything a load-balancer cutover needs.
type Provider interface {
	MemberLister
	MemberAdder
	MemberRemover
}
