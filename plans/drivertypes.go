package plans

import (
	"regexp"
	"slices"
	"sort"
)

// Capability is something a plan asks of a provider block.
type Capability string

// Capabilities a driver type may have.
const (
	CapCompute    Capability = "compute"
	CapDNS        Capability = "dns"
	CapLB         Capability = "loadbalancer"
	CapReservedIP Capability = "reserved_ip"
)

// DriverType is what a plan can know of a provider type without building
// its drivers: what it can do and how its sizes are written. The builders
// are in plans/registry, which must have one for each type listed here
// (a test checks it), so that SDK types never pass through this package.
type DriverType struct {
	Caps []Capability
	// SizeSyntax checks a size slug offline; nil: anything.
	SizeSyntax *regexp.Regexp
	SizeHint   string
}

// DriverTypeTable lists every provider type, explicitly.
var DriverTypeTable = map[string]DriverType{
	"aws": {
		Caps:       []Capability{CapCompute, CapDNS, CapLB, CapReservedIP},
		SizeSyntax: regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9]+$`),
		SizeHint:   "an EC2 instance type like m7i.xlarge",
	},
	"hetzner": {
		Caps:       []Capability{CapCompute, CapDNS, CapLB, CapReservedIP},
		SizeSyntax: regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`),
		SizeHint:   "a Hetzner server type like cx32",
	},
	"rfc2136":    {Caps: []Capability{CapDNS}},
	"haproxy":    {Caps: []Capability{CapLB}},
	"nginx":      {Caps: []Capability{CapLB}},
	"cloudflare": {Caps: []Capability{CapDNS}},
	"digitalocean": {
		Caps:       []Capability{CapCompute, CapDNS, CapLB, CapReservedIP},
		SizeSyntax: regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`),
		SizeHint:   "a DigitalOcean size slug like s-4vcpu-8gb",
	},
}

// DriverTypes returns the registered provider types, sorted.
func DriverTypes() []string {
	out := make([]string, 0, len(DriverTypeTable))
	for k := range DriverTypeTable {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// HasCap reports whether a provider type has a capability.
func HasCap(typ string, c Capability) bool { return slices.Contains(DriverTypeTable[typ].Caps, c) }
