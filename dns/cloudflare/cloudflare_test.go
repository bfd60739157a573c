package cloudflare_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmswap/vmswap/dns"
	"github.com/vmswap/vmswap/dns/cloudflare"
	"github.com/vmswap/vmswap/dns/dnstest"
	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
)

// record creates a record through the lab's Cloudflare API.
func record(t *testing.T, l *lab.Lab, zoneID string, body map[string]any) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", l.Endpoints().CloudflareAPI+"/zones/"+zoneID+"/dns_records", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+l.Token())
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("create record: %v %v", resp, err)
	}
	resp.Body.Close()
}

func provider(t *testing.T, l *lab.Lab, token string) *cloudflare.Provider {
	p, err := cloudflare.New(cloudflare.Config{Token: token, BaseURL: l.Endpoints().CloudflareAPI, Nameserver: l.Endpoints().DNS, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConformance(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	zid, err := l.AddZone("example.test")
	if err != nil {
		t.Fatal(err)
	}
	record(t, l, zid, map[string]any{"type": "A", "name": "www.example.test", "content": "127.0.0.10", "ttl": 120, "proxied": false})
	dnstest.Run(t, provider(t, l, l.Token()), "www.example.test", []string{"127.0.0.10"}, 120)
}

// TestPatchKeepsSettings: changing a proxied record's content keeps
// proxied, TTL, comment and tags, and it is served as soon as the API shows it.
func TestPatchKeepsSettings(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	zid, _ := l.AddZone("example.test")
	record(t, l, zid, map[string]any{"type": "A", "name": "app.example.test", "content": "127.0.0.10", "ttl": 1, "proxied": true, "comment": "prod", "tags": []string{"team:web"}})
	p := provider(t, l, l.Token())
	ctx := context.Background()
	rec := dns.Record{Name: "app.example.test", Type: "A", Values: []string{"127.0.0.11"}}
	got, err := p.SetRecord(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Proxied || got.TTL != 300 {
		t.Fatalf("after set: %+v", got)
	}
	if err := p.WaitServed(ctx, rec); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", l.Endpoints().CloudflareAPI+"/zones/"+zid+"/dns_records?name=app.example.test", nil)
	req.Header.Set("Authorization", "Bearer "+l.Token())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Result []struct {
			Content, Comment string
			Tags             []string
			Proxied          bool
			TTL              int
		}
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if r := out.Result[0]; r.Content != "127.0.0.11" || r.Comment != "prod" || len(r.Tags) != 1 || !r.Proxied || r.TTL != 1 {
		t.Fatalf("record after PATCH: %+v", r)
	}
	if n := l.OperationCounts()["dns-records-for-a-zone-patch-dns-record"]; n != 1 {
		t.Fatalf("%d PATCH calls", n)
	}
}

func TestBadTokenAndRateLimits(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	zid, _ := l.AddZone("example.test")
	record(t, l, zid, map[string]any{"type": "A", "name": "www.example.test", "content": "127.0.0.10", "ttl": 120})
	ctx := context.Background()
	_, err := provider(t, l, "cf-wrong-token-123").GetRecord(ctx, "www.example.test", "A")
	if err == nil || !strings.Contains(err.Error(), "the API refused the token (401): check CLOUDFLARE_API_TOKEN") || strings.Contains(err.Error(), "cf-wrong-token-123") {
		t.Fatalf("bad token: %v", err)
	}
	l.Inject(lab.Fault{Kind: lab.FaultRateLimit, Operation: "dns-records-for-a-zone-list-dns-records", Count: 2, RetryAfter: time.Second})
	start := time.Now()
	got, err := provider(t, l, l.Token()).GetRecord(ctx, "www.example.test", "A")
	if err != nil || got.Values[0] != "127.0.0.10" {
		t.Fatalf("after 429s: %+v %v", got, err)
	}
	if f := l.Faults()[0]; f.Hits != 2 {
		t.Fatalf("429 fault fired %d times", f.Hits)
	}
	t.Logf("two 429s with Retry-After 1s were retried by the SDK: %s", time.Since(start).Round(10*time.Millisecond))
}
