// Package loadbalancer defines what vmswap needs from a load balancer to move
// traffic: list its members, add one, remove one, and where possible ask
// whether a member is healthy. Drivers live in subpackages.
//
// Every method honours ctx, is safe for concurrent use, and returns errors
// that never contain credentials.
package loadbalancer

import (
	"context"
	"time"
)

// Pool is a load balancer's backend pool as vmswap sees it.
type Pool struct {
	ID string `json:"id" yaml:"id"`
	// Address is the public entry point (host or host:port) the probe uses.
	Address string `json:"address" yaml:"address"`
	// Members are server IDs.
	Members []string `json:"members" yaml:"members"`
	// HealthyAfter is how long the pool's health checks take to find a new
	// member healthy (interval x healthy threshold), for providers that do
	// not report per-member health.
	HealthyAfter time.Duration `json:"healthy_after,omitempty" yaml:"healthy_after,omitempty"`
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
	AddMember(ctx context.Context, pool, serverID string) error
}

// MemberRemover removes members.
type MemberRemover interface {
	// RemoveMember takes the server out of the pool: it gets no new
	// requests, and requests in flight complete (the provider drains it).
	// Removing a member not in the pool is a no-op.
	RemoveMember(ctx context.Context, pool, serverID string) error
}

// HealthReporter is implemented by load balancers that report per-member
// health (ELBv2, HAProxy). Without it, the runner proves a new member serves
// by sending requests through the pool.
type HealthReporter interface {
	// MemberHealthy reports whether the pool routes to the member.
	MemberHealthy(ctx context.Context, pool, serverID string) (bool, error)
}

// Provider is everything a load-balancer cutover needs.
type Provider interface {
	MemberLister
	MemberAdder
	MemberRemover
}
