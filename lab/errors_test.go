package lab_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
)

func call(t *testing.T, method, url, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

// TestErrorShapes: an unknown resource, a body the spec rejects and a bad
// token each get a clear error in the provider's own shape.
func TestErrorShapes(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ep := l.Endpoints()
	do, cf := ep.DigitalOceanAPI, ep.CloudflareAPI
	tests := []struct {
		desc, method, url, token, body string
		status                         int
		check                          func(map[string]any) bool
	}{
		{"DO unknown droplet", "GET", do + "v2/droplets/99999", ep.Token, "", 404,
			func(m map[string]any) bool { return m["id"] == "not_found" && m["message"] != "" }},
		{"DO unknown path", "GET", do + "v2/nothing-here", ep.Token, "", 404, func(m map[string]any) bool { return m["id"] == "not_found" }},
		{"DO body the spec rejects", "POST", do + "v2/droplets", ep.Token, `{"name": "x", "region": "nyc3"}`, 400,
			func(m map[string]any) bool {
				return m["id"] == "bad_request" && strings.Contains(m["message"].(string), "size")
			}},
		{"DO body that is not JSON", "POST", do + "v2/droplets", ep.Token, `{"name": `, 400, func(m map[string]any) bool { return m["id"] == "bad_request" }},
		{"DO bad token", "GET", do + "v2/account", "nope", "", 401,
			func(m map[string]any) bool {
				return m["id"] == "Unauthorized" && m["message"] == "Unable to authenticate you"
			}},
		{"Cloudflare bad token", "GET", cf + "/zones", "nope", "", 401, func(m map[string]any) bool {
			errs, _ := m["errors"].([]any)
			return m["success"] == false && len(errs) == 1 && errs[0].(map[string]any)["code"] == float64(10000)
		}},
		{"Cloudflare unknown zone", "GET", cf + "/zones/0123456789abcdef0123456789abcdef", ep.Token, "", 404,
			func(m map[string]any) bool { return m["success"] == false && m["result"] == nil }},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			status, body := call(t, tt.method, tt.url, tt.token, tt.body)
			if status != tt.status || !tt.check(body) {
				t.Fatalf("%d %v", status, body)
			}
		})
	}
	for _, q := range l.Requests() {
		if q.Mutating() && q.Status < 300 {
			t.Fatalf("a refused request changed something: %+v", q)
		}
	}
}

// TestFaultsOverHTTP arms faults through POST /lab/faults, as a CLI user of
// `vmswap lab serve` would, and observes each: a slower boot, and a 503.
func TestFaultsOverHTTP(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	sd := lab.NewSeeder(l.Endpoints())
	ctx := context.Background()
	if err := sd.Inject(ctx, lab.Fault{Kind: lab.FaultSlowBoot, Delay: time.Second}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, _, err := sd.Droplet(ctx, "slow", "s-1vcpu-1gb", nil, nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < l.Durations().Boot+time.Second {
		t.Fatalf("slow boot took only %s", took)
	}
	if err := sd.Inject(ctx, lab.Fault{Kind: lab.FaultHTTPError, Operation: "sizes_list", Status: 503}); err != nil {
		t.Fatal(err)
	}
	if status, body := call(t, "GET", l.Endpoints().DigitalOceanAPI+"v2/sizes", l.Token(), ""); status != 503 || body["id"] != "server_error" {
		t.Fatalf("armed 503: %d %v", status, body)
	}
	if status, _ := call(t, "GET", l.Endpoints().DigitalOceanAPI+"v2/sizes", l.Token(), ""); status != 200 {
		t.Fatalf("after the fault was spent: %d", status)
	}
	if err := sd.Inject(ctx, lab.Fault{Kind: "no_such_fault"}); err == nil || !strings.Contains(err.Error(), "unknown fault kind") {
		t.Fatalf("unknown fault kind: %v", err)
	}
}
