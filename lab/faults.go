package lab

import (
	"fmt"
	"strings"
	"time"
)

// Fault kinds. A fault applies to the next Count matching events (default 1).
const (
	// FaultHTTPError answers the next calls of Operation with Status (default 500).
	FaultHTTPError = "http_error"
	// FaultRateLimit answers the next calls of Operation with 429 and
	// Retry-After / ratelimit-reset RetryAfter from now (default 1s).
	FaultRateLimit = "rate_limit"
	// FaultActionErrored makes the next action of type Operation (snapshot,
	// power_off, ...) end "errored".
	FaultActionErrored = "action_errored"
	// FaultNeverActive makes the next created droplet stay "new" forever.
	FaultNeverActive = "never_active"
	// FaultServe500 makes the next created droplet answer every request with 500.
	FaultServe500 = "serve_500"
	// FaultServeContent makes the next created droplet serve a default page
	// instead of the site.
	FaultServeContent = "serve_content"
	// FaultSlowBoot makes the next created droplet boot Delay later.
	FaultSlowBoot = "slow_boot"
	// FaultDNSReject rejects the next record updates (DigitalOcean and
	// Cloudflare) with 422 / 400.
	FaultDNSReject = "dns_reject"
	// FaultLBIgnoreNew makes load balancers never find droplets added from now
	// on healthy, so they never receive traffic.
	FaultLBIgnoreNew = "lb_ignore_new"
	// FaultDropAfterCommit carries out the next calls of Operation and then
	// drops the connection before answering, as a proxy or network does
	// when it fails at the wrong moment.
	FaultDropAfterCommit = "drop_after_commit"
	// FaultKeepHostname makes the next droplet created from a snapshot keep
	// the snapshot's hostname, as an image without cloud-init's hostname
	// reset does.
	FaultKeepHostname = "keep_hostname"
)

// Fault is one injected failure. Inject it with Lab.Inject or POST /lab/faults.
type Fault struct {
	Kind       string        `json:"kind"`
	Operation  string        `json:"operation,omitempty"` // API operation ID or action type
	Count      int           `json:"count,omitempty"`
	Status     int           `json:"status,omitempty"`
	RetryAfter time.Duration `json:"retry_after,omitempty"`
	Delay      time.Duration `json:"delay,omitempty"`
	// Hits counts how often the fault fired.
	Hits int `json:"hits"`
}

// Inject arms a fault. It returns an error for an unknown kind or a missing
// operation.
func (l *Lab) Inject(f Fault) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.injectLocked(f)
}

func (l *Lab) injectLocked(f Fault) error {
	switch f.Kind {
	case FaultHTTPError, FaultRateLimit, FaultActionErrored, FaultDropAfterCommit:
		if f.Operation == "" {
			return fmt.Errorf("lab: fault %s needs an operation", f.Kind)
		}
	case FaultNeverActive, FaultServe500, FaultServeContent, FaultSlowBoot, FaultDNSReject, FaultKeepHostname:
	case FaultLBIgnoreNew:
		for _, lb := range l.st.LBs {
			lb.IgnoreAfter = true
		}
		for _, lb := range l.st.Hetzner.LBs {
			lb.IgnoreNew = true
		}
	default:
		return fmt.Errorf("lab: unknown fault kind %q (known: %s)", f.Kind, strings.Join([]string{FaultHTTPError, FaultRateLimit, FaultActionErrored, FaultNeverActive, FaultServe500, FaultServeContent, FaultSlowBoot, FaultDNSReject, FaultLBIgnoreNew, FaultDropAfterCommit, FaultKeepHostname}, ", "))
	}
	if f.Count <= 0 {
		f.Count = 1
	}
	l.faults = append(l.faults, &f)
	return nil
}

// Faults returns the armed and spent faults with their hit counts.
func (l *Lab) Faults() []Fault {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Fault, len(l.faults))
	for i, f := range l.faults {
		out[i] = *f
	}
	return out
}

// takeFault consumes one use of the first armed fault matching kind and op.
// Callers hold l.mu.
func (l *Lab) takeFault(kind, op string) *Fault {
	for _, f := range l.faults {
		if f.Kind == kind && f.Hits < f.Count && (f.Operation == "" || f.Operation == op) {
			f.Hits++
			return f
		}
	}
	return nil
}

// BreakDroplet makes a running droplet start answering as the fault kind
// says (FaultServe500 or FaultServeContent), as an application that fails
// under live traffic after passing its checks.
func (l *Lab) BreakDroplet(id int, kind string) error {
	if kind != FaultServe500 && kind != FaultServeContent {
		return fmt.Errorf("lab: BreakDroplet: kind %q: use %s or %s", kind, FaultServe500, FaultServeContent)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.st.Droplets[id]
	if d == nil {
		return fmt.Errorf("lab: droplet %d not found", id)
	}
	d.Fault = kind
	if m := l.machines[id]; m != nil {
		m.mu.Lock()
		m.fault = kind
		m.mu.Unlock()
	}
	return nil
}
