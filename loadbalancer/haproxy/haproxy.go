// Package haproxy is vmswap's load-balancer driver for HAProxy, over its
// runtime API (the admin socket, unix or TCP). A pool is a backend. A new
// server is added as a dynamic server with health checks; the old one is set
// to drain, its sessions waited out, set to maintenance and deleted.
//
// https://docs.haproxy.org/2.6/management.html#9.3
package haproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vmswap/vmswap/loadbalancer"
	"github.com/vmswap/vmswap/provider"
)

// Config holds every setting of the driver.
type Config struct {
	// Socket is the runtime API: "unix:///run/haproxy/admin.sock" or
	// "tcp://127.0.0.1:9999" (a bare path is a unix socket).
	Socket string
	// Port is the port new servers are added with. Zero: the port of the
	// backend's first server.
	Port int
	// CheckInterval is the health-check interval of servers vmswap adds.
	// Zero: HAProxy's default (2s). The runtime API does not show the
	// backend's own interval.
	CheckInterval time.Duration
	// DrainTimeout bounds the wait for the old server's sessions to end.
	// Zero: 30s.
	DrainTimeout time.Duration
	// PollInterval of the waits. Zero: 500ms.
	PollInterval time.Duration
	// Progress receives what is being waited on. May be nil.
	Progress provider.Progress
}

// Provider implements loadbalancer.Provider and loadbalancer.HealthReporter.
type Provider struct{ cfg Config }

var (
	_ loadbalancer.Provider       = (*Provider)(nil)
	_ loadbalancer.HealthReporter = (*Provider)(nil)
)

// New returns a Provider for cfg.
func New(cfg Config) (*Provider, error) {
	if cfg.Socket == "" {
		return nil, fmt.Errorf("haproxy: no runtime API socket: set endpoint to unix:///path/admin.sock or tcp://host:port")
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 500 * time.Millisecond
	}
	if cfg.Progress == nil {
		cfg.Progress = func(string, ...any) {}
	}
	return &Provider{cfg: cfg}, nil
}

// cmd sends one runtime API command and returns its answer. The API closes
// the connection after answering a command sent without "prompt".
func (p *Provider) cmd(ctx context.Context, command string) (string, error) {
	network, addr := "unix", p.cfg.Socket
	switch {
	case strings.HasPrefix(addr, "unix://"):
		addr = strings.TrimPrefix(addr, "unix://")
	case strings.HasPrefix(addr, "tcp://"):
		network, addr = "tcp", strings.TrimPrefix(addr, "tcp://")
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return "", fmt.Errorf("haproxy: runtime API %s: %w", p.cfg.Socket, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return "", fmt.Errorf("haproxy: %s: %w", command, err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("haproxy: %s: %w", command, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// server is one line of `show servers state`.
type server struct {
	name      string
	addr      string
	port      int
	opState   int // 0 stopped, 1 starting, 2 running, 3 stopping
	adminMask int // bit 0x01 forced maintenance, 0x08 drain ...
}

// servers reads a backend's servers.
func (p *Provider) servers(ctx context.Context, backend string) ([]server, error) {
	out, err := p.cmd(ctx, "show servers state "+backend)
	if err != nil {
		return nil, err
	}
	if strings.Contains(out, "Can't find backend") || strings.HasPrefix(out, "Unknown") {
		return nil, fmt.Errorf("haproxy: backend %q: %w (%s)", backend, provider.ErrNotFound, out)
	}
	var list []server
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port is field 18
		if len(f) < 19 || strings.HasPrefix(f[0], "#") || f[1] != backend {
			continue
		}
		op, _ := strconv.Atoi(f[5])
		adm, _ := strconv.Atoi(f[6])
		port, _ := strconv.Atoi(f[18])
		list = append(list, server{name: f[3], addr: f[4], port: port, opState: op, adminMask: adm})
	}
	return list, nil
}

// findAll returns the backend's server lines on addr (a server may be
// declared more than once, on several ports or for weights), and all lines.
func (p *Provider) findAll(ctx context.Context, backend, addr string) ([]server, []server, error) {
	list, err := p.servers(ctx, backend)
	if err != nil {
		return nil, nil, err
	}
	var mine []server
	for _, s := range list {
		if s.addr == addr {
			mine = append(mine, s)
		}
	}
	return mine, list, nil
}

// Pool implements loadbalancer.MemberLister. Members in maintenance are not
// counted: the backend sends them nothing.
func (p *Provider) Pool(ctx context.Context, backend string) (*loadbalancer.Pool, error) {
	list, err := p.servers(ctx, backend)
	if err != nil {
		return nil, err
	}
	pool := &loadbalancer.Pool{ID: backend, Members: []loadbalancer.Member{}}
	for _, s := range list {
		// Not in forced or configured maintenance; one member per address,
		// however many lines declare it, with the lines' names.
		if s.adminMask&0x01 != 0 || s.adminMask&0x20 != 0 {
			continue
		}
		if i := slices.IndexFunc(pool.Members, func(m loadbalancer.Member) bool { return m.Address == s.addr }); i >= 0 {
			pool.Members[i].Lines = append(pool.Members[i].Lines, s.name)
			continue
		}
		pool.Members = append(pool.Members, loadbalancer.Member{Address: s.addr, Lines: []string{s.name}})
	}
	return pool, nil
}

func serverName(addr string) string {
	return "vmswap-" + strings.NewReplacer(".", "_", ":", "_").Replace(addr)
}

func check(out, command string) error {
	if out == "" || strings.Contains(out, "New server registered") || strings.HasPrefix(out, "Server deleted") {
		return nil
	}
	return fmt.Errorf("haproxy: %s: %s", command, out)
}

// AddMember implements loadbalancer.MemberAdder: a dynamic server with the
// backend's health checks, then enabled.
func (p *Provider) AddMember(ctx context.Context, backend string, m loadbalancer.Member) error {
	if m.Address == "" {
		return fmt.Errorf("haproxy: member has no address")
	}
	mine, list, err := p.findAll(ctx, backend, m.Address)
	if err != nil {
		return err
	}
	name := serverName(m.Address)
	if len(mine) > 0 {
		name = mine[0].name
	} else {
		port := p.cfg.Port
		if port == 0 && len(list) > 0 {
			port = list[0].port
		}
		if port == 0 {
			return fmt.Errorf("haproxy: backend %s has no server to copy the port from: set port", backend)
		}
		command := fmt.Sprintf("add server %s/%s %s:%d check%s", backend, name, m.Address, port, p.checkSettings(ctx, backend, list))
		out, err := p.cmd(ctx, command)
		if err != nil {
			return err
		}
		if err := check(out, command); err != nil && !strings.Contains(out, "already exists") {
			return err
		}
	}
	for _, c := range []string{"enable health " + backend + "/" + name, "enable server " + backend + "/" + name} {
		out, err := p.cmd(ctx, c)
		if err != nil {
			return err
		}
		if err := check(out, c); err != nil {
			return err
		}
	}
	return nil
}

// checkSettings returns the health-check settings a dynamic server needs to
// be checked as the backend's servers are: a dynamic server inherits no
// default-server line, so rise and fall are copied from the backend's first
// server (show stat), and the interval is Config.CheckInterval.
func (p *Provider) checkSettings(ctx context.Context, backend string, list []server) string {
	out := ""
	if p.cfg.CheckInterval > 0 {
		out += fmt.Sprintf(" inter %dms", p.cfg.CheckInterval.Milliseconds())
	}
	if len(list) == 0 {
		return out
	}
	stats, err := p.stat(ctx)
	if err != nil {
		return out
	}
	row := stats[backend+"/"+list[0].name]
	for _, k := range []string{"rise", "fall"} {
		if v, err := strconv.Atoi(row["check_"+k]); err == nil && v > 0 {
			out += fmt.Sprintf(" %s %d", k, v)
		}
	}
	return out
}

// MemberHealthy implements loadbalancer.HealthReporter: HAProxy's own
// health check of the server completed and passed (check_status L4OK, L6OK
// or L7OK in `show stat`), and the server is UP, not in maintenance or
// drain. `enable server` alone marks a server UP before any check ran:
// that proves nothing, so the state is not enough. With several lines on
// the address, every one must pass.
func (p *Provider) MemberHealthy(ctx context.Context, backend string, m loadbalancer.Member) (bool, error) {
	mine, _, err := p.findAll(ctx, backend, m.Address)
	if err != nil || len(mine) == 0 {
		return false, err
	}
	stats, err := p.stat(ctx)
	if err != nil {
		return false, err
	}
	for _, s := range mine {
		st := stats[backend+"/"+s.name]
		if s.opState != 2 || s.adminMask != 0 || st["status"] != "UP" {
			return false, nil
		}
		if c := st["check_status"]; !(c == "L4OK" || c == "L6OK" || c == "L7OK") {
			return false, nil
		}
	}
	return true, nil
}

// stat reads `show stat` as backend/server -> column -> value.
func (p *Provider) stat(ctx context.Context) (map[string]map[string]string, error) {
	out, err := p.cmd(ctx, "show stat")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(out, "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "# ") {
		return nil, fmt.Errorf("haproxy: show stat: unexpected answer %q", shorten(out))
	}
	header := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	rows := map[string]map[string]string{}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) < 2 {
			continue
		}
		row := map[string]string{}
		for i, h := range header {
			if i < len(f) {
				row[h] = f[i]
			}
		}
		rows[f[0]+"/"+f[1]] = row
	}
	return rows, nil
}

func shorten(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// sessions returns the current sessions (scur in `show stat`) of servers.
func (p *Provider) sessions(ctx context.Context, backend string, names []string) (int, error) {
	stats, err := p.stat(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, n := range names {
		if v := stats[backend+"/"+n]["scur"]; v != "" {
			c, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("haproxy: scur of %s/%s: %q", backend, n, v)
			}
			total += c
		}
	}
	return total, nil
}

// RemoveMember implements loadbalancer.MemberRemover: every server line on
// the member's address is set to drain, their sessions are waited out (or
// DrainTimeout), then each is put in maintenance and deleted. A member
// already gone is not an error.
func (p *Provider) RemoveMember(ctx context.Context, backend string, m loadbalancer.Member) error {
	mine, _, err := p.findAll(ctx, backend, m.Address)
	if err != nil || len(mine) == 0 {
		return err
	}
	var names []string
	for _, s := range mine {
		id := backend + "/" + s.name
		if out, err := p.cmd(ctx, "set server "+id+" state drain"); err != nil || check(out, "drain") != nil {
			return fmt.Errorf("haproxy: drain %s: %v %s", id, err, out)
		}
		names = append(names, s.name)
	}
	what := backend + "/" + strings.Join(names, ",")
	deadline := time.Now().Add(p.cfg.DrainTimeout)
	for {
		n, err := p.sessions(ctx, backend, names)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			p.cfg.Progress("haproxy: %s still has %d sessions after %s; putting it in maintenance", what, n, p.cfg.DrainTimeout)
			break
		}
		p.cfg.Progress("haproxy: draining %s: %d sessions", what, n)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.cfg.PollInterval):
		}
	}
	for _, name := range names {
		id := backend + "/" + name
		for _, c := range []string{"set server " + id + " state maint", "shutdown sessions server " + id} {
			if out, err := p.cmd(ctx, c); err != nil || check(out, c) != nil {
				return fmt.Errorf("haproxy: %s: %v %s", c, err, out)
			}
		}
		out, err := p.cmd(ctx, "del server "+id)
		if err != nil {
			return err
		}
		if check(out, "del server") != nil {
			// A server the configuration file declares cannot always be
			// deleted at run time; in maintenance it gets no traffic.
			p.cfg.Progress("haproxy: %s stays in maintenance (%s); remove it from the configuration file", id, out)
		}
	}
	return nil
}
