package runner

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/provider"
)

// This file: what a swap costs, from the provider's own prices.

// expectedOverlap is how long the new and the old server both run: from
// the launch to the retire. Booting, verifying and cutting over take a few
// minutes on every provider vmswap drives; observe and the hold are the
// plan's.
func expectedOverlap(sw plans.Swap, kind cutoverKind, seen *plans.ObservedSwap) time.Duration {
	st := &SwapState{}
	if seen.Record != nil {
		st.OldTTL = int(seen.Record.TTL)
	}
	return 5*time.Minute + sw.Observe.D() + kind.hold(st)
}

// estimateCost prices a swap: the monthly change, both servers during the
// swap, and the retired server for its keep window, all from the sizes the
// provider reported (src's and the target's); what the API does not price
// is given as a quantity, never guessed.
func estimateCost(sw plans.Swap, src *provider.Server, from, to *provider.Size, overlap time.Duration) *plans.Cost {
	c := &plans.Cost{OverlapHours: round(overlap.Hours(), 2), SnapshotGB: src.DiskGB}
	if sw.Retire.Action != "delete" {
		c.KeepHours = round(sw.Retire.KeepFor.D().Hours(), 2)
		if sw.Retire.KeepFor == 0 {
			c.Notes = append(c.Notes, fmt.Sprintf("%s is powered off and kept with no end (keep_for is not set): it is billed until someone deletes it", src.Name))
		}
	}
	money := func(v float64) *float64 { v = round(v, 4); return &v }
	if from != nil && from.Price != nil {
		c.Currency = from.Price.Currency
		c.SourceMonthly = money(from.Price.Monthly)
		if c.KeepHours > 0 {
			if from.Price.BilledWhenOff {
				c.Kept = money(from.Price.For(c.KeepHours))
				c.Notes = append(c.Notes, fmt.Sprintf("%s is billed while powered off, as if it ran, for the %s it is kept", src.Name, shortDur(sw.Retire.KeepFor.D())))
			} else {
				c.Kept = money(0)
			}
		}
	}
	if to != nil && to.Price != nil {
		c.Currency = to.Price.Currency
		c.TargetMonthly = money(to.Price.Monthly)
		c.Overlap = money(to.Price.For(c.OverlapHours))
	}
	if c.SourceMonthly != nil && c.TargetMonthly != nil && (from.Price.Currency == to.Price.Currency) {
		c.MonthlyDifference = money(*c.TargetMonthly - *c.SourceMonthly)
	}
	if c.SourceMonthly == nil || c.TargetMonthly == nil {
		c.Notes = append(c.Notes, "the provider's API reports no price for these sizes")
	}
	keep := "until the swap ends"
	if sw.Retire.KeepImage {
		keep = "for as long as you keep it (keep_image)"
	}
	c.Notes = append(c.Notes, fmt.Sprintf("the snapshot (at most %d GB, the source's disk) is billed %s; its price is not reported by the API", src.DiskGB, keep))
	return c
}

func round(v float64, places int) float64 {
	p := math.Pow(10, float64(places))
	return math.Round(v*p) / p
}

// CostLines says a swap's cost for a person, one line each.
func CostLines(name string, c *plans.Cost) []string {
	if c == nil {
		return nil
	}
	cur := func(v *float64) string {
		if v == nil {
			return "not reported"
		}
		sign := ""
		if *v > 0 && v == c.MonthlyDifference {
			sign = "+"
		}
		num := fmt.Sprintf("%.2f", math.Abs(*v))
		if a := math.Abs(*v); a > 0 && a < 0.01 {
			num = fmt.Sprintf("%.4f", a) // a few minutes of a small server
		}
		if *v < 0 {
			sign = "-"
		}
		if c.Currency == "USD" {
			return sign + "$" + num
		}
		return fmt.Sprintf("%s%s %s", sign, num, c.Currency)
	}
	out := []string{fmt.Sprintf("%s: %s a month now, %s after: %s a month", name, cur(c.SourceMonthly), cur(c.TargetMonthly), cur(c.MonthlyDifference))}
	during := fmt.Sprintf("%s: the swap itself: both servers for about %s: %s", name, shortDur(time.Duration(c.OverlapHours*float64(time.Hour))), cur(c.Overlap))
	if c.KeepHours > 0 {
		during += fmt.Sprintf("; the retired server kept %s: %s", shortDur(time.Duration(c.KeepHours*float64(time.Hour))), cur(c.Kept))
	}
	out = append(out, during)
	for _, n := range c.Notes {
		out = append(out, fmt.Sprintf("%s: note: %s", name, n))
	}
	return out
}

// shortDur writes a duration as people do: 24h, 1h30m, 5m.
func shortDur(d time.Duration) string {
	d = d.Round(time.Minute)
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	if s == "" {
		return "0m"
	}
	return s
}
