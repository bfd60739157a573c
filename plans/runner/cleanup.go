package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/provider"
)

// Orphan is a resource a plan's runs created that nothing uses.
type Orphan struct {
	Provider string `json:"provider"`
	Kind     string `json:"kind"` // server or image
	ID       string `json:"id"`
	Name     string `json:"name"`
	// Until is when a retired server's keep window ended (cleanup --expired).
	Until time.Time `json:"until,omitempty"`
}

func (o Orphan) String() string {
	s := fmt.Sprintf("%s %s (%s) at %s", o.Kind, o.Name, o.ID, o.Provider)
	if !o.Until.IsZero() {
		s += ", kept powered off until " + o.Until.Format(time.RFC3339)
	}
	return s
}

// keepTagPrefix marks a retired server kept powered off; the rest of the
// tag is when its keep window ends, so that the window is visible in the
// provider's console and to `cleanup --expired` from any machine.
const keepTagPrefix = "vmswap-keep-until:"

const keepTagTime = "20060102T150405Z"

func keepTag(t time.Time) string { return keepTagPrefix + t.UTC().Format(keepTagTime) }

// keepStep is what a keep window's end is rounded up to: the servers a
// wave retires within the same ten minutes share one keep-until tag, which
// is created once, not once per server. A short window is rounded by a
// tenth of itself at most.
const keepStep = 10 * time.Minute

// keepUntil is when the keep window of a server retired at now ends: at
// least keepFor later, rounded up to keepStep (or a tenth of keepFor,
// whichever is less; not below a second, the tag's resolution).
func keepUntil(now time.Time, keepFor time.Duration) time.Time {
	t := now.Add(keepFor)
	step := min(keepStep, keepFor/10).Truncate(time.Second)
	if step <= 0 {
		return t
	}
	if r := t.Truncate(step); !r.Equal(t) {
		return r.Add(step)
	}
	return t
}

// FindExpired lists the servers the run retired whose keep window has
// ended at now: the sources of finished swaps and the new servers of swaps
// switched back, powered off, with the window the journal or their tag
// records. A server someone powered on again is not expired.
func FindExpired(ctx context.Context, doc *plans.Document, j *Journal, drivers map[string]*registry.Drivers, now time.Time) ([]Orphan, error) {
	var out []Orphan
	if j == nil {
		return nil, nil
	}
	for i, st := range j.Swaps {
		if i >= len(doc.Plan.Swaps) {
			continue
		}
		// The retired server: the source of a finished swap, or the new
		// server of one switched back by vmswap rollback (its window is
		// on its tag alone).
		id, until := st.SourceID, st.KeepUntil
		switch {
		case st.Status == StatusSucceeded && !st.KeepUntil.IsZero():
		case st.Status == StatusReverted && st.NewID != "":
			id, until = st.NewID, time.Time{}
		default:
			continue
		}
		name := doc.Plan.Swaps[i].Source.Provider
		d := drivers[name]
		if id == "" || d == nil || d.Compute == nil {
			continue
		}
		srv, err := d.Compute.GetServer(ctx, id)
		if errors.Is(err, provider.ErrNotFound) {
			continue // gone already
		}
		if err != nil {
			return nil, err
		}
		if tt, ok := keptUntil(srv); ok {
			until = tt
		}
		if until.IsZero() || srv.Status != provider.StatusOff || now.Before(until) {
			continue
		}
		out = append(out, Orphan{Provider: name, Kind: "server", ID: srv.ID, Name: srv.Name, Until: until})
	}
	return out, nil
}

// FindOrphans lists the servers and images carrying the tag (or image
// name) of any run of the plan file that nothing uses. A new server is in
// use unless its swap was rolled back or switched back (traffic moved off it); a
// finished swap's image is in use when the plan keeps it; what a running
// or interrupted swap holds is its own to finish or undo. A server the
// journal does not know to serve nothing is an orphan only once it is off
// and past any keep window: a running one may take traffic in ways vmswap
// cannot see.
func FindOrphans(ctx context.Context, doc *plans.Document, j *Journal, drivers map[string]*registry.Drivers) ([]Orphan, error) {
	planIDs := []string{doc.PlanID()}
	inUse := map[string]bool{}
	// unused holds the servers this journal knows serve nothing: new
	// servers of swaps whose traffic went back to the source.
	unused := map[string]bool{}
	// namesInUse holds the names of what unfinished swaps made: a killed
	// process may have made it before the journal had its ID.
	namesInUse := map[string]bool{}
	if j != nil {
		planIDs = j.PlanIDs()
		if !slices.Contains(planIDs, doc.PlanID()) {
			planIDs = append(planIDs, doc.PlanID())
		}
		for i, st := range j.Swaps {
			switch {
			case st.Status == StatusRolledBack || st.Status == StatusReverted || st.TrafficBack:
				// Traffic is back on the source: what the run made serves nothing.
				unused[st.NewID] = true
			case st.Status == StatusSucceeded:
				inUse[st.NewID] = true
				if i < len(doc.Plan.Swaps) && doc.Plan.Swaps[i].Retire.KeepImage {
					inUse[st.ImageID] = true
				}
			default:
				inUse[st.NewID], inUse[st.ImageID] = true, true
				// Resume and rollback find it again by its name.
				namesInUse[st.NewName], namesInUse[st.ImageName] = true, true
			}
		}
		delete(inUse, "")
		delete(namesInUse, "")
	}
	var out []Orphan
	seen := map[string]bool{}
	names := make([]string, 0, len(drivers))
	for n := range drivers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		d := drivers[name]
		if d.Compute == nil {
			continue
		}
		var servers []provider.Server
		var images []provider.Image
		for _, id := range planIDs {
			ss, is, err := d.Compute.FindTagged(ctx, "vmswap:"+id)
			if err != nil {
				return nil, err
			}
			servers, images = append(servers, ss...), append(images, is...)
		}
		for i := range servers {
			s := &servers[i]
			if inUse[s.ID] || namesInUse[s.Name] || seen["s"+s.ID] {
				continue
			}
			seen["s"+s.ID] = true
			if !unused[s.ID] {
				// Not one this journal saw traffic leave: a running server
				// may serve through anything (a DNS record, a proxy of the
				// user's own), as the new server of a plan file copied
				// without its journal does; one kept powered off for a
				// rollback is kept until its window ends (cleanup
				// --expired). Only a server off, and past any keep window,
				// is taken for an orphan.
				if until, ok := keptUntil(s); s.Status != provider.StatusOff || ok && time.Now().Before(until) {
					continue
				}
			}
			// Whatever the journal says, a server a load balancer or a
			// reserved IP sends traffic to is not an orphan: someone put it
			// back in service.
			if el, ok := d.Compute.(provider.EntrypointLister); ok {
				if eps, err := el.Entrypoints(ctx, s); err != nil {
					return nil, err
				} else if len(eps) > 0 {
					continue
				}
			}
			out = append(out, Orphan{Provider: name, Kind: "server", ID: s.ID, Name: s.Name})
		}
		for _, im := range images {
			if !inUse[im.ID] && !namesInUse[im.Name] && !seen["i"+im.ID] {
				seen["i"+im.ID] = true
				out = append(out, Orphan{Provider: name, Kind: "image", ID: im.ID, Name: im.Name})
			}
		}
	}
	return out, nil
}

// DeleteOrphans deletes what FindOrphans found and returns what it could not.
func DeleteOrphans(ctx context.Context, orphans []Orphan, drivers map[string]*registry.Drivers) []error {
	var errs []error
	for _, o := range orphans {
		var c provider.Compute = drivers[o.Provider].Compute
		var err error
		if o.Kind == "server" {
			err = c.DeleteServer(ctx, o.ID)
		} else {
			err = c.DeleteImage(ctx, o.ID)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o, err))
		}
	}
	dropEmptyKeepTags(ctx, orphans, drivers)
	return slices.Clip(errs)
}

// dropEmptyKeepTags deletes the keep-until tags of the expired servers
// just deleted that no server carries any more, where tags are objects of
// their own (DigitalOcean): each ten minutes that retired a server would
// otherwise leave an empty tag. A tag another server still carries stays.
// Failures are ignored: the tag marks nothing.
func dropEmptyKeepTags(ctx context.Context, orphans []Orphan, drivers map[string]*registry.Drivers) {
	seen := map[string]bool{}
	for _, o := range orphans {
		tag := keepTag(o.Until)
		if o.Kind != "server" || o.Until.IsZero() || seen[o.Provider+" "+tag] {
			continue
		}
		seen[o.Provider+" "+tag] = true
		dropIfEmpty(ctx, drivers[o.Provider].Compute, tag)
	}
}

// dropIfEmpty deletes a tag of vmswap's that no server carries, where
// tags are objects of their own.
func dropIfEmpty(ctx context.Context, comp provider.Compute, tag string) {
	tl, ok1 := comp.(provider.TaggedLister)
	td, ok2 := comp.(provider.TagDeleter)
	if !ok1 || !ok2 {
		return
	}
	if left, err := tl.ServersTagged(ctx, tag); err == nil && len(left) == 0 {
		_ = td.DeleteTag(ctx, tag)
	}
}

// keptUntil reads a retired server's keep window from its tag.
func keptUntil(srv *provider.Server) (time.Time, bool) {
	for _, t := range srv.Tags {
		if v, ok := strings.CutPrefix(t, keepTagPrefix); ok {
			// EC2 shows a tag as key=value; vmswap's mark has no value.
			if tt, err := time.Parse(keepTagTime, strings.TrimSuffix(v, "=")); err == nil {
				return tt, true
			}
		}
	}
	return time.Time{}, false
}

// FindExpiredIn lists, across a whole account, the servers vmswap retired
// and kept whose keep window has ended at now: powered off, carrying the
// keep tag of any plan's run.
func FindExpiredIn(ctx context.Context, name string, comp provider.Compute, now time.Time) ([]Orphan, error) {
	f, ok := comp.(provider.TagPrefixFinder)
	if !ok {
		return nil, fmt.Errorf("provider %s cannot search servers by tag", name)
	}
	servers, err := f.FindTagPrefix(ctx, keepTagPrefix)
	if err != nil {
		return nil, err
	}
	var out []Orphan
	for i := range servers {
		srv := &servers[i]
		until, ok := keptUntil(srv)
		if ok && srv.Status == provider.StatusOff && !now.Before(until) {
			out = append(out, Orphan{Provider: name, Kind: "server", ID: srv.ID, Name: srv.Name, Until: until})
		}
	}
	return out, nil
}
