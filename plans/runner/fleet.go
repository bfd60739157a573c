package runner

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/provider"
)

// This file: fleets — the servers of a tag, observed when the plan was
// written, and the pool they share, which the run's own swaps change.

// fleetTag is the fleet's tag as the provider's FindTagged takes it
// (AWS: key:value).
func fleetTag(p *plans.Plan) string {
	if p.Providers[p.Fleet.Provider].Type == "aws" {
		return strings.Replace(p.Fleet.Tag, "=", ":", 1)
	}
	return p.Fleet.Tag
}

// fleetServers lists the fleet's members — the servers carrying its tag,
// less those the plan launched (they carry the source's tags and
// vmswap:PLAN) and old servers kept powered off for a rollback — and every
// server that carries the tag at all.
func fleetServers(ctx context.Context, comp provider.Compute, p *plans.Plan, planID string) (members []plans.FleetMember, tagged map[string]bool, err error) {
	var servers []provider.Server
	if tl, ok := comp.(provider.TaggedLister); ok {
		servers, err = tl.ServersTagged(ctx, fleetTag(p))
	} else {
		servers, _, err = comp.FindTagged(ctx, fleetTag(p))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list the fleet (tag %s): %w", p.Fleet.Tag, err)
	}
	tagged = map[string]bool{}
	var out []plans.FleetMember
	for _, s := range servers {
		if s.Status != provider.StatusGone {
			tagged[s.ID] = true
		}
		if s.Status == provider.StatusGone || slices.Contains(s.Tags, "vmswap:"+planID) || slices.Contains(s.Tags, "vmswap="+planID) {
			continue
		}
		if slices.ContainsFunc(s.Tags, func(t string) bool { return strings.HasPrefix(t, strings.TrimSuffix(keepTagPrefix, ":")) }) {
			continue // an old server a swap retired, kept powered off for its rollback
		}
		out = append(out, plans.FleetMember{ID: s.ID, Name: s.Name})
	}
	slices.SortFunc(out, func(a, b plans.FleetMember) int { return strings.Compare(a.ID, b.ID) })
	return out, tagged, nil
}

// FleetServers lists the servers carrying a fleet plan's tag, by name:
// what `vmswap plan --tag` writes one swap for each of.
func FleetServers(ctx context.Context, p *plans.Plan, o registry.BuildOptions) ([]plans.FleetMember, error) {
	drivers, err := registry.Build(p, o)
	if err != nil {
		return nil, err
	}
	d := drivers[p.Fleet.Provider]
	if d == nil || d.Compute == nil {
		return nil, fmt.Errorf("fleet provider %q has no servers", p.Fleet.Provider)
	}
	members, _, err := fleetServers(ctx, d.Compute, p, planIDOf(p))
	if err != nil {
		return nil, err
	}
	slices.SortFunc(members, func(a, b plans.FleetMember) int { return naturalCompare(a.Name, b.Name) })
	return members, nil
}

// naturalCompare orders names as people number servers: web-2 before
// web-10.
func naturalCompare(a, b string) int {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if c := cmp.Compare(len(na), len(nb)); c != 0 {
				return c
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return cmp.Compare(a[0], b[0])
		}
		a, b = a[1:], b[1:]
	}
	return cmp.Compare(len(a), len(b))
}

func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// observeFleet records the fleet's servers in the plan and checks that
// the plan swaps each of them, once.
func observeFleet(ctx context.Context, comp provider.Compute, p *plans.Plan, planID string, obs *plans.Observed) []string {
	members, _, err := fleetServers(ctx, comp, p, planID)
	if err != nil {
		return []string{err.Error()}
	}
	obs.Fleet = members
	var errs []string
	for _, m := range members {
		if !slices.ContainsFunc(p.Swaps, func(sw plans.Swap) bool { return sw.Source.Server == m.ID || sw.Source.Server == m.Name }) {
			errs = append(errs, fmt.Sprintf("%s (%s) carries the fleet's tag %s but no swap upgrades it: add a swap, or take the tag off it", m.Name, m.ID, p.Fleet.Tag))
		}
	}
	if len(members) == 0 {
		errs = append(errs, fmt.Sprintf("no server carries the tag %s", p.Fleet.Tag))
	}
	return errs
}

// checkFleet refuses a fleet plan whose tag gained or lost a server since
// the plan was written. The servers the plan launched are not counted,
// nor the sources its finished swaps retired.
func (r *Runner) checkFleet(ctx context.Context) error {
	p := r.Doc.Plan
	if p.Fleet == nil || p.Observed == nil || p.Observed.Fleet == nil {
		return nil
	}
	comp := r.Drivers[p.Fleet.Provider].Compute
	now, tagged, err := fleetServers(ctx, comp, p, r.Journal.PlanID)
	if err != nil {
		return err
	}
	planned := p.Observed.Fleet
	retired := map[string]bool{}
	for _, st := range r.Journal.Swaps {
		if st.SourceID != "" && (st.Status == StatusSucceeded || st.has(subOldRetired)) {
			retired[st.SourceID] = true
		}
	}
	var changes []string
	for _, m := range now {
		if !slices.ContainsFunc(planned, func(o plans.FleetMember) bool { return o.ID == m.ID }) && !r.isCreated("id:"+m.ID) {
			changes = append(changes, fmt.Sprintf("%s (%s) joined the tag %s", m.Name, m.ID, p.Fleet.Tag))
		}
	}
	for _, m := range planned {
		switch {
		case slices.ContainsFunc(now, func(o plans.FleetMember) bool { return o.ID == m.ID }) || retired[m.ID]:
		case tagged[m.ID]:
			changes = append(changes, fmt.Sprintf("%s (%s) was retired since (it is kept powered off for a rollback): the plan upgrades servers that are gone from service", m.Name, m.ID))
		default:
			changes = append(changes, fmt.Sprintf("%s (%s) left the tag %s", m.Name, m.ID, p.Fleet.Tag))
		}
	}
	if len(changes) > 0 {
		return fmt.Errorf("the fleet changed since the plan was written: %s", strings.Join(changes, "; "))
	}
	return nil
}

// poolForStale is a pool as the stale check compares it: without the
// members the plan itself moves (its sources, and the servers its swaps
// launched), so that one swap's cutover does not make the next one's
// plan stale, while any other change still does.
func (r *Runner) poolForStale(pool *loadbalancer.Pool) *loadbalancer.Pool {
	p := r.Doc.Plan
	if pool == nil || p.Observed == nil || len(p.Swaps) < 2 {
		return pool
	}
	sources := map[string]bool{}
	for _, o := range p.Observed.Swaps {
		sources["id:"+o.Source.ID], sources["addr:"+o.Source.PublicIP] = true, true
	}
	out := *pool
	out.Members = slices.DeleteFunc(slices.Clone(pool.Members), func(m loadbalancer.Member) bool {
		return sources[m.Key()] || r.isCreated(m.Key())
	})
	return &out
}
