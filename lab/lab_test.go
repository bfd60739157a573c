package lab_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/miekg/dns"
	"golang.org/x/crypto/ssh"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// waitFor polls cond every 20ms until it holds or 20s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitAction(t *testing.T, c *godo.Client, dropletID, actionID int) *godo.Action {
	t.Helper()
	var a *godo.Action
	waitFor(t, "action "+strconv.Itoa(actionID), func() bool {
		var err error
		a, _, err = c.DropletActions.Get(ctx(t), dropletID, actionID)
		if err != nil {
			t.Fatal(err)
		}
		return a.Status != "in-progress"
	})
	return a
}

func publicIP(t *testing.T, d *godo.Droplet) string {
	ip, err := d.PublicIPv4()
	if err != nil || ip == "" {
		t.Fatalf("droplet %d has no public IPv4: %v", d.ID, err)
	}
	return ip
}

func waitActive(t *testing.T, c *godo.Client, id int) *godo.Droplet {
	t.Helper()
	var d *godo.Droplet
	waitFor(t, "droplet active", func() bool {
		var err error
		d, _, err = c.Droplets.Get(ctx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		return d.Status == "active"
	})
	return d
}

// get fetches url on a new connection.
func get(url string) (int, string, http.Header, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header, nil
}

// load sends requests to url in a loop until stopped, counting failures.
type load struct {
	ok, failed atomic.Int64
	servedBy   sync.Map
	stop       chan struct{}
	done       sync.WaitGroup
}

func startLoad(url string, workers int) *load {
	ld := &load{stop: make(chan struct{})}
	client := &http.Client{Timeout: 5 * time.Second}
	for range workers {
		ld.done.Add(1)
		go func() {
			defer ld.done.Done()
			for {
				select {
				case <-ld.stop:
					return
				default:
				}
				resp, err := client.Get(url)
				if err != nil {
					ld.failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					ld.failed.Add(1)
					continue
				}
				ld.ok.Add(1)
				ld.servedBy.Store(resp.Header.Get("X-Served-By"), true)
			}
		}()
	}
	return ld
}

func (ld *load) end() (ok, failed int64) {
	close(ld.stop)
	ld.done.Wait()
	return ld.ok.Load(), ld.failed.Load()
}

func newKey(t *testing.T) (ssh.Signer, string) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer, string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
}

func sshRun(t *testing.T, addr string, signer ssh.Signer, cmd string) string {
	t.Helper()
	cl, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "root", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("ssh %s: %v", addr, err)
	}
	defer cl.Close()
	s, err := cl.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Output(cmd)
	if err != nil {
		t.Fatalf("ssh %s %q: %v", addr, cmd, err)
	}
	return string(out)
}

// TestDropletLifecycle drives the lab with godo through everything the
// DigitalOcean compute driver does, with real traffic to the droplets.
func TestDropletLifecycle(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	c := labtest.Godo(t, l)
	port := l.HTTPPort()
	signer, pub := newKey(t)

	key, _, err := c.Keys.Create(ctx(t), &godo.KeyCreateRequest{Name: "ops", PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Account.Get(ctx(t)); err != nil {
		t.Fatal(err)
	}
	sizes, _, err := c.Sizes.List(ctx(t), &godo.ListOptions{PerPage: 200})
	if err != nil || len(sizes) != len(lab.Sizes) {
		t.Fatalf("sizes: %d, %v", len(sizes), err)
	}
	if _, _, err := c.Regions.List(ctx(t), nil); err != nil {
		t.Fatal(err)
	}

	src, _, err := c.Droplets.Create(ctx(t), &godo.DropletCreateRequest{
		Name: "web-1", Region: "nyc3", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"},
		SSHKeys: []godo.DropletCreateSSHKey{{ID: key.ID}}, Tags: []string{"web"}, Monitoring: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	src = waitActive(t, c, src.ID)
	srcIP := publicIP(t, src)
	if err := l.WriteFile(src.ID, "var/www/html/index.html", "<h1>shop</h1>\n"); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://%s:%d/", srcIP, port)
	if code, body, _, err := get(base); err != nil || code != 200 || body != "<h1>shop</h1>\n" {
		t.Fatalf("GET %s = %d %q %v", base, code, body, err)
	}
	if got := sshRun(t, net.JoinHostPort(srcIP, strconv.Itoa(l.SSHPort())), signer, "nproc"); got != "1\n" {
		t.Fatalf("nproc = %q", got)
	}

	// A snapshot under steady load: no request fails.
	ld := startLoad(base, 4)
	act, _, err := c.DropletActions.Snapshot(ctx(t), src.ID, "vmswap-web-1-test")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.DropletActions.PowerOff(ctx(t), src.ID); err == nil {
		t.Fatal("a second action while the snapshot runs was accepted; DigitalOcean refuses it (pending event)")
	}
	if a := waitAction(t, c, src.ID, act.ID); a.Status != "completed" {
		t.Fatalf("snapshot action %s", a.Status)
	}
	ok, failed := ld.end()
	t.Logf("snapshot under load: %d requests ok, %d failed", ok, failed)
	if failed != 0 || ok == 0 {
		t.Fatalf("snapshot under load: %d ok, %d failed", ok, failed)
	}

	snaps, _, err := c.Droplets.Snapshots(ctx(t), src.ID, nil)
	if err != nil || len(snaps) != 1 || snaps[0].Name != "vmswap-web-1-test" {
		t.Fatalf("droplet snapshots = %+v, %v", snaps, err)
	}
	img, _, err := c.Images.GetByID(ctx(t), snaps[0].ID)
	if err != nil || img.MinDiskSize != 25 {
		t.Fatalf("image = %+v, %v", img, err)
	}
	if all, _, err := c.Snapshots.ListDroplet(ctx(t), nil); err != nil || len(all) != 1 {
		t.Fatalf("snapshots = %+v, %v", all, err)
	}

	// A droplet whose disk is smaller than the image's minimum is refused.
	_, _, err = c.Droplets.Create(ctx(t), &godo.DropletCreateRequest{Name: "tiny", Region: "nyc3", Size: "s-1vcpu-512mb-10gb", Image: godo.DropletCreateImage{ID: img.ID}})
	var er *godo.ErrorResponse
	if !errors.As(err, &er) || er.Response.StatusCode != 422 || !strings.Contains(er.Message, "minimum disk size") {
		t.Fatalf("create below min disk: %v", err)
	}

	// A droplet from the snapshot serves the same files, with its own size.
	nd, _, err := c.Droplets.Create(ctx(t), &godo.DropletCreateRequest{Name: "web-2", Region: "nyc3", Size: "s-2vcpu-4gb",
		Image: godo.DropletCreateImage{ID: img.ID}, Tags: []string{"web", "vmswap:test"}})
	if err != nil {
		t.Fatal(err)
	}
	nd = waitActive(t, c, nd.ID)
	ndIP := publicIP(t, nd)
	if code, body, h, err := get(fmt.Sprintf("http://%s:%d/", ndIP, port)); err != nil || code != 200 || body != "<h1>shop</h1>\n" || h.Get("X-Served-By") != "web-2" {
		t.Fatalf("new droplet: %d %q %v %v", code, body, h, err)
	}
	sshAddr := net.JoinHostPort(ndIP, strconv.Itoa(l.SSHPort()))
	if got := sshRun(t, sshAddr, signer, "nproc"); got != "2\n" {
		t.Fatalf("nproc on s-2vcpu-4gb = %q", got)
	}
	if got := sshRun(t, sshAddr, signer, "cat /proc/meminfo"); !strings.Contains(got, "MemTotal:") {
		t.Fatalf("meminfo = %q", got)
	}
	tagged, _, err := c.Droplets.ListByTag(ctx(t), "vmswap:test", nil)
	if err != nil || len(tagged) != 1 || tagged[0].ID != nd.ID {
		t.Fatalf("list by tag = %v, %v", tagged, err)
	}
	named, _, err := c.Droplets.ListByName(ctx(t), "web-1", nil)
	if err != nil || len(named) != 1 {
		t.Fatalf("list by name = %v, %v", named, err)
	}

	// Load balancer: add the new droplet, wait until it gets traffic, remove
	// the old one under load: no request fails and the old one gets no more.
	lb, _, err := c.LoadBalancers.Create(ctx(t), &godo.LoadBalancerRequest{Name: "lb", Region: "nyc3", DropletIDs: []int{src.ID},
		ForwardingRules: []godo.ForwardingRule{{EntryProtocol: "http", EntryPort: 80, TargetProtocol: "http", TargetPort: 80}},
		HealthCheck:     &godo.HealthCheck{Protocol: "http", Port: 80, Path: "/health", CheckIntervalSeconds: 10, ResponseTimeoutSeconds: 5, HealthyThreshold: 3, UnhealthyThreshold: 5}})
	if err != nil {
		t.Fatal(err)
	}
	lbURL := fmt.Sprintf("http://%s:%d/", lb.IP, port)
	ld = startLoad(lbURL, 4)
	if _, err := c.LoadBalancers.AddDroplets(ctx(t), lb.ID, nd.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new member healthy", func() bool { return len(l.Healthy(lb.ID)) == 2 })
	if _, err := c.LoadBalancers.RemoveDroplets(ctx(t), lb.ID, src.ID); err != nil {
		t.Fatal(err)
	}
	ok, failed = ld.end()
	t.Logf("LB member swap under load: %d ok, %d failed", ok, failed)
	if failed != 0 {
		t.Fatalf("LB member swap: %d failed", failed)
	}
	ld = startLoad(lbURL, 2)
	time.Sleep(100 * time.Millisecond)
	ld.end()
	if _, old := ld.servedBy.Load("web-1"); old {
		t.Fatal("removed member still received requests")
	}
	got, _, err := c.LoadBalancers.Get(ctx(t), lb.ID)
	if err != nil || len(got.DropletIDs) != 1 || got.DropletIDs[0] != nd.ID {
		t.Fatalf("LB members = %v, %v", got, err)
	}

	// Reserved IP: reassignment moves new connections.
	rip, _, err := c.ReservedIPs.Create(ctx(t), &godo.ReservedIPCreateRequest{DropletID: src.ID})
	if err != nil {
		t.Fatal(err)
	}
	ripURL := fmt.Sprintf("http://%s:%d/", rip.IP, port)
	if _, _, h, err := get(ripURL); err != nil || h.Get("X-Served-By") != "web-1" {
		t.Fatalf("reserved IP before: %v %v", h, err)
	}
	ra, _, err := c.ReservedIPActions.Assign(ctx(t), rip.IP, nd.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "assign", func() bool {
		a, _, err := c.ReservedIPActions.Get(ctx(t), rip.IP, ra.ID)
		return err == nil && a.Status == "completed"
	})
	if _, _, h, err := get(ripURL); err != nil || h.Get("X-Served-By") != "web-2" {
		t.Fatalf("reserved IP after: %v %v", h, err)
	}

	// Resize is refused while on; power_off refuses connections.
	if _, _, err := c.DropletActions.Resize(ctx(t), src.ID, "s-2vcpu-2gb", false); err == nil {
		t.Fatal("resize of a running droplet accepted")
	}
	a, _, err := c.DropletActions.PowerOff(ctx(t), src.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitAction(t, c, src.ID, a.ID)
	if _, err := net.DialTimeout("tcp", net.JoinHostPort(srcIP, strconv.Itoa(port)), time.Second); err == nil {
		t.Fatal("powered-off droplet accepted a connection")
	}
	a, _, err = c.DropletActions.Resize(ctx(t), src.ID, "s-2vcpu-2gb", false)
	if err != nil {
		t.Fatal(err)
	}
	waitAction(t, c, src.ID, a.ID)
	a, _, err = c.DropletActions.PowerOn(ctx(t), src.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitAction(t, c, src.ID, a.ID)
	if code, _, _, err := get(base); err != nil || code != 200 {
		t.Fatalf("after power on: %d %v", code, err)
	}
	if d, _, _ := c.Droplets.Get(ctx(t), src.ID); d.Size.Slug != "s-2vcpu-2gb" {
		t.Fatalf("resized to %s", d.Size.Slug)
	}
	if _, _, err := c.Actions.Get(ctx(t), a.ID); err != nil {
		t.Fatal(err)
	}
	if as, _, err := c.Droplets.Actions(ctx(t), src.ID, nil); err != nil || len(as) < 4 {
		t.Fatalf("droplet actions = %d, %v", len(as), err)
	}

	// Cleanup calls.
	if _, err := c.Droplets.Delete(ctx(t), nd.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Snapshots.Delete(ctx(t), strconv.Itoa(snaps[0].ID)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Droplets.Get(ctx(t), nd.ID); err == nil {
		t.Fatal("deleted droplet still found")
	}
	inv := l.Inventory()
	if len(inv.Droplets) != 1 || len(inv.Snapshots) != 0 {
		t.Fatalf("inventory = %+v", inv)
	}
}

func TestDNS(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	c := labtest.Godo(t, l)
	if _, _, err := c.Domains.Create(ctx(t), &godo.DomainCreateRequest{Name: "shop.test"}); err != nil {
		t.Fatal(err)
	}
	rec, _, err := c.Domains.CreateRecord(ctx(t), "shop.test", &godo.DomainRecordEditRequest{Type: "A", Name: "www", Data: "127.0.0.10", TTL: 60})
	if err != nil {
		t.Fatal(err)
	}
	query := func(name string, typ uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, typ)
		r, err := dns.Exchange(m, l.Endpoints().DNS)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a := func() string {
		r := query("www.shop.test.", dns.TypeA)
		if len(r.Answer) != 1 {
			return ""
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	waitFor(t, "record served", func() bool { return a() == "127.0.0.10" })
	if r := query("shop.test.", dns.TypeSOA); len(r.Answer) != 1 || !r.Authoritative {
		t.Fatalf("SOA answer: %v", r)
	}
	if r := query("shop.test.", dns.TypeNS); len(r.Answer) != 1 {
		t.Fatalf("NS answer: %v", r)
	}
	if r := query("nope.shop.test.", dns.TypeA); r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
		t.Fatalf("NXDOMAIN answer: %v", r)
	}
	recs, _, err := c.Domains.RecordsByTypeAndName(ctx(t), "shop.test", "A", "www.shop.test", nil)
	if err != nil || len(recs) != 1 || recs[0].ID != rec.ID {
		t.Fatalf("records by name = %v, %v", recs, err)
	}
	if _, _, err := c.Domains.EditRecord(ctx(t), "shop.test", rec.ID, &godo.DomainRecordEditRequest{Type: "A", Name: "www", Data: "127.0.0.11", TTL: 60}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "updated record served", func() bool { return a() == "127.0.0.11" })
	if r := query("www.shop.test.", dns.TypeA); r.Answer[0].Header().Ttl != 60 {
		t.Fatalf("TTL = %d", r.Answer[0].Header().Ttl)
	}

	// Cloudflare zone: served by the same DNS server, managed through its API.
	zid, err := l.AddZone("example.test")
	if err != nil {
		t.Fatal(err)
	}
	cf := func(method, path string, body any) (int, map[string]any) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, l.Endpoints().CloudflareAPI+path, rd)
		req.Header.Set("Authorization", "Bearer "+l.Token())
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	code, out := cf("GET", "/zones?name=example.test", nil)
	if code != 200 || len(out["result"].([]any)) != 1 {
		t.Fatalf("zones: %d %v", code, out)
	}
	code, out = cf("POST", "/zones/"+zid+"/dns_records", map[string]any{"type": "A", "name": "www.example.test", "content": "127.0.0.20", "ttl": 120, "proxied": false, "comment": "web"})
	if code != 200 {
		t.Fatalf("create: %d %v", code, out)
	}
	rid := out["result"].(map[string]any)["id"].(string)
	code, out = cf("PATCH", "/zones/"+zid+"/dns_records/"+rid, map[string]any{"content": "127.0.0.21"})
	if code != 200 || out["result"].(map[string]any)["comment"] != "web" {
		t.Fatalf("patch: %d %v", code, out)
	}
	waitFor(t, "Cloudflare record served", func() bool {
		r := query("www.example.test.", dns.TypeA)
		return len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == "127.0.0.21"
	})
	if code, out = cf("GET", "/zones/"+zid+"/dns_records?name=www.example.test&type=A", nil); code != 200 || len(out["result"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, out)
	}
	if code, out = cf("PATCH", "/zones/"+zid+"/dns_records/"+rid, map[string]any{"ttl": 5}); code != 400 {
		t.Fatalf("bad TTL: %d %v", code, out)
	}
	if code, _ = cf("DELETE", "/zones/"+zid+"/dns_records/"+rid, nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code, out = cf("GET", "/zones/"+zid+"/dns_records/"+rid, nil); code != 404 || out["success"] != false {
		t.Fatalf("deleted record: %d %v", code, out)
	}
}
