package probe

import (
	"encoding/json"
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
