package lab_test

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"
	"github.com/miekg/dns"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
)

// hcloudClient is hcloud-go pointed at the lab, polling fast.
func hcloudClient(l *lab.Lab) *hcloud.Client {
	ep := l.Endpoints()
	return hcloud.NewClient(hcloud.WithEndpoint(ep.HetznerAPI), hcloud.WithToken(ep.Token),
		hcloud.WithPollOpts(hcloud.PollOpts{BackoffFunc: hcloud.ConstantBackoff(20 * time.Millisecond)}),
		hcloud.WithRetryOpts(hcloud.RetryOpts{BackoffFunc: hcloud.ConstantBackoff(20 * time.Millisecond), MaxRetries: 3}))
}

// checked is a call's value and error, for get to fail the test on.
type checked[T any] struct {
	v   T
	err error
}

// must takes an hcloud-go call's results.
func must[T any](v T, _ *hcloud.Response, err error) checked[T] { return checked[T]{v, err} }

// all takes the results of an hcloud-go call that lists all pages.
func all[T any](v T, err error) checked[T] { return checked[T]{v, err} }

func (c checked[T]) get(t *testing.T) T {
	t.Helper()
	if c.err != nil {
		t.Fatal(c.err)
	}
	return c.v
}

func wait(t *testing.T, c *hcloud.Client, actions ...*hcloud.Action) {
	t.Helper()
	if err := c.Action.WaitFor(ctx(t), actions...); err != nil {
		t.Fatal(err)
	}
}

func isCode(t *testing.T, err error, code hcloud.ErrorCode) {
	t.Helper()
	if !hcloud.IsError(err, code) {
		t.Fatalf("want error %s, got %v", code, err)
	}
}

// servedBy fetches url and returns the answering server's name (X-Served-By).
func servedBy(t *testing.T, url string) (int, string) {
	t.Helper()
	code, _, h, err := get(url)
	if err != nil {
		return 0, ""
	}
	return code, h.Get("X-Served-By")
}

func lookup(t *testing.T, server, name string) (vals []string, ttl uint32) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	r, err := dns.Exchange(m, server)
	if err != nil {
		t.Fatal(err)
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			vals, ttl = append(vals, a.A.String()), a.Hdr.Ttl
		}
	}
	slices.Sort(vals)
	return vals, ttl
}

func healthOf(lb *hcloud.LoadBalancer, serverID int64) string {
	for _, tg := range lb.Targets {
		all := append([]hcloud.LoadBalancerTarget{tg}, tg.Targets...)
		for _, t := range all {
			if t.Server != nil && t.Server.Server.ID == serverID && len(t.HealthStatus) > 0 {
				return string(t.HealthStatus[0].Status)
			}
		}
	}
	return "absent"
}

// TestHetznerLifecycle drives the lab's Hetzner Cloud with hcloud-go: a
// server, a live snapshot and a server from it, labels, a type change, a
// load balancer and its health checks, floating and primary IPs, and DNS
// zones served by the lab's DNS server; every request and response is
// validated against Hetzner's published spec.
func TestHetznerLifecycle(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	c := hcloudClient(l)
	cx := ctx(t)
	port := l.HTTPPort()
	signer, pub := newKey(t)

	key := must(c.SSHKey.Create(cx, hcloud.SSHKeyCreateOpts{Name: "operator", PublicKey: pub})).get(t)
	if _, _, err := c.SSHKey.Create(cx, hcloud.SSHKeyCreateOpts{Name: "again", PublicKey: pub}); !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		t.Fatalf("the same key twice: %v", err)
	}
	types := all(c.ServerType.All(cx)).get(t)
	if len(types) != 4 || types[0].Name != "cx22" || types[0].Cores != 2 || types[0].Memory != 4 || types[0].Disk != 40 || len(types[0].Pricings) != 3 {
		t.Fatalf("server types: %+v", types[0])
	}
	if locs := all(c.Location.All(cx)).get(t); len(locs) != 3 || locs[0].NetworkZone != "eu-central" {
		t.Fatalf("locations: %+v", locs)
	}
	if lbt := all(c.LoadBalancerType.All(cx)).get(t); len(lbt) != 1 || lbt[0].Name != "lb11" {
		t.Fatalf("load balancer types: %+v", lbt)
	}

	// A server from a system image: a real machine on its own address.
	res := must(c.Server.Create(cx, hcloud.ServerCreateOpts{Name: "web-1", ServerType: &hcloud.ServerType{Name: "cx22"},
		Image: &hcloud.Image{Name: "ubuntu-24.04"}, Location: &hcloud.Location{Name: "fsn1"}, SSHKeys: []*hcloud.SSHKey{key},
		Labels: map[string]string{"role": "web"}})).get(t)
	if res.Server.Status != hcloud.ServerStatusInitializing || !res.Server.Locked {
		t.Fatalf("a new server: %s, locked %v", res.Server.Status, res.Server.Locked)
	}
	wait(t, c, res.Action)
	web1 := must(c.Server.GetByID(cx, res.Server.ID)).get(t)
	ip1 := web1.PublicNet.IPv4.IP.String()
	if web1.Status != hcloud.ServerStatusRunning || web1.ServerType.Name != "cx22" || web1.Location.Name != "fsn1" || web1.PublicNet.IPv6.IP == nil {
		t.Fatalf("web-1: %+v", web1)
	}
	if got := sshRun(t, net.JoinHostPort(ip1, strconv.Itoa(l.SSHPort())), signer, "nproc"); got != "2\n" {
		t.Fatalf("nproc on cx22: %q", got)
	}
	if err := l.WriteFile(int(web1.ID), "var/www/html/index.html", "shop v1\n"); err != nil {
		t.Fatal(err)
	}
	if code, body, _, err := get(fmt.Sprintf("http://%s:%d/", ip1, port)); err != nil || code != 200 || body != "shop v1\n" {
		t.Fatalf("web-1 serves %d %q %v", code, body, err)
	}
	if ds, _, _ := labtest.Godo(t, l).Droplets.List(cx, nil); len(ds) != 0 {
		t.Fatalf("the DigitalOcean API lists a Hetzner server: %+v", ds)
	}

	// A live snapshot: the server keeps serving while it is taken.
	img := must(c.Server.CreateImage(cx, web1, &hcloud.ServerCreateImageOpts{Type: hcloud.ImageTypeSnapshot,
		Description: hcloud.Ptr("web-1 v1"), Labels: map[string]string{"app": "shop"}})).get(t)
	if img.Image.Status != hcloud.ImageStatusCreating {
		t.Fatalf("image while created: %s", img.Image.Status)
	}
	if code, _ := servedBy(t, fmt.Sprintf("http://%s:%d/", ip1, port)); code != 200 {
		t.Fatalf("web-1 during its snapshot: %d", code)
	}
	if _, _, err := c.Server.Poweroff(cx, web1); !hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		t.Fatalf("power off during a snapshot: %v", err)
	}
	wait(t, c, img.Action)
	snaps := all(c.Image.AllWithOpts(cx, hcloud.ImageListOpts{Type: []hcloud.ImageType{hcloud.ImageTypeSnapshot}, ListOpts: hcloud.ListOpts{LabelSelector: "app=shop"}})).get(t)
	if len(snaps) != 1 || snaps[0].ID != img.Image.ID || snaps[0].Status != hcloud.ImageStatusAvailable || snaps[0].CreatedFrom.ID != web1.ID {
		t.Fatalf("snapshots: %+v", snaps)
	}
	if sys := must(c.Image.GetByNameAndArchitecture(cx, "debian-12", hcloud.ArchitectureX86)).get(t); sys == nil || sys.Type != hcloud.ImageTypeSystem {
		t.Fatalf("debian-12: %+v", sys)
	}

	// A bigger server from the snapshot: the same site, its own name.
	res2 := must(c.Server.Create(cx, hcloud.ServerCreateOpts{Name: "web-2", ServerType: &hcloud.ServerType{Name: "cx32"},
		Image: &hcloud.Image{ID: img.Image.ID}, Location: &hcloud.Location{Name: "fsn1"}, SSHKeys: []*hcloud.SSHKey{key},
		Labels: map[string]string{"role": "web", "gen": "2"}})).get(t)
	wait(t, c, res2.Action)
	web2 := must(c.Server.GetByID(cx, res2.Server.ID)).get(t)
	ip2 := web2.PublicNet.IPv4.IP.String()
	if code, body, h, err := get(fmt.Sprintf("http://%s:%d/", ip2, port)); err != nil || code != 200 || body != "shop v1\n" || h.Get("X-Served-By") != "web-2" {
		t.Fatalf("web-2 serves %d %q by %q %v", code, body, h.Get("X-Served-By"), err)
	}
	if _, _, err := c.Server.Create(cx, hcloud.ServerCreateOpts{Name: "web-2", ServerType: &hcloud.ServerType{Name: "cx22"}, Image: &hcloud.Image{Name: "debian-12"}}); !hcloud.IsError(err, hcloud.ErrorCodeUniquenessError) {
		t.Fatalf("a second web-2: %v", err)
	}

	// Label selectors, pagination, update.
	for _, tc := range []struct {
		desc, selector string
		want           []int64
	}{
		{"equality", "role=web", []int64{web1.ID, web2.ID}},
		{"and", "role=web,gen=2", []int64{web2.ID}},
		{"absent", "role=web,!gen", []int64{web1.ID}},
		{"inequality", "gen!=2", []int64{web1.ID}},
		{"present", "gen", []int64{web2.ID}},
	} {
		got := all(c.Server.AllWithOpts(cx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: tc.selector, PerPage: 1}})).get(t)
		var ids []int64
		for _, s := range got {
			ids = append(ids, s.ID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("%s: %q lists %v, want %v", tc.desc, tc.selector, ids, tc.want)
		}
	}
	_, resp, err := c.Server.List(cx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{PerPage: 1, Page: 1}})
	if err != nil || resp.Meta.Pagination == nil || resp.Meta.Pagination.NextPage != 2 || resp.Meta.Pagination.TotalEntries != 2 {
		t.Fatalf("pagination: %+v %v", resp.Meta.Pagination, err)
	}
	if resp.Meta.Ratelimit.Limit != 3600 || resp.Meta.Ratelimit.Reset.IsZero() {
		t.Fatalf("rate limit headers: %+v", resp.Meta.Ratelimit)
	}
	// Renaming a server leaves its guest's hostname (X-Served-By) alone, as on Hetzner.
	web2 = must(c.Server.Update(cx, web2, hcloud.ServerUpdateOpts{Name: "web-2b", Labels: map[string]string{"role": "web", "gen": "3"}})).get(t)
	if web2.Name != "web-2b" || web2.Labels["gen"] != "3" {
		t.Fatalf("updated: %s %v", web2.Name, web2.Labels)
	}

	// A type change needs the server off.
	_, _, err = c.Server.ChangeType(cx, web1, hcloud.ServerChangeTypeOpts{ServerType: &hcloud.ServerType{Name: "cx42"}, UpgradeDisk: true})
	isCode(t, err, hcloud.ErrorCodeServerNotStopped)
	wait(t, c, must(c.Server.Poweroff(cx, web1)).get(t))
	if _, _, _, err := get(fmt.Sprintf("http://%s:%d/", ip1, port)); err == nil {
		t.Fatal("a powered-off server answers")
	}
	wait(t, c, must(c.Server.ChangeType(cx, web1, hcloud.ServerChangeTypeOpts{ServerType: &hcloud.ServerType{Name: "cx42"}, UpgradeDisk: true})).get(t))
	_, _, err = c.Server.ChangeType(cx, web1, hcloud.ServerChangeTypeOpts{ServerType: &hcloud.ServerType{Name: "cx22"}})
	isCode(t, err, hcloud.ErrorCodeInvalidServerType) // its disk is 160 GB now
	wait(t, c, must(c.Server.Poweron(cx, web1)).get(t))
	web1 = must(c.Server.GetByID(cx, web1.ID)).get(t)
	if web1.Status != hcloud.ServerStatusRunning || web1.ServerType.Name != "cx42" || web1.PrimaryDiskSize != 160 {
		t.Fatalf("after the type change: %s %s %d", web1.Status, web1.ServerType.Name, web1.PrimaryDiskSize)
	}
	if got := sshRun(t, net.JoinHostPort(ip1, strconv.Itoa(l.SSHPort())), signer, "nproc"); got != "8\n" {
		t.Fatalf("nproc on cx42: %q", got)
	}
	actions := all(c.Server.Action.AllFor(cx, web1, hcloud.ActionListOpts{})).get(t)
	var commands []string
	for _, a := range actions {
		commands = append(commands, a.Command)
	}
	if want := []string{"start_server", "change_server_type", "stop_server", "create_image", "create_server"}; !slices.Equal(commands, want) {
		t.Fatalf("web-1's actions: %v, want %v", commands, want)
	}

	// A load balancer: new targets are unknown, then healthy, and only
	// healthy targets get traffic.
	lbRes := must(c.LoadBalancer.Create(cx, hcloud.LoadBalancerCreateOpts{Name: "shop-lb", LoadBalancerType: &hcloud.LoadBalancerType{Name: "lb11"},
		Location: &hcloud.Location{Name: "fsn1"}, Services: []hcloud.LoadBalancerCreateOptsService{{Protocol: hcloud.LoadBalancerServiceProtocolHTTP,
			ListenPort: hcloud.Ptr(port), DestinationPort: hcloud.Ptr(port), Proxyprotocol: hcloud.Ptr(false),
			HealthCheck: &hcloud.LoadBalancerCreateOptsServiceHealthCheck{Protocol: hcloud.LoadBalancerServiceProtocolHTTP, Port: hcloud.Ptr(port),
				Interval: hcloud.Ptr(15 * time.Second), Timeout: hcloud.Ptr(10 * time.Second), Retries: hcloud.Ptr(2),
				HTTP: &hcloud.LoadBalancerCreateOptsServiceHealthCheckHTTP{Domain: hcloud.Ptr(""), Path: hcloud.Ptr("/health"), StatusCodes: []string{"2??"}}}}},
		Targets: []hcloud.LoadBalancerCreateOptsTarget{{Type: hcloud.LoadBalancerTargetTypeServer, Server: hcloud.LoadBalancerCreateOptsTargetServer{Server: web1}}}})).get(t)
	wait(t, c, lbRes.Action)
	lbURL := fmt.Sprintf("http://%s:%d/", lbRes.LoadBalancer.PublicNet.IPv4.IP, port)
	lbHealth := func(id int64) string {
		return healthOf(must(c.LoadBalancer.GetByID(cx, lbRes.LoadBalancer.ID)).get(t), id)
	}
	waitFor(t, "web-1 healthy", func() bool { return lbHealth(web1.ID) == "healthy" })
	if _, by := servedBy(t, lbURL); by != "web-1" {
		t.Fatalf("the load balancer's answer came from %q", by)
	}
	wait(t, c, must(c.LoadBalancer.AddServerTarget(cx, lbRes.LoadBalancer, hcloud.LoadBalancerAddServerTargetOpts{Server: web2})).get(t))
	if h := lbHealth(web2.ID); h != "unknown" && h != "healthy" {
		t.Fatalf("a new target is %s", h)
	}
	waitFor(t, "web-2b healthy", func() bool { return lbHealth(web2.ID) == "healthy" })
	wait(t, c, must(c.LoadBalancer.AddLabelSelectorTarget(cx, lbRes.LoadBalancer, hcloud.LoadBalancerAddLabelSelectorTargetOpts{Selector: "gen=3"})).get(t))
	lb := must(c.LoadBalancer.GetByID(cx, lbRes.LoadBalancer.ID)).get(t)
	if tg := lb.Targets[2]; tg.Type != hcloud.LoadBalancerTargetTypeLabelSelector || len(tg.Targets) != 1 || tg.Targets[0].Server.Server.ID != web2.ID {
		t.Fatalf("label selector target: %+v", tg)
	}
	wait(t, c, must(c.LoadBalancer.RemoveLabelSelectorTarget(cx, lb, "gen=3")).get(t))

	// Removing a target under load: no request fails.
	ld := startLoad(lbURL, 8)
	time.Sleep(200 * time.Millisecond)
	wait(t, c, must(c.LoadBalancer.RemoveServerTarget(cx, lb, web1)).get(t))
	time.Sleep(200 * time.Millisecond)
	if ok, failed := ld.end(); failed != 0 || ok == 0 {
		t.Fatalf("while web-1 was removed: %d ok, %d failed", ok, failed)
	}
	for range 10 {
		if _, by := servedBy(t, lbURL); by != "web-2" {
			t.Fatalf("a removed target got a request (%q)", by)
		}
	}
	// A target whose health check fails gets nothing.
	if err := l.BreakDroplet(int(web2.ID), lab.FaultServe500); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "web-2b unhealthy", func() bool { return lbHealth(web2.ID) == "unhealthy" })
	if code, by := servedBy(t, lbURL); code != http.StatusServiceUnavailable || by != "" {
		t.Fatalf("with no healthy target: %d from %q", code, by)
	}
	if got := l.HetznerHealthy(lb.ID, port); len(got) != 0 {
		t.Fatalf("healthy targets: %v", got)
	}

	// A floating IP forwards to the server it is assigned to.
	fip := must(c.FloatingIP.Create(cx, hcloud.FloatingIPCreateOpts{Type: hcloud.FloatingIPTypeIPv4, HomeLocation: &hcloud.Location{Name: "fsn1"},
		Description: hcloud.Ptr("shop")})).get(t).FloatingIP
	fipURL := fmt.Sprintf("http://%s:%d/", fip.IP, port)
	if _, _, _, err := get(fipURL); err == nil {
		t.Fatal("an unassigned floating IP answers")
	}
	wait(t, c, must(c.FloatingIP.Assign(cx, fip, web1)).get(t))
	if code, by := servedBy(t, fipURL); code != 200 || by != "web-1" {
		t.Fatalf("through the floating IP: %d from %q", code, by)
	}
	wait(t, c, must(c.FloatingIP.Assign(cx, fip, web2)).get(t))
	if _, by := servedBy(t, fipURL); by != "web-2" {
		t.Fatalf("through the reassigned floating IP: %q", by)
	}
	if s := must(c.Server.GetByID(cx, web2.ID)).get(t); len(s.PublicNet.FloatingIPs) != 1 {
		t.Fatalf("web-2b's floating IPs: %+v", s.PublicNet.FloatingIPs)
	}

	// Primary IPs move only between servers that are off; the address
	// moves with it.
	spare := must(c.PrimaryIP.Create(cx, hcloud.PrimaryIPCreateOpts{Name: "spare", Type: hcloud.PrimaryIPTypeIPv4, AssigneeType: "server",
		Location: "fsn1", AutoDelete: hcloud.Ptr(false)})).get(t).PrimaryIP
	_, _, err = c.PrimaryIP.Assign(cx, hcloud.PrimaryIPAssignOpts{ID: spare.ID, AssigneeID: web1.ID, AssigneeType: "server"})
	isCode(t, err, hcloud.ErrorCodeServerNotStopped)
	_, _, err = c.PrimaryIP.Unassign(cx, web1.PublicNet.IPv4.ID)
	isCode(t, err, hcloud.ErrorCodeServerNotStopped)
	wait(t, c, must(c.Server.Shutdown(cx, web1)).get(t))
	_, _, err = c.PrimaryIP.Assign(cx, hcloud.PrimaryIPAssignOpts{ID: spare.ID, AssigneeID: web1.ID, AssigneeType: "server"})
	isCode(t, err, hcloud.ErrorCodeServerHasIPv4)
	wait(t, c, must(c.PrimaryIP.Unassign(cx, web1.PublicNet.IPv4.ID)).get(t))
	wait(t, c, must(c.PrimaryIP.Assign(cx, hcloud.PrimaryIPAssignOpts{ID: spare.ID, AssigneeID: web1.ID, AssigneeType: "server"})).get(t))
	wait(t, c, must(c.Server.Poweron(cx, web1)).get(t))
	if code, by := servedBy(t, fmt.Sprintf("http://%s:%d/", spare.IP, port)); code != 200 || by != "web-1" {
		t.Fatalf("through the moved primary IP: %d from %q", code, by)
	}
	if _, _, _, err := get(fmt.Sprintf("http://%s:%d/", ip1, port)); err == nil {
		t.Fatal("web-1's old primary IP still answers")
	}
	old := must(c.PrimaryIP.GetByID(cx, web1.PublicNet.IPv4.ID)).get(t)
	if old.AssigneeID != 0 {
		t.Fatalf("the unassigned primary IP: %+v", old)
	}
	_, err = c.PrimaryIP.Delete(cx, spare)
	isCode(t, err, "must_be_unassigned")

	// Zones are served by the lab's DNS server once their actions succeed.
	zr := must(c.Zone.Create(cx, hcloud.ZoneCreateOpts{Name: "shop.test", Mode: hcloud.ZoneModePrimary, TTL: hcloud.Ptr(3600), Labels: map[string]string{"app": "shop"}})).get(t)
	wait(t, c, zr.Action)
	if ns := zr.Zone.AuthoritativeNameservers.Assigned; len(ns) != 1 || ns[0] != "ns1.lab.vmswap.test." {
		t.Fatalf("assigned nameservers: %v", ns)
	}
	rr := must(c.Zone.CreateRRSet(cx, zr.Zone, hcloud.ZoneRRSetCreateOpts{Name: "www", Type: hcloud.ZoneRRSetTypeA, TTL: hcloud.Ptr(300),
		Records: []hcloud.ZoneRRSetRecord{{Value: ip2}}})).get(t)
	wait(t, c, rr.Action)
	dnsAddr := l.Endpoints().DNS
	if vals, ttl := lookup(t, dnsAddr, "www.shop.test"); !slices.Equal(vals, []string{ip2}) || ttl != 300 {
		t.Fatalf("www.shop.test A %v ttl %d", vals, ttl)
	}
	wait(t, c, must(c.Zone.SetRRSetRecords(cx, rr.RRSet, hcloud.ZoneRRSetSetRecordsOpts{Records: []hcloud.ZoneRRSetRecord{{Value: spare.IP.String()}, {Value: ip2}}})).get(t))
	wait(t, c, must(c.Zone.ChangeRRSetTTL(cx, rr.RRSet, hcloud.ZoneRRSetChangeTTLOpts{TTL: hcloud.Ptr(120)})).get(t))
	want := []string{spare.IP.String(), ip2}
	slices.Sort(want)
	if vals, ttl := lookup(t, dnsAddr, "www.shop.test"); !slices.Equal(vals, want) || ttl != 120 {
		t.Fatalf("after set_records and change_ttl: %v ttl %d", vals, ttl)
	}
	got := must(c.Zone.GetRRSetByNameAndType(cx, &hcloud.Zone{Name: "shop.test"}, "www", hcloud.ZoneRRSetTypeA)).get(t)
	if got == nil || got.ID != "www/A" || len(got.Records) != 2 || got.TTL == nil || *got.TTL != 120 {
		t.Fatalf("rrset: %+v", got)
	}
	if all := all(c.Zone.AllRRSets(cx, zr.Zone)).get(t); len(all) != 3 { // SOA, NS, www A
		t.Fatalf("rrsets: %d", len(all))
	}
	if z := must(c.Zone.Get(cx, "shop.test")).get(t); z == nil || z.ID != zr.Zone.ID || z.RecordCount != 4 {
		t.Fatalf("zone by name: %+v", z)
	}

	// Everything goes.
	wait(t, c, must(c.LoadBalancer.DeleteWithResult(cx, lb)).get(t).Action)
	if _, err := c.FloatingIP.Delete(cx, fip); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*hcloud.Server{web1, web2} {
		del := must(c.Server.DeleteWithResult(cx, s)).get(t)
		wait(t, c, del.Action)
	}
	for _, id := range []int64{spare.ID, old.ID} {
		if _, err := c.PrimaryIP.Delete(cx, &hcloud.PrimaryIP{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Image.Delete(cx, img.Image); err != nil {
		t.Fatal(err)
	}
	wait(t, c, must(c.Zone.Delete(cx, zr.Zone)).get(t).Action)
	if _, err := c.SSHKey.Delete(cx, key); err != nil {
		t.Fatal(err)
	}
	if inv := l.Inventory(); inv.Hetzner != nil {
		t.Fatalf("left behind: %+v", inv.Hetzner)
	}
	if vals, _ := lookup(t, dnsAddr, "www.shop.test"); len(vals) != 0 {
		t.Fatalf("a deleted zone is served: %v", vals)
	}
	if v := l.Violations(); len(v) != 0 {
		t.Fatalf("spec violations: %v", v)
	}
}

// TestHetznerErrors: errors, rate limits and faults in Hetzner's shape, as
// hcloud-go reads them.
func TestHetznerErrors(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	c := hcloudClient(l)
	cx := ctx(t)

	if s, _, err := c.Server.GetByID(cx, 424242); s != nil || err != nil {
		t.Fatalf("an unknown server: %v %v", s, err)
	}
	bad := hcloud.NewClient(hcloud.WithEndpoint(l.Endpoints().HetznerAPI), hcloud.WithToken("wrong"))
	_, _, err := bad.Server.List(cx, hcloud.ServerListOpts{})
	isCode(t, err, hcloud.ErrorCodeUnauthorized)
	_, _, err = c.Server.Create(cx, hcloud.ServerCreateOpts{Name: "x", ServerType: &hcloud.ServerType{Name: "cx99"}, Image: &hcloud.Image{Name: "ubuntu-24.04"}})
	isCode(t, err, hcloud.ErrorCodeInvalidInput)
	_, _, err = c.Server.List(cx, hcloud.ServerListOpts{ListOpts: hcloud.ListOpts{LabelSelector: "a in (b)"}})
	isCode(t, err, hcloud.ErrorCodeInvalidInput)

	// A rate limit: 429 rate_limit_exceeded with the RateLimit headers;
	// hcloud-go waits and retries.
	if err := l.Inject(lab.Fault{Kind: lab.FaultRateLimit, Operation: "list_servers"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Server.List(cx, hcloud.ServerListOpts{}); err != nil {
		t.Fatalf("after a retry: %v", err)
	}
	if n := l.OperationCounts()["list_servers"]; n != 4 { // unauthorized, invalid selector, 429, retry
		t.Fatalf("list_servers called %d times", n)
	}
	if err := l.Inject(lab.Fault{Kind: lab.FaultRateLimit, Operation: "list_servers", Count: 10}); err != nil {
		t.Fatal(err)
	}
	_, resp, err := c.Server.List(cx, hcloud.ServerListOpts{})
	isCode(t, err, hcloud.ErrorCodeRateLimitExceeded)
	if resp.StatusCode != 429 || resp.Header.Get("RateLimit-Remaining") != "0" || resp.Header.Get("RateLimit-Reset") == "" || resp.Header.Get("RateLimit-Limit") == "" {
		t.Fatalf("429 headers: %v", resp.Header)
	}
	if err := l.Inject(lab.Fault{Kind: lab.FaultHTTPError, Operation: "get_server_type"}); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.ServerType.GetByID(cx, 104)
	isCode(t, err, hcloud.ErrorCodeServerError)

	// An enforced budget: 3,600 an hour, here 2.
	l.SetHetznerRateLimit(2)
	for i := range 3 {
		_, resp, err := c.Location.List(cx, hcloud.LocationListOpts{})
		if i < 2 && (err != nil || resp.Meta.Ratelimit.Remaining != 1-i) {
			t.Fatalf("request %d: remaining %d, %v", i, resp.Meta.Ratelimit.Remaining, err)
		}
		if i == 2 && !hcloud.IsError(err, hcloud.ErrorCodeRateLimitExceeded) {
			t.Fatalf("past the budget: %v", err)
		}
	}
	l.SetHetznerRateLimit(0)

	// A failed action reports its error.
	if err := l.Inject(lab.Fault{Kind: lab.FaultActionErrored, Operation: "create_zone"}); err != nil {
		t.Fatal(err)
	}
	zr := must(c.Zone.Create(cx, hcloud.ZoneCreateOpts{Name: "broken.test", Mode: hcloud.ZoneModePrimary})).get(t)
	var ae hcloud.ActionError
	if err := c.Action.WaitFor(cx, zr.Action); !errors.As(err, &ae) || ae.Code != "action_failed" {
		t.Fatalf("a failed action: %v", err)
	}
}

// TestHetznerSeeder: the seeder's Hetzner helpers build a serving world, and
// a restarted lab brings it back.
func TestHetznerSeeder(t *testing.T) {
	dir := t.TempDir()
	l := labtest.Start(t, lab.Config{StateDir: dir})
	sd := l.Seeder()
	cx := ctx(t)
	port := l.HTTPPort()
	signer, pub := newKey(t)
	if _, err := sd.HetznerSSHKey(cx, "operator", pub); err != nil {
		t.Fatal(err)
	}
	id1, ip1, err := sd.HetznerServer(cx, "app-1", "cx22", map[string]string{"role": "app"}, map[string]string{"index.html": "hello\n"})
	if err != nil {
		t.Fatal(err)
	}
	id2, _, err := sd.HetznerServer(cx, "app-2", "cx22", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := sshRun(t, net.JoinHostPort(ip1, strconv.Itoa(l.SSHPort())), signer, "hostname"); got != "app-1\n" {
		t.Fatalf("hostname %q", got)
	}
	lbID, lbIP, err := sd.HetznerLoadBalancer(cx, "app-lb", []int64{id1, id2}, "/health")
	if err != nil {
		t.Fatal(err)
	}
	if got := l.HetznerHealthy(lbID, port); len(got) != 2 {
		t.Fatalf("healthy after seeding: %v", got)
	}
	_, fip, err := sd.HetznerFloatingIP(cx, id1)
	if err != nil {
		t.Fatal(err)
	}
	pid, pip, err := sd.HetznerPrimaryIP(cx, id1)
	if err != nil || pip != ip1 || pid == 0 {
		t.Fatalf("app-1's primary IP: %d %s %v", pid, pip, err)
	}
	if _, err := sd.HetznerZone(cx, "app.test", 600); err != nil {
		t.Fatal(err)
	}
	if err := sd.HetznerRecord(cx, "app.test", "www", "A", []string{lbIP}, 60); err != nil {
		t.Fatal(err)
	}
	if vals, ttl := lookup(t, l.Endpoints().DNS, "www.app.test"); !slices.Equal(vals, []string{lbIP}) || ttl != 60 {
		t.Fatalf("www.app.test: %v %d", vals, ttl)
	}
	if err := sd.HetznerRecord(cx, "app.test", "www", "A", []string{fip}, 0); err != nil {
		t.Fatal(err)
	}
	if vals, ttl := lookup(t, l.Endpoints().DNS, "www.app.test"); !slices.Equal(vals, []string{fip}) || ttl != 600 {
		t.Fatalf("www.app.test after a change: %v %d", vals, ttl)
	}
	check := func(l *lab.Lab) {
		t.Helper()
		if code, body, h, err := get(fmt.Sprintf("http://%s:%d/", fip, port)); err != nil || code != 200 || body != "hello\n" || h.Get("X-Served-By") != "app-1" {
			t.Fatalf("through the floating IP: %d %q %v", code, body, err)
		}
		seen := map[string]bool{}
		for range 10 {
			_, by := servedBy(t, fmt.Sprintf("http://%s:%d/", lbIP, port))
			seen[by] = true
		}
		if !seen["app-1"] || !seen["app-2"] || len(seen) != 2 {
			t.Fatalf("through the load balancer: %v", seen)
		}
	}
	check(l)
	inv := l.Inventory()
	if inv.Hetzner == nil || len(inv.Hetzner.Servers) != 2 || inv.Records["www.app.test A"] != fip || inv.Hetzner.FloatingIPs[fip] != int(id1) {
		t.Fatalf("inventory: %+v %v", inv.Hetzner, inv.Records)
	}
	l.Close()

	l2 := labtest.Start(t, lab.Config{StateDir: dir})
	check(l2)
	if vals, _ := lookup(t, l2.Endpoints().DNS, "www.app.test"); !slices.Equal(vals, []string{fip}) {
		t.Fatalf("www.app.test after a restart: %v", vals)
	}
	if !strings.HasSuffix(l2.Endpoints().HetznerAPI, "/hetzner/v1") {
		t.Fatalf("endpoint %s", l2.Endpoints().HetznerAPI)
	}
}

// TestHetznerRestart: a lab restarted on its state directory brings back
// its Hetzner world as it was: load balancers (server and label_selector
// targets) listening on their services' ports and health-checking their
// targets, which are healthy and get traffic, and which checks still make
// healthy when added after the restart; floating IPs forwarding to their
// server; servers serving; zones served by the DNS server.
func TestHetznerRestart(t *testing.T) {
	dir := t.TempDir()
	l := labtest.Start(t, lab.Config{StateDir: dir})
	sd := l.Seeder()
	cx := ctx(t)
	port := l.HTTPPort()
	_, pub := newKey(t)
	if _, err := sd.HetznerSSHKey(cx, "operator", pub); err != nil {
		t.Fatal(err)
	}
	ids, ips := map[string]int64{}, map[string]string{}
	for _, s := range []struct {
		name   string
		labels map[string]string
	}{{"app-1", map[string]string{"role": "app"}}, {"app-2", map[string]string{"role": "app"}}, {"app-3", nil}} {
		id, ip, err := sd.HetznerServer(cx, s.name, "cx22", s.labels, map[string]string{"index.html": s.name + "\n"})
		if err != nil {
			t.Fatal(err)
		}
		ids[s.name], ips[s.name] = id, ip
	}
	lbID, lbIP, err := sd.HetznerLoadBalancer(cx, "app-lb", []int64{ids["app-1"]}, "/health")
	if err != nil {
		t.Fatal(err)
	}
	c := hcloudClient(l)
	selRes := must(c.LoadBalancer.Create(cx, hcloud.LoadBalancerCreateOpts{Name: "sel-lb", LoadBalancerType: &hcloud.LoadBalancerType{Name: "lb11"},
		Location: &hcloud.Location{Name: "fsn1"}, Services: []hcloud.LoadBalancerCreateOptsService{{Protocol: hcloud.LoadBalancerServiceProtocolHTTP,
			ListenPort: hcloud.Ptr(port), DestinationPort: hcloud.Ptr(port), Proxyprotocol: hcloud.Ptr(false),
			HealthCheck: &hcloud.LoadBalancerCreateOptsServiceHealthCheck{Protocol: hcloud.LoadBalancerServiceProtocolHTTP, Port: hcloud.Ptr(port),
				Interval: hcloud.Ptr(15 * time.Second), Timeout: hcloud.Ptr(10 * time.Second), Retries: hcloud.Ptr(2),
				HTTP: &hcloud.LoadBalancerCreateOptsServiceHealthCheckHTTP{Domain: hcloud.Ptr(""), Path: hcloud.Ptr("/health"), StatusCodes: []string{"2??"}}}}},
		Targets: []hcloud.LoadBalancerCreateOptsTarget{{Type: hcloud.LoadBalancerTargetTypeLabelSelector,
			LabelSelector: hcloud.LoadBalancerCreateOptsTargetLabelSelector{Selector: "role=app"}}}})).get(t)
	wait(t, c, selRes.Action)
	selID, selIP := selRes.LoadBalancer.ID, selRes.LoadBalancer.PublicNet.IPv4.IP.String()
	_, fip, err := sd.HetznerFloatingIP(cx, ids["app-2"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sd.HetznerZone(cx, "app.test", 600); err != nil {
		t.Fatal(err)
	}
	if err := sd.HetznerRecord(cx, "app.test", "www", "A", []string{lbIP}, 60); err != nil {
		t.Fatal(err)
	}

	// health is a target's status per the API (GET load_balancers/{id}:
	// targets[].health_status, a label selector's targets included).
	health := func(c *hcloud.Client, lbID, serverID int64) string {
		return healthOf(must(c.LoadBalancer.GetByID(cx, lbID)).get(t), serverID)
	}
	// reaches waits until GETs through a load balancer have reached each
	// of want (by X-Served-By, each serving its own name) and no other.
	reaches := func(ip string, want ...string) {
		t.Helper()
		seen := map[string]bool{}
		waitFor(t, fmt.Sprintf("%s reaching %v", ip, want), func() bool {
			code, body, h, err := get(fmt.Sprintf("http://%s:%d/", ip, port))
			if err != nil || code != 200 {
				return false
			}
			by := h.Get("X-Served-By")
			if !slices.Contains(want, by) || body != by+"\n" {
				t.Fatalf("through %s: %d %q from %q, want one of %v", ip, code, body, by, want)
			}
			seen[by] = true
			return len(seen) == len(want)
		})
	}
	check := func(l *lab.Lab, what string) {
		t.Helper()
		c := hcloudClient(l)
		for _, tc := range []struct {
			lb      int64
			servers []string
		}{{lbID, []string{"app-1"}}, {selID, []string{"app-1", "app-2"}}} {
			for _, s := range tc.servers {
				waitFor(t, fmt.Sprintf("%s: %s healthy on load balancer %d", what, s, tc.lb), func() bool { return health(c, tc.lb, ids[s]) == "healthy" })
			}
			if got := l.HetznerHealthy(tc.lb, port); len(got) != len(tc.servers) {
				t.Fatalf("%s: load balancer %d routes to %v", what, tc.lb, got)
			}
		}
		reaches(lbIP, "app-1")
		reaches(selIP, "app-1", "app-2")
		for name, ip := range ips {
			if code, body, _, err := get(fmt.Sprintf("http://%s:%d/", ip, port)); err != nil || code != 200 || body != name+"\n" {
				t.Fatalf("%s: %s serves %d %q %v", what, name, code, body, err)
			}
		}
		if code, body, _, err := get(fmt.Sprintf("http://%s:%d/", fip, port)); err != nil || code != 200 || body != "app-2\n" {
			t.Fatalf("%s: through the floating IP: %d %q %v", what, code, body, err)
		}
		if vals, ttl := lookup(t, l.Endpoints().DNS, "www.app.test"); !slices.Equal(vals, []string{lbIP}) || ttl != 60 {
			t.Fatalf("%s: www.app.test: %v %d", what, vals, ttl)
		}
	}
	check(l, "before the restart")
	l.Close()

	l2 := labtest.Start(t, lab.Config{StateDir: dir})
	check(l2, "after the restart")

	// The restored load balancers still health-check: a server target added
	// now, and a server a label selector picks now, become healthy and get
	// traffic.
	c2 := hcloudClient(l2)
	app3 := &hcloud.Server{ID: ids["app-3"]}
	wait(t, c2, must(c2.LoadBalancer.AddServerTarget(cx, &hcloud.LoadBalancer{ID: lbID}, hcloud.LoadBalancerAddServerTargetOpts{Server: app3})).get(t))
	must(c2.Server.Update(cx, app3, hcloud.ServerUpdateOpts{Labels: map[string]string{"role": "app"}})).get(t)
	for _, lb := range []int64{lbID, selID} {
		waitFor(t, fmt.Sprintf("app-3 healthy on load balancer %d after the restart", lb), func() bool { return health(c2, lb, ids["app-3"]) == "healthy" })
	}
	reaches(lbIP, "app-1", "app-3")
	reaches(selIP, "app-1", "app-2", "app-3")
}

// TestHetznerVolumes: volumes as hcloud-go sees them on Hetzner: attached
// to one server of their location at a time, listed on the server, kept
// when the server is deleted, and not deleted while attached.
func TestHetznerVolumes(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	c := hcloudClient(l)
	cx := ctx(t)
	newServer := func(name, loc string, vols ...*hcloud.Volume) *hcloud.Server {
		res := must(c.Server.Create(cx, hcloud.ServerCreateOpts{Name: name, ServerType: &hcloud.ServerType{Name: "cx22"},
			Image: &hcloud.Image{Name: "ubuntu-24.04"}, Location: &hcloud.Location{Name: loc}, Volumes: vols})).get(t)
		wait(t, c, res.Action)
		return must(c.Server.GetByID(cx, res.Server.ID)).get(t)
	}
	web1, web2, far := newServer("web-1", "fsn1"), newServer("web-2", "fsn1"), newServer("far", "hel1")

	vr := must(c.Volume.Create(cx, hcloud.VolumeCreateOpts{Name: "data", Size: 20, Server: web1, Format: hcloud.Ptr("ext4"), Automount: hcloud.Ptr(true)})).get(t)
	wait(t, c, vr.Action)
	for _, a := range vr.NextActions {
		wait(t, c, a)
	}
	vol := must(c.Volume.GetByID(cx, vr.Volume.ID)).get(t)
	if vol.Server == nil || vol.Server.ID != web1.ID || vol.Location.Name != "fsn1" || vol.Size != 20 || vol.LinuxDevice == "" {
		t.Fatalf("a volume made for web-1: %+v", vol)
	}
	if s := must(c.Server.GetByID(cx, web1.ID)).get(t); len(s.Volumes) != 1 || s.Volumes[0].ID != vol.ID {
		t.Fatalf("web-1's volumes: %+v", s.Volumes)
	}
	if _, _, err := c.Volume.Attach(cx, vol, web2); !hcloud.IsError(err, hcloud.ErrorCodeVolumeAlreadyAttached) {
		t.Fatalf("attach a volume attached elsewhere: %v", err)
	}
	if _, err := c.Volume.Delete(cx, vol); !hcloud.IsError(err, hcloud.ErrorCodeLocked) {
		t.Fatalf("delete an attached volume: %v", err)
	}
	if _, _, err := c.Server.Create(cx, hcloud.ServerCreateOpts{Name: "web-3", ServerType: &hcloud.ServerType{Name: "cx22"},
		Image: &hcloud.Image{Name: "ubuntu-24.04"}, Volumes: []*hcloud.Volume{vol}}); !hcloud.IsError(err, hcloud.ErrorCodeVolumeAlreadyAttached) {
		t.Fatalf("a server made with an attached volume: %v", err)
	}
	wait(t, c, must(c.Volume.Detach(cx, vol)).get(t))
	if _, _, err := c.Volume.Attach(cx, vol, far); err == nil {
		t.Fatal("a volume in fsn1 attached to a server in hel1")
	}
	wait(t, c, must(c.Volume.Attach(cx, vol, web2)).get(t))
	if s := must(c.Server.GetByID(cx, web2.ID)).get(t); len(s.Volumes) != 1 {
		t.Fatalf("web-2's volumes after the attach: %+v", s.Volumes)
	}

	// Deleting the server detaches the volume, which stays.
	wait(t, c, must(c.Server.DeleteWithResult(cx, web2)).get(t).Action)
	vol = must(c.Volume.GetByID(cx, vol.ID)).get(t)
	if vol == nil || vol.Server != nil {
		t.Fatalf("the volume after its server was deleted: %+v", vol)
	}
	web4 := newServer("web-4", "fsn1", vol)
	if len(web4.Volumes) != 1 || web4.Volumes[0].ID != vol.ID {
		t.Fatalf("a server made with the volume: %+v", web4.Volumes)
	}
	if vols := all(c.Volume.All(cx)).get(t); len(vols) != 1 {
		t.Fatalf("volumes: %+v", vols)
	}
}
