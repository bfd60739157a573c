package lab

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// DigitalOcean API v2 handlers: https://docs.digitalocean.com/reference/api/api-reference/
// Each runs with Lab.mu held.

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func (l *Lab) doAccount(c *call) (result, *apiError) {
	return result{200, map[string]any{"account": map[string]any{
		"droplet_limit": 25, "floating_ip_limit": 3, "email": "operator@lab.vmswap.test", "name": "vmswap lab",
		"uuid": "b6fr89dbf6d9156cace5f3c78dc9851d957381ef", "email_verified": true, "status": "active", "status_message": "",
	}}}, nil
}

func keyJSON(k *sshKey) map[string]any {
	return map[string]any{"id": k.ID, "fingerprint": k.Fingerprint, "public_key": k.PublicKey, "name": k.Name}
}

func (l *Lab) doKeysList(c *call) (result, *apiError) {
	lo, hi, links, meta := c.page(len(l.st.Keys))
	out := []any{}
	for _, k := range l.st.Keys[lo:hi] {
		out = append(out, keyJSON(k))
	}
	return result{200, map[string]any{"ssh_keys": out, "links": links, "meta": meta}}, nil
}

func (l *Lab) doKeysCreate(c *call) (result, *apiError) {
	var in struct {
		Name      string `json:"name"`
		PublicKey string `json:"public_key"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(in.PublicKey))
	if err != nil {
		return result{}, unprocessable("Key invalid type, we support 'ssh-rsa', 'ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', or 'ecdsa-sha2-nistp521'")
	}
	fp := strings.TrimPrefix(ssh.FingerprintLegacyMD5(pk), "MD5:")
	for _, k := range l.st.Keys {
		if k.Fingerprint == fp {
			return result{}, unprocessable("SSH Key is already in use on your account")
		}
	}
	k := &sshKey{ID: l.nextID(), Name: in.Name, PublicKey: strings.TrimSpace(in.PublicKey), Fingerprint: fp}
	l.st.Keys = append(l.st.Keys, k)
	return result{201, map[string]any{"ssh_key": keyJSON(k)}}, nil
}

func (l *Lab) findKey(ident string) *sshKey {
	for _, k := range l.st.Keys {
		if strconv.Itoa(k.ID) == ident || k.Fingerprint == ident {
			return k
		}
	}
	return nil
}

func (l *Lab) doKeysGet(c *call) (result, *apiError) {
	k := l.findKey(c.r.PathValue("ssh_key_identifier"))
	if k == nil {
		return result{}, notFound()
	}
	return result{200, map[string]any{"ssh_key": keyJSON(k)}}, nil
}

func sizeJSON(s Size) map[string]any {
	regions := []string{}
	for _, r := range Regions {
		regions = append(regions, r.Slug)
	}
	return map[string]any{
		"slug": s.Slug, "memory": s.MemoryMB, "vcpus": s.VCPUs, "disk": s.DiskGB, "transfer": s.TransferTB,
		"price_monthly": s.PriceMonthly, "price_hourly": float64(int(s.PriceMonthly/672*1e5)) / 1e5,
		"regions": regions, "available": true, "description": s.Description,
	}
}

func (l *Lab) doSizes(c *call) (result, *apiError) {
	lo, hi, links, meta := c.page(len(Sizes))
	out := []any{}
	for _, s := range Sizes[lo:hi] {
		out = append(out, sizeJSON(s))
	}
	return result{200, map[string]any{"sizes": out, "links": links, "meta": meta}}, nil
}

func regionJSON(slug string) map[string]any {
	name := slug
	for _, r := range Regions {
		if r.Slug == slug {
			name = r.Name
		}
	}
	sizes := []string{}
	for _, s := range Sizes {
		sizes = append(sizes, s.Slug)
	}
	return map[string]any{"name": name, "slug": slug, "features": []string{"backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"}, "available": true, "sizes": sizes}
}

func (l *Lab) doRegions(c *call) (result, *apiError) {
	lo, hi, links, meta := c.page(len(Regions))
	out := []any{}
	for _, r := range Regions[lo:hi] {
		out = append(out, regionJSON(r.Slug))
	}
	return result{200, map[string]any{"regions": out, "links": links, "meta": meta}}, nil
}

func (l *Lab) dropletJSON(d *droplet) map[string]any {
	sz, _ := sizeBySlug(d.Size)
	features := []string{"droplet_agent", "private_networking"}
	if d.Monitoring {
		features = append(features, "monitoring")
	}
	if d.IPv6 {
		features = append(features, "ipv6")
	}
	img := map[string]any{
		"id": d.ImageID, "name": d.ImageName, "distribution": d.ImageDist, "type": d.ImageType,
		"public": d.ImageType != "snapshot", "regions": []string{d.Region}, "created_at": ts(d.CreatedAt),
		"min_disk_size": 10, "size_gigabytes": 2.36, "description": "", "tags": []string{}, "status": "available", "error_message": "",
	}
	for _, di := range distroImages {
		if di.ID == d.ImageID {
			img["slug"] = di.Slug
		}
	}
	ip := net.ParseIP(d.IP).To4()
	v4 := []any{map[string]any{"ip_address": d.IP, "netmask": "255.255.255.0", "gateway": fmt.Sprintf("%d.%d.%d.1", ip[0], ip[1], ip[2]), "type": "public"}}
	v6 := []any{}
	if d.IPv6 {
		// From the documentation range: never dialed; vmswap moves AAAA
		// records to it and verifies over IPv6 only against ::1.
		v6 = append(v6, map[string]any{"ip_address": labIPv6(d.ID), "netmask": 64, "gateway": "2001:db8::1", "type": "public"})
	}
	tags := append([]string{}, d.Tags...)
	snaps := append([]int{}, d.Snapshots...)
	return map[string]any{
		"id": d.ID, "name": d.Name, "memory": sz.MemoryMB, "vcpus": sz.VCPUs, "disk": sz.DiskGB,
		"locked": d.Locked, "status": d.Status, "created_at": ts(d.CreatedAt), "features": features,
		"backup_ids": []int{}, "next_backup_window": map[string]any{"start": ts(d.CreatedAt.Add(24 * time.Hour)), "end": ts(d.CreatedAt.Add(25 * time.Hour))}, "snapshot_ids": snaps, "image": img,
		"volume_ids": []string{}, "size": sizeJSON(sz), "size_slug": d.Size,
		"networks": map[string]any{"v4": v4, "v6": v6}, "region": regionJSON(d.Region), "tags": tags, "vpc_uuid": d.VPC,
	}
}

// labIPv6 is a droplet's public IPv6 address, in 2001:db8::/32.
func labIPv6(id int) string { return fmt.Sprintf("2001:db8::%x", id) }

func (l *Lab) doDropletsList(c *call) (result, *apiError) {
	q := c.r.URL.Query()
	var ds []*droplet
	for _, d := range sortedDroplets(l.st) {
		if t := q.Get("tag_name"); t != "" && !slices.Contains(d.Tags, t) {
			continue
		}
		if n := q.Get("name"); n != "" && d.Name != n {
			continue
		}
		ds = append(ds, d)
	}
	lo, hi, links, meta := c.page(len(ds))
	out := []any{}
	for _, d := range ds[lo:hi] {
		out = append(out, l.dropletJSON(d))
	}
	return result{200, map[string]any{"droplets": out, "links": links, "meta": meta}}, nil
}

// imageRef is the "image" of a droplet create request: an ID or a slug.
type imageRef struct {
	id   int
	slug string
}

func (r *imageRef) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &r.id); err == nil {
		return nil
	}
	return json.Unmarshal(b, &r.slug)
}

func (l *Lab) doDropletsCreate(c *call) (result, *apiError) {
	var in struct {
		Name       string            `json:"name"`
		Names      []string          `json:"names"`
		Region     string            `json:"region"`
		Size       string            `json:"size"`
		Image      imageRef          `json:"image"`
		SSHKeys    []json.RawMessage `json:"ssh_keys"`
		IPv6       bool              `json:"ipv6"`
		Monitoring bool              `json:"monitoring"`
		Tags       []string          `json:"tags"`
		VPC        string            `json:"vpc_uuid"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.Name == "" {
		return result{}, unprocessable("Name is required (the lab creates one droplet per request)")
	}
	sz, ok := sizeBySlug(in.Size)
	if !ok {
		return result{}, unprocessable("You specified an invalid size for Droplet creation.")
	}
	if !regionOK(in.Region) {
		return result{}, unprocessable("You specified an invalid region for Droplet creation.")
	}
	d := &droplet{Name: in.Name, Size: in.Size, Region: in.Region, Status: "new", IPv6: in.IPv6, Monitoring: in.Monitoring,
		Tags: uniq(in.Tags), VPC: in.VPC, CreatedAt: time.Now().UTC()}
	if d.VPC == "" {
		d.VPC = "5a4981aa-9653-4bd1-bef5-d6bff52042e4"
	}
	snapDir := ""
	if s, ok := l.st.Snapshots[in.Image.id]; ok {
		if s.MinDisk > sz.DiskGB {
			return result{}, unprocessable("The image's minimum disk size (%d GB) is larger than the disk of size %s (%d GB).", s.MinDisk, sz.Slug, sz.DiskGB)
		}
		d.ImageID, d.ImageName, d.ImageDist, d.ImageType = s.ID, s.Name, s.Dist, "snapshot"
		snapDir = l.diskDir("s", s.ID)
	} else {
		found := false
		for _, di := range distroImages {
			if di.ID == in.Image.id || (in.Image.slug != "" && di.Slug == in.Image.slug) {
				d.ImageID, d.ImageName, d.ImageDist, d.ImageType, found = di.ID, di.Name, di.Dist, "base", true
			}
		}
		if !found {
			return result{}, unprocessable("You specified an invalid image for Droplet creation.")
		}
	}
	var keys []string
	for _, raw := range in.SSHKeys {
		var ident string
		var id int
		if json.Unmarshal(raw, &id) == nil {
			ident = strconv.Itoa(id)
		} else {
			json.Unmarshal(raw, &ident)
		}
		k := l.findKey(ident)
		if k == nil {
			return result{}, unprocessable("You specified an invalid SSH key (%s).", ident)
		}
		keys = append(keys, k.PublicKey)
	}
	ip, err := l.allocIP()
	if err != nil {
		return result{}, unprocessable("%v", err)
	}
	d.ID, d.IP = l.nextID(), ip
	hostname := d.Name
	if snapDir != "" && l.takeFault(FaultKeepHostname, "") != nil {
		hostname = "" // the image's own
	}
	if err := provisionDisk(l.diskDir("d", d.ID), snapDir, hostname, keys); err != nil {
		return result{}, &apiError{status: 500, id: "server_error", msg: err.Error()}
	}
	for _, t := range d.Tags {
		l.st.Tags[t] = true
	}
	boot := l.cfg.Durations.Boot
	for _, kind := range []string{FaultNeverActive, FaultServe500, FaultServeContent, FaultSlowBoot} {
		if f := l.takeFault(kind, ""); f != nil {
			if kind == FaultSlowBoot {
				boot += f.Delay
				d.BootDelay = f.Delay
			} else {
				d.Fault = kind
			}
		}
	}
	l.st.Droplets[d.ID] = d
	l.syncTaggedLBsLocked()
	a := l.newAction("create", d.ID, "droplet", d.Region)
	if d.Fault != FaultNeverActive {
		l.after(boot, func() {
			if l.st.Droplets[d.ID] != d {
				return
			}
			m := l.newMachine(d)
			if err := m.start(); err != nil {
				l.cfg.Logf("lab: boot droplet %d: %v", d.ID, err)
				a.Status, a.CompletedAt = "errored", time.Now().UTC()
				return
			}
			d.Status = "active"
			a.Status, a.CompletedAt = "completed", time.Now().UTC()
		})
	}
	return result{202, map[string]any{"droplet": l.dropletJSON(d), "links": map[string]any{"actions": []any{
		map[string]any{"id": a.ID, "rel": "create", "href": "http://" + c.r.Host + "/v2/actions/" + strconv.Itoa(a.ID)}}}}}, nil
}

func uniq(in []string) []string {
	out := []string{}
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// doDroplet returns the DigitalOcean droplet with the ID, or nil: a Hetzner
// server is no droplet.
func (l *Lab) doDroplet(id int) *droplet {
	if d := l.st.Droplets[id]; d != nil && d.Cloud == "" {
		return d
	}
	return nil
}

func (c *call) intParam(name string) int {
	v, _ := strconv.Atoi(c.r.PathValue(name))
	return v
}

func (l *Lab) doDropletsGet(c *call) (result, *apiError) {
	d := l.doDroplet(c.intParam("droplet_id"))
	if d == nil {
		return result{}, notFound()
	}
	return result{200, map[string]any{"droplet": l.dropletJSON(d)}}, nil
}

func (l *Lab) doDropletsDelete(c *call) (result, *apiError) {
	d := l.doDroplet(c.intParam("droplet_id"))
	if d == nil {
		return result{}, notFound()
	}
	if m := l.machines[d.ID]; m != nil {
		m.stop(false)
		delete(l.machines, d.ID)
	}
	for _, lb := range l.st.LBs {
		if i := slices.Index(lb.DropletIDs, d.ID); i >= 0 {
			lb.DropletIDs = slices.Delete(lb.DropletIDs, i, i+1)
			if b := l.lbs[lb.ID]; b != nil {
				b.syncMembersLocked(lb, false)
			}
		}
	}
	for _, r := range l.st.ReservedIPs {
		if r.DropletID == d.ID {
			r.DropletID = 0
		}
	}
	delete(l.st.Droplets, d.ID)
	os.RemoveAll(l.diskDir("d", d.ID))
	l.freeIP(d.IP)
	return result{204, nil}, nil
}

func (l *Lab) newAction(typ string, resource int, resourceType, region string) *action {
	a := &action{ID: l.nextID(), Status: "in-progress", Type: typ, StartedAt: time.Now().UTC(), ResourceID: resource, ResourceType: resourceType, Region: region}
	l.st.Actions[a.ID] = a
	return a
}

func actionJSON(a *action) map[string]any {
	var completed any
	if !a.CompletedAt.IsZero() {
		completed = ts(a.CompletedAt)
	}
	return map[string]any{"id": a.ID, "status": a.Status, "type": a.Type, "started_at": ts(a.StartedAt), "completed_at": completed,
		"resource_id": a.ResourceID, "resource_type": a.ResourceType, "region": regionJSON(a.Region), "region_slug": a.Region}
}

// finish completes an in-progress action after d, unless an armed
// action_errored fault makes it fail; do runs only on success.
func (l *Lab) finish(a *action, d time.Duration, do func() bool) {
	l.after(d, func() {
		if a.Status != "in-progress" {
			return
		}
		ok := l.takeFault(FaultActionErrored, a.Type) == nil && do()
		a.CompletedAt = time.Now().UTC()
		if ok {
			a.Status = "completed"
		} else {
			a.Status = "errored"
		}
		if dr := l.st.Droplets[a.ResourceID]; dr != nil && a.ResourceType == "droplet" {
			dr.Locked = false
		}
	})
}

func (l *Lab) doDropletActionsPost(c *call) (result, *apiError) {
	d := l.doDroplet(c.intParam("droplet_id"))
	if d == nil {
		return result{}, notFound()
	}
	var in struct {
		Type string `json:"type"`
		Name string `json:"name"`
		Size string `json:"size"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if d.Locked {
		return result{}, unprocessable("Droplet already has a pending event.")
	}
	if d.Status == "new" {
		return result{}, unprocessable("Droplet is still being created; try again when it is active.")
	}
	var a *action
	switch in.Type {
	case "snapshot":
		name := in.Name
		if name == "" {
			name = fmt.Sprintf("%s-%d", d.Name, time.Now().Unix())
		}
		sid := l.nextID()
		// The disk is copied when the action starts: a live, crash-consistent
		// image, while the droplet keeps serving.
		if err := copyDir(l.diskDir("d", d.ID), l.diskDir("s", sid)); err != nil {
			return result{}, &apiError{status: 500, id: "server_error", msg: err.Error()}
		}
		sz, _ := sizeBySlug(d.Size)
		a = l.newAction("snapshot", d.ID, "droplet", d.Region)
		l.finish(a, l.cfg.Durations.Snapshot, func() bool {
			if l.st.Droplets[d.ID] == nil {
				return false
			}
			used := float64(l.machineDiskUsed(d)) / (1 << 30)
			l.st.Snapshots[sid] = &snapshot{ID: sid, Name: name, DropletID: d.ID, Region: d.Region, MinDisk: sz.DiskGB,
				SizeGB: float64(int(used*100)) / 100, CreatedAt: time.Now().UTC(), Tags: []string{}, Dist: d.ImageDist}
			d.Snapshots = append(d.Snapshots, sid)
			return true
		})
	case "shutdown", "power_off":
		if d.Status != "active" {
			return result{}, unprocessable("Droplet is already powered off.")
		}
		dur := l.cfg.Durations.Action
		if in.Type == "shutdown" {
			dur = l.cfg.Durations.Shutdown
		}
		a = l.newAction(in.Type, d.ID, "droplet", d.Region)
		graceful := in.Type == "shutdown"
		l.after(dur, func() {
			if a.Status != "in-progress" {
				return
			}
			if l.takeFault(FaultActionErrored, a.Type) != nil {
				a.Status, a.CompletedAt, d.Locked = "errored", time.Now().UTC(), false
				return
			}
			m := l.machines[d.ID]
			delete(l.machines, d.ID)
			// A graceful stop waits for requests in flight: do it without
			// holding the lab, and complete the action once it is off.
			go func() {
				if m != nil {
					m.stop(graceful)
				}
				l.mu.Lock()
				defer l.mu.Unlock()
				d.Status, d.Locked = "off", false
				a.Status, a.CompletedAt = "completed", time.Now().UTC()
				l.saveLocked()
			}()
		})
	case "power_on":
		if d.Status == "active" {
			return result{}, unprocessable("Droplet is already powered on.")
		}
		a = l.newAction("power_on", d.ID, "droplet", d.Region)
		l.finish(a, l.cfg.Durations.PowerOn, func() bool {
			m := l.newMachine(d)
			if err := m.start(); err != nil {
				l.cfg.Logf("lab: power on droplet %d: %v", d.ID, err)
				return false
			}
			d.Status = "active"
			return true
		})
	case "rename":
		if !validHostname(in.Name) {
			return result{}, unprocessable("Name is not a valid hostname: use letters, digits, dots and dashes.")
		}
		a = l.newAction("rename", d.ID, "droplet", d.Region)
		name := in.Name
		l.finish(a, l.cfg.Durations.Action, func() bool { d.Name = name; return true })
	case "resize":
		if d.Status != "off" {
			return result{}, unprocessable("Droplet is currently on. Please power it off to run this event.")
		}
		if _, ok := sizeBySlug(in.Size); !ok {
			return result{}, unprocessable("You specified an invalid size for Droplet resize.")
		}
		a = l.newAction("resize", d.ID, "droplet", d.Region)
		size := in.Size
		l.finish(a, l.cfg.Durations.Resize, func() bool { d.Size = size; return true })
	default:
		return result{}, unprocessable("The lab does not support droplet action %q.", in.Type)
	}
	d.Locked = true
	return result{201, map[string]any{"action": actionJSON(a)}}, nil
}

func (l *Lab) machineDiskUsed(d *droplet) int64 {
	m := &machine{dir: l.diskDir("d", d.ID)}
	return m.diskUsed()
}

func (l *Lab) doDropletActionsList(c *call) (result, *apiError) {
	d := l.doDroplet(c.intParam("droplet_id"))
	if d == nil {
		return result{}, notFound()
	}
	var as []*action
	for _, a := range l.st.Actions {
		if a.ResourceType == "droplet" && a.ResourceID == d.ID {
			as = append(as, a)
		}
	}
	sort.Slice(as, func(i, j int) bool { return as[i].ID > as[j].ID }) // newest first, as DigitalOcean
	lo, hi, links, meta := c.page(len(as))
	out := []any{}
	for _, a := range as[lo:hi] {
		out = append(out, actionJSON(a))
	}
	return result{200, map[string]any{"actions": out, "links": links, "meta": meta}}, nil
}

// doActionsList lists the account's actions, newest first, as
// DigitalOcean does: what vmswap learns expected durations from.
func (l *Lab) doActionsList(c *call) (result, *apiError) {
	var as []*action
	for _, a := range l.st.Actions {
		if a.Cloud == "" {
			as = append(as, a)
		}
	}
	sort.Slice(as, func(i, j int) bool { return as[i].ID > as[j].ID })
	lo, hi, links, meta := c.page(len(as))
	out := []any{}
	for _, a := range as[lo:hi] {
		out = append(out, actionJSON(a))
	}
	return result{200, map[string]any{"actions": out, "links": links, "meta": meta}}, nil
}

func (l *Lab) doDropletActionGet(c *call) (result, *apiError) {
	a := l.st.Actions[c.intParam("action_id")]
	if a == nil || a.ResourceID != c.intParam("droplet_id") {
		return result{}, notFound()
	}
	return result{200, map[string]any{"action": actionJSON(a)}}, nil
}

func (l *Lab) doActionGet(c *call) (result, *apiError) {
	a := l.st.Actions[c.intParam("action_id")]
	if a == nil || a.Cloud != "" {
		return result{}, notFound()
	}
	return result{200, map[string]any{"action": actionJSON(a)}}, nil
}

func (l *Lab) imageJSON(s *snapshot) map[string]any {
	return map[string]any{"id": s.ID, "name": s.Name, "type": "snapshot", "distribution": s.Dist, "public": false,
		"regions": []string{s.Region}, "created_at": ts(s.CreatedAt), "min_disk_size": s.MinDisk, "size_gigabytes": s.SizeGB,
		"description": "", "tags": append([]string{}, s.Tags...), "status": "available", "error_message": ""}
}

func (l *Lab) sortedSnapshots() []*snapshot {
	out := make([]*snapshot, 0, len(l.st.Snapshots))
	for _, s := range l.st.Snapshots {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (l *Lab) doImagesList(c *call) (result, *apiError) {
	q := c.r.URL.Query()
	var out []any
	if q.Get("type") != "distribution" {
		for _, s := range l.sortedSnapshots() {
			out = append(out, l.imageJSON(s))
		}
	}
	if q.Get("private") != "true" && q.Get("type") != "snapshot" {
		for _, di := range distroImages {
			out = append(out, map[string]any{"id": di.ID, "name": di.Name, "type": "base", "distribution": di.Dist, "slug": di.Slug,
				"public": true, "regions": []string{"nyc1", "nyc3", "ams3", "fra1", "lon1", "sfo3"}, "created_at": "2024-04-25T12:00:00Z",
				"min_disk_size": 7, "size_gigabytes": 2.36, "description": "", "tags": []string{}, "status": "available", "error_message": ""})
		}
	}
	lo, hi, links, meta := c.page(len(out))
	return result{200, map[string]any{"images": append([]any{}, out[lo:hi]...), "links": links, "meta": meta}}, nil
}

func (l *Lab) doImagesGet(c *call) (result, *apiError) {
	s := l.st.Snapshots[c.intParam("image_id")]
	if s == nil {
		return result{}, notFound()
	}
	return result{200, map[string]any{"image": l.imageJSON(s)}}, nil
}

func snapshotJSON(s *snapshot) map[string]any {
	return map[string]any{"id": strconv.Itoa(s.ID), "name": s.Name, "created_at": ts(s.CreatedAt), "regions": []string{s.Region},
		"resource_id": strconv.Itoa(s.DropletID), "resource_type": "droplet", "min_disk_size": s.MinDisk, "size_gigabytes": s.SizeGB,
		"tags": append([]string{}, s.Tags...)}
}

func (l *Lab) doSnapshotsList(c *call) (result, *apiError) {
	all := l.sortedSnapshots()
	lo, hi, links, meta := c.page(len(all))
	out := []any{}
	for _, s := range all[lo:hi] {
		out = append(out, snapshotJSON(s))
	}
	return result{200, map[string]any{"snapshots": out, "links": links, "meta": meta}}, nil
}

func (l *Lab) doSnapshotsGet(c *call) (result, *apiError) {
	s := l.st.Snapshots[c.intParam("snapshot_id")]
	if s == nil {
		return result{}, notFound()
	}
	return result{200, map[string]any{"snapshot": snapshotJSON(s)}}, nil
}

func (l *Lab) doSnapshotsDelete(c *call) (result, *apiError) {
	id := c.intParam("snapshot_id")
	if id == 0 {
		id = c.intParam("image_id")
	}
	s := l.st.Snapshots[id]
	if s == nil {
		return result{}, notFound()
	}
	delete(l.st.Snapshots, id)
	if d := l.st.Droplets[s.DropletID]; d != nil {
		if i := slices.Index(d.Snapshots, id); i >= 0 {
			d.Snapshots = slices.Delete(d.Snapshots, i, i+1)
		}
	}
	os.RemoveAll(l.diskDir("s", id))
	return result{204, nil}, nil
}

func (l *Lab) doDropletSnapshots(c *call) (result, *apiError) {
	d := l.doDroplet(c.intParam("droplet_id"))
	if d == nil {
		return result{}, notFound()
	}
	var ss []*snapshot
	for _, s := range l.sortedSnapshots() {
		if s.DropletID == d.ID {
			ss = append(ss, s)
		}
	}
	lo, hi, links, meta := c.page(len(ss))
	out := []any{}
	for _, s := range ss[lo:hi] {
		out = append(out, map[string]any{"id": s.ID, "name": s.Name, "distribution": s.Dist, "public": false,
			"regions": []string{s.Region}, "created_at": ts(s.CreatedAt), "min_disk_size": s.MinDisk, "size_gigabytes": s.SizeGB, "type": "snapshot"})
	}
	return result{200, map[string]any{"snapshots": out, "links": links, "meta": meta}}, nil
}

func (l *Lab) lbJSON(lb *lbState) map[string]any {
	port := l.cfg.HTTPPort
	ids := append([]int{}, lb.DropletIDs...)
	out := map[string]any{
		"id": lb.ID, "name": lb.Name, "ip": lb.IP, "status": "active", "created_at": ts(lb.CreatedAt),
		"forwarding_rules": []any{map[string]any{"entry_protocol": "http", "entry_port": port, "target_protocol": "http", "target_port": port, "tls_passthrough": false}},
		"health_check": map[string]any{"protocol": "http", "port": port, "path": lb.HealthPath, "check_interval_seconds": 10,
			"response_timeout_seconds": 5, "healthy_threshold": lb.Healthy, "unhealthy_threshold": lb.Unhealthy},
		"sticky_sessions": map[string]any{"type": "none"}, "region": regionJSON(lb.Region), "droplet_ids": ids,
		"redirect_http_to_https": false, "enable_proxy_protocol": false, "enable_backend_keepalive": true,
		"vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4", "size_unit": 1,
	}
	if lb.Tag != "" {
		out["tag"] = lb.Tag
	}
	return out
}

func (l *Lab) sortedLBs() []*lbState {
	out := make([]*lbState, 0, len(l.st.LBs))
	for _, lb := range l.st.LBs {
		out = append(out, lb)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

func (l *Lab) doLBList(c *call) (result, *apiError) {
	all := l.sortedLBs()
	lo, hi, links, meta := c.page(len(all))
	out := []any{}
	for _, lb := range all[lo:hi] {
		out = append(out, l.lbJSON(lb))
	}
	return result{200, map[string]any{"load_balancers": out, "links": links, "meta": meta}}, nil
}

func (l *Lab) doLBCreate(c *call) (result, *apiError) {
	var in struct {
		Name        string `json:"name"`
		Region      string `json:"region"`
		DropletIDs  []int  `json:"droplet_ids"`
		Tag         string `json:"tag"`
		HealthCheck *struct {
			Path      string `json:"path"`
			Healthy   int    `json:"healthy_threshold"`
			Unhealthy int    `json:"unhealthy_threshold"`
		} `json:"health_check"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.Tag != "" && len(in.DropletIDs) > 0 {
		return result{}, unprocessable("Specify either droplet_ids or tag, not both.")
	}
	for _, id := range in.DropletIDs {
		if l.doDroplet(id) == nil {
			return result{}, unprocessable("Droplet %d not found.", id)
		}
	}
	ip, err := l.allocIP()
	if err != nil {
		return result{}, unprocessable("%v", err)
	}
	// DigitalOcean's health check defaults: path /, 3 healthy, 5 unhealthy.
	lb := &lbState{ID: uuid(), Name: in.Name, IP: ip, Region: orDefault(in.Region, "nyc3"), DropletIDs: in.DropletIDs, Tag: in.Tag,
		CreatedAt: time.Now().UTC(), HealthPath: "/", Healthy: 3, Unhealthy: 5}
	if lb.DropletIDs == nil {
		lb.DropletIDs = []int{}
	}
	if h := in.HealthCheck; h != nil {
		lb.HealthPath = orDefault(h.Path, "/")
		if h.Healthy > 0 {
			lb.Healthy = h.Healthy
		}
		if h.Unhealthy > 0 {
			lb.Unhealthy = h.Unhealthy
		}
	}
	if lb.Tag != "" {
		for _, d := range sortedDroplets(l.st) {
			if slices.Contains(d.Tags, lb.Tag) {
				lb.DropletIDs = append(lb.DropletIDs, d.ID)
			}
		}
	}
	l.st.LBs[lb.ID] = lb
	if err := l.startBalancerLocked(lb); err != nil {
		delete(l.st.LBs, lb.ID)
		return result{}, &apiError{status: 500, id: "server_error", msg: err.Error()}
	}
	return result{202, map[string]any{"load_balancer": l.lbJSON(lb)}}, nil
}

func uuid() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:32]
}

func (l *Lab) doLBGet(c *call) (result, *apiError) {
	lb := l.st.LBs[c.r.PathValue("lb_id")]
	if lb == nil {
		return result{}, notFound()
	}
	return result{200, map[string]any{"load_balancer": l.lbJSON(lb)}}, nil
}

func (l *Lab) lbMembersChange(c *call, add bool) (result, *apiError) {
	lb := l.st.LBs[c.r.PathValue("lb_id")]
	if lb == nil {
		return result{}, notFound()
	}
	var in struct {
		DropletIDs []int `json:"droplet_ids"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if lb.Tag != "" {
		return result{}, unprocessable("This load balancer selects droplets by tag %q; tag the droplet instead of adding it by ID.", lb.Tag)
	}
	for _, id := range in.DropletIDs {
		if add && l.doDroplet(id) == nil {
			return result{}, unprocessable("Droplet %d not found.", id)
		}
	}
	for _, id := range in.DropletIDs {
		i := slices.Index(lb.DropletIDs, id)
		switch {
		case add && i < 0:
			lb.DropletIDs = append(lb.DropletIDs, id)
		case !add && i >= 0:
			lb.DropletIDs = slices.Delete(lb.DropletIDs, i, i+1)
		}
	}
	if b := l.lbs[lb.ID]; b != nil {
		b.syncMembersLocked(lb, false)
	}
	return result{204, nil}, nil
}

func (l *Lab) doLBAdd(c *call) (result, *apiError)    { return l.lbMembersChange(c, true) }
func (l *Lab) doLBRemove(c *call) (result, *apiError) { return l.lbMembersChange(c, false) }

func (l *Lab) doDomainsList(c *call) (result, *apiError) {
	names := make([]string, 0, len(l.st.Domains))
	for n := range l.st.Domains {
		names = append(names, n)
	}
	sort.Strings(names)
	lo, hi, links, meta := c.page(len(names))
	out := []any{}
	for _, n := range names[lo:hi] {
		out = append(out, map[string]any{"name": n, "ttl": l.st.Domains[n].TTL, "zone_file": ""})
	}
	return result{200, map[string]any{"domains": out, "links": links, "meta": meta}}, nil
}

func (l *Lab) doDomainsCreate(c *call) (result, *apiError) {
	var in struct {
		Name      string `json:"name"`
		IPAddress string `json:"ip_address"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	name := strings.TrimSuffix(strings.ToLower(in.Name), ".")
	if name == "" || !strings.Contains(name, ".") {
		return result{}, unprocessable("Name is invalid.")
	}
	if l.zoneNameTaken(name) {
		return result{}, unprocessable("Domain already exists.")
	}
	d := &domain{Name: name, TTL: 1800}
	if in.IPAddress != "" {
		d.Records = append(d.Records, &record{ID: l.nextID(), Type: "A", Name: "@", Data: in.IPAddress, TTL: 1800})
	}
	l.st.Domains[name] = d
	l.dnsChanged()
	return result{201, map[string]any{"domain": map[string]any{"name": name, "ttl": d.TTL, "zone_file": ""}}}, nil
}

func (l *Lab) doDomainsGet(c *call) (result, *apiError) {
	d := l.st.Domains[c.r.PathValue("domain_name")]
	if d == nil {
		return result{}, notFound()
	}
	return result{200, map[string]any{"domain": map[string]any{"name": d.Name, "ttl": d.TTL, "zone_file": ""}}}, nil
}

func recordJSON(r *record) map[string]any {
	return map[string]any{"id": r.ID, "type": r.Type, "name": r.Name, "data": r.Data, "priority": r.Priority,
		"port": r.Port, "ttl": r.TTL, "weight": r.Weight, "flags": nil, "tag": nil}
}

func (l *Lab) doRecordsList(c *call) (result, *apiError) {
	d := l.st.Domains[c.r.PathValue("domain_name")]
	if d == nil {
		return result{}, notFound()
	}
	q := c.r.URL.Query()
	var rs []*record
	for _, r := range d.Records {
		if n := q.Get("name"); n != "" && fqdn(r.Name, d.Name) != strings.TrimSuffix(n, ".") {
			continue
		}
		if t := q.Get("type"); t != "" && r.Type != t {
			continue
		}
		rs = append(rs, r)
	}
	lo, hi, links, meta := c.page(len(rs))
	out := []any{}
	for _, r := range rs[lo:hi] {
		out = append(out, recordJSON(r))
	}
	return result{200, map[string]any{"domain_records": out, "links": links, "meta": meta}}, nil
}

type recordInput struct {
	Type     *string `json:"type"`
	Name     *string `json:"name"`
	Data     *string `json:"data"`
	TTL      *int    `json:"ttl"`
	Priority *int    `json:"priority"`
	Port     *int    `json:"port"`
	Weight   *int    `json:"weight"`
}

// apply sets the fields present in in on r and checks the result.
func (in recordInput) apply(r *record) *apiError {
	if in.Type != nil {
		r.Type = strings.ToUpper(*in.Type)
	}
	if in.Name != nil {
		r.Name = *in.Name
	}
	if in.Data != nil {
		r.Data = *in.Data
	}
	if in.TTL != nil {
		r.TTL = *in.TTL
	}
	if in.Priority != nil {
		r.Priority = in.Priority
	}
	if in.Port != nil {
		r.Port = in.Port
	}
	if in.Weight != nil {
		r.Weight = in.Weight
	}
	if r.TTL == 0 {
		r.TTL = 1800
	}
	if r.TTL < 30 {
		return unprocessable("TTL must be at least 30 seconds.")
	}
	if r.Type == "A" && net.ParseIP(r.Data).To4() == nil {
		return unprocessable("Data needs to be an IPv4 address.")
	}
	if ip := net.ParseIP(r.Data); r.Type == "AAAA" && (ip == nil || ip.To4() != nil) {
		return unprocessable("Data needs to be an IPv6 address.")
	}
	if r.Type == "" || r.Name == "" {
		return unprocessable("Type and name are required.")
	}
	return nil
}

func (l *Lab) doRecordsCreate(c *call) (result, *apiError) {
	d := l.st.Domains[c.r.PathValue("domain_name")]
	if d == nil {
		return result{}, notFound()
	}
	var in recordInput
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	r := &record{}
	if e := in.apply(r); e != nil {
		return result{}, e
	}
	r.ID = l.nextID()
	d.Records = append(d.Records, r)
	l.dnsChanged()
	return result{201, map[string]any{"domain_record": recordJSON(r)}}, nil
}

func (l *Lab) findRecord(c *call) (*domain, *record, int) {
	d := l.st.Domains[c.r.PathValue("domain_name")]
	if d == nil {
		return nil, nil, -1
	}
	id := c.intParam("domain_record_id")
	for i, r := range d.Records {
		if r.ID == id {
			return d, r, i
		}
	}
	return d, nil, -1
}

func (l *Lab) doRecordsGet(c *call) (result, *apiError) {
	_, r, _ := l.findRecord(c)
	if r == nil {
		return result{}, notFound()
	}
	return result{200, map[string]any{"domain_record": recordJSON(r)}}, nil
}

func (l *Lab) doRecordsUpdate(c *call) (result, *apiError) {
	_, r, _ := l.findRecord(c)
	if r == nil {
		return result{}, notFound()
	}
	var in recordInput
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if l.takeFault(FaultDNSReject, "") != nil {
		return result{}, unprocessable("Record update rejected (lab fault dns_reject).")
	}
	next := *r
	if e := in.apply(&next); e != nil {
		return result{}, e
	}
	*r = next
	l.dnsChanged()
	return result{200, map[string]any{"domain_record": recordJSON(r)}}, nil
}

func (l *Lab) doRecordsDelete(c *call) (result, *apiError) {
	d, r, i := l.findRecord(c)
	if r == nil {
		return result{}, notFound()
	}
	d.Records = slices.Delete(d.Records, i, i+1)
	l.dnsChanged()
	return result{204, nil}, nil
}

func (l *Lab) ripJSON(r *reservedIP) map[string]any {
	var d any
	if dr := l.st.Droplets[r.DropletID]; dr != nil {
		d = l.dropletJSON(dr)
	}
	return map[string]any{"ip": r.IP, "region": regionJSON(r.Region), "droplet": d, "locked": false, "project_id": "746c6152-2fa2-11ed-92d3-27aaa54e4988"}
}

func (l *Lab) doRIPList(c *call) (result, *apiError) {
	ips := make([]string, 0, len(l.st.ReservedIPs))
	for ip := range l.st.ReservedIPs {
		ips = append(ips, ip)
	}
	sort.Strings(ips)
	lo, hi, links, meta := c.page(len(ips))
	out := []any{}
	for _, ip := range ips[lo:hi] {
		out = append(out, l.ripJSON(l.st.ReservedIPs[ip]))
	}
	return result{200, map[string]any{"reserved_ips": out, "links": links, "meta": meta}}, nil
}

func (l *Lab) doRIPCreate(c *call) (result, *apiError) {
	var in struct {
		DropletID int    `json:"droplet_id"`
		Region    string `json:"region"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	r := &reservedIP{Region: in.Region, DropletID: in.DropletID}
	if in.DropletID != 0 {
		d := l.doDroplet(in.DropletID)
		if d == nil {
			return result{}, unprocessable("Droplet %d not found.", in.DropletID)
		}
		r.Region = d.Region
	}
	if !regionOK(r.Region) {
		return result{}, unprocessable("You specified an invalid region.")
	}
	ip, err := l.allocIP()
	if err != nil {
		return result{}, unprocessable("%v", err)
	}
	r.IP = ip
	l.st.ReservedIPs[ip] = r
	if err := l.startForwarderLocked(r); err != nil {
		delete(l.st.ReservedIPs, ip)
		return result{}, &apiError{status: 500, id: "server_error", msg: err.Error()}
	}
	return result{202, map[string]any{"reserved_ip": l.ripJSON(r), "links": map[string]any{}}}, nil
}

func (l *Lab) doRIPGet(c *call) (result, *apiError) {
	r := l.st.ReservedIPs[c.r.PathValue("reserved_ip")]
	if r == nil {
		return result{}, notFound()
	}
	return result{200, map[string]any{"reserved_ip": l.ripJSON(r)}}, nil
}

func ipAsInt(ip string) int {
	v := net.ParseIP(ip).To4()
	if v == nil {
		return 0
	}
	return int(v[0])<<24 | int(v[1])<<16 | int(v[2])<<8 | int(v[3])
}

func (l *Lab) doRIPAction(c *call) (result, *apiError) {
	r := l.st.ReservedIPs[c.r.PathValue("reserved_ip")]
	if r == nil {
		return result{}, notFound()
	}
	var in struct {
		Type      string `json:"type"`
		DropletID int    `json:"droplet_id"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	a := l.newAction(in.Type, ipAsInt(r.IP), "reserved_ip", r.Region)
	a.ReservedIP = r.IP
	switch in.Type {
	case "assign":
		d := l.doDroplet(in.DropletID)
		if d == nil {
			delete(l.st.Actions, a.ID)
			return result{}, unprocessable("Droplet %d not found.", in.DropletID)
		}
		id := d.ID
		l.finish(a, l.cfg.Durations.Action, func() bool { r.DropletID = id; return true })
	case "unassign":
		l.finish(a, l.cfg.Durations.Action, func() bool { r.DropletID = 0; return true })
	default:
		delete(l.st.Actions, a.ID)
		return result{}, unprocessable("Unknown action type %q.", in.Type)
	}
	return result{201, map[string]any{"action": actionJSON(a)}}, nil
}

func (l *Lab) doRIPActionGet(c *call) (result, *apiError) {
	a := l.st.Actions[c.intParam("action_id")]
	if a == nil || a.ReservedIP != c.r.PathValue("reserved_ip") {
		return result{}, notFound()
	}
	return result{200, map[string]any{"action": actionJSON(a)}}, nil
}

func (l *Lab) tagJSON(name string) map[string]any {
	n := 0
	for _, d := range sortedDroplets(l.st) {
		if slices.Contains(d.Tags, name) {
			n++
		}
	}
	return map[string]any{"name": name, "resources": map[string]any{"count": n, "droplets": map[string]any{"count": n}}}
}

func (l *Lab) doTagsList(c *call) (result, *apiError) {
	names := make([]string, 0, len(l.st.Tags))
	for n := range l.st.Tags {
		names = append(names, n)
	}
	sort.Strings(names)
	lo, hi, links, meta := c.page(len(names))
	out := []any{}
	for _, n := range names[lo:hi] {
		out = append(out, l.tagJSON(n))
	}
	return result{200, map[string]any{"tags": out, "links": links, "meta": meta}}, nil
}

func (l *Lab) doTagsCreate(c *call) (result, *apiError) {
	var in struct {
		Name string `json:"name"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	l.st.Tags[in.Name] = true
	return result{201, map[string]any{"tag": l.tagJSON(in.Name)}}, nil
}

func (l *Lab) doTagsGet(c *call) (result, *apiError) {
	name := c.r.PathValue("tag_id")
	if !l.st.Tags[name] {
		return result{}, notFound()
	}
	return result{200, map[string]any{"tag": l.tagJSON(name)}}, nil
}

// syncTaggedLBsLocked makes each load balancer that selects droplets by
// tag route to exactly the droplets carrying it, as DigitalOcean does when
// a droplet is created with the tag or tagged or untagged later.
func (l *Lab) syncTaggedLBsLocked() {
	for _, lb := range l.st.LBs {
		if lb.Tag == "" {
			continue
		}
		var ids []int
		for _, d := range sortedDroplets(l.st) {
			if slices.Contains(d.Tags, lb.Tag) {
				ids = append(ids, d.ID)
			}
		}
		if !slices.Equal(ids, lb.DropletIDs) {
			lb.DropletIDs = ids
			if b := l.lbs[lb.ID]; b != nil {
				b.syncMembersLocked(lb, false)
			}
		}
	}
}

// doTagsResources tags (add) or untags droplets, as DigitalOcean does: the
// tag must exist, unknown droplets are a 404, repeating either is a no-op.
func (l *Lab) doTagsResources(add bool) func(c *call) (result, *apiError) {
	return func(c *call) (result, *apiError) {
		name := c.r.PathValue("tag_id")
		var in struct {
			Resources []struct {
				ID   string `json:"resource_id"`
				Type string `json:"resource_type"`
			} `json:"resources"`
		}
		if e := c.decode(&in); e != nil {
			return result{}, e
		}
		if !l.st.Tags[name] {
			return result{}, notFound()
		}
		var ds []*droplet
		for _, r := range in.Resources {
			id, err := strconv.Atoi(r.ID)
			d := l.doDroplet(id)
			if r.Type != "droplet" || err != nil || d == nil {
				return result{}, notFound()
			}
			ds = append(ds, d)
		}
		for _, d := range ds {
			has := slices.Contains(d.Tags, name)
			switch {
			case add && !has:
				d.Tags = append(d.Tags, name)
			case !add && has:
				d.Tags = slices.DeleteFunc(d.Tags, func(t string) bool { return t == name })
			}
		}
		l.syncTaggedLBsLocked()
		return result{204, nil}, nil
	}
}

func (l *Lab) doTagsDelete(c *call) (result, *apiError) {
	name := c.r.PathValue("tag_id")
	if !l.st.Tags[name] {
		return result{}, notFound()
	}
	delete(l.st.Tags, name)
	// "Deleting a tag also untags all the resources that have previously
	// been tagged by the Tag."
	for _, d := range l.st.Droplets {
		if d.Cloud == "" {
			d.Tags = slices.DeleteFunc(d.Tags, func(t string) bool { return t == name })
		}
	}
	l.syncTaggedLBsLocked()
	return result{204, nil}, nil
}

// validHostname is DigitalOcean's rule for droplet names.
func validHostname(n string) bool {
	if n == "" || len(n) > 255 {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}
