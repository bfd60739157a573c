package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// InventoryHetzner is what exists in the lab's Hetzner Cloud.
type InventoryHetzner struct {
	Servers     []InventoryDroplet   `json:"servers"` // Size: the server type; Tags: labels as k=v
	Images      []InventorySnap      `json:"images"`  // DropletID: the server it was made from
	LBs         []InventoryHetznerLB `json:"load_balancers"`
	FloatingIPs map[string]int       `json:"floating_ips"` // IP -> server ID (0: unassigned)
	PrimaryIPs  map[string]int       `json:"primary_ips"`  // IP -> server ID (0: unassigned)
	Zones       []string             `json:"zones"`
}

// InventoryHetznerLB is a Hetzner load balancer in an Inventory.
type InventoryHetznerLB struct {
	ID      int    `json:"id"`
	IP      string `json:"ip"`
	Servers []int  `json:"server_ids"` // its targets, label selectors resolved
}

func (l *Lab) hetznerInventory(inv *Inventory) {
	h := l.st.Hetzner
	servers := sortedServers(l.st, cloudHetzner)
	if len(servers)+len(h.Images)+len(h.LBs)+len(h.FloatingIPs)+len(h.PrimaryIPs)+len(h.Zones) == 0 {
		return
	}
	out := &InventoryHetzner{FloatingIPs: map[string]int{}, PrimaryIPs: map[string]int{}}
	for _, d := range servers {
		var labels []string
		for k, v := range d.Labels {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		s := InventoryDroplet{ID: d.ID, Name: d.Name, Size: d.Size, Status: hStatus(d), IP: d.IP, Tags: append([]string{}, labels...)}
		if d.IPv6 {
			s.IPv6 = hIPv6(d.ID)
		}
		out.Servers = append(out.Servers, s)
	}
	for _, im := range l.hImages() {
		out.Images = append(out.Images, InventorySnap{ID: im.ID, Name: im.Description, DropletID: im.ServerID})
	}
	for _, lb := range l.hLBs() {
		out.LBs = append(out.LBs, InventoryHetznerLB{ID: lb.ID, IP: lb.IP, Servers: append([]int{}, l.hTargetServers(lb)...)})
	}
	for _, f := range h.FloatingIPs {
		out.FloatingIPs[f.IP] = f.ServerID
	}
	for _, p := range h.PrimaryIPs {
		out.PrimaryIPs[p.IP] = p.AssigneeID
	}
	for _, z := range l.hZones() {
		out.Zones = append(out.Zones, z.Name)
		for _, rs := range z.RRSets {
			if rs.Type == "SOA" || (rs.Type == "NS" && rs.Name == "@") {
				continue
			}
			var vals []string
			for _, r := range rs.Records {
				vals = append(vals, r.Value)
			}
			inv.Records[strings.TrimSuffix(hFQDN(rs.Name, z.Name), ".")+" "+rs.Type] = strings.Join(vals, ", ")
		}
	}
	inv.Hetzner = out
}

// The Seeder's Hetzner Cloud: resources made through the lab's Hetzner API.

// hz calls the lab's Hetzner API and returns the HTTP status.
func (s *Seeder) hz(ctx context.Context, method, path string, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.ep.HetznerAPI+"/"+path, body)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+s.ep.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("lab seed: hetzner %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("lab seed: hetzner %s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		return resp.StatusCode, json.Unmarshal(b, out)
	}
	return resp.StatusCode, nil
}

// poll calls done every 50ms until it reports true or fails, or ctx ends.
func poll(ctx context.Context, done func() (bool, error)) error {
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab seed: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// hWaitAction waits until a Hetzner action has finished, and fails if it
// failed.
func (s *Seeder) hWaitAction(ctx context.Context, id int64) error {
	return poll(ctx, func() (bool, error) {
		var out struct {
			Action struct {
				Status string
				Error  *struct{ Code, Message string }
			}
		}
		if _, err := s.hz(ctx, "GET", "actions/"+strconv.FormatInt(id, 10), nil, &out); err != nil {
			return false, err
		}
		if a := out.Action; a.Status == "error" {
			return false, fmt.Errorf("lab seed: hetzner action %d failed: %+v", id, a.Error)
		}
		return out.Action.Status == "success", nil
	})
}

// HetznerSSHKey registers an SSH public key (authorized_keys format) with
// the Hetzner Cloud and returns its ID. HetznerServer puts every registered
// key on the servers it creates.
func (s *Seeder) HetznerSSHKey(ctx context.Context, name, pub string) (int64, error) {
	var out struct {
		Key struct{ ID int64 } `json:"ssh_key"`
	}
	_, err := s.hz(ctx, "POST", "ssh_keys", map[string]any{"name": name, "public_key": pub}, &out)
	return out.Key.ID, err
}

// HetznerServer creates a Hetzner server from ubuntu-24.04 in fsn1 with the
// labels and every SSH key registered with the Hetzner Cloud (HetznerSSHKey),
// waits until it is running, writes files (path relative to the web root ->
// content) and returns its ID and public IPv4.
func (s *Seeder) HetznerServer(ctx context.Context, name, serverType string, labels map[string]string, files map[string]string) (int64, string, error) {
	keys := []int64{} // JSON [], never null: the spec refuses null
	for page := 1; page > 0; {
		var out struct {
			Keys []struct{ ID int64 } `json:"ssh_keys"`
			Meta struct {
				Pagination struct {
					NextPage *int `json:"next_page"`
				}
			}
		}
		if _, err := s.hz(ctx, "GET", "ssh_keys?per_page=50&page="+strconv.Itoa(page), nil, &out); err != nil {
			return 0, "", err
		}
		for _, k := range out.Keys {
			keys = append(keys, k.ID)
		}
		page = 0
		if n := out.Meta.Pagination.NextPage; n != nil {
			page = *n
		}
	}
	if labels == nil {
		labels = map[string]string{}
	}
	req := map[string]any{"name": name, "server_type": serverType, "image": "ubuntu-24.04", "location": "fsn1", "ssh_keys": keys,
		"labels": labels, "public_net": map[string]any{"enable_ipv4": true, "enable_ipv6": true}}
	var created struct {
		Server struct{ ID int64 }
	}
	if _, err := s.hz(ctx, "POST", "servers", req, &created); err != nil {
		return 0, "", err
	}
	id := created.Server.ID
	var ip string
	err := poll(ctx, func() (bool, error) {
		var got struct {
			Server struct {
				Status    string
				PublicNet struct {
					IPv4 *struct{ IP string } `json:"ipv4"`
				} `json:"public_net"`
			}
		}
		if _, err := s.hz(ctx, "GET", "servers/"+strconv.FormatInt(id, 10), nil, &got); err != nil {
			return false, err
		}
		if v4 := got.Server.PublicNet.IPv4; v4 != nil {
			ip = v4.IP
		}
		return got.Server.Status == "running", nil
	})
	if err != nil {
		return 0, "", err
	}
	for p, c := range files {
		if err := s.WriteFile(ctx, int(id), webRoot+"/"+p, c); err != nil {
			return 0, "", err
		}
	}
	return id, ip, nil
}

// HetznerLoadBalancer creates an lb11 load balancer in fsn1 over the
// servers, with one http service on the lab's HTTP port health-checking
// healthPath (retries 3), waits until every target is healthy, and returns
// its ID and IP.
func (s *Seeder) HetznerLoadBalancer(ctx context.Context, name string, serverIDs []int64, healthPath string) (int64, string, error) {
	port := s.ep.HTTPPort
	targets := []any{}
	for _, id := range serverIDs {
		targets = append(targets, map[string]any{"type": "server", "server": map[string]any{"id": id}})
	}
	req := map[string]any{"name": name, "load_balancer_type": "lb11", "location": "fsn1", "targets": targets,
		"services": []any{map[string]any{"protocol": "http", "listen_port": port, "destination_port": port, "proxyprotocol": false,
			"health_check": map[string]any{"protocol": "http", "port": port, "interval": 15, "timeout": 10, "retries": 3,
				"http": map[string]any{"domain": nil, "path": healthPath, "status_codes": []string{"2??", "3??"}}}}}}
	var out struct {
		LB struct {
			ID        int64
			PublicNet struct {
				IPv4 struct{ IP string } `json:"ipv4"`
			} `json:"public_net"`
		} `json:"load_balancer"`
	}
	if _, err := s.hz(ctx, "POST", "load_balancers", req, &out); err != nil {
		return 0, "", err
	}
	id := out.LB.ID
	err := poll(ctx, func() (bool, error) {
		var got struct {
			LB struct {
				Targets []struct {
					Health []struct{ Status string } `json:"health_status"`
				}
			} `json:"load_balancer"`
		}
		if _, err := s.hz(ctx, "GET", "load_balancers/"+strconv.FormatInt(id, 10), nil, &got); err != nil {
			return false, err
		}
		for _, t := range got.LB.Targets {
			for _, h := range t.Health {
				if h.Status != "healthy" {
					return false, nil
				}
			}
		}
		return true, nil
	})
	return id, out.LB.PublicNet.IPv4.IP, err
}

// HetznerFloatingIP creates an IPv4 floating IP assigned to the server (it
// routes to it at once) and returns its ID and address.
func (s *Seeder) HetznerFloatingIP(ctx context.Context, serverID int64) (int64, string, error) {
	var out struct {
		FIP struct {
			ID int64
			IP string
		} `json:"floating_ip"`
	}
	_, err := s.hz(ctx, "POST", "floating_ips", map[string]any{"type": "ipv4", "server": serverID}, &out)
	return out.FIP.ID, out.FIP.IP, err
}

// HetznerPrimaryIP returns the server's primary IPv4 (the one made with it:
// its public address), or with serverID 0 creates an unassigned IPv4
// primary IP in fsn1-dc14; either way its ID and address.
func (s *Seeder) HetznerPrimaryIP(ctx context.Context, serverID int64) (int64, string, error) {
	if serverID == 0 {
		var out struct {
			PIP struct {
				ID int64
				IP string
			} `json:"primary_ip"`
		}
		req := map[string]any{"name": fmt.Sprintf("primary-%d", time.Now().UnixNano()), "type": "ipv4", "assignee_type": "server", "datacenter": "fsn1-dc14"}
		_, err := s.hz(ctx, "POST", "primary_ips", req, &out)
		return out.PIP.ID, out.PIP.IP, err
	}
	var got struct {
		Server struct {
			PublicNet struct {
				IPv4 *struct {
					ID int64
					IP string
				} `json:"ipv4"`
			} `json:"public_net"`
		}
	}
	if _, err := s.hz(ctx, "GET", "servers/"+strconv.FormatInt(serverID, 10), nil, &got); err != nil {
		return 0, "", err
	}
	v4 := got.Server.PublicNet.IPv4
	if v4 == nil {
		return 0, "", fmt.Errorf("lab seed: hetzner server %d has no primary IPv4", serverID)
	}
	return v4.ID, v4.IP, nil
}

// HetznerZone creates a primary zone with a default TTL (0: 3600) and
// returns its ID once the lab's DNS server serves it.
func (s *Seeder) HetznerZone(ctx context.Context, name string, ttl int) (int64, error) {
	req := map[string]any{"name": name, "mode": "primary"}
	if ttl > 0 {
		req["ttl"] = ttl
	}
	var out struct {
		Zone   struct{ ID int64 }
		Action struct{ ID int64 }
	}
	if _, err := s.hz(ctx, "POST", "zones", req, &out); err != nil {
		return 0, err
	}
	return out.Zone.ID, s.hWaitAction(ctx, out.Action.ID)
}

// HetznerRecord makes the RRSet name/typ of the zone (its name or ID; name
// relative, "@" for the apex) hold exactly values with the TTL (0: the
// zone's), and returns once the lab's DNS server serves it.
func (s *Seeder) HetznerRecord(ctx context.Context, zone, name, typ string, values []string, ttl int) error {
	recs := []any{}
	for _, v := range values {
		recs = append(recs, map[string]any{"value": v})
	}
	var ttlv any
	if ttl > 0 {
		ttlv = ttl
	}
	var act struct {
		Action struct{ ID int64 }
	}
	base := "zones/" + zone + "/rrsets"
	status, err := s.hz(ctx, "GET", base+"/"+name+"/"+typ, nil, nil)
	switch {
	case status == http.StatusNotFound:
		if _, err := s.hz(ctx, "POST", base, map[string]any{"name": name, "type": typ, "ttl": ttlv, "records": recs}, &act); err != nil {
			return err
		}
		return s.hWaitAction(ctx, act.Action.ID)
	case err != nil:
		return err
	}
	if _, err := s.hz(ctx, "POST", base+"/"+name+"/"+typ+"/actions/set_records", map[string]any{"records": recs}, &act); err != nil {
		return err
	}
	if err := s.hWaitAction(ctx, act.Action.ID); err != nil {
		return err
	}
	if _, err := s.hz(ctx, "POST", base+"/"+name+"/"+typ+"/actions/change_ttl", map[string]any{"ttl": ttlv}, &act); err != nil {
		return err
	}
	return s.hWaitAction(ctx, act.Action.ID)
}

// HetznerVolume creates a volume of sizeGB attached to the server and
// returns its ID.
func (s *Seeder) HetznerVolume(ctx context.Context, name string, sizeGB int, serverID int64) (int64, error) {
	var out struct {
		Volume struct {
			ID int64
		} `json:"volume"`
	}
	_, err := s.hz(ctx, "POST", "volumes", map[string]any{"name": name, "size": sizeGB, "server": serverID, "format": "ext4", "automount": true}, &out)
	return out.Volume.ID, err
}
