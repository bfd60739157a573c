package lab

import (
	"fmt"
	"time"
)

// Hetzner floating IPs (https://docs.hetzner.cloud/reference/cloud#floating-ips)
// are forwarders on their own addresses, like reserved IPs. Primary IPs
// (https://docs.hetzner.cloud/reference/cloud#primary-ips) are a server's own
// address: its machine listens on its primary IPv4's address, so moving a
// primary IP (which Hetzner allows only while both servers are off) moves
// the address; unassigned, nothing listens on it.

func (l *Lab) hFloatingIPs() []*hFloatingIP {
	return sortedByID(l.st.Hetzner.FloatingIPs, func(f *hFloatingIP) int { return f.ID })
}

func (l *Lab) hFloatingJSON(f *hFloatingIP) map[string]any {
	var server any
	if f.ServerID != 0 {
		server = f.ServerID
	}
	return map[string]any{"id": f.ID, "name": f.Name, "description": f.Description, "ip": f.IP, "type": "ipv4", "server": server,
		"dns_ptr":       []any{map[string]any{"ip": f.IP, "dns_ptr": "static." + f.IP + ".clients.your-server.de"}},
		"home_location": hLocationJSON(hLocationNamed(f.HomeLocation)), "blocked": false, "protection": map[string]any{"delete": false},
		"labels": labelsJSON(f.Labels), "created": ts(f.Created)}
}

// startFloatingLocked runs a floating IP's forwarder.
func (l *Lab) startFloatingLocked(f *hFloatingIP) error {
	id := f.ID
	fw, err := l.newForwarder(f.IP, func() string {
		l.mu.Lock()
		defer l.mu.Unlock()
		f := l.st.Hetzner.FloatingIPs[id]
		if f == nil || f.ServerID == 0 {
			return ""
		}
		return l.httpAddr(l.hServer(f.ServerID))
	})
	if err != nil {
		return fmt.Errorf("lab: floating IP %s: %w", f.IP, err)
	}
	l.hfips[f.ID] = fw
	return nil
}

func (l *Lab) hzFloatingList(c *call) (result, *apiError) {
	sel, e := c.selector()
	if e != nil {
		return result{}, e
	}
	q := c.r.URL.Query()
	var fs []*hFloatingIP
	for _, f := range l.hFloatingIPs() {
		if (q.Get("name") == "" || f.Name == q.Get("name")) && (q.Get("ip") == "" || f.IP == q.Get("ip")) && sel.matches(f.Labels) {
			fs = append(fs, f)
		}
	}
	return hList(c, "floating_ips", fs, func(f *hFloatingIP) any { return l.hFloatingJSON(f) }), nil
}

func (l *Lab) hzFloatingGet(c *call) (result, *apiError) {
	f := l.st.Hetzner.FloatingIPs[c.idParam("id")]
	if f == nil {
		return result{}, hNotFound("floating IP")
	}
	return result{200, map[string]any{"floating_ip": l.hFloatingJSON(f)}}, nil
}

func (l *Lab) hzFloatingCreate(c *call) (result, *apiError) {
	var in struct {
		Type         string            `json:"type"`
		Name         string            `json:"name"`
		Description  *string           `json:"description"`
		HomeLocation string            `json:"home_location"`
		Server       *int              `json:"server"`
		Labels       map[string]string `json:"labels"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.Type != "ipv4" {
		return result{}, hInvalid("the lab offers IPv4 floating IPs only")
	}
	labels, e := checkLabels(in.Labels)
	if e != nil {
		return result{}, e
	}
	f := &hFloatingIP{Name: in.Name, Description: in.Description, Labels: labels, Created: time.Now().UTC()}
	var d *droplet
	if in.Server != nil {
		if d = l.hServer(*in.Server); d == nil {
			return result{}, hInvalid("server %d not found", *in.Server)
		}
		f.HomeLocation = d.Region
	}
	if in.HomeLocation != "" {
		loc, ok := hLocationBy(idOrName{name: in.HomeLocation, set: true})
		if !ok {
			return result{}, hInvalid("location %s not found", in.HomeLocation)
		}
		f.HomeLocation = loc.Name
	}
	if f.HomeLocation == "" {
		return result{}, hInvalid("specify home_location or server")
	}
	for _, o := range l.st.Hetzner.FloatingIPs {
		if in.Name != "" && o.Name == in.Name {
			return result{}, hUnique("floating IP name %q is already used", in.Name)
		}
	}
	ip, err := l.allocIP()
	if err != nil {
		return result{}, hErr(422, "resource_unavailable", "%v", err)
	}
	f.ID, f.IP = l.nextID(), ip
	if f.Name == "" {
		f.Name = fmt.Sprintf("floating-ip-%d", f.ID)
	}
	if err := l.startFloatingLocked(f); err != nil {
		l.freeIP(ip)
		return result{}, hErr(500, "server_error", "%v", err)
	}
	l.st.Hetzner.FloatingIPs[f.ID] = f
	out := map[string]any{"floating_ip": l.hFloatingJSON(f)}
	if d != nil {
		// Assigned as part of its creation: it routes at once.
		f.ServerID = d.ID
		a := l.hNewAction("assign_floating_ip", l.cfg.Durations.Action, hResource{f.ID, "floating_ip"}, hResource{d.ID, "server"})
		l.hFinish(a, nil, nil, nil)
		out["floating_ip"], out["action"] = l.hFloatingJSON(f), hActionJSON(a)
	}
	return result{201, out}, nil
}

func (l *Lab) hzFloatingUpdate(c *call) (result, *apiError) {
	f := l.st.Hetzner.FloatingIPs[c.idParam("id")]
	if f == nil {
		return result{}, hNotFound("floating IP")
	}
	var in struct {
		hzUpdate
		Description *string `json:"description"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if e := in.apply(&f.Name, &f.Labels); e != nil {
		return result{}, e
	}
	if in.Description != nil {
		f.Description = in.Description
	}
	return result{200, map[string]any{"floating_ip": l.hFloatingJSON(f)}}, nil
}

func (l *Lab) hzFloatingDelete(c *call) (result, *apiError) {
	f := l.st.Hetzner.FloatingIPs[c.idParam("id")]
	if f == nil {
		return result{}, hNotFound("floating IP")
	}
	if fw := l.hfips[f.ID]; fw != nil {
		fw.close()
		delete(l.hfips, f.ID)
	}
	delete(l.st.Hetzner.FloatingIPs, f.ID)
	l.freeIP(f.IP)
	return result{204, nil}, nil
}

// hzFloatingAssign assigns a floating IP to a server (moving it from
// another one, if assigned) or unassigns it, when the action completes.
func (l *Lab) hzFloatingAssign(assign bool) handler {
	return func(c *call) (result, *apiError) {
		f := l.st.Hetzner.FloatingIPs[c.idParam("id")]
		if f == nil {
			return result{}, hNotFound("floating IP")
		}
		res := []hResource{{f.ID, "floating_ip"}}
		to := 0
		command := "unassign_floating_ip"
		if assign {
			var in struct {
				Server *int `json:"server"`
			}
			if e := c.decode(&in); e != nil {
				return result{}, e
			}
			if in.Server == nil {
				return result{}, hInvalid("server is required")
			}
			d := l.hServer(*in.Server)
			if d == nil {
				return result{}, hInvalid("server %d not found", *in.Server)
			}
			if f.ServerID == d.ID {
				return result{}, hErr(422, "floating_ip_assigned", "floating IP %d is already assigned to server %d", f.ID, d.ID)
			}
			to, command = d.ID, "assign_floating_ip"
			res = append(res, hResource{d.ID, "server"})
		}
		a := l.hNewAction(command, l.cfg.Durations.Action, res...)
		l.hFinish(a, nil, func() *hActionError {
			if l.st.Hetzner.FloatingIPs[f.ID] != f || (to != 0 && l.hServer(to) == nil) {
				return &hActionError{"not_found", "the floating IP or the server was deleted"}
			}
			f.ServerID = to
			return nil
		}, nil)
		return result{201, map[string]any{"action": hActionJSON(a)}}, nil
	}
}

// Primary IPs.

func (l *Lab) hPrimaryIPs() []*hPrimaryIP {
	return sortedByID(l.st.Hetzner.PrimaryIPs, func(p *hPrimaryIP) int { return p.ID })
}

func hPrimaryJSON(p *hPrimaryIP) map[string]any {
	loc, _ := hDatacenterBy(idOrName{name: p.Datacenter, set: true})
	var assignee any
	if p.AssigneeID != 0 {
		assignee = p.AssigneeID
	}
	return map[string]any{"id": p.ID, "name": p.Name, "ip": p.IP, "type": "ipv4", "assignee_id": assignee, "assignee_type": "server",
		"auto_delete": p.AutoDelete, "blocked": false, "datacenter": hDatacenterJSON(loc), "location": hLocationJSON(loc),
		"dns_ptr": []any{map[string]any{"ip": p.IP, "dns_ptr": "static." + p.IP + ".clients.your-server.de"}},
		"labels":  labelsJSON(p.Labels), "protection": map[string]any{"delete": false}, "created": ts(p.Created)}
}

func (l *Lab) hzPrimaryList(c *call) (result, *apiError) {
	sel, e := c.selector()
	if e != nil {
		return result{}, e
	}
	q := c.r.URL.Query()
	var ps []*hPrimaryIP
	for _, p := range l.hPrimaryIPs() {
		if (q.Get("name") == "" || p.Name == q.Get("name")) && (q.Get("ip") == "" || p.IP == q.Get("ip")) && sel.matches(p.Labels) {
			ps = append(ps, p)
		}
	}
	return hList(c, "primary_ips", ps, func(p *hPrimaryIP) any { return hPrimaryJSON(p) }), nil
}

func (l *Lab) hzPrimaryGet(c *call) (result, *apiError) {
	p := l.st.Hetzner.PrimaryIPs[c.idParam("id")]
	if p == nil {
		return result{}, hNotFound("primary IP")
	}
	return result{200, map[string]any{"primary_ip": hPrimaryJSON(p)}}, nil
}

// canTakePrimary checks that a server may be given primary IP p now.
func (l *Lab) canTakePrimary(p *hPrimaryIP, d *droplet) *apiError {
	switch {
	case d.Locked:
		return hLocked("server")
	case hStatus(d) != "off":
		return hErr(422, "server_not_stopped", "server %d is %s: power it off first", d.ID, hStatus(d))
	case p.AssigneeID != 0 && p.AssigneeID != d.ID:
		return hErr(422, "primary_ip_already_assigned", "primary IP %d is assigned to server %d", p.ID, p.AssigneeID)
	case d.PrimaryIPv4 != 0 && d.PrimaryIPv4 != p.ID:
		return hErr(422, "server_has_ipv4", "server %d already has an IPv4 address", d.ID)
	case hLocationNamed(d.Region).DCName != p.Datacenter:
		return hErr(422, "primary_ip_datacenter_mismatch", "primary IP %d is in %s, server %d in %s", p.ID, p.Datacenter, d.ID, hLocationNamed(d.Region).DCName)
	}
	return nil
}

// givePrimaryLocked makes p the server's address (the server is off).
func (l *Lab) givePrimaryLocked(p *hPrimaryIP, d *droplet) {
	if d.OwnIP {
		l.freeIP(d.IP)
		d.OwnIP = false
	}
	p.AssigneeID, d.PrimaryIPv4, d.IP = d.ID, p.ID, p.IP
	l.hSyncLBsLocked()
}

func (l *Lab) hzPrimaryCreate(c *call) (result, *apiError) {
	var in struct {
		Name         string            `json:"name"`
		Type         string            `json:"type"`
		AssigneeType string            `json:"assignee_type"`
		AssigneeID   *int              `json:"assignee_id"`
		Datacenter   idOrName          `json:"datacenter"`
		Location     idOrName          `json:"location"`
		AutoDelete   bool              `json:"auto_delete"`
		Labels       map[string]string `json:"labels"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.Type != "ipv4" {
		return result{}, hInvalid("the lab offers IPv4 primary IPs only")
	}
	labels, e := checkLabels(in.Labels)
	if e != nil {
		return result{}, e
	}
	for _, o := range l.st.Hetzner.PrimaryIPs {
		if o.Name == in.Name {
			return result{}, hUnique("primary IP name %q is already used", in.Name)
		}
	}
	p := &hPrimaryIP{Name: in.Name, AutoDelete: in.AutoDelete, Labels: labels, Created: time.Now().UTC()}
	var d *droplet
	switch {
	case in.AssigneeID != nil:
		if d = l.hServer(*in.AssigneeID); d == nil {
			return result{}, hInvalid("server %d not found", *in.AssigneeID)
		}
		p.Datacenter = hLocationNamed(d.Region).DCName
	case in.Datacenter.set:
		loc, ok := hDatacenterBy(in.Datacenter)
		if !ok {
			return result{}, hInvalid("datacenter %s not found", in.Datacenter)
		}
		p.Datacenter = loc.DCName
	case in.Location.set:
		loc, ok := hLocationBy(in.Location)
		if !ok {
			return result{}, hInvalid("location %s not found", in.Location)
		}
		p.Datacenter = loc.DCName
	default:
		return result{}, hInvalid("specify assignee_id, datacenter or location")
	}
	if d != nil {
		if e := l.canTakePrimary(p, d); e != nil {
			return result{}, e
		}
	}
	ip, err := l.allocIP()
	if err != nil {
		return result{}, hErr(422, "resource_unavailable", "%v", err)
	}
	p.ID, p.IP = l.nextID(), ip
	l.st.Hetzner.PrimaryIPs[p.ID] = p
	res := []hResource{{p.ID, "primary_ip"}}
	if d != nil {
		l.givePrimaryLocked(p, d)
		res = append(res, hResource{d.ID, "server"})
	}
	a := l.hDoneAction("create_primary_ip", res...)
	return result{201, map[string]any{"primary_ip": hPrimaryJSON(p), "action": hActionJSON(a)}}, nil
}

func (l *Lab) hzPrimaryUpdate(c *call) (result, *apiError) {
	p := l.st.Hetzner.PrimaryIPs[c.idParam("id")]
	if p == nil {
		return result{}, hNotFound("primary IP")
	}
	var in struct {
		hzUpdate
		AutoDelete *bool `json:"auto_delete"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if e := in.apply(&p.Name, &p.Labels); e != nil {
		return result{}, e
	}
	if in.AutoDelete != nil {
		p.AutoDelete = *in.AutoDelete
	}
	return result{200, map[string]any{"primary_ip": hPrimaryJSON(p)}}, nil
}

func (l *Lab) hzPrimaryDelete(c *call) (result, *apiError) {
	p := l.st.Hetzner.PrimaryIPs[c.idParam("id")]
	if p == nil {
		return result{}, hNotFound("primary IP")
	}
	if p.AssigneeID != 0 {
		// Hetzner's rule since 1 May 2026.
		return result{}, hErr(422, "must_be_unassigned", "primary IP %d is assigned to server %d: unassign it first", p.ID, p.AssigneeID)
	}
	delete(l.st.Hetzner.PrimaryIPs, p.ID)
	l.freeIP(p.IP)
	return result{204, nil}, nil
}

// hzPrimaryAssign assigns a primary IP to a server or unassigns it; the
// server must be off, and stays locked until the action completes.
func (l *Lab) hzPrimaryAssign(assign bool) handler {
	return func(c *call) (result, *apiError) {
		p := l.st.Hetzner.PrimaryIPs[c.idParam("id")]
		if p == nil {
			return result{}, hNotFound("primary IP")
		}
		if assign {
			var in struct {
				AssigneeID   int    `json:"assignee_id"`
				AssigneeType string `json:"assignee_type"`
			}
			if e := c.decode(&in); e != nil {
				return result{}, e
			}
			d := l.hServer(in.AssigneeID)
			if d == nil {
				return result{}, hInvalid("server %d not found", in.AssigneeID)
			}
			if e := l.canTakePrimary(p, d); e != nil {
				return result{}, e
			}
			l.givePrimaryLocked(p, d)
			return l.hPrimaryAction("assign_primary_ip", p, d), nil
		}
		d := l.hServer(p.AssigneeID)
		if d == nil {
			p.AssigneeID = 0
			a := l.hDoneAction("unassign_primary_ip", hResource{p.ID, "primary_ip"})
			return result{201, map[string]any{"action": hActionJSON(a)}}, nil
		}
		switch {
		case d.Locked:
			return result{}, hLocked("server")
		case hStatus(d) != "off":
			return result{}, hErr(422, "server_not_stopped", "server %d is %s: power it off first", d.ID, hStatus(d))
		}
		for _, lb := range l.hLBs() {
			for _, id := range l.hTargetServers(lb) {
				if id == d.ID {
					return result{}, hErr(422, "server_is_load_balancer_target", "server %d is a target of load balancer %d", d.ID, lb.ID)
				}
			}
		}
		p.AssigneeID, d.PrimaryIPv4, d.IP = 0, 0, ""
		return l.hPrimaryAction("unassign_primary_ip", p, d), nil
	}
}

func (l *Lab) hPrimaryAction(command string, p *hPrimaryIP, d *droplet) result {
	a := l.hNewAction(command, l.cfg.Durations.Action, hResource{p.ID, "primary_ip"}, hResource{d.ID, "server"})
	d.Locked = true
	l.hFinish(a, d, nil, nil)
	return result{201, map[string]any{"action": hActionJSON(a)}}
}
