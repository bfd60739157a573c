package probe

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestProbeCountsFailuresPerWindow runs the probe against a real HTTP
// server that fails for a while: failures are counted, in the window they
// happened in, and the rate is the one asked for.
func TestProbeCountsFailuresPerWindow(t *testing.T) {
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	p, err := Start(Config{URL: srv.URL + "/", Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	p.Mark("cutover")
	failing.Store(true)
	time.Sleep(500 * time.Millisecond)
	failing.Store(false)
	p.Mark("observe")
	time.Sleep(time.Second)
	s := p.Stop()
	t.Logf("%d requests, %d failed, %.0f req/s", s.Requests, s.Failed, s.Rate)
	if s.Failed < 20 || s.Failed > 80 || s.Requests < 200 || s.Rate < 80 || s.Rate > 120 {
		t.Fatalf("summary: %+v", s)
	}
	byName := map[string]Window{}
	for _, w := range s.Windows {
		byName[w.Name] = w
	}
	// A request in flight at a mark is counted in the window it started
	// in: at most a couple cross each boundary at 100 req/s.
	if byName["baseline"].Failed > 2 || byName["observe"].Failed > 2 || byName["cutover"].Failed < 20 {
		t.Fatalf("windows: %+v", s.Windows)
	}
	if p.Failed() != int64(s.Failed) || p.Requests() != int64(s.Requests) {
		t.Fatalf("live counts %d/%d, summary %d/%d", p.Failed(), p.Requests(), s.Failed, s.Requests)
	}
}

func TestProbeRefusesBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x/", "http://"} {
		if _, err := Start(Config{URL: u}); err == nil {
			t.Fatalf("%q accepted", u)
		}
	}
}

func TestBucketJSONInMilliseconds(t *testing.T) {
	b := Bucket{Offset: 1500 * time.Millisecond, Requests: 3, P50: 2 * time.Millisecond}
	out, err := json.Marshal(b)
	if err != nil || !strings.Contains(string(out), `"offset_ms":1500`) {
		t.Fatalf("%s %v", out, err)
	}
	var back Bucket
	if err := json.Unmarshal(out, &back); err != nil || back != b {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

// TestProbeFollowsAMovedAddress moves the probe's address from one server
// to another, as a reserved IP or a DNS answer moves: new connections
// reach the new server, old ones stay where they were. Within a couple of
// rotations every request must reach the new server, so that a dead new
// server fails the probe instead of hiding behind a kept-alive connection.
func TestProbeFollowsAMovedAddress(t *testing.T) {
	var hitsA, hitsB atomic.Int64
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hitsA.Add(1); w.Write([]byte("a")) }))
	defer a.Close()
	var bDown atomic.Bool
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hitsB.Add(1)
		if bDown.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		w.Write([]byte("b"))
	}))
	defer b.Close()
	// The "address": a forwarder sending each new connection to the
	// server it points at when the connection is made.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var target atomic.Value
	target.Store(a.Listener.Addr().String())
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target.Load().(string))
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	p, err := Start(Config{URL: "http://shop.test/", ConnectTo: ln.Addr().String(), Rate: 100})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	target.Store(b.Listener.Addr().String())
	time.Sleep(2*Rotate + 500*time.Millisecond)
	beforeA := hitsA.Load()
	bDown.Store(true) // the new server dies under the observe window
	p.Mark("observe")
	time.Sleep(time.Second)
	s := p.Stop()
	if hitsA.Load() > beforeA+2 {
		t.Fatalf("the old server still got %d requests after the address moved %s earlier", hitsA.Load()-beforeA, 2*Rotate)
	}
	var obs Window
	for _, w := range s.Windows {
		if w.Name == "observe" {
			obs = w
		}
	}
	if obs.Requests < 50 || obs.Failed < obs.Requests-2 {
		t.Fatalf("the dead new server went unseen: observe window %+v (old server hits %d, new %d)", obs, hitsA.Load(), hitsB.Load())
	}
}
