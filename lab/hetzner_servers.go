package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Hetzner servers and images: https://docs.hetzner.cloud/reference/cloud#servers
// A Hetzner server is a droplet of the lab's (state.Droplets, machine.go)
// marked cloudHetzner: a real HTTP, HTTPS and SSH server on its own address.

// hServer returns the Hetzner server with the ID, or nil.
func (l *Lab) hServer(id int) *droplet {
	if d := l.st.Droplets[id]; d != nil && d.Cloud == cloudHetzner {
		return d
	}
	return nil
}

// machineSize is what a server's machine reports of itself (memory, CPUs,
// disk).
func machineSize(d *droplet) Size {
	if d.Cloud == cloudHetzner {
		t, _ := hServerTypeBy(idOrName{name: d.Size, set: true})
		return Size{Slug: t.Name, MemoryMB: t.MemoryGB * 1024, VCPUs: t.Cores, DiskGB: d.DiskGB}
	}
	sz, _ := sizeBySlug(d.Size)
	return sz
}

// hStatus is a server's status in Hetzner's words.
func hStatus(d *droplet) string {
	if d.Phase != "" {
		return d.Phase
	}
	switch d.Status {
	case "new":
		return "initializing"
	case "active":
		return "running"
	}
	return "off"
}

// hIPv6 is a server's IPv6 network, from the documentation range: never
// routed.
func hIPv6(id int) string { return fmt.Sprintf("2001:db8:%x::/64", id&0xffff) }

func (l *Lab) hServerJSON(d *droplet) map[string]any {
	t, _ := hServerTypeBy(idOrName{name: d.Size, set: true})
	loc := hLocationNamed(d.Region)
	var img any
	if d.ImageType == "system" {
		for _, si := range hSystemImages {
			if si.ID == d.ImageID {
				img = hSystemImageJSON(si.ID)
			}
		}
	} else if im := l.st.Hetzner.Images[d.ImageID]; im != nil {
		img = hImageJSON(im)
	}
	var v4, v6 any
	if p := l.st.Hetzner.PrimaryIPs[d.PrimaryIPv4]; p != nil {
		v4 = map[string]any{"id": p.ID, "ip": p.IP, "blocked": false, "dns_ptr": "static." + p.IP + ".clients.your-server.de"}
	}
	if d.IPv6 {
		v6 = map[string]any{"ip": hIPv6(d.ID), "blocked": false, "dns_ptr": []any{}}
	}
	fips := []int{}
	for _, f := range l.hFloatingIPs() {
		if f.ServerID == d.ID {
			fips = append(fips, f.ID)
		}
	}
	fws := []any{}
	for _, id := range d.Firewalls {
		fws = append(fws, map[string]any{"id": id, "status": "applied"})
	}
	priv := []any{}
	for i, n := range d.Networks {
		priv = append(priv, map[string]any{"network": n, "ip": fmt.Sprintf("10.0.%d.%d", i, d.ID%250+2), "alias_ips": []string{},
			"mac_address": fmt.Sprintf("86:00:00:%02x:%02x:%02x", d.ID>>16&0xff, d.ID>>8&0xff, d.ID&0xff)})
	}
	lbs := []int{}
	for _, lb := range l.hLBs() {
		if slices.Contains(l.hTargetServers(lb), d.ID) {
			lbs = append(lbs, lb.ID)
		}
	}
	var pg any
	if d.PlacementGroup != 0 {
		members := []int{}
		for _, o := range sortedServers(l.st, cloudHetzner) {
			if o.PlacementGroup == d.PlacementGroup {
				members = append(members, o.ID)
			}
		}
		pg = map[string]any{"id": d.PlacementGroup, "name": fmt.Sprintf("placement-group-%d", d.PlacementGroup), "type": "spread",
			"servers": members, "labels": map[string]string{}, "created": ts(d.CreatedAt)}
	}
	return map[string]any{
		"id": d.ID, "name": d.Name, "status": hStatus(d), "created": ts(d.CreatedAt), "labels": labelsJSON(d.Labels),
		"server_type": hServerTypeJSON(t), "datacenter": hDatacenterJSON(loc), "location": hLocationJSON(loc), "image": img,
		"public_net":  map[string]any{"ipv4": v4, "ipv6": v6, "floating_ips": fips, "firewalls": fws},
		"private_net": priv, "load_balancers": lbs, "placement_group": pg, "volumes": l.hServerVolumes(d.ID),
		"primary_disk_size": d.DiskGB, "locked": d.Locked, "rescue_enabled": false, "backup_window": nil, "iso": nil,
		"protection":       map[string]any{"delete": false, "rebuild": false},
		"included_traffic": int64(20) << 40, "ingoing_traffic": 0, "outgoing_traffic": 0,
	}
}

func (l *Lab) hzServersList(c *call) (result, *apiError) {
	sel, e := c.selector()
	if e != nil {
		return result{}, e
	}
	q := c.r.URL.Query()
	var ds []*droplet
	for _, d := range sortedServers(l.st, cloudHetzner) {
		if n := q.Get("name"); n != "" && d.Name != n {
			continue
		}
		if st := q["status"]; len(st) > 0 && !slices.Contains(st, hStatus(d)) {
			continue
		}
		if sel.matches(d.Labels) {
			ds = append(ds, d)
		}
	}
	return hList(c, "servers", ds, func(d *droplet) any { return l.hServerJSON(d) }), nil
}

func (l *Lab) hzServersGet(c *call) (result, *apiError) {
	d := l.hServer(c.idParam("id"))
	if d == nil {
		return result{}, hNotFound("server")
	}
	return result{200, map[string]any{"server": l.hServerJSON(d)}}, nil
}

// hNameTaken reports whether another Hetzner server has the name.
func (l *Lab) hNameTaken(name string, except int) bool {
	for _, d := range sortedServers(l.st, cloudHetzner) {
		if d.Name == name && d.ID != except {
			return true
		}
	}
	return false
}

func (l *Lab) hzServersCreate(c *call) (result, *apiError) {
	var in struct {
		Name             string            `json:"name"`
		ServerType       idOrName          `json:"server_type"`
		Image            idOrName          `json:"image"`
		Location         idOrName          `json:"location"`
		Datacenter       idOrName          `json:"datacenter"`
		SSHKeys          []idOrName        `json:"ssh_keys"`
		Labels           map[string]string `json:"labels"`
		UserData         string            `json:"user_data"`
		StartAfterCreate *bool             `json:"start_after_create"`
		Volumes          []int             `json:"volumes"`
		Networks         []int             `json:"networks"`
		Firewalls        []struct {
			Firewall int `json:"firewall"`
		} `json:"firewalls"`
		PlacementGroup int `json:"placement_group"`
		PublicNet      *struct {
			EnableIPv4 *bool `json:"enable_ipv4"`
			EnableIPv6 *bool `json:"enable_ipv6"`
			IPv4       *int  `json:"ipv4"`
			IPv6       *int  `json:"ipv6"`
		} `json:"public_net"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if !validHostname(in.Name) || len(in.Name) > 63 {
		return result{}, hInvalid("name %q is not a valid hostname", in.Name)
	}
	if l.hNameTaken(in.Name, 0) {
		return result{}, hUnique("server name %q is already used", in.Name)
	}
	t, ok := hServerTypeBy(in.ServerType)
	if !ok {
		return result{}, hInvalid("server type %s not found", in.ServerType)
	}
	loc := hLocations[0]
	switch {
	case in.Location.set && in.Datacenter.set:
		return result{}, hInvalid("specify location or datacenter, not both")
	case in.Location.set:
		if loc, ok = hLocationBy(in.Location); !ok {
			return result{}, hInvalid("location %s not found", in.Location)
		}
	case in.Datacenter.set:
		if loc, ok = hDatacenterBy(in.Datacenter); !ok {
			return result{}, hInvalid("datacenter %s not found", in.Datacenter)
		}
	}
	labels, e := checkLabels(in.Labels)
	if e != nil {
		return result{}, e
	}
	var vols []*hVolume
	for _, id := range in.Volumes {
		v := l.st.Hetzner.Volumes[id]
		switch {
		case v == nil:
			return result{}, hInvalid("volume %d not found", id)
		case v.ServerID != 0:
			return result{}, hErr(422, "volume_already_attached", "volume %d is attached to server %d", v.ID, v.ServerID)
		}
		vols = append(vols, v)
	}
	d := &droplet{Cloud: cloudHetzner, Name: in.Name, Size: t.Name, Region: loc.Name, Status: "new", Labels: labels, DiskGB: t.DiskGB,
		UserData: in.UserData, Networks: in.Networks, PlacementGroup: in.PlacementGroup, IPv6: true, CreatedAt: time.Now().UTC(), Tags: []string{}}
	for _, f := range in.Firewalls {
		d.Firewalls = append(d.Firewalls, f.Firewall)
	}
	snapDir := ""
	if im := l.st.Hetzner.Images[in.Image.id]; im != nil && in.Image.id != 0 {
		if im.Status != "available" {
			return result{}, hInvalid("image %d is not available yet", im.ID)
		}
		if im.DiskGB > t.DiskGB {
			return result{}, hInvalid("image %d needs a disk of %d GB; server type %s has %d GB", im.ID, im.DiskGB, t.Name, t.DiskGB)
		}
		d.ImageID, d.ImageType, d.ImageDist = im.ID, "snapshot", im.Flavor
		snapDir = l.diskDir("s", im.ID)
	} else {
		for _, si := range hSystemImages {
			if in.Image.is(si.ID, si.Name) {
				d.ImageID, d.ImageName, d.ImageType, d.ImageDist = si.ID, si.Name, "system", si.Flavor
			}
		}
		if d.ImageType == "" {
			return result{}, hInvalid("image %s not found", in.Image)
		}
	}
	var keys []string
	for _, ref := range in.SSHKeys {
		var found *hKey
		for _, k := range l.hKeys() {
			if ref.is(k.ID, k.Name) {
				found = k
			}
		}
		if found == nil {
			return result{}, hInvalid("SSH key %s not found", ref)
		}
		keys = append(keys, found.PublicKey)
	}
	v4 := true
	var primary *hPrimaryIP
	if pn := in.PublicNet; pn != nil {
		if pn.EnableIPv4 != nil {
			v4 = *pn.EnableIPv4
		}
		if pn.EnableIPv6 != nil {
			d.IPv6 = *pn.EnableIPv6
		}
		if pn.IPv6 != nil {
			return result{}, hInvalid("the lab offers no IPv6 primary IPs; use enable_ipv6")
		}
		if pn.IPv4 != nil {
			primary = l.st.Hetzner.PrimaryIPs[*pn.IPv4]
			switch {
			case primary == nil:
				return result{}, hInvalid("primary IP %d not found", *pn.IPv4)
			case primary.AssigneeID != 0:
				return result{}, hErr(422, "primary_ip_assigned", "primary IP %d is already assigned to server %d", primary.ID, primary.AssigneeID)
			case primary.Datacenter != loc.DCName:
				return result{}, hErr(422, "primary_ip_datacenter_mismatch", "primary IP %d is in %s, not %s", primary.ID, primary.Datacenter, loc.DCName)
			}
		}
	}
	for _, v := range vols {
		if v.Location != loc.Name {
			return result{}, hInvalid("volume %d is in %s, the server would be in %s", v.ID, v.Location, loc.Name)
		}
	}
	d.ID = l.nextID()
	for _, v := range vols {
		v.ServerID = d.ID
	}
	switch {
	case primary != nil:
		primary.AssigneeID, d.PrimaryIPv4, d.IP = d.ID, primary.ID, primary.IP
	case v4:
		ip, err := l.allocIP()
		if err != nil {
			return result{}, hErr(422, "resource_unavailable", "%v", err)
		}
		p := &hPrimaryIP{ID: l.nextID(), IP: ip, Datacenter: loc.DCName, AssigneeID: d.ID, AutoDelete: true, Labels: map[string]string{}, Created: d.CreatedAt}
		p.Name = fmt.Sprintf("primary_ip-%d", p.ID)
		l.st.Hetzner.PrimaryIPs[p.ID] = p
		d.PrimaryIPv4, d.IP = p.ID, ip
	default:
		ip, err := l.allocIP()
		if err != nil {
			return result{}, hErr(422, "resource_unavailable", "%v", err)
		}
		d.IP, d.OwnIP = ip, true
	}
	if err := provisionDisk(l.diskDir("d", d.ID), snapDir, d.Name, keys); err != nil {
		return result{}, hErr(500, "server_error", "%v", err)
	}
	if in.UserData != "" {
		writeFile(filepath.Join(l.diskDir("d", d.ID), "var/lib/cloud/instance/user-data.txt"), in.UserData)
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
	l.hSyncLBsLocked()
	start := in.StartAfterCreate == nil || *in.StartAfterCreate
	a := l.hNewAction("create_server", boot, hResource{d.ID, "server"})
	d.Locked = true
	if d.Fault != FaultNeverActive {
		l.hFinish(a, d, func() *hActionError {
			if l.hServer(d.ID) != d {
				return &hActionError{"server_deleted", "the server was deleted while it was created"}
			}
			if !start {
				d.Status = "off"
				return nil
			}
			if err := l.hPowerOnLocked(d); err != nil {
				return err
			}
			return nil
		}, nil)
	}
	var password any
	if len(keys) == 0 {
		password = randomHex(12)
	}
	return result{201, map[string]any{"server": l.hServerJSON(d), "action": hActionJSON(a), "next_actions": []any{}, "root_password": password}}, nil
}

// hPowerOnLocked starts a server's machine on its address (its primary
// IPv4's, or an address of its own when it has none).
func (l *Lab) hPowerOnLocked(d *droplet) *hActionError {
	if d.IP == "" {
		ip, err := l.allocIP()
		if err != nil {
			return &hActionError{"resource_unavailable", err.Error()}
		}
		d.IP, d.OwnIP = ip, true
	}
	m := l.newMachine(d)
	if err := m.start(); err != nil {
		delete(l.machines, d.ID)
		l.cfg.Logf("lab: start server %d: %v", d.ID, err)
		return &hActionError{"server_error", err.Error()}
	}
	d.Status = "active"
	l.hSyncLBsLocked()
	return nil
}

func (l *Lab) hzServersUpdate(c *call) (result, *apiError) {
	d := l.hServer(c.idParam("id"))
	if d == nil {
		return result{}, hNotFound("server")
	}
	var in struct {
		Name   *string            `json:"name"`
		Labels *map[string]string `json:"labels"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.Name != nil {
		if !validHostname(*in.Name) {
			return result{}, hInvalid("name %q is not a valid hostname", *in.Name)
		}
		if l.hNameTaken(*in.Name, d.ID) {
			return result{}, hUnique("server name %q is already used", *in.Name)
		}
	}
	var labels map[string]string
	if in.Labels != nil {
		var e *apiError
		if labels, e = checkLabels(*in.Labels); e != nil {
			return result{}, e
		}
	}
	if in.Name != nil {
		d.Name = *in.Name
	}
	if in.Labels != nil {
		d.Labels = labels
		l.hSyncLBsLocked()
	}
	return result{200, map[string]any{"server": l.hServerJSON(d)}}, nil
}

func (l *Lab) hzServersDelete(c *call) (result, *apiError) {
	d := l.hServer(c.idParam("id"))
	if d == nil {
		return result{}, hNotFound("server")
	}
	if m := l.machines[d.ID]; m != nil {
		m.stop(false)
		delete(l.machines, d.ID)
	}
	a := l.hNewAction("delete_server", l.cfg.Durations.Action, hResource{d.ID, "server"})
	h := l.st.Hetzner
	for _, lb := range h.LBs {
		lb.Targets = slices.DeleteFunc(lb.Targets, func(t hTarget) bool { return t.Type == "server" && t.ServerID == d.ID })
	}
	for _, f := range h.FloatingIPs {
		if f.ServerID == d.ID {
			f.ServerID = 0
		}
	}
	for _, v := range h.Volumes {
		if v.ServerID == d.ID { // detached; a volume outlives its server
			v.ServerID = 0
		}
	}
	if p := h.PrimaryIPs[d.PrimaryIPv4]; p != nil {
		p.AssigneeID = 0
		if p.AutoDelete {
			delete(h.PrimaryIPs, p.ID)
			l.freeIP(p.IP)
		}
	}
	if d.OwnIP {
		l.freeIP(d.IP)
	}
	delete(l.st.Droplets, d.ID)
	os.RemoveAll(l.diskDir("d", d.ID))
	l.hSyncLBsLocked()
	l.hFinish(a, nil, nil, nil)
	return result{200, map[string]any{"action": hActionJSON(a)}}, nil
}

// hzServerPower runs start_server (poweron), stop_server (poweroff) and
// shutdown_server. Asking for the state a server is in is a no-op action,
// as on Hetzner.
func (l *Lab) hzServerPower(command string) handler {
	return func(c *call) (result, *apiError) {
		d := l.hServer(c.idParam("id"))
		if d == nil {
			return result{}, hNotFound("server")
		}
		if d.Locked {
			return result{}, hLocked("server")
		}
		res := hResource{d.ID, "server"}
		on := d.Status == "active"
		var a *action
		switch {
		case command == "start_server" && !on:
			a = l.hNewAction(command, l.cfg.Durations.PowerOn, res)
			d.Phase = "starting"
			l.hFinish(a, d, func() *hActionError { return l.hPowerOnLocked(d) }, nil)
		case command == "stop_server" && on:
			a = l.hNewAction(command, l.cfg.Durations.Action, res)
			d.Phase = "stopping"
			l.hFinish(a, d, func() *hActionError {
				if m := l.machines[d.ID]; m != nil {
					m.stop(false) // the power is cut: connections too
					delete(l.machines, d.ID)
				}
				d.Status = "off"
				return nil
			}, nil)
		case command == "shutdown_server" && on:
			a = l.hNewAction(command, l.cfg.Durations.Shutdown, res)
			d.Phase = "stopping"
			l.hShutdown(a, d)
		default:
			a = l.hNewAction(command, l.cfg.Durations.Action, res)
			l.hFinish(a, d, nil, nil)
		}
		d.Locked = true
		return result{201, map[string]any{"action": hActionJSON(a)}}, nil
	}
}

// hShutdown stops a server gracefully after the action's duration: requests
// in flight finish, without the lab locked meanwhile.
func (l *Lab) hShutdown(a *action, d *droplet) {
	l.after(a.Duration, func() {
		if l.takeFault(FaultActionErrored, a.Type) != nil {
			a.Status, a.CompletedAt, d.Locked, d.Phase = "errored", time.Now().UTC(), false, ""
			a.Error = &hActionError{"action_failed", "action failed (lab fault action_errored)"}
			return
		}
		m := l.machines[d.ID]
		delete(l.machines, d.ID)
		go func() {
			if m != nil {
				m.stop(true)
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			d.Status, d.Locked, d.Phase = "off", false, ""
			a.Status, a.CompletedAt = "completed", time.Now().UTC()
			l.saveLocked()
		}()
	})
}

func (l *Lab) hzServerChangeType(c *call) (result, *apiError) {
	d := l.hServer(c.idParam("id"))
	if d == nil {
		return result{}, hNotFound("server")
	}
	var in struct {
		ServerType  idOrName `json:"server_type"`
		UpgradeDisk bool     `json:"upgrade_disk"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if d.Locked {
		return result{}, hLocked("server")
	}
	if hStatus(d) != "off" {
		return result{}, hErr(422, "server_not_stopped", "server %d is %s: power it off to change its type", d.ID, hStatus(d))
	}
	t, ok := hServerTypeBy(in.ServerType)
	if !ok {
		return result{}, hInvalid("server type %s not found", in.ServerType)
	}
	if t.DiskGB < d.DiskGB {
		return result{}, hErr(422, "invalid_server_type", "server type %s has a %d GB disk, smaller than the server's %d GB", t.Name, t.DiskGB, d.DiskGB)
	}
	a := l.hNewAction("change_server_type", l.cfg.Durations.Resize, hResource{d.ID, "server"})
	d.Locked = true
	l.hFinish(a, d, func() *hActionError {
		d.Size = t.Name
		if in.UpgradeDisk {
			d.DiskGB = t.DiskGB
		}
		return nil
	}, nil)
	return result{201, map[string]any{"action": hActionJSON(a)}}, nil
}

// Images: https://docs.hetzner.cloud/reference/cloud#images

func hSystemImageJSON(id int) map[string]any {
	for _, si := range hSystemImages {
		if si.ID == id {
			return map[string]any{"id": si.ID, "type": "system", "status": "available", "name": si.Name, "description": si.Description,
				"image_size": nil, "disk_size": 5, "created": si.Created, "created_from": nil, "bound_to": nil, "os_flavor": si.Flavor,
				"os_version": si.Version, "rapid_deploy": true, "protection": map[string]any{"delete": false}, "deprecated": nil,
				"deleted": nil, "labels": map[string]string{}, "architecture": "x86"}
		}
	}
	return nil
}

func hImageJSON(im *hImage) map[string]any {
	var size any
	if im.Status == "available" {
		size = im.SizeGB
	}
	return map[string]any{"id": im.ID, "type": "snapshot", "status": im.Status, "name": nil, "description": im.Description,
		"image_size": size, "disk_size": im.DiskGB, "created": ts(im.Created), "created_from": map[string]any{"id": im.ServerID, "name": im.ServerName},
		"bound_to": nil, "os_flavor": im.Flavor, "os_version": im.OSVersion, "rapid_deploy": false, "protection": map[string]any{"delete": false},
		"deprecated": nil, "deleted": nil, "labels": labelsJSON(im.Labels), "architecture": "x86"}
}

func (l *Lab) hzServerCreateImage(c *call) (result, *apiError) {
	d := l.hServer(c.idParam("id"))
	if d == nil {
		return result{}, hNotFound("server")
	}
	var in struct {
		Type        string            `json:"type"`
		Description *string           `json:"description"`
		Labels      map[string]string `json:"labels"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.Type == "backup" {
		return result{}, hInvalid("backups are not enabled for server %d", d.ID)
	}
	labels, e := checkLabels(in.Labels)
	if e != nil {
		return result{}, e
	}
	if d.Locked {
		return result{}, hLocked("server")
	}
	im := &hImage{ID: l.nextID(), Labels: labels, Status: "creating", ServerID: d.ID, ServerName: d.Name, DiskGB: d.DiskGB,
		Flavor: d.ImageDist, Created: time.Now().UTC()}
	for _, si := range hSystemImages {
		if si.Flavor == d.ImageDist {
			im.OSVersion = si.Version
		}
	}
	if src := l.st.Hetzner.Images[d.ImageID]; src != nil && d.ImageType == "snapshot" {
		im.OSVersion = src.OSVersion
	}
	im.Description = fmt.Sprintf("%s-%s", d.Name, im.Created.Format("20060102150405"))
	if in.Description != nil {
		im.Description = *in.Description
	}
	// The disk is copied when the action starts: a live, crash-consistent
	// image, while the server keeps serving.
	if err := copyDir(l.diskDir("d", d.ID), l.diskDir("s", im.ID)); err != nil {
		return result{}, hErr(500, "server_error", "%v", err)
	}
	l.st.Hetzner.Images[im.ID] = im
	a := l.hNewAction("create_image", l.cfg.Durations.Snapshot, hResource{d.ID, "server"}, hResource{im.ID, "image"})
	d.Locked = true
	l.hFinish(a, d, func() *hActionError {
		if l.st.Hetzner.Images[im.ID] != im {
			return &hActionError{"image_deleted", "the image was deleted while it was created"}
		}
		used := float64((&machine{dir: l.diskDir("s", im.ID)}).diskUsed()) / (1 << 30)
		im.Status, im.SizeGB = "available", float64(int(used*100))/100
		return nil
	}, func() {
		delete(l.st.Hetzner.Images, im.ID)
		os.RemoveAll(l.diskDir("s", im.ID))
	})
	return result{201, map[string]any{"image": hImageJSON(im), "action": hActionJSON(a)}}, nil
}

func (l *Lab) hImages() []*hImage {
	return sortedByID(l.st.Hetzner.Images, func(im *hImage) int { return im.ID })
}

func (l *Lab) hzImagesList(c *call) (result, *apiError) {
	sel, e := c.selector()
	if e != nil {
		return result{}, e
	}
	q := c.r.URL.Query()
	types, statuses := q["type"], q["status"]
	if a := q.Get("architecture"); a != "" && a != "x86" {
		return hList(c, "images", []any{}, func(v any) any { return v }), nil
	}
	var out []any
	keep := func(typ, status, name string, labels map[string]string) bool {
		return (len(types) == 0 || slices.Contains(types, typ)) && (len(statuses) == 0 || slices.Contains(statuses, status)) &&
			(q.Get("name") == "" || q.Get("name") == name) && sel.matches(labels)
	}
	for _, si := range hSystemImages {
		if keep("system", "available", si.Name, nil) {
			out = append(out, hSystemImageJSON(si.ID))
		}
	}
	for _, im := range l.hImages() {
		if keep("snapshot", im.Status, "", im.Labels) && (len(q["bound_to"]) == 0) {
			out = append(out, hImageJSON(im))
		}
	}
	return hList(c, "images", out, func(v any) any { return v }), nil
}

func (l *Lab) hzImagesGet(c *call) (result, *apiError) {
	id := c.idParam("id")
	if im := l.st.Hetzner.Images[id]; im != nil {
		return result{200, map[string]any{"image": hImageJSON(im)}}, nil
	}
	if si := hSystemImageJSON(id); si != nil {
		return result{200, map[string]any{"image": si}}, nil
	}
	return result{}, hNotFound("image")
}

func (l *Lab) hzImagesUpdate(c *call) (result, *apiError) {
	id := c.idParam("id")
	im := l.st.Hetzner.Images[id]
	if im == nil {
		if hSystemImageJSON(id) != nil {
			return result{}, hErr(403, "forbidden", "system images cannot be changed")
		}
		return result{}, hNotFound("image")
	}
	var in struct {
		hzUpdate
		Description *string `json:"description"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if e := in.apply(nil, &im.Labels); e != nil { // an image has no name
		return result{}, e
	}
	if in.Description != nil {
		im.Description = *in.Description
	}
	return result{200, map[string]any{"image": hImageJSON(im)}}, nil
}

func (l *Lab) hzImagesDelete(c *call) (result, *apiError) {
	id := c.idParam("id")
	if l.st.Hetzner.Images[id] == nil {
		if hSystemImageJSON(id) != nil {
			return result{}, hErr(403, "forbidden", "system images cannot be deleted")
		}
		return result{}, hNotFound("image")
	}
	delete(l.st.Hetzner.Images, id)
	os.RemoveAll(l.diskDir("s", id))
	return result{204, nil}, nil
}
