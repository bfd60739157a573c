package plans

import (
	"context"
	"fmt"
	"slices"
	"sort"

	"github.com/vmswap/vmswap/provider"
)

// Orphan is a resource a plan's runs created that nothing uses.
type Orphan struct {
	Provider string `json:"provider"`
	Kind     string `json:"kind"` // server or image
	ID       string `json:"id"`
	Name     string `json:"name"`
}

func (o Orphan) String() string {
	return fmt.Sprintf("%s %s (%s) at %s", o.Kind, o.Name, o.ID, o.Provider)
}

// FindOrphans lists the servers and images carrying the plan's tag (or
// image name) that are not in use: a succeeded swap's new server serves
// traffic, and its image is kept when the plan says keep_image.
func FindOrphans(ctx context.Context, doc *Document, j *Journal, drivers map[string]*Drivers) ([]Orphan, error) {
	planID := doc.PlanID()
	if j != nil {
		planID = j.PlanID
	}
	inUse := map[string]bool{}
	if j != nil {
		for i, st := range j.Swaps {
			if st.Status == StatusSucceeded || st.Status == StatusRunning || st.Status == StatusInterrupted {
				// A running or interrupted swap's resources are its to finish or
				// undo (apply or rollback), not cleanup's.
				inUse[st.NewID] = true
				if st.Status != StatusSucceeded || doc.Plan.Swaps[i].Retire.KeepImage {
					inUse[st.ImageID] = true
				}
			}
		}
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
		servers, images, err := d.Compute.FindTagged(ctx, "vmswap:"+planID)
		if err != nil {
			return nil, err
		}
		for _, s := range servers {
			if !inUse[s.ID] && !seen["s"+s.ID] {
				seen["s"+s.ID] = true
				out = append(out, Orphan{Provider: name, Kind: "server", ID: s.ID, Name: s.Name})
			}
		}
		for _, im := range images {
			if !inUse[im.ID] && !seen["i"+im.ID] {
				seen["i"+im.ID] = true
				out = append(out, Orphan{Provider: name, Kind: "image", ID: im.ID, Name: im.Name})
			}
		}
	}
	return out, nil
}

// DeleteOrphans deletes what FindOrphans found and returns what it could not.
func DeleteOrphans(ctx context.Context, orphans []Orphan, drivers map[string]*Drivers) []error {
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
	return slices.Clip(errs)
}
