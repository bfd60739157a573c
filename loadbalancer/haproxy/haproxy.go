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

func (p *Provider) find(ctx context.Context, backend, addr string) (*server, []server, error) {
	list, err := p.servers(ctx, backend)
	if err != nil {
		return nil, nil, err
	}
	for i := range list {
		if list[i].addr == addr {
			return &list[i], list, nil
		}
	}
	return nil, list, nil
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
		if s.adminMask&0x01 == 0 && s.adminMask&0x20 == 0 { // not forced or config maintenance
			pool.Members = append(pool.Members, loadbalancer.Member{Address: s.addr})
		}
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
	cur, list, err := p.find(ctx, backend, m.Address)
	if err != nil {
		return err
	}
	name := serverName(m.Address)
	if cur != nil {
		name = cur.name
	} else {
		port := p.cfg.Port
		if port == 0 && len(list) > 0 {
			port = list[0].port
		}
		if port == 0 {
			return fmt.Errorf("haproxy: backend %s has no server to copy the port from: set port", backend)
		}
		command := fmt.Sprintf("add server %s/%s %s:%d check", backend, name, m.Address, port)
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

// MemberHealthy implements loadbalancer.HealthReporter: the server's
// health checks pass and it is not in maintenance or drain.
func (p *Provider) MemberHealthy(ctx context.Context, backend string, m loadbalancer.Member) (bool, error) {
	s, _, err := p.find(ctx, backend, m.Address)
	if err != nil || s == nil {
		return false, err
	}
	return s.opState == 2 && s.adminMask == 0, nil
}

// sessions returns the server's current sessions (scur in `show stat`).
func (p *Provider) sessions(ctx context.Context, backend, name string) (int, error) {
	out, err := p.cmd(ctx, "show stat")
	if err != nil {
		return 0, err
	}
	lines := strings.Split(out, "\n")
	if len(lines) == 0 {
		return 0, fmt.Errorf("haproxy: empty show stat")
	}
	header := strings.Split(strings.TrimPrefix(lines[0], "# "), ",")
	col := -1
	for i, h := range header {
		if h == "scur" {
			col = i
		}
	}
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if len(f) > col && col >= 0 && f[0] == backend && f[1] == name {
			return strconv.Atoi(f[col])
		}
	}
	return 0, nil
}

// RemoveMember implements loadbalancer.MemberRemover: drain, wait for the
// sessions to end (or DrainTimeout), maintenance, delete. A member already
// gone is not an error.
func (p *Provider) RemoveMember(ctx context.Context, backend string, m loadbalancer.Member) error {
	s, _, err := p.find(ctx, backend, m.Address)
	if err != nil || s == nil {
		return err
	}
	id := backend + "/" + s.name
	if out, err := p.cmd(ctx, "set server "+id+" state drain"); err != nil || check(out, "drain") != nil {
		return fmt.Errorf("haproxy: drain %s: %v %s", id, err, out)
	}
	deadline := time.Now().Add(p.cfg.DrainTimeout)
	for {
		n, err := p.sessions(ctx, backend, s.name)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			p.cfg.Progress("haproxy: %s still has %d sessions after %s; putting it in maintenance", id, n, p.cfg.DrainTimeout)
			break
		}
		p.cfg.Progress("haproxy: draining %s: %d sessions", id, n)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(p.cfg.PollInterval):
		}
	}
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
	return nil
}
