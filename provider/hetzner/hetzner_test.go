package hetzner_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/lab/labtest"
	"github.com/vmswap/vmswap/provider"
	"github.com/vmswap/vmswap/provider/hetzner"
)

func TestLabelsRoundTrip(t *testing.T) {
	for _, tag := range []string{"vmswap:plan1", "vmswap-claim:abc123", "vmswap-launch:abc123-0", "vmswap-keep-until:20261202T120000Z", "role=web", "web"} {
		k, v := hetzner.Label(tag)
		if got := hetzner.Tag(k, v); got != tag {
			t.Errorf("%s -> %s=%s -> %s", tag, k, v, got)
		}
	}
	if k, v := hetzner.Label("vmswap:plan1"); k != "vmswap" || v != "plan1" {
		t.Errorf("the plan's tag is the label %s=%s, want vmswap=plan1", k, v)
	}
	if a, _ := hetzner.Label("vmswap-claim:run-a"); a == "vmswap-claim" {
		t.Error("two runs' claims would share one label")
	}
}

// TestLifecycle drives every compute call a swap makes against the lab's
// Hetzner API: snapshot a running server, launch a bigger one from it
// (twice: the second finds the first), label, rename, power off and on,
// find by tag, move a floating IP, delete.
func TestLifecycle(t *testing.T) {
	l := labtest.Start(t, lab.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ep := l.Endpoints()
	sd := l.Seeder()
	srcID, srcIP, err := sd.HetznerServer(ctx, "web-1", "cx22", map[string]string{"role": "web"}, map[string]string{"index.html": "hello"})
	if err != nil {
		t.Fatal(err)
	}
	_, fip, err := sd.HetznerFloatingIP(ctx, srcID)
	if err != nil {
		t.Fatal(err)
	}
	var progress []string
	d, err := hetzner.New(hetzner.Config{Token: ep.Token, BaseURL: ep.HetznerAPI, PollInterval: 50 * time.Millisecond,
		Progress: func(f string, a ...any) { progress = append(progress, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.GetServer(ctx, "nope"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("missing server: %v", err)
	}
	src, err := d.GetServer(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if src.ID != strconv.FormatInt(srcID, 10) || src.PublicIP != srcIP || src.Size != "cx22" || src.Status != provider.StatusRunning || !slices.Contains(src.Tags, "role=web") || src.MemoryMB != 4096 {
		t.Fatalf("source %+v", src)
	}
	// A server's primary IP named as the cutover's IP says why it cannot be.
	if _, err := d.AssignedTo(ctx, srcIP); !errors.Is(err, provider.ErrNotFound) || !strings.Contains(err.Error(), "is a primary IP") {
		t.Fatalf("the source's primary IP as a cutover: %v", err)
	}
	size, err := d.GetSize(ctx, "cx32")
	if err != nil || size.VCPUs != 4 || size.MemoryMB != 8192 || size.Price == nil || size.Price.Currency == "" {
		t.Fatalf("size %+v %v", size, err)
	}
	if _, err := d.GetSize(ctx, "cx99"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("bad size: %v", err)
	}
	var op string
	img, err := d.Snapshot(ctx, src, provider.SnapshotSpec{Name: "vmswap-web-1-20261202-121914-plan1", Started: func(o string) { op = o }})
	if err != nil || img == nil || op == "" {
		t.Fatalf("snapshot %+v %v (op %q)", img, err, op)
	}
	again, err := d.Snapshot(ctx, src, provider.SnapshotSpec{Name: "vmswap-web-1-20261202-121914-plan1"})
	if err != nil || again.ID != img.ID {
		t.Fatalf("a repeated snapshot made another image: %+v %v", again, err)
	}
	spec := provider.LaunchSpec{Source: src, Image: img, Size: "cx32", Name: "web-1-new", Token: "run1-0", Tags: []string{"vmswap:plan1"}}
	s1, err := d.Launch(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := d.Launch(ctx, spec)
	if err != nil || s2.ID != s1.ID {
		t.Fatalf("a repeated launch made a second server: %+v %v", s2, err)
	}
	nw, err := d.WaitRunning(ctx, s1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if nw.Size != "cx32" || nw.Region != src.Region || !slices.Contains(nw.Tags, "role=web") || !slices.Contains(nw.Tags, "vmswap:plan1") || nw.PublicIP == "" || nw.PublicIP == srcIP {
		t.Fatalf("launched %+v", nw)
	}
	body := func(ip string) string {
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/", ip, l.HTTPPort()))
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := body(nw.PublicIP); got != "hello" {
		t.Fatalf("the new server serves %q, not the snapshot's site", got)
	}
	servers, images, err := d.FindTagged(ctx, "vmswap:plan1")
	if err != nil || len(servers) != 1 || servers[0].ID != nw.ID || len(images) != 1 || images[0].ID != img.ID {
		t.Fatalf("tagged: %d servers, %d images, %v", len(servers), len(images), err)
	}
	// Claims of two runs are two labels.
	for _, run := range []string{"vmswap-claim:a", "vmswap-claim:b"} {
		if err := d.TagServer(ctx, src.ID, run); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.UntagServer(ctx, src.ID, "vmswap-claim:a"); err != nil {
		t.Fatal(err)
	}
	src, _ = d.GetServer(ctx, src.ID)
	if slices.Contains(src.Tags, "vmswap-claim:a") || !slices.Contains(src.Tags, "vmswap-claim:b") {
		t.Fatalf("claims: %v", src.Tags)
	}
	if err := d.RenameServer(ctx, nw.ID, "web-1b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.GetServer(ctx, nw.ID); got.Name != "web-1b" {
		t.Fatalf("renamed: %+v", got)
	}
	// The floating IP moves to the new server and serves from it.
	if cur, err := d.AssignedTo(ctx, fip); err != nil || cur != src.ID {
		t.Fatalf("floating IP on %q, %v", cur, err)
	}
	eps, err := d.Entrypoints(ctx, src)
	if err != nil || len(eps) != 1 || eps[0].ID != fip {
		t.Fatalf("entrypoints %+v %v", eps, err)
	}
	if err := d.AssignIP(ctx, fip, nw.ID); err != nil {
		t.Fatal(err)
	}
	if cur, _ := d.AssignedTo(ctx, fip); cur != nw.ID {
		t.Fatalf("floating IP on %q after the move", cur)
	}
	if err := d.PowerOff(ctx, src.ID, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.GetServer(ctx, src.ID); got.Status != provider.StatusOff {
		t.Fatalf("powered off: %+v", got)
	}
	if err := d.PowerOff(ctx, src.ID, 5*time.Second); err != nil {
		t.Fatalf("a second power off: %v", err)
	}
	if err := d.PowerOn(ctx, src.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{nw.ID, nw.ID} {
		if err := d.DeleteServer(ctx, id); err != nil {
			t.Fatalf("delete (twice is fine): %v", err)
		}
	}
	for _, id := range []string{img.ID, img.ID} {
		if err := d.DeleteImage(ctx, id); err != nil {
			t.Fatalf("delete image (twice is fine): %v", err)
		}
	}
	if len(progress) == 0 {
		t.Error("no progress while waiting")
	}
}

func TestSelectorTag(t *testing.T) {
	for sel, want := range map[string]string{"role=web": "role=web", "role==web": "role=web", " role = web": "", "role": "role", "tier!=db": "", "!nope": "", "a=b,c=d": "", "env in (a,b)": "", "k8s.io/role=web": "k8s.io/role=web"} {
		got, ok := hetzner.SelectorTag(sel)
		if got != want || ok != (want != "") {
			t.Errorf("SelectorTag(%q) = %q, %v; want %q", sel, got, ok, want)
		}
	}
}

// TestPowerOffWhileAShutdownRuns: a stopped run sent a shutdown that is
// still running when the resumed run powers the server off: the server is
// locked, and the driver waits for that shutdown instead of failing.
func TestPowerOffWhileAShutdownRuns(t *testing.T) {
	d := lab.FastDurations()
	d.Shutdown = 2 * time.Second
	l := labtest.Start(t, lab.Config{Durations: d})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ep := l.Endpoints()
	id, _, err := l.Seeder().HetznerServer(ctx, "web-1", "cx22", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := hcloud.NewClient(hcloud.WithToken(ep.Token), hcloud.WithEndpoint(ep.HetznerAPI))
	if _, _, err := c.Server.Shutdown(ctx, &hcloud.Server{ID: id}); err != nil {
		t.Fatal(err)
	}
	drv, err := hetzner.New(hetzner.Config{Token: ep.Token, BaseURL: ep.HetznerAPI, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.PowerOff(ctx, strconv.FormatInt(id, 10), 10*time.Second); err != nil {
		t.Fatalf("power off while a shutdown runs: %v", err)
	}
	s, err := drv.GetServer(ctx, strconv.FormatInt(id, 10))
	if err != nil || s.Status != provider.StatusOff {
		t.Fatalf("after power off: %+v %v", s, err)
	}
}
