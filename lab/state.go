package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// stateVersion is the format of state.json; other versions are refused.
const stateVersion = 1

// state is everything the lab persists. It is guarded by Lab.mu.
type state struct {
	Version     int                    `json:"version"`
	Token       string                 `json:"token"`
	Net         [2]int                 `json:"net"` // addresses are 127.Net[0].Net[1].host
	NextHost    int                    `json:"next_host"`
	NextID      int                    `json:"next_id"`
	Keys        []*sshKey              `json:"keys"`
	Droplets    map[int]*droplet       `json:"droplets"`
	Snapshots   map[int]*snapshot      `json:"snapshots"`
	Actions     map[int]*action        `json:"actions"`
	LBs         map[string]*lbState    `json:"load_balancers"`
	Domains     map[string]*domain     `json:"domains"`
	ReservedIPs map[string]*reservedIP `json:"reserved_ips"`
	Tags        map[string]bool        `json:"tags"`
	Zones       map[string]*zone       `json:"zones"`
	FreeHosts   []int                  `json:"free_hosts"`
	Hetzner     *hetznerState          `json:"hetzner"`
}

type sshKey struct {
	ID          int    `json:"id"`
	Name        string `json:"name"`
	PublicKey   string `json:"public_key"`
	Fingerprint string `json:"fingerprint"`
}

type droplet struct {
	ID         int           `json:"id"`
	Name       string        `json:"name"`
	Size       string        `json:"size"`
	Region     string        `json:"region"`
	ImageID    int           `json:"image_id"`
	ImageName  string        `json:"image_name"`
	ImageDist  string        `json:"image_distribution"`
	ImageType  string        `json:"image_type"`
	Status     string        `json:"status"` // new, active, off
	IP         string        `json:"ip"`
	Tags       []string      `json:"tags"`
	VPC        string        `json:"vpc_uuid"`
	Monitoring bool          `json:"monitoring"`
	IPv6       bool          `json:"ipv6"`
	CreatedAt  time.Time     `json:"created_at"`
	Snapshots  []int         `json:"snapshot_ids"`
	Locked     bool          `json:"locked"`
	Fault      string        `json:"fault,omitempty"`
	BootDelay  time.Duration `json:"boot_delay,omitempty"`

	// Cloud is "" for a DigitalOcean droplet, cloudHetzner for a Hetzner
	// server; each API sees only its own.
	Cloud string `json:"cloud,omitempty"`
	// The Hetzner server's: Size is its server type, Region its location.
	Labels         map[string]string `json:"labels,omitempty"`
	PrimaryIPv4    int               `json:"primary_ipv4,omitempty"` // the primary IP whose address IP is
	OwnIP          bool              `json:"own_ip,omitempty"`       // IP is the server's own (no primary IPv4)
	DiskGB         int               `json:"disk_gb,omitempty"`
	UserData       string            `json:"user_data,omitempty"`
	Networks       []int             `json:"networks,omitempty"`
	Firewalls      []int             `json:"firewalls,omitempty"`
	PlacementGroup int               `json:"placement_group,omitempty"`
	Phase          string            `json:"phase,omitempty"` // starting, stopping: an action is changing its power
}

type snapshot struct {
	ID        int       `json:"id"`
	Name      string    `json:"name"`
	DropletID int       `json:"droplet_id"`
	Region    string    `json:"region"`
	MinDisk   int       `json:"min_disk_size"`
	SizeGB    float64   `json:"size_gigabytes"`
	CreatedAt time.Time `json:"created_at"`
	Tags      []string  `json:"tags"`
	Dist      string    `json:"distribution"`
}

type action struct {
	ID           int       `json:"id"`
	Status       string    `json:"status"` // in-progress, completed, errored
	Type         string    `json:"type"`
	StartedAt    time.Time `json:"started_at"`
	CompletedAt  time.Time `json:"completed_at"`
	ResourceID   int       `json:"resource_id"`
	ResourceType string    `json:"resource_type"`
	Region       string    `json:"region"`
	// ReservedIP is set for reserved-IP actions (resource_id is the IP as int).
	ReservedIP string `json:"reserved_ip,omitempty"`

	// Cloud is cloudHetzner for a Hetzner action (Type is its command).
	Cloud     string        `json:"cloud,omitempty"`
	Resources []hResource   `json:"resources,omitempty"`
	Duration  time.Duration `json:"duration,omitempty"` // for progress
	Error     *hActionError `json:"error,omitempty"`
}

type hResource struct {
	ID   int    `json:"id"`
	Type string `json:"type"`
}

type hActionError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type lbState struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	IP          string    `json:"ip"`
	Region      string    `json:"region"`
	DropletIDs  []int     `json:"droplet_ids"`
	Tag         string    `json:"tag"`
	CreatedAt   time.Time `json:"created_at"`
	HealthPath  string    `json:"health_path"`
	Healthy     int       `json:"healthy_threshold"`
	Unhealthy   int       `json:"unhealthy_threshold"`
	IgnoreAfter bool      `json:"ignore_new,omitempty"` // fault: new members never healthy
}

type domain struct {
	Name    string    `json:"name"`
	TTL     int       `json:"ttl"`
	Records []*record `json:"records"`
}

type record struct {
	ID       int    `json:"id"`
	Type     string `json:"type"`
	Name     string `json:"name"` // relative: "@" or "www"
	Data     string `json:"data"`
	TTL      int    `json:"ttl"`
	Priority *int   `json:"priority"`
	Port     *int   `json:"port"`
	Weight   *int   `json:"weight"`
}

type reservedIP struct {
	IP        string `json:"ip"`
	Region    string `json:"region"`
	DropletID int    `json:"droplet_id"`
}

type zone struct {
	ID      string      `json:"id"`
	Name    string      `json:"name"`
	Created time.Time   `json:"created_on"`
	Records []*cfRecord `json:"records"`
}

type cfRecord struct {
	ID         string    `json:"id"`
	Type       string    `json:"type"`
	Name       string    `json:"name"` // fully qualified, no trailing dot
	Content    string    `json:"content"`
	TTL        int       `json:"ttl"` // 1 = automatic
	Proxied    bool      `json:"proxied"`
	Comment    string    `json:"comment,omitempty"`
	Tags       []string  `json:"tags,omitempty"`
	CreatedOn  time.Time `json:"created_on"`
	ModifiedOn time.Time `json:"modified_on"`
}

func newState() *state {
	return &state{
		Version:     stateVersion,
		Token:       "lab-" + randomHex(16),
		Net:         [2]int{64 + int(randomInt(64)), int(randomInt(256))},
		NextHost:    2,
		NextID:      1000,
		Droplets:    map[int]*droplet{},
		Snapshots:   map[int]*snapshot{},
		Actions:     map[int]*action{},
		LBs:         map[string]*lbState{},
		Domains:     map[string]*domain{},
		ReservedIPs: map[string]*reservedIP{},
		Tags:        map[string]bool{},
		Zones:       map[string]*zone{},
		Hetzner:     newHetznerState(),
	}
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func loadState(dir string) (*state, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lab: read state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("lab: %s: %w", statePath(dir), err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("lab: %s has format version %d, this lab reads %d: start with an empty --state directory", statePath(dir), st.Version, stateVersion)
	}
	if st.Hetzner == nil { // saved before the lab spoke Hetzner
		st.Hetzner = newHetznerState()
	}
	if st.Hetzner.Volumes == nil { // saved before the lab had volumes
		st.Hetzner.Volumes = map[int]*hVolume{}
	}
	return &st, nil
}

func (l *Lab) saveLocked() error {
	b, err := json.MarshalIndent(l.st, "", " ")
	if err != nil {
		return err
	}
	return writeFileAtomic(statePath(l.cfg.StateDir), b, 0o600)
}

func (l *Lab) nextID() int {
	l.st.NextID++
	return l.st.NextID
}

// allocIP returns an unused loopback address in the lab's /24.
func (l *Lab) allocIP() (string, error) {
	if n := len(l.st.FreeHosts); n > 0 {
		h := l.st.FreeHosts[0]
		l.st.FreeHosts = l.st.FreeHosts[1:]
		return l.hostIP(h), nil
	}
	if l.st.NextHost >= edgeHost {
		return "", errors.New("lab: out of loopback addresses (252 in use)")
	}
	h := l.st.NextHost
	l.st.NextHost++
	return l.hostIP(h), nil
}

func (l *Lab) freeIP(ip string) {
	var a, b, c, h int
	if _, err := fmt.Sscanf(ip, "%d.%d.%d.%d", &a, &b, &c, &h); err == nil {
		l.st.FreeHosts = append(l.st.FreeHosts, h)
	}
}

func (l *Lab) hostIP(h int) string {
	return fmt.Sprintf("127.%d.%d.%d", l.st.Net[0], l.st.Net[1], h)
}

func (l *Lab) diskDir(kind string, id int) string {
	return filepath.Join(l.cfg.StateDir, "disks", fmt.Sprintf("%s%d", kind, id))
}

// sortedDroplets returns the DigitalOcean droplets in ID order.
func sortedDroplets(st *state) []*droplet { return sortedServers(st, "") }

// sortedServers returns a cloud's servers in ID order.
func sortedServers(st *state, cloud string) []*droplet {
	out := make([]*droplet, 0, len(st.Droplets))
	for _, d := range st.Droplets {
		if d.Cloud == cloud {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// fqdn joins a DigitalOcean relative record name with its domain.
func fqdn(name, dom string) string {
	if name == "@" || name == "" {
		return dom
	}
	return strings.TrimSuffix(name, ".") + "." + dom
}

// Size is a droplet size the lab offers, with DigitalOcean's real figures.
type Size struct {
	Slug         string
	MemoryMB     int
	VCPUs        int
	DiskGB       int
	TransferTB   float64
	PriceMonthly float64
	Description  string
}

// Sizes are the droplet sizes the lab offers.
var Sizes = []Size{
	{"s-1vcpu-512mb-10gb", 512, 1, 10, 0.5, 4, "Basic"},
	{"s-1vcpu-1gb", 1024, 1, 25, 1, 6, "Basic"},
	{"s-1vcpu-2gb", 2048, 1, 50, 2, 12, "Basic"},
	{"s-2vcpu-2gb", 2048, 2, 60, 3, 18, "Basic"},
	{"s-2vcpu-4gb", 4096, 2, 80, 4, 24, "Basic"},
	{"s-4vcpu-8gb", 8192, 4, 160, 5, 48, "Basic"},
	{"s-8vcpu-16gb", 16384, 8, 320, 6, 96, "Basic"},
	{"c-2", 4096, 2, 25, 4, 42, "CPU-Optimized"},
	{"c-4", 8192, 4, 50, 5, 84, "CPU-Optimized"},
	{"g-2vcpu-8gb", 8192, 2, 25, 4, 63, "General Purpose"},
	{"m-2vcpu-16gb", 16384, 2, 50, 4, 84, "Memory-Optimized"},
}

// Regions are the regions the lab offers.
var Regions = []struct{ Slug, Name string }{
	{"nyc1", "New York 1"}, {"nyc3", "New York 3"}, {"ams3", "Amsterdam 3"},
	{"fra1", "Frankfurt 1"}, {"lon1", "London 1"}, {"sfo3", "San Francisco 3"},
}

func sizeBySlug(slug string) (Size, bool) {
	for _, s := range Sizes {
		if s.Slug == slug {
			return s, true
		}
	}
	return Size{}, false
}

func regionOK(slug string) bool {
	for _, r := range Regions {
		if r.Slug == slug {
			return true
		}
	}
	return false
}

// distro images the lab offers for new droplets, as in /v2/images?type=distribution.
var distroImages = []struct {
	ID   int
	Slug string
	Name string
	Dist string
}{
	{100001, "ubuntu-24-04-x64", "24.04 (LTS) x64", "Ubuntu"},
	{100002, "debian-12-x64", "12 x64", "Debian"},
}
