package lab

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"
)

// balancer is the running part of a load balancer (a DigitalOcean load
// balancer, or one service of a Hetzner one): a reverse proxy (or, for a
// Hetzner tcp service, a TCP forwarder) that forwards only to members its
// health checks found healthy. A removed member gets no new requests;
// requests in flight complete.
type balancer struct {
	lab  *Lab
	id   string
	srv  *http.Server // http
	ln   net.Listener // tcp
	stop chan struct{}
	done chan struct{}
	// config returns the health check as it is now, false once the load
	// balancer is gone. It is called with the lab unlocked.
	config func() (healthCheck, bool)

	mu      sync.Mutex
	members map[int]*member // by server ID
	order   []int
	next    int
}

// healthCheck is how a balancer probes its members.
type healthCheck struct {
	tcp      bool     // connect only; else an HTTP GET of path
	path     string   // HTTP
	host     string   // HTTP Host header; "": the member's address
	codes    []string // HTTP status patterns ("2??"); none: below 400
	up, down int      // consecutive passes to become healthy, failures to become unhealthy
}

type member struct {
	addr       string // where traffic goes, ip:port
	checkAddr  string // where health checks go, ip:port
	healthy    bool
	known      bool // a verdict was reached (Hetzner reports "unknown" until then)
	ok, failed int
	ignored    bool // fault: never becomes healthy
}

// memberSpec is a member a balancer should have.
type memberSpec struct {
	id              int
	addr, checkAddr string
	running         bool
}

func (l *Lab) startBalancerLocked(lb *lbState) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(lb.IP, strconv.Itoa(l.cfg.HTTPPort)))
	if err != nil {
		return fmt.Errorf("lab: load balancer %s: %w", lb.ID, err)
	}
	b := l.newBalancer(lb.ID, func() (healthCheck, bool) {
		l.mu.Lock()
		defer l.mu.Unlock()
		lb := l.st.LBs[lb.ID]
		if lb == nil {
			return healthCheck{}, false
		}
		return healthCheck{path: lb.HealthPath, up: lb.Healthy, down: lb.Unhealthy}, true
	})
	l.lbs[lb.ID] = b
	b.syncMembersLocked(lb, true)
	b.serveHTTP(ln, "503 Service Unavailable: no healthy droplets")
	return nil
}

func (l *Lab) newBalancer(id string, config func() (healthCheck, bool)) *balancer {
	return &balancer{lab: l, id: id, stop: make(chan struct{}), done: make(chan struct{}), members: map[int]*member{}, config: config}
}

// serveHTTP proxies HTTP on ln to the healthy members and starts the
// health checks.
func (b *balancer) serveHTTP(ln net.Listener, unavailable string) {
	proxy := newProxy("502 Bad Gateway")
	b.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			addr := b.pick()
			if addr == "" {
				http.Error(w, unavailable, http.StatusServiceUnavailable)
				return
			}
			proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), memberKey{}, addr)))
		}),
	}
	go b.srv.Serve(ln)
	go b.healthLoop()
}

// serveTCP forwards each connection on ln to a healthy member and starts
// the health checks.
func (b *balancer) serveTCP(ln net.Listener) {
	b.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if addr := b.pick(); addr != "" {
					pipe(c, addr)
				}
			}()
		}
	}()
	go b.healthLoop()
}

// pipe copies between c and a new connection to addr until both sides
// are done.
func pipe(c net.Conn, addr string) {
	up, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// memberKey carries the chosen backend (host:port) in a request's context.
type memberKey struct{}

// newProxy is the reverse proxy of the lab's load balancers and Cloudflare
// edge: it forwards to the backend in the request's context (memberKey),
// keeping the Host, with keep-alive connections to backends.
func newProxy(badGateway string) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 30 * time.Second},
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = pr.In.Context().Value(memberKey{}).(string)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, badGateway, http.StatusBadGateway)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
}

// pick chooses the next healthy member, round robin.
func (b *balancer) pick() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	for range b.order {
		id := b.order[b.next%len(b.order)]
		b.next++
		if m := b.members[id]; m != nil && m.healthy {
			return m.addr
		}
	}
	return ""
}

// syncMembersLocked makes the member set match the LB's droplet IDs. Members
// present at start are taken as healthy (the LB was serving before); new ones
// start unhealthy until health checks pass, as on DigitalOcean.
func (b *balancer) syncMembersLocked(lb *lbState, initial bool) {
	var want []memberSpec
	for _, id := range lb.DropletIDs {
		d := b.lab.st.Droplets[id]
		if d == nil {
			continue
		}
		addr := net.JoinHostPort(d.IP, strconv.Itoa(b.lab.cfg.HTTPPort))
		want = append(want, memberSpec{id: id, addr: addr, checkAddr: addr, running: d.Status == "active"})
	}
	b.setMembers(want, initial, lb.IgnoreAfter && !initial)
}

// setMembers makes the member set match want, in its order. A new member
// is healthy at once only if initial (the balancer is being restored); a
// member whose address changed keeps its health state.
func (b *balancer) setMembers(want []memberSpec, initial, ignoreNew bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	keep := map[int]bool{}
	b.order = b.order[:0]
	for _, w := range want {
		keep[w.id] = true
		b.order = append(b.order, w.id)
		if m, ok := b.members[w.id]; ok {
			m.addr, m.checkAddr = w.addr, w.checkAddr
			continue
		}
		up := initial && w.running
		b.members[w.id] = &member{addr: w.addr, checkAddr: w.checkAddr, healthy: up, known: up, ignored: ignoreNew}
	}
	for id := range b.members {
		if !keep[id] {
			delete(b.members, id)
		}
	}
}

func (b *balancer) healthLoop() {
	defer close(b.done)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	t := time.NewTicker(b.lab.cfg.Durations.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		hc, ok := b.config()
		if !ok {
			return
		}
		b.mu.Lock()
		targets := map[int]string{}
		for id, m := range b.members {
			targets[id] = m.checkAddr
		}
		b.mu.Unlock()
		for id, addr := range targets {
			ok := hc.probe(client, addr)
			b.mu.Lock()
			if m := b.members[id]; m != nil {
				if ok {
					m.ok, m.failed = m.ok+1, 0
					if m.ok >= hc.up && !m.ignored {
						m.healthy, m.known = true, true
					}
				} else {
					m.ok, m.failed = 0, m.failed+1
					if m.failed >= hc.down {
						m.healthy, m.known = false, true
					}
				}
			}
			b.mu.Unlock()
		}
	}
}

// probe runs one health check against addr.
func (hc healthCheck) probe(client *http.Client, addr string) bool {
	if hc.tcp {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+hc.path, nil)
	if err != nil {
		return false
	}
	if hc.host != "" {
		req.Host = hc.host
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if len(hc.codes) == 0 {
		return resp.StatusCode < 400
	}
	code := strconv.Itoa(resp.StatusCode)
	for _, p := range hc.codes {
		if statusMatches(p, code) {
			return true
		}
	}
	return false
}

// statusMatches matches an HTTP status against a Hetzner pattern: digits
// and '?' wildcards ("2??").
func statusMatches(pattern, code string) bool {
	if len(pattern) != len(code) {
		return false
	}
	for i := range pattern {
		if pattern[i] != '?' && pattern[i] != code[i] {
			return false
		}
	}
	return true
}

// Healthy reports the droplet IDs the load balancer currently routes to.
func (l *Lab) Healthy(lbID string) []int {
	l.mu.Lock()
	b := l.lbs[lbID]
	l.mu.Unlock()
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int
	for _, id := range b.order {
		if b.members[id].healthy {
			out = append(out, id)
		}
	}
	return out
}

func (b *balancer) close() {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	if b.srv != nil {
		b.srv.Close()
	}
	if b.ln != nil {
		b.ln.Close()
	}
}

// forwarder is the running part of a reserved IP or a Hetzner floating IP:
// it forwards each TCP connection on the IP's HTTP port to the server it is
// assigned to. Connections already open stay with the server they reached,
// as on a real reassignment.
type forwarder struct {
	ip string
	ln net.Listener
	// target returns the address to forward to now, "" for none. It is
	// called with the lab unlocked.
	target func() string
}

func (l *Lab) startForwarderLocked(r *reservedIP) error {
	f, err := l.newForwarder(r.IP, func() string {
		l.mu.Lock()
		defer l.mu.Unlock()
		r := l.st.ReservedIPs[r.IP]
		if r == nil || r.DropletID == 0 {
			return ""
		}
		return l.httpAddr(l.st.Droplets[r.DropletID])
	})
	if err != nil {
		return fmt.Errorf("lab: reserved IP %s: %w", r.IP, err)
	}
	l.rips[r.IP] = f
	return nil
}

// httpAddr is where a server serves HTTP, "" for no server.
func (l *Lab) httpAddr(d *droplet) string {
	if d == nil || d.IP == "" {
		return ""
	}
	return net.JoinHostPort(d.IP, strconv.Itoa(l.cfg.HTTPPort))
}

func (l *Lab) newForwarder(ip string, target func() string) (*forwarder, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(l.cfg.HTTPPort)))
	if err != nil {
		return nil, err
	}
	f := &forwarder{ip: ip, ln: ln, target: target}
	go f.serve()
	return f, nil
}

func (f *forwarder) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if addr := f.target(); addr != "" {
				pipe(c, addr)
			}
		}()
	}
}

func (f *forwarder) close() { f.ln.Close() }
