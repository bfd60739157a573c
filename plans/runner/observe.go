package runner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/verify"
)

// ObserveWorld reads the world for every swap of p and records it, with the
// mutations apply will make. Problems (a source that does not exist, a
// record that does not point at it) are all reported.
func ObserveWorld(ctx context.Context, p *plans.Plan, o registry.BuildOptions) error {
	drivers, err := registry.Build(p, o)
	if err != nil {
		return err
	}
	obs := &plans.Observed{At: time.Now().UTC().Truncate(time.Second)}
	var muts, errs []string
	for i, sw := range p.Swaps {
		comp := drivers[sw.Source.Provider].Compute
		src, err := comp.GetServer(ctx, sw.Source.Server)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		seen := plans.ObservedSwap{Source: *src}
		if src.Status != provider.StatusRunning {
			errs = append(errs, fmt.Sprintf("%s is %s, not running: vmswap upgrades a running server (a retired one is upgraded by swapping the one that replaced it)", src.Name, src.Status))
		}
		if p := volumeProblem(src); p != "" {
			errs = append(errs, p)
		}
		if k := sw.Verify.SSH; k != nil && k.Key != "" {
			if err := verify.CheckKeyFile(k.Key); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if runs := claimsOn(src); len(runs) > 0 {
			errs = append(errs, fmt.Sprintf("%s is being swapped by run %s (tag %s on the server): plan it once that run is finished or rolled back", src.Name, strings.Join(runs, ", "), claimTag(runs[0])))
		}
		tgt, err := comp.GetSize(ctx, sw.Target.Size)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			seen.TargetSize = *tgt
			errs = append(errs, sizeProblems(sw, src, tgt, o.Progress, fittingSizes(ctx, comp))...)
		}
		name := src.Name
		muts = append(muts, fmt.Sprintf("swaps[%d]: snapshot %s (%s) live, so the image is crash-consistent%s, as vmswap-%s-<time>-%s", i, name, src.ID, quiesceNote(sw), name, p.ID))
		muts = append(muts, fmt.Sprintf("swaps[%d]: create a %s server from it in %s, tagged vmswap:%s", i, sw.Target.Size, src.Region, p.ID))
		kind := kindOf(sw.Cutover, drivers)
		problems, err := kind.read(ctx, src, &seen)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			errs = append(errs, problems...)
			muts = append(muts, fmt.Sprintf("swaps[%d]: %s", i, kind.mutation(src, &seen)))
			if c := sw.Cutover.LoadBalancer; c != nil && c.IdentifyHeader != "" && src.Status == provider.StatusRunning {
				// As preflight asks: a typo is found before the plan is
				// written, not when apply refuses it.
				s := &swapRun{r: &Runner{Doc: &plans.Document{Plan: p}}, sw: &p.Swaps[i], i: i, pool: seen.Pool}
				if p := s.identifyProblem(ctx, c.IdentifyHeader, src); p != "" {
					errs = append(errs, p)
				}
			}
		}
		held, others, err := otherEntrypoints(ctx, comp, &p.Swaps[i], src, seen.Pool)
		if err != nil {
			errs = append(errs, err.Error())
		}
		if len(held) > 0 {
			muts = append(muts, fmt.Sprintf("swaps[%d]: launch the new server without the tags %v (other load balancers select by them) and tag it at cutover", i, held))
		}
		for _, w := range others {
			muts = append(muts, fmt.Sprintf("swaps[%d]: NOTE: %s", i, w))
			if o.Progress != nil {
				o.Progress("warning: %s", w)
			}
		}
		muts = append(muts, stateMutations(i, sw, name)...)
		if tgt != nil {
			// The source's own size for its price; a size the provider no
			// longer lists just has no price.
			from, _ := comp.GetSize(ctx, src.Size)
			seen.Cost = estimateCost(sw, src, from, tgt, expectedOverlap(sw, kind, &seen))
		}
		action := "power off " + name
		if sw.Retire.Action == "delete" {
			action = "delete " + name
		} else if sw.Retire.KeepFor > 0 {
			action += fmt.Sprintf(" and keep it %s for rollback", sw.Retire.KeepFor.D())
		}
		muts = append(muts, fmt.Sprintf("swaps[%d]: after %s of observation, %s", i, sw.Observe.D(), action))
		if sw.KeepsNames() {
			if sw.Retire.Action == "delete" {
				muts = append(muts, fmt.Sprintf("swaps[%d]: then rename the new server %s: it keeps the name", i, name))
			} else {
				muts = append(muts, fmt.Sprintf("swaps[%d]: then rename %s to %s-retired-<run>, and the new server to %s: it keeps the name", i, name, name, name))
			}
		}
		if !sw.Retire.KeepImage {
			muts = append(muts, fmt.Sprintf("swaps[%d]: delete the snapshot", i))
		}
		obs.Swaps = append(obs.Swaps, seen)
	}
	if p.Fleet != nil {
		if d := drivers[p.Fleet.Provider]; d != nil && d.Compute != nil {
			errs = append(errs, observeFleet(ctx, d.Compute, p, planIDOf(p), obs)...)
		}
		waves := p.Strategy.Waves(len(p.Swaps))
		muts = append(muts, fmt.Sprintf("fleet: %d servers tagged %s, upgraded in %d wave(s)%s", len(p.Swaps), p.Fleet.Tag, len(waves), strategyNote(p.Strategy)))
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

func quiesceNote(sw plans.Swap) string {
	if sw.Quiesce {
		return " (sync over SSH first)"
	}
	return ""
}

// sizeProblems says why a target size cannot work for the swap: the disk
// the image needs, the size the source has already, a threshold the size
// cannot meet. A smaller size is only worth a warning.
func sizeProblems(sw plans.Swap, src *provider.Server, sz *provider.Size, warn provider.Progress, fitting func(*provider.Server) []string) []string {
	if fitting == nil {
		fitting = func(*provider.Server) []string { return nil }
	}
	var out []string
	if sz.NoIPv6 && src.PublicIPv6 != "" && sw.Cutover.DNS != nil {
		out = append(out, fmt.Sprintf("size %s cannot have an IPv6 address, but %s has one and its DNS name may point at it (AAAA): choose a size with IPv6", sz.Slug, src.Name))
	}
	if sz.DiskGB < src.DiskGB {
		msg := fmt.Sprintf("size %s has a %d GB disk, smaller than %s's %d GB: an image of it needs at least that", sz.Slug, sz.DiskGB, src.Name, src.DiskGB)
		if fits := fitting(src); len(fits) > 0 {
			msg += "; sizes whose disk fits: " + strings.Join(fits, ", ")
		}
		out = append(out, msg)
	}
	if sz.Slug == src.Size {
		out = append(out, fmt.Sprintf("%s is already %s: choose another size", src.Name, sz.Slug))
	}
	for _, c := range []struct {
		name string
		t    *verify.Threshold
		v    float64
		show string
	}{
		{"memory", sw.Verify.Memory, float64(sz.MemoryMB) * (1 << 20), verify.HumanBytes(float64(sz.MemoryMB) * (1 << 20))},
		{"disk", sw.Verify.Disk, float64(sz.DiskGB) * (1 << 30), verify.HumanBytes(float64(sz.DiskGB) * (1 << 30))},
		{"cpus", sw.Verify.CPUs, float64(sz.VCPUs), fmt.Sprint(sz.VCPUs)},
	} {
		if c.t != nil && c.v > 0 && !c.t.Holds(c.v) {
			out = append(out, fmt.Sprintf("size %s has %s of %s, which can never pass the check %s %s: choose a larger size or change the check", sz.Slug, c.show, c.name, c.name, c.t.Text))
		}
	}
	if warn != nil && (sz.MemoryMB < src.MemoryMB || sz.VCPUs < src.VCPUs) && sz.Slug != src.Size {
		warn("warning: %s is smaller than %s's %s (%d MB, %d CPUs to %d MB, %d CPUs): this is a downsize", sz.Slug, src.Name, src.Size, src.MemoryMB, src.VCPUs, sz.MemoryMB, sz.VCPUs)
	}
	return out
}

// stateMutations says what a swap does about state on its servers: hooks,
// carry passes, the divergence report.
func stateMutations(i int, sw plans.Swap, name string) []string {
	var out []string
	for _, ph := range sw.Hooks.Phases() {
		for _, h := range ph.Hooks {
			out = append(out, fmt.Sprintf("swaps[%d]: %s, run on the %s server over SSH: %s", i, strings.ReplaceAll(ph.Name, "_", " "), h.On, h.Run))
		}
	}
	if c := sw.Carry; c != nil {
		out = append(out, fmt.Sprintf("swaps[%d]: copy what %s writes after its snapshot under %s to the new server over SFTP: before the cutover, and again once %s gets no more traffic", i, name, strings.Join(c.Paths, ", "), name))
	}
	switch sw.DivergenceMode() {
	case "warn":
		out = append(out, fmt.Sprintf("swaps[%d]: before retiring %s, list the files it wrote after its snapshot that nothing carried", i, name))
	case "stop":
		out = append(out, fmt.Sprintf("swaps[%d]: before retiring %s, list the files it wrote after its snapshot that nothing carried, and pause (exit 4) if there are any", i, name))
	}
	return out
}

// fittingSizes returns the sizes an image of src fits, cheapest first (the
// first eight), when the provider lists its sizes.
func fittingSizes(ctx context.Context, comp provider.Compute) func(*provider.Server) []string {
	return func(src *provider.Server) []string {
		l, ok := comp.(provider.SizeLister)
		if !ok {
			return nil
		}
		all, err := l.ListSizes(ctx)
		if err != nil {
			return nil
		}
		var fit []provider.Size
		for _, s := range all {
			if s.DiskGB >= src.DiskGB && s.Slug != src.Size {
				fit = append(fit, s)
			}
		}
		slices.SortFunc(fit, func(a, b provider.Size) int {
			pa, pb := 0.0, 0.0
			if a.Price != nil {
				pa = a.Price.Monthly
			}
			if b.Price != nil {
				pb = b.Price.Monthly
			}
			return cmp.Compare(pa, pb)
		})
		var out []string
		for _, s := range fit[:min(8, len(fit))] {
			d := fmt.Sprintf("%s (%d vCPU, %d MB, %d GB", s.Slug, s.VCPUs, s.MemoryMB, s.DiskGB)
			if s.Price != nil && s.Price.Currency == "USD" {
				d += fmt.Sprintf(", $%.0f/mo", s.Price.Monthly)
			}
			out = append(out, d+")")
		}
		return out
	}
}

// planIDOf is the plan's ID as the journal will record it.
func planIDOf(p *plans.Plan) string {
	return (&plans.Document{Plan: p}).PlanID()
}

func strategyNote(s *plans.Strategy) string {
	if s == nil {
		return ", one at a time"
	}
	out := fmt.Sprintf(" of at most %d", max(s.MaxParallel, 1))
	if s.Canary > 0 {
		out = fmt.Sprintf(": a canary of %d alone, then waves of at most %d", s.Canary, max(s.MaxParallel, 1))
	}
	if len(s.Gates) > 0 {
		out += fmt.Sprintf(", pausing %s", strings.Join(s.Gates, " and "))
	}
	if s.Prepare != "in_wave" {
		out += "; each wave's snapshots and new servers are made while the wave before it moves traffic (never across a gate)"
	}
	return out
}
