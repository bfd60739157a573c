package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Seeder creates resources in a lab through its own DigitalOcean API, as an
// operator's existing setup would have: the demo and tests use it to build
// the world vmswap then works on. Every call is validated like any other.
type Seeder struct {
	ep Endpoints
	c  *http.Client
}

// Seeder returns a Seeder for the lab.
func (l *Lab) Seeder() *Seeder { return NewSeeder(l.Endpoints()) }

// NewSeeder returns a Seeder for a lab running anywhere (its endpoints.json).
func NewSeeder(ep Endpoints) *Seeder {
	return &Seeder{ep: ep, c: &http.Client{Timeout: 30 * time.Second}}
}

func (s *Seeder) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	ep := s.ep
	req, err := http.NewRequestWithContext(ctx, method, ep.DigitalOceanAPI+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+ep.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.c.Do(req)
	if err != nil {
		return fmt.Errorf("lab seed: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("lab seed: %s %s: HTTP %d: %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// AddKey registers an SSH public key (authorized_keys format) and returns its ID.
func (s *Seeder) AddKey(ctx context.Context, name, pub string) (int, error) {
	var out struct {
		Key struct{ ID int } `json:"ssh_key"`
	}
	err := s.do(ctx, "POST", "v2/account/keys", map[string]any{"name": name, "public_key": pub}, &out)
	return out.Key.ID, err
}

// Droplet creates a droplet from the Ubuntu image, waits until it is active,
// writes files (path relative to the web root -> content) and returns its ID
// and IP.
func (s *Seeder) Droplet(ctx context.Context, name, size string, keyIDs []int, files map[string]string) (int, string, error) {
	id, ip, _, err := s.droplet(ctx, name, size, keyIDs, files, false)
	return id, ip, err
}

// DualStackDroplet is Droplet with IPv6 enabled; it also returns the
// droplet's IPv6 address (in 2001:db8::/32, never dialed).
func (s *Seeder) DualStackDroplet(ctx context.Context, name, size string, keyIDs []int, files map[string]string) (int, string, string, error) {
	return s.droplet(ctx, name, size, keyIDs, files, true)
}

func (s *Seeder) droplet(ctx context.Context, name, size string, keyIDs []int, files map[string]string, ipv6 bool) (int, string, string, error) {
	var out struct {
		Droplet struct{ ID int } `json:"droplet"`
	}
	req := map[string]any{"name": name, "region": "nyc3", "size": size, "image": "ubuntu-24-04-x64", "ssh_keys": keyIDs, "monitoring": true, "ipv6": ipv6, "tags": []string{"web"}}
	if err := s.do(ctx, "POST", "v2/droplets", req, &out); err != nil {
		return 0, "", "", err
	}
	id := out.Droplet.ID
	for {
		var got struct {
			Droplet struct {
				Status   string
				Networks struct {
					V4 []struct {
						IP string `json:"ip_address"`
					} `json:"v4"`
					V6 []struct {
						IP string `json:"ip_address"`
					} `json:"v6"`
				}
			} `json:"droplet"`
		}
		if err := s.do(ctx, "GET", "v2/droplets/"+strconv.Itoa(id), nil, &got); err != nil {
			return 0, "", "", err
		}
		if got.Droplet.Status == "active" {
			for p, c := range files {
				if err := s.WriteFile(ctx, id, webRoot+"/"+p, c); err != nil {
					return 0, "", "", err
				}
			}
			v6 := ""
			if n := got.Droplet.Networks.V6; len(n) > 0 {
				v6 = n[0].IP
			}
			return id, got.Droplet.Networks.V4[0].IP, v6, nil
		}
		select {
		case <-ctx.Done():
			return 0, "", "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// LoadBalancer creates a load balancer over the droplets, health-checking
// /health, and returns its ID and IP.
func (s *Seeder) LoadBalancer(ctx context.Context, name string, dropletIDs []int) (string, string, error) {
	var out struct {
		LB struct{ ID, IP string } `json:"load_balancer"`
	}
	port := s.ep.HTTPPort
	err := s.do(ctx, "POST", "v2/load_balancers", map[string]any{"name": name, "region": "nyc3", "droplet_ids": dropletIDs,
		"forwarding_rules": []any{map[string]any{"entry_protocol": "http", "entry_port": port, "target_protocol": "http", "target_port": port}},
		"health_check":     map[string]any{"protocol": "http", "port": port, "path": "/health", "check_interval_seconds": 10, "response_timeout_seconds": 5, "healthy_threshold": 3, "unhealthy_threshold": 5}}, &out)
	return out.LB.ID, out.LB.IP, err
}

// Record creates the domain if needed and an A record in it (AAAA for an
// IPv6 address).
func (s *Seeder) Record(ctx context.Context, domain, name, ip string, ttl int) error {
	if err := s.do(ctx, "GET", "v2/domains/"+domain, nil, nil); err != nil {
		if err := s.do(ctx, "POST", "v2/domains", map[string]any{"name": domain}, nil); err != nil {
			return err
		}
	}
	typ := "A"
	if strings.Contains(ip, ":") {
		typ = "AAAA"
	}
	return s.do(ctx, "POST", "v2/domains/"+domain+"/records", map[string]any{"type": typ, "name": name, "data": ip, "ttl": ttl}, nil)
}

// ReservedIP creates a reserved IP assigned to the droplet and returns it.
func (s *Seeder) ReservedIP(ctx context.Context, dropletID int) (string, error) {
	var out struct {
		RIP struct{ IP string } `json:"reserved_ip"`
	}
	err := s.do(ctx, "POST", "v2/reserved_ips", map[string]any{"droplet_id": dropletID}, &out)
	return out.RIP.IP, err
}

// WriteFile puts a file on a droplet's disk (path relative to the disk root).
func (s *Seeder) WriteFile(ctx context.Context, dropletID int, path, content string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, fmt.Sprintf("%slab/droplets/%d/files/%s", s.ep.DigitalOceanAPI, dropletID, path), bytes.NewReader([]byte(content)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.ep.Token)
	resp, err := s.c.Do(req)
	if err != nil {
		return fmt.Errorf("lab seed: write file: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("lab seed: write %s on droplet %d: HTTP %d", path, dropletID, resp.StatusCode)
	}
	return nil
}

// Inject arms a fault in the lab (see Fault).
func (s *Seeder) Inject(ctx context.Context, f Fault) error {
	return s.do(ctx, "POST", "lab/faults", f, nil)
}

// Requests returns the lab's request log.
func (s *Seeder) Requests(ctx context.Context) ([]Request, error) {
	var out []Request
	return out, s.do(ctx, "GET", "lab/requests", nil, &out)
}
