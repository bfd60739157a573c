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

// balancer is the running part of a load balancer: a reverse proxy that
// forwards only to members its health checks found healthy, as DigitalOcean's
// does. A removed member gets no new requests; requests in flight complete.
type balancer struct {
	lab  *Lab
	id   string
	srv  *http.Server
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	members map[int]*member // by droplet ID
	order   []int
	next    int
}

type member struct {
	addr       string // ip:port
	healthy    bool
	ok, failed int
	ignored    bool // fault: never becomes healthy
}

func (l *Lab) startBalancerLocked(lb *lbState) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(lb.IP, strconv.Itoa(l.cfg.HTTPPort)))
	if err != nil {
		return fmt.Errorf("lab: load balancer %s: %w", lb.ID, err)
	}
	b := &balancer{lab: l, id: lb.ID, stop: make(chan struct{}), done: make(chan struct{}), members: map[int]*member{}}
	proxy := newProxy("502 Bad Gateway")
	b.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			addr := b.pick()
			if addr == "" {
				http.Error(w, "503 Service Unavailable: no healthy droplets", http.StatusServiceUnavailable)
				return
			}
			proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), memberKey{}, addr)))
		}),
	}
	l.lbs[lb.ID] = b
	b.syncMembersLocked(lb, true)
	go b.srv.Serve(ln)
	go b.healthLoop()
	return nil
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
	b.mu.Lock()
	defer b.mu.Unlock()
	want := map[int]bool{}
	b.order = b.order[:0]
	for _, id := range lb.DropletIDs {
		d := b.lab.st.Droplets[id]
		if d == nil {
			continue
		}
		want[id] = true
		b.order = append(b.order, id)
		if _, ok := b.members[id]; !ok {
			b.members[id] = &member{
				addr:    net.JoinHostPort(d.IP, strconv.Itoa(b.lab.cfg.HTTPPort)),
				healthy: initial && d.Status == "active",
				ignored: lb.IgnoreAfter && !initial,
			}
		}
	}
	for id := range b.members {
		if !want[id] {
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
		b.lab.mu.Lock()
		lb := b.lab.st.LBs[b.id]
		if lb == nil {
			b.lab.mu.Unlock()
			return
		}
		path, up, down := lb.HealthPath, lb.Healthy, lb.Unhealthy
		b.lab.mu.Unlock()
		b.mu.Lock()
		targets := map[int]string{}
		for id, m := range b.members {
			targets[id] = m.addr
		}
		b.mu.Unlock()
		for id, addr := range targets {
			ok := false
			if resp, err := client.Get("http://" + addr + path); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ok = resp.StatusCode < 400
			}
			b.mu.Lock()
			if m := b.members[id]; m != nil {
				if ok {
					m.ok, m.failed = m.ok+1, 0
					if m.ok >= up && !m.ignored {
						m.healthy = true
					}
				} else {
					m.ok, m.failed = 0, m.failed+1
					if m.failed >= down {
						m.healthy = false
					}
				}
			}
			b.mu.Unlock()
		}
	}
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
	b.srv.Close()
}

// forwarder is the running part of a reserved IP: it forwards each TCP
// connection on the IP's HTTP port to the droplet it is assigned to.
// Connections already open stay with the droplet they reached, as on a real
// reassignment.
type forwarder struct {
	lab *Lab
	ip  string
	ln  net.Listener
}

func (l *Lab) startForwarderLocked(r *reservedIP) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(r.IP, strconv.Itoa(l.cfg.HTTPPort)))
	if err != nil {
		return fmt.Errorf("lab: reserved IP %s: %w", r.IP, err)
	}
	f := &forwarder{lab: l, ip: r.IP, ln: ln}
	l.rips[r.IP] = f
	go f.serve()
	return nil
}

func (f *forwarder) target() string {
	f.lab.mu.Lock()
	defer f.lab.mu.Unlock()
	r := f.lab.st.ReservedIPs[f.ip]
	if r == nil || r.DropletID == 0 {
		return ""
	}
	d := f.lab.st.Droplets[r.DropletID]
	if d == nil {
		return ""
	}
	return net.JoinHostPort(d.IP, strconv.Itoa(f.lab.cfg.HTTPPort))
}

func (f *forwarder) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			addr := f.target()
			if addr == "" {
				return
			}
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
		}()
	}
}

func (f *forwarder) close() { f.ln.Close() }
