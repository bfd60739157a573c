package lab

import (
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// cloudHetzner marks a server (in state.Droplets) and an action (in
// state.Actions) as the Hetzner Cloud's; "" is DigitalOcean's.
const cloudHetzner = "hetzner"

// hKey is a Hetzner SSH key.
type hKey struct {
	ID          int               `json:"id"`
	Name        string            `json:"name"`
	PublicKey   string            `json:"public_key"`
	Fingerprint string            `json:"fingerprint"`
	Labels      map[string]string `json:"labels"`
	Created     time.Time         `json:"created"`
}

// hImage is a Hetzner snapshot image: a copy of a server's disk
// (disks/s<ID>), as DigitalOcean snapshots are.
type hImage struct {
	ID          int               `json:"id"`
	Description string            `json:"description"`
	Labels      map[string]string `json:"labels"`
	Status      string            `json:"status"` // creating, available
	ServerID    int               `json:"server_id"`
	ServerName  string            `json:"server_name"`
	DiskGB      int               `json:"disk_gb"`
	SizeGB      float64           `json:"image_size_gb"`
	Flavor      string            `json:"os_flavor"`
	OSVersion   string            `json:"os_version"`
	Created     time.Time         `json:"created"`
}

// hLB is a Hetzner load balancer. Each service runs as its own balancer
// on the LB's address and the service's listen port.
type hLB struct {
	ID              int               `json:"id"`
	Name            string            `json:"name"`
	IP              string            `json:"ip"`
	Location        string            `json:"location"`
	Type            string            `json:"type"`
	Algorithm       string            `json:"algorithm"`
	PublicInterface bool              `json:"public_interface"`
	Labels          map[string]string `json:"labels"`
	Services        []hService        `json:"services"`
	Targets         []hTarget         `json:"targets"`
	Created         time.Time         `json:"created"`
	IgnoreNew       bool              `json:"ignore_new,omitempty"` // fault: new targets never healthy
}

type hService struct {
	Protocol        string       `json:"protocol"` // http or tcp
	ListenPort      int          `json:"listen_port"`
	DestinationPort int          `json:"destination_port"`
	Proxyprotocol   bool         `json:"proxyprotocol"`
	HealthCheck     hHealthCheck `json:"health_check"`
	StickySessions  bool         `json:"sticky_sessions,omitempty"`
	CookieName      string       `json:"cookie_name,omitempty"`
	CookieLifetime  int          `json:"cookie_lifetime,omitempty"`
}

type hHealthCheck struct {
	Protocol    string   `json:"protocol"` // http or tcp
	Port        int      `json:"port"`
	Interval    int      `json:"interval"`
	Timeout     int      `json:"timeout"`
	Retries     int      `json:"retries"`
	Domain      *string  `json:"domain,omitempty"`
	Path        string   `json:"path,omitempty"`
	Response    string   `json:"response,omitempty"`
	StatusCodes []string `json:"status_codes,omitempty"`
	TLS         bool     `json:"tls,omitempty"`
}

type hTarget struct {
	Type     string `json:"type"` // server or label_selector
	ServerID int    `json:"server_id,omitempty"`
	Selector string `json:"selector,omitempty"`
}

// hFloatingIP is a Hetzner floating IP: a forwarder on its own address to
// the server it is assigned to.
type hFloatingIP struct {
	ID           int               `json:"id"`
	Name         string            `json:"name"`
	IP           string            `json:"ip"`
	Description  *string           `json:"description"`
	HomeLocation string            `json:"home_location"`
	ServerID     int               `json:"server_id"`
	Labels       map[string]string `json:"labels"`
	Created      time.Time         `json:"created"`
}

// hPrimaryIP is a Hetzner primary IP. Assigned, its address is the
// server's own: the server's machine listens on it.
type hPrimaryIP struct {
	ID         int               `json:"id"`
	Name       string            `json:"name"`
	IP         string            `json:"ip"`
	Datacenter string            `json:"datacenter"`
	AssigneeID int               `json:"assignee_id"`
	AutoDelete bool              `json:"auto_delete"`
	Labels     map[string]string `json:"labels"`
	Created    time.Time         `json:"created"`
}

// hZone is a zone of Hetzner DNS (in the Cloud API), served by the lab's
// DNS server.
type hZone struct {
	ID      int               `json:"id"`
	Name    string            `json:"name"`
	TTL     int               `json:"ttl"`
	Labels  map[string]string `json:"labels"`
	RRSets  []*hRRSet         `json:"rrsets"`
	Created time.Time         `json:"created"`
}

type hRRSet struct {
	Name    string            `json:"name"` // relative, "@" for the apex
	Type    string            `json:"type"`
	TTL     *int              `json:"ttl"` // nil: the zone's
	Records []hRecord         `json:"records"`
	Labels  map[string]string `json:"labels"`
}

type hRecord struct {
	Value   string `json:"value"`
	Comment string `json:"comment,omitempty"`
}

// hetznerState is the Hetzner Cloud's part of the lab's state; its servers
// and actions live in state.Droplets and state.Actions, marked cloudHetzner.
type hetznerState struct {
	Keys        map[int]*hKey        `json:"ssh_keys"`
	Images      map[int]*hImage      `json:"images"`
	LBs         map[int]*hLB         `json:"load_balancers"`
	FloatingIPs map[int]*hFloatingIP `json:"floating_ips"`
	PrimaryIPs  map[int]*hPrimaryIP  `json:"primary_ips"`
	Zones       map[int]*hZone       `json:"zones"`
	Volumes     map[int]*hVolume     `json:"volumes"`
}

func newHetznerState() *hetznerState {
	return &hetznerState{Keys: map[int]*hKey{}, Images: map[int]*hImage{}, LBs: map[int]*hLB{},
		FloatingIPs: map[int]*hFloatingIP{}, PrimaryIPs: map[int]*hPrimaryIP{}, Zones: map[int]*hZone{}, Volumes: map[int]*hVolume{}}
}

// sortedByID returns a map's values in ID order.
func sortedByID[T any](m map[int]*T, id func(*T) int) []*T {
	out := make([]*T, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return id(out[i]) < id(out[j]) })
	return out
}

// hServerType is a Hetzner server type the lab offers.
type hServerType struct {
	ID       int
	Name     string
	Cores    int
	MemoryGB int
	DiskGB   int
	Monthly  float64 // EUR, net
}

var hServerTypes = []hServerType{
	{104, "cx22", 2, 4, 40, 3.79},
	{105, "cx32", 4, 8, 80, 6.80},
	{106, "cx42", 8, 16, 160, 16.40},
	{107, "cx52", 16, 32, 320, 32.40},
}

// hLocation is a Hetzner location with its one datacenter.
type hLocation struct {
	ID                    int
	Name, Description     string
	Country, City         string
	Lat, Long             float64
	DCID                  int
	DCName, DCDescription string
}

var hLocations = []hLocation{
	{1, "fsn1", "Falkenstein DC Park 1", "DE", "Falkenstein", 50.47612, 12.370071, 4, "fsn1-dc14", "Falkenstein 1 virtual DC 14"},
	{2, "nbg1", "Nuremberg DC Park 1", "DE", "Nuremberg", 49.452102, 11.076665, 2, "nbg1-dc3", "Nuremberg 1 virtual DC 3"},
	{3, "hel1", "Helsinki DC Park 1", "FI", "Helsinki", 60.169855, 24.938379, 3, "hel1-dc2", "Helsinki 1 virtual DC 2"},
}

// hSystemImages are the system images the lab offers.
var hSystemImages = []struct {
	ID                int
	Name, Description string
	Flavor, Version   string
	Created           string
}{
	{161547269, "ubuntu-24.04", "Ubuntu 24.04", "ubuntu", "24.04", "2024-04-25T12:00:00Z"},
	{114690389, "debian-12", "Debian 12", "debian", "12", "2023-06-13T12:00:00Z"},
}

func hServerTypeBy(ref idOrName) (hServerType, bool) {
	for _, t := range hServerTypes {
		if ref.is(t.ID, t.Name) {
			return t, true
		}
	}
	return hServerType{}, false
}

func hLocationBy(ref idOrName) (hLocation, bool) {
	for _, loc := range hLocations {
		if ref.is(loc.ID, loc.Name) {
			return loc, true
		}
	}
	return hLocation{}, false
}

func hDatacenterBy(ref idOrName) (hLocation, bool) {
	for _, loc := range hLocations {
		if ref.is(loc.DCID, loc.DCName) {
			return loc, true
		}
	}
	return hLocation{}, false
}

func hLocationNamed(name string) hLocation {
	loc, _ := hLocationBy(idOrName{name: name, set: true})
	return loc
}

// idOrName is a request field Hetzner documents as "ID or name": a JSON
// number or a string (which may hold an ID).
type idOrName struct {
	id   int
	name string
	set  bool
}

func (r *idOrName) UnmarshalJSON(b []byte) error {
	r.set = string(b) != "null"
	if err := json.Unmarshal(b, &r.id); err == nil {
		return nil
	}
	if err := json.Unmarshal(b, &r.name); err != nil {
		return fmt.Errorf("want an ID or a name: %w", err)
	}
	var id int
	if _, err := fmt.Sscanf(r.name, "%d", &id); err == nil && fmt.Sprint(id) == r.name {
		r.id, r.name = id, ""
	}
	return nil
}

func (r idOrName) is(id int, name string) bool {
	return r.set && ((r.id != 0 && r.id == id) || (r.name != "" && r.name == name))
}

func (r idOrName) String() string {
	if r.name != "" {
		return r.name
	}
	return fmt.Sprint(r.id)
}
