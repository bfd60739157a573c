package authority

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// server is a real authoritative DNS server on loopback (miekg/dns) whose
// answer for www.example.test A can be changed.
type server struct {
	mu  sync.Mutex
	ips []string
}

func (s *server) set(ips ...string) {
	s.mu.Lock()
	s.ips = ips
	s.mu.Unlock()
}

func (s *server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	s.mu.Lock()
	for _, ip := range s.ips {
		if r.Question[0].Name == "www.example.test." && r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR("www.example.test. 60 IN A " + ip)
			m.Answer = append(m.Answer, rr)
		}
	}
	s.mu.Unlock()
	w.WriteMsg(m)
}

func start(t *testing.T) (*server, string) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{}
	srv := &dns.Server{PacketConn: pc, Handler: s}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return s, pc.LocalAddr().String()
}

func TestLookupAndWaitServed(t *testing.T) {
	s, addr := start(t)
	s.set("127.0.0.3", "127.0.0.2")
	ctx := context.Background()
	got, ttl, err := Lookup(ctx, addr, "www.example.test", "A")
	if err != nil || strings.Join(got, ",") != "127.0.0.2,127.0.0.3" || ttl != 60 {
		t.Fatalf("lookup: %v ttl %d %v", got, ttl, err)
	}
	// The change is served a moment later; WaitServed sees it, reporting
	// what it answers meanwhile.
	time.AfterFunc(200*time.Millisecond, func() { s.set("127.0.0.9") })
	var seen []string
	err = WaitServed(ctx, addr, "www.example.test", "A", []string{"127.0.0.9"}, 20*time.Millisecond, func(f string, a ...any) {
		seen = append(seen, f)
	})
	if err != nil || len(seen) == 0 {
		t.Fatalf("wait: %v, %d progress lines", err, len(seen))
	}
	// A change that never comes ends with the context, saying what is served.
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	err = WaitServed(cctx, addr, "www.example.test", "A", []string{"127.0.0.10"}, 20*time.Millisecond, nil)
	if err == nil || !strings.Contains(err.Error(), "127.0.0.9") {
		t.Fatalf("wait for a change that never comes: %v", err)
	}
}
