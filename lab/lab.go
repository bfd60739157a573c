// Package lab is a local cloud on loopback that speaks the subset of the
// DigitalOcean API v2, the Cloudflare DNS API v4 and the Hetzner Cloud API
// that vmswap uses.
//
// Its droplets and Hetzner servers are real HTTP and SSH servers on their own loopback addresses
// (127.x.y.z), its load balancers are real reverse proxies, its reserved IPs
// are real TCP forwarders and its DNS zones are served by a real DNS server.
// Every API request and response is validated against the providers'
// published OpenAPI specs when a specs directory is configured. Faults
// (errors, rate limits, failed actions, broken droplets) are injected on
// request, so the runner's failure paths can be exercised end to end.
//
// The lab is what the demo, the end-to-end tests and plan rehearsals run
// against, with the same drivers that run against the real clouds.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"
)

// Durations sets how long each simulated provider operation takes.
type Durations struct {
	Action         time.Duration `json:"action"`          // generic actions: assign, add to LB, tag
	Snapshot       time.Duration `json:"snapshot"`        // droplet snapshot action
	Boot           time.Duration `json:"boot"`            // new droplet until active and serving
	Shutdown       time.Duration `json:"shutdown"`        // graceful shutdown action
	PowerOn        time.Duration `json:"power_on"`        // power_on until serving again
	Resize         time.Duration `json:"resize"`          // resize action (droplet must be off)
	HealthInterval time.Duration `json:"health_interval"` // LB health check interval (DO: 10s)
	DNSApply       time.Duration `json:"dns_apply"`       // record change until the DNS server serves it
}

// FastDurations are the defaults: a whole swap finishes in a few seconds.
func FastDurations() Durations {
	return Durations{
		Action:         100 * time.Millisecond,
		Snapshot:       800 * time.Millisecond,
		Boot:           700 * time.Millisecond,
		Shutdown:       300 * time.Millisecond,
		PowerOn:        500 * time.Millisecond,
		Resize:         500 * time.Millisecond,
		HealthInterval: 100 * time.Millisecond,
		DNSApply:       300 * time.Millisecond,
	}
}

// RealisticDurations resemble what DigitalOcean takes, for benchmarks.
func RealisticDurations() Durations {
	return Durations{
		Action:         2 * time.Second,
		Snapshot:       60 * time.Second,
		Boot:           40 * time.Second,
		Shutdown:       10 * time.Second,
		PowerOn:        20 * time.Second,
		Resize:         60 * time.Second,
		HealthInterval: 10 * time.Second,
		DNSApply:       5 * time.Second,
	}
}

// Config holds every setting of a lab.
type Config struct {
	// Token is the bearer token the APIs accept. Empty: a random one.
	Token string
	// Listen is the API address. Empty: 127.0.0.1 on a free port.
	Listen string
	// DNSListen is the DNS server's address. Empty: 127.0.0.1 on a free port.
	DNSListen string
	// HTTPPort is the port every droplet, load balancer and reserved IP serves
	// HTTP on. Zero: 8080.
	HTTPPort int
	// HTTPSPort is the port every droplet serves the same site on over TLS,
	// with a certificate from the lab's test CA (CACertPEM). Zero: 8443.
	HTTPSPort int
	// SSHPort is the port every droplet serves SSH on. Zero: 2222.
	SSHPort int
	// StateDir keeps the lab's state and droplet disks. Empty: a temporary
	// directory removed by Close.
	StateDir string
	// SpecsDir is the directory of the vendored OpenAPI specs (shared/specs).
	// Empty: no validation.
	SpecsDir string
	// RateLimit, when set, is enforced on the DigitalOcean API as
	// DigitalOcean does: 429 with Retry-After past the budget, and the
	// ratelimit-* headers on every answer.
	RateLimit *RateLimit
	// Durations of simulated operations. Zero value: FastDurations.
	Durations Durations
	// Logf receives the lab's diagnostics. Nil: discarded.
	Logf func(format string, args ...any)
}

// RateLimit is an API budget: Requests per Window (DigitalOcean: 250 a
// minute) and Hourly an hour (5,000).
type RateLimit struct {
	Requests int
	Window   time.Duration
	Hourly   int
}

// SetRateLimit starts (or, with nil, stops) enforcing a rate limit on the
// DigitalOcean API: a lab seeded first, then limited as DigitalOcean is.
func (l *Lab) SetRateLimit(rl *RateLimit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cfg.RateLimit, l.rateLog = rl, nil
}

// Lab is a running local cloud. Its methods are safe for concurrent use.
type Lab struct {
	cfg Config

	mu       sync.Mutex
	st       *state
	machines map[int]*machine
	lbs      map[string]*balancer
	rips     map[string]*forwarder
	hlbs     map[int]map[int]*balancer // Hetzner LB ID -> listen port -> its service
	hfips    map[int]*forwarder        // Hetzner floating IPs
	faults   []*Fault
	reqlog   []Request
	rateLog  []time.Time // the DigitalOcean API's requests in the last hour
	// The Hetzner API's budget (SetHetznerRateLimit): requests an hour, and
	// what is left of it when.
	hRateLimit int
	hTokens    float64
	hTokensAt  time.Time
	opCounts   map[string]int
	viol       []string
	tempDir    bool
	closed     bool
	timers     map[*time.Timer]struct{}
	dnsTimer   *time.Timer

	apiSrv *http.Server
	apiLn  net.Listener
	edge   *http.Server
	dnsSrv *dnsServer
	specs  *specs
	ca     *testCA
	caFile string // where WriteEndpoints put the CA
}

// Start starts a lab: the API server, the DNS server, and every droplet, load
// balancer and reserved IP found in StateDir.
func Start(cfg Config) (*Lab, error) {
	if cfg.HTTPPort == 0 {
		cfg.HTTPPort = 8080
	}
	if cfg.HTTPSPort == 0 {
		cfg.HTTPSPort = 8443
	}
	if cfg.SSHPort == 0 {
		cfg.SSHPort = 2222
	}
	if cfg.Durations == (Durations{}) {
		cfg.Durations = FastDurations()
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	ca, err := newTestCA()
	if err != nil {
		return nil, err
	}
	l := &Lab{cfg: cfg, ca: ca, machines: map[int]*machine{}, lbs: map[string]*balancer{}, rips: map[string]*forwarder{},
		hlbs: map[int]map[int]*balancer{}, hfips: map[int]*forwarder{}, timers: map[*time.Timer]struct{}{}}
	if l.cfg.StateDir == "" {
		dir, err := os.MkdirTemp("", "vmswap-lab-")
		if err != nil {
			return nil, fmt.Errorf("lab: %w", err)
		}
		l.cfg.StateDir, l.tempDir = dir, true
	}
	if err := os.MkdirAll(filepath.Join(l.cfg.StateDir, "disks"), 0o755); err != nil {
		return nil, fmt.Errorf("lab: state dir: %w", err)
	}
	if cfg.SpecsDir != "" {
		sp, err := loadSpecs(cfg.SpecsDir)
		if err != nil {
			return nil, err
		}
		l.specs = sp
	}
	st, err := loadState(l.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	fresh := st == nil
	if st == nil {
		st = newState()
		if l.cfg.Token != "" {
			st.Token = l.cfg.Token
		}
	} else if l.cfg.Token != "" && l.cfg.Token != st.Token {
		st.Token = l.cfg.Token
	}
	l.st = st
	if err := l.saveLocked(); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", orDefault(cfg.Listen, "127.0.0.1:0"))
	if err != nil {
		return nil, fmt.Errorf("lab: API listener: %w (choose another address with --listen)", err)
	}
	l.apiLn = ln
	l.apiSrv = &http.Server{Handler: l.apiHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go l.apiSrv.Serve(ln)

	ds, err := startDNS(l, orDefault(cfg.DNSListen, "127.0.0.1:0"))
	if err != nil {
		l.apiSrv.Close()
		return nil, err
	}
	l.dnsSrv = ds
	// The edge is the first address bound in the lab's 127.x.y network: if
	// another lab on this machine drew the same network, a new lab draws
	// again (one with saved state keeps its addresses).
	err = l.startEdge()
	for try := 0; fresh && err != nil && errors.Is(err, syscall.EADDRINUSE) && try < 8; try++ {
		l.st.Net = newState().Net
		err = l.startEdge()
	}
	if err != nil {
		l.apiSrv.Close()
		ds.close()
		return nil, fmt.Errorf("lab: Cloudflare edge: %w", err)
	}

	// Bring back whatever was running when the state was saved.
	l.mu.Lock()
	defer l.mu.Unlock()
	l.publishDNS()
	for _, a := range l.st.Actions {
		if a.Status == "in-progress" {
			// Its timer died with the old process and what it would have
			// made was never made: it failed, as an action DigitalOcean
			// loses does, and frees its droplet.
			a.Status, a.CompletedAt = "errored", time.Now().UTC()
		}
	}
	for _, d := range l.st.Droplets {
		d.Locked, d.Phase = false, ""
		if d.Status == "new" && d.Fault != FaultNeverActive {
			d.Status = "active"
		}
		if d.Status == "active" {
			m := l.newMachine(d)
			if err := m.start(); err != nil {
				l.closeLocked()
				return nil, err
			}
		}
	}
	for _, lb := range l.st.LBs {
		if err := l.startBalancerLocked(lb); err != nil {
			l.closeLocked()
			return nil, err
		}
	}
	for _, r := range l.st.ReservedIPs {
		if err := l.startForwarderLocked(r); err != nil {
			l.closeLocked()
			return nil, err
		}
	}
	if err := l.restoreHetznerLocked(); err != nil {
		l.closeLocked()
		return nil, err
	}
	return l, l.saveLocked()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Endpoints are the addresses a client needs, as written to endpoints.json.
type Endpoints struct {
	DigitalOceanAPI string `json:"digitalocean_api"`
	CloudflareAPI   string `json:"cloudflare_api"`
	// HetznerAPI is the Hetzner Cloud API's base URL, for
	// hcloud.WithEndpoint.
	HetznerAPI string `json:"hetzner_api"`
	DNS        string `json:"dns"`
	Token      string `json:"token"`
	HTTPPort   int    `json:"http_port"`
	HTTPSPort  int    `json:"https_port"`
	SSHPort    int    `json:"ssh_port"`
	// CAFile is the lab's test CA (PEM), written beside endpoints.json:
	// trust it to reach droplets over HTTPS (a plan's verify.ca_file,
	// curl --cacert).
	CAFile string `json:"ca_file,omitempty"`
}

// Endpoints returns the lab's API URLs, DNS address and token, and its CA
// file once WriteEndpoints has written it.
func (l *Lab) Endpoints() Endpoints {
	base := "http://" + l.apiLn.Addr().String()
	l.mu.Lock()
	caFile := l.caFile
	l.mu.Unlock()
	return Endpoints{
		DigitalOceanAPI: base + "/",
		CloudflareAPI:   base + "/client/v4",
		HetznerAPI:      base + hetznerBase,
		DNS:             l.dnsSrv.addr,
		Token:           l.Token(),
		HTTPPort:        l.cfg.HTTPPort,
		HTTPSPort:       l.cfg.HTTPSPort,
		SSHPort:         l.cfg.SSHPort,
		CAFile:          caFile,
	}
}

// WriteEndpoints writes Endpoints as JSON to path (0600: it holds the token),
// and the lab's CA beside it as ca.pem, named by the JSON's ca_file.
func (l *Lab) WriteEndpoints(path string) error {
	caFile, err := filepath.Abs(filepath.Join(filepath.Dir(path), "ca.pem"))
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := writeFileAtomic(caFile, l.CACertPEM(), 0o644); err != nil {
		return err
	}
	l.mu.Lock()
	l.caFile = caFile
	l.mu.Unlock()
	b, _ := json.MarshalIndent(l.Endpoints(), "", "  ")
	return writeFileAtomic(path, append(b, '\n'), 0o600)
}

// CACertPEM returns the certificate (PEM) of the lab's test CA, generated
// when the lab started, which issued every droplet's HTTPS certificate.
func (l *Lab) CACertPEM() []byte { return slices.Clone(l.ca.pem) }

// Token returns the bearer token the lab accepts.
func (l *Lab) Token() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.Token
}

// Durations returns the lab's operation durations.
func (l *Lab) Durations() Durations { return l.cfg.Durations }

// HTTPPort is the port droplets, load balancers and reserved IPs serve on.
func (l *Lab) HTTPPort() int { return l.cfg.HTTPPort }

// HTTPSPort is the port droplets serve HTTPS on.
func (l *Lab) HTTPSPort() int { return l.cfg.HTTPSPort }

// SSHPort is the port droplets serve SSH on.
func (l *Lab) SSHPort() int { return l.cfg.SSHPort }

// Close stops every server of the lab. State in a configured StateDir is kept;
// a temporary one is removed.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeLocked()
	return nil
}

func (l *Lab) closeLocked() {
	if l.closed {
		return
	}
	l.closed = true
	for t := range l.timers {
		t.Stop()
	}
	if l.dnsTimer != nil {
		l.dnsTimer.Stop()
	}
	for _, m := range l.machines {
		m.stop(false)
	}
	for _, b := range l.lbs {
		b.close()
	}
	for _, f := range l.rips {
		f.close()
	}
	for id := range l.hlbs {
		l.stopHLBLocked(id)
	}
	for _, f := range l.hfips {
		f.close()
	}
	if l.apiSrv != nil {
		l.apiSrv.Close()
	}
	if l.edge != nil {
		l.edge.Close()
	}
	if l.dnsSrv != nil {
		l.dnsSrv.close()
	}
	if l.tempDir {
		os.RemoveAll(l.cfg.StateDir)
	}
}

// after runs fn after d with the lab locked, unless the lab closes first.
func (l *Lab) after(d time.Duration, fn func()) {
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.timers, t)
		if l.closed {
			return
		}
		fn()
		if err := l.saveLocked(); err != nil {
			l.cfg.Logf("lab: save state: %v", err)
		}
	})
	l.timers[t] = struct{}{}
}

// Violations returns every spec violation seen in a request the lab accepted
// or a response it sent. A non-empty list is a lab or client bug.
func (l *Lab) Violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.viol...)
}

// Request is one API call in the request log.
type Request struct {
	Time      time.Time `json:"time"`
	API       string    `json:"api"` // "digitalocean" or "cloudflare"
	Operation string    `json:"operation"`
	Method    string    `json:"method"`
	Path      string    `json:"path"`
	Status    int       `json:"status"`
}

// Mutating reports whether the request could have changed anything.
func (r Request) Mutating() bool { return r.Method != http.MethodGet && r.Method != http.MethodHead }

// MaxRequestLog bounds the request log of a long-running lab: past it, the
// older half is dropped (the per-operation counts are kept whole).
const MaxRequestLog = 100_000

// logRequest records a request. Callers hold l.mu.
func (l *Lab) logRequest(r Request) {
	if l.opCounts == nil {
		l.opCounts = map[string]int{}
	}
	l.opCounts[r.Operation]++
	l.reqlog = append(l.reqlog, r)
	if len(l.reqlog) > MaxRequestLog {
		l.reqlog = append([]Request(nil), l.reqlog[len(l.reqlog)-MaxRequestLog/2:]...)
	}
}

// Requests returns the request log, oldest first.
func (l *Lab) Requests() []Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Request(nil), l.reqlog...)
}

// OperationCounts returns how many calls each operation received.
func (l *Lab) OperationCounts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.opCounts)
}

// Inventory is what exists in the lab, for tests and `vmswap lab inventory`.
type Inventory struct {
	Droplets    []InventoryDroplet `json:"droplets"`
	Snapshots   []InventorySnap    `json:"snapshots"`
	LBs         []InventoryLB      `json:"load_balancers"`
	ReservedIPs map[string]int     `json:"reserved_ips"`
	Records     map[string]string  `json:"records"` // "name type" -> data: DO, Cloudflare and Hetzner (values joined by ", ")
	Hetzner     *InventoryHetzner  `json:"hetzner,omitempty"`
}

// InventoryDroplet is a droplet in an Inventory.
type InventoryDroplet struct {
	ID     int      `json:"id"`
	Name   string   `json:"name"`
	Size   string   `json:"size"`
	Status string   `json:"status"`
	IP     string   `json:"ip"`
	IPv6   string   `json:"ipv6,omitempty"`
	Tags   []string `json:"tags"`
}

// InventorySnap is a snapshot in an Inventory.
type InventorySnap struct {
	ID        int    `json:"id"`
	Name      string `json:"name"`
	DropletID int    `json:"droplet_id"`
}

// InventoryLB is a load balancer in an Inventory.
type InventoryLB struct {
	ID       string `json:"id"`
	IP       string `json:"ip"`
	Droplets []int  `json:"droplet_ids"`
}

// Inventory returns what exists now.
func (l *Lab) Inventory() Inventory {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inventoryLocked()
}

func (l *Lab) inventoryLocked() Inventory {
	inv := Inventory{ReservedIPs: map[string]int{}, Records: map[string]string{}}
	for _, d := range sortedDroplets(l.st) {
		dr := InventoryDroplet{ID: d.ID, Name: d.Name, Size: d.Size, Status: d.Status, IP: d.IP, Tags: append([]string{}, d.Tags...)}
		if d.IPv6 {
			dr.IPv6 = labIPv6(d.ID)
		}
		inv.Droplets = append(inv.Droplets, dr)
	}
	ids := make([]int, 0, len(l.st.Snapshots))
	for id := range l.st.Snapshots {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		s := l.st.Snapshots[id]
		inv.Snapshots = append(inv.Snapshots, InventorySnap{ID: s.ID, Name: s.Name, DropletID: s.DropletID})
	}
	for _, lb := range l.st.LBs {
		inv.LBs = append(inv.LBs, InventoryLB{ID: lb.ID, IP: lb.IP, Droplets: append([]int{}, lb.DropletIDs...)})
	}
	for _, r := range l.st.ReservedIPs {
		inv.ReservedIPs[r.IP] = r.DropletID
	}
	for _, d := range l.st.Domains {
		for _, r := range d.Records {
			inv.Records[fqdn(r.Name, d.Name)+" "+r.Type] = r.Data
		}
	}
	for _, z := range l.st.Zones {
		for _, r := range z.Records {
			inv.Records[r.Name+" "+r.Type] = r.Content
		}
	}
	l.hetznerInventory(&inv)
	return inv
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func randomInt(n int64) int64 {
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		panic(err)
	}
	return v.Int64()
}

// writeFileAtomic writes data to a temporary file, syncs it and renames it
// over path, so a crash leaves either the old or the new content.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// FetchInventory reads a running lab's inventory over its control API.
func FetchInventory(ctx context.Context, ep Endpoints) (*Inventory, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.DigitalOceanAPI+"lab/inventory", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+ep.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("lab: inventory: HTTP %d", resp.StatusCode)
	}
	var inv Inventory
	return &inv, json.NewDecoder(resp.Body).Decode(&inv)
}

// ActionCounts returns how many actions of each type were started (snapshot,
// shutdown, assign, ...), as the cloud saw them.
func (l *Lab) ActionCounts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for _, a := range l.st.Actions {
		out[a.Type]++
	}
	return out
}
