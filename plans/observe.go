package plans

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ObserveWorld reads the world for every swap of p and records it, with the
// mutations apply will make. Problems (a source that does not exist, a
// record that does not point at it) are all reported.
func ObserveWorld(ctx context.Context, p *Plan, o BuildOptions) error {
	drivers, err := Build(p, o)
	if err != nil {
		return err
	}
	obs := &Observed{At: time.Now().UTC().Truncate(time.Second)}
	var muts, errs []string
	for i, sw := range p.Swaps {
		comp := drivers[sw.Source.Provider].Compute
		src, err := comp.GetServer(ctx, sw.Source.Server)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		seen := ObservedSwap{Source: *src}
		if sz, err := comp.GetSize(ctx, sw.Target.Size); err != nil {
			errs = append(errs, err.Error())
		} else {
			seen.TargetSize = *sz
			if sz.DiskGB < src.DiskGB {
				errs = append(errs, fmt.Sprintf("size %s has a %d GB disk, smaller than %s's %d GB: choose a larger size", sz.Slug, sz.DiskGB, src.Name, src.DiskGB))
			}
		}
		name := src.Name
		muts = append(muts, fmt.Sprintf("swaps[%d]: snapshot %s (%s) live, so the image is crash-consistent%s, as vmswap-%s-<time>-%s", i, name, src.ID, quiesceNote(sw), name, p.ID))
		muts = append(muts, fmt.Sprintf("swaps[%d]: create a %s server from it in %s, tagged vmswap:%s", i, sw.Target.Size, src.Region, p.ID))
		c := sw.Cutover
		switch {
		case c.LoadBalancer != nil:
			pool, err := drivers[c.LoadBalancer.Provider].LB.Pool(ctx, c.LoadBalancer.ID)
			if err != nil {
				errs = append(errs, err.Error())
				break
			}
			seen.Pool = pool
			if !pool.Has(src.ID, src.PublicIP) {
				errs = append(errs, fmt.Sprintf("load balancer %s does not route to %s (members %v)", pool.ID, name, pool.Keys()))
			}
			muts = append(muts, fmt.Sprintf("swaps[%d]: add the new server to load balancer %s, then remove %s (%s) from it", i, pool.ID, name, src.ID))
		case c.DNS != nil:
			rec, err := drivers[c.DNS.Provider].DNS.GetRecord(ctx, c.DNS.Record, recordType(c.DNS))
			if err != nil {
				errs = append(errs, err.Error())
				break
			}
			seen.Record = rec
			if !slices.Contains(rec.Values, src.PublicIP) {
				errs = append(errs, fmt.Sprintf("record %s is %v and does not point at %s (%s)", rec.Name, rec.Values, name, src.PublicIP))
			}
			muts = append(muts, fmt.Sprintf("swaps[%d]: change %s A from %v to the new server's IP (TTL %ds: %s keeps serving %ds + grace)", i, rec.Name, rec.Values, rec.TTL, name, rec.TTL))
		case c.ReservedIP != nil:
			cur, err := drivers[c.ReservedIP.Provider].IP.AssignedTo(ctx, c.ReservedIP.IP)
			if err != nil {
				errs = append(errs, err.Error())
				break
			}
			seen.IPTarget = cur
			if cur != src.ID {
				errs = append(errs, fmt.Sprintf("reserved IP %s points at %q, not %s (%s)", c.ReservedIP.IP, cur, name, src.ID))
			}
			muts = append(muts, fmt.Sprintf("swaps[%d]: move reserved IP %s from %s to the new server", i, c.ReservedIP.IP, name))
		}
		action := "power off " + name
		if sw.Retire.Action == "delete" {
			action = "delete " + name
		} else if sw.Retire.KeepFor > 0 {
			action += fmt.Sprintf(" and keep it %s for rollback", sw.Retire.KeepFor.D())
		}
		muts = append(muts, fmt.Sprintf("swaps[%d]: after %s of observation, %s", i, sw.Observe.D(), action))
		if !sw.Retire.KeepImage {
			muts = append(muts, fmt.Sprintf("swaps[%d]: delete the snapshot", i))
		}
		obs.Swaps = append(obs.Swaps, seen)
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	p.Observed, p.Mutations = obs, muts
	return nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func quiesceNote(sw Swap) string {
	if sw.Quiesce {
		return " (sync over SSH first)"
	}
	return ""
}
