package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/vmswap/vmswap/lab"
	"github.com/vmswap/vmswap/plans"
	"github.com/vmswap/vmswap/plans/registry"
	"github.com/vmswap/vmswap/plans/runner"
	"github.com/vmswap/vmswap/verify"
)

// demoKey writes a new SSH key pair for the demo's servers into dir and
// returns the private key's file and the public key's authorized_keys line.
func demoKey(dir string) (file, authorized string, err error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", "", err
	}
	blk, err := ssh.MarshalPrivateKey(priv, "vmswap demo")
	if err != nil {
		return "", "", err
	}
	file = filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(file, pem.EncodeToMemory(blk), 0o600); err != nil {
		return "", "", err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return "", "", err
	}
	return file, string(ssh.MarshalAuthorizedKey(signer.PublicKey())), nil
}

// demoHetznerWorld builds the Hetzner demo on the lab's Hetzner API: web-1
// behind a load balancer, web-2 behind www.demo.test in a Hetzner DNS
// zone, web-3 behind a floating IP, all cx22 serving the demo shop; and
// writes a plan upgrading the three to cx32, one per cutover.
func demoHetznerWorld(ctx context.Context, l *lab.Lab, dir string, pr *printer) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	keyFile, pub, err := demoKey(dir)
	if err != nil {
		return "", err
	}
	sd := l.Seeder()
	if _, err := sd.HetznerSSHKey(ctx, "demo", pub); err != nil {
		return "", err
	}
	pr.progress("lab: creating Hetzner servers web-1, web-2 and web-3 (cx22) serving the demo shop, a load balancer, www.demo.test and a floating IP")
	labels := map[string]string{"app": "shop"}
	id1, _, err := sd.HetznerServer(ctx, "web-1", "cx22", labels, demoSite)
	if err != nil {
		return "", err
	}
	_, ip2, err := sd.HetznerServer(ctx, "web-2", "cx22", labels, demoSite)
	if err != nil {
		return "", err
	}
	id3, _, err := sd.HetznerServer(ctx, "web-3", "cx22", labels, demoSite)
	if err != nil {
		return "", err
	}
	lbID, lbIP, err := sd.HetznerLoadBalancer(ctx, "shop-lb", []int64{id1}, "/health")
	if err != nil {
		return "", err
	}
	if _, err := sd.HetznerZone(ctx, "demo.test", 60); err != nil {
		return "", err
	}
	if err := sd.HetznerRecord(ctx, "demo.test", "www", "A", []string{ip2}, 60); err != nil {
		return "", err
	}
	_, fip, err := sd.HetznerFloatingIP(ctx, id3)
	if err != nil {
		return "", err
	}
	ep := l.Endpoints()
	port := l.HTTPPort()
	sshCfg := &plans.SSH{User: "root", Key: keyFile, Port: l.SSHPort(), KnownHosts: verify.HostKeyAcceptNew, KnownHostsFile: filepath.Join(dir, "known_hosts")}
	th := func(s string) *verify.Threshold { t, _ := verify.ParseThreshold(s); return &t }
	v := plans.Verify{SSH: sshCfg, Memory: th(">= 7GiB"), Disk: th(">= 70GB"), CPUs: th(">= 4"),
		HTTP:    []verify.HTTPCheck{{URL: fmt.Sprintf("http://www.demo.test:%d/health", port), Status: 200, BodyContains: "ok"}},
		Compare: []string{"/", "/about.html"}}
	carry := &plans.Carry{Paths: []string{"/var/www/html/uploads", "/var/lib/app/sessions"}}
	retire := plans.Retire{Action: "power_off", KeepFor: plans.Duration(24 * time.Hour), ShutdownTimeout: plans.Duration(10 * time.Second)}
	swap := func(name, server string, c plans.Cutover, pb *plans.Probe) plans.Swap {
		return plans.Swap{Name: name, Source: plans.Source{Provider: "hetzner", Server: server}, Target: plans.Target{Size: "cx32"},
			Verify: v, Cutover: c, Probe: pb, Carry: carry, Observe: plans.Duration(3 * time.Second), Retire: retire}
	}
	p := &plans.Plan{
		Version:   plans.Version,
		ID:        "hzdemo",
		Providers: map[string]plans.Provider{"hetzner": {Type: "hetzner", Endpoint: ep.HetznerAPI, Nameserver: ep.DNS}},
		Swaps: []plans.Swap{
			// No identify header: Hetzner reports each target's health.
			swap("web-1 via load balancer", "web-1",
				plans.Cutover{LoadBalancer: &plans.LBCutover{Provider: "hetzner", ID: strconv.FormatInt(lbID, 10), Drain: plans.Duration(time.Second)}},
				&plans.Probe{URL: fmt.Sprintf("http://%s:%d/", lbIP, port), Rate: 200, Writes: true}),
			swap("web-2 via DNS", "web-2",
				plans.Cutover{DNS: &plans.DNSCutover{Provider: "hetzner", Record: "www.demo.test", Grace: plans.Duration(2 * time.Second)}},
				&plans.Probe{URL: fmt.Sprintf("http://www.demo.test:%d/", port), Rate: 200, Resolver: ep.DNS, Writes: true}),
			swap("web-3 via floating IP", "web-3",
				plans.Cutover{ReservedIP: &plans.IPCutover{Provider: "hetzner", IP: fip, Drain: plans.Duration(time.Second)}},
				&plans.Probe{URL: fmt.Sprintf("http://%s:%d/", fip, port), Rate: 200, Writes: true}),
		},
	}
	if err := runner.ObserveWorld(ctx, p, registry.BuildOptions{Getenv: demoGetenv(ep)}); err != nil {
		return "", err
	}
	b, err := encodePlan(p)
	if err != nil {
		return "", err
	}
	planFile := filepath.Join(dir, "demo-hetzner.yaml")
	return planFile, os.WriteFile(planFile, b, 0o644)
}

// demoGetenv is the demo's environment: the lab's token for every
// provider's variable.
func demoGetenv(ep lab.Endpoints) func(string) string {
	return func(k string) string {
		switch k {
		case "DIGITALOCEAN_TOKEN", "HCLOUD_TOKEN":
			return ep.Token
		}
		return ""
	}
}
