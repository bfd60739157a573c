package lab

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"
)

// Hetzner load balancers: https://docs.hetzner.cloud/reference/cloud#load-balancers
// Each service is a balancer of its own (balancer.go) on the load
// balancer's address and the service's listen port, with its own health
// checks of every target: a target is "unknown" until it passed (healthy)
// or failed (unhealthy) `retries` checks in a row, and only healthy
// targets get traffic.

func (l *Lab) hLBs() []*hLB {
	return sortedByID(l.st.Hetzner.LBs, func(lb *hLB) int { return lb.ID })
}

// hTargetServers returns the IDs of the servers a load balancer targets:
// its server targets, then those its label selectors pick, each once.
func (l *Lab) hTargetServers(lb *hLB) []int {
	var ids []int
	add := func(id int) {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	for _, t := range lb.Targets {
		switch t.Type {
		case "server":
			if l.hServer(t.ServerID) != nil {
				add(t.ServerID)
			}
		case "label_selector":
			for _, id := range l.hSelected(t.Selector) {
				add(id)
			}
		}
	}
	return ids
}

// hSelected returns the IDs of the servers a label selector picks.
func (l *Lab) hSelected(selector string) []int {
	sel, err := parseSelector(selector)
	if err != nil {
		return nil
	}
	var ids []int
	for _, d := range sortedServers(l.st, cloudHetzner) {
		if sel.matches(d.Labels) {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

// hSyncLBsLocked makes every Hetzner load balancer's services route to
// exactly the servers its targets name now.
func (l *Lab) hSyncLBsLocked() {
	for _, lb := range l.st.Hetzner.LBs {
		l.hSyncLBLocked(lb, false)
	}
}

func (l *Lab) hSyncLBLocked(lb *hLB, initial bool) {
	ids := l.hTargetServers(lb)
	for _, svc := range lb.Services {
		b := l.hlbs[lb.ID][svc.ListenPort]
		if b == nil {
			continue
		}
		var want []memberSpec
		for _, id := range ids {
			d := l.hServer(id)
			if d.IP == "" {
				continue
			}
			want = append(want, memberSpec{id: id, running: d.Status == "active",
				addr:      net.JoinHostPort(d.IP, strconv.Itoa(svc.DestinationPort)),
				checkAddr: net.JoinHostPort(d.IP, strconv.Itoa(svc.HealthCheck.Port))})
		}
		b.setMembers(want, initial, lb.IgnoreNew && !initial)
	}
}

// startHLBLocked starts a load balancer's services. initial: it is being
// restored, and its running targets are taken as healthy.
func (l *Lab) startHLBLocked(lb *hLB, initial bool) error {
	bs := map[int]*balancer{}
	closeAll := func() {
		for _, b := range bs {
			b.close()
		}
	}
	for _, svc := range lb.Services {
		id, port := lb.ID, svc.ListenPort
		b := l.newBalancer(fmt.Sprintf("hetzner-%d:%d", id, port), func() (healthCheck, bool) {
			l.mu.Lock()
			defer l.mu.Unlock()
			lb := l.st.Hetzner.LBs[id]
			if lb == nil {
				return healthCheck{}, false
			}
			for _, s := range lb.Services {
				if s.ListenPort == port {
					hc := s.HealthCheck
					n := max(hc.Retries, 1)
					out := healthCheck{tcp: hc.Protocol == "tcp", path: hc.Path, codes: hc.StatusCodes, up: n, down: n}
					if hc.Domain != nil && *hc.Domain != "" {
						out.host = *hc.Domain
					}
					return out, true
				}
			}
			return healthCheck{}, false
		})
		if !lb.PublicInterface {
			go b.healthLoop()
			bs[port] = b
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(lb.IP, strconv.Itoa(port)))
		if err != nil {
			closeAll()
			return fmt.Errorf("lab: load balancer %d: %w", lb.ID, err)
		}
		if svc.Protocol == "tcp" {
			b.serveTCP(ln)
		} else {
			b.serveHTTP(ln, "503 Service Unavailable: no healthy targets")
		}
		bs[port] = b
	}
	l.hlbs[lb.ID] = bs
	l.hSyncLBLocked(lb, initial)
	return nil
}

func (l *Lab) stopHLBLocked(id int) {
	for _, b := range l.hlbs[id] {
		b.close()
	}
	delete(l.hlbs, id)
}

// hHealth returns a server's health as each of a load balancer's services
// sees it.
func (l *Lab) hHealth(lb *hLB, serverID int) []any {
	out := []any{}
	for _, svc := range lb.Services {
		status := "unknown"
		if b := l.hlbs[lb.ID][svc.ListenPort]; b != nil {
			b.mu.Lock()
			if m := b.members[serverID]; m != nil && m.known {
				status = "unhealthy"
				if m.healthy {
					status = "healthy"
				}
			}
			b.mu.Unlock()
		}
		out = append(out, map[string]any{"listen_port": svc.ListenPort, "status": status})
	}
	return out
}

func (l *Lab) hLBJSON(lb *hLB) map[string]any {
	services := []any{}
	for _, svc := range lb.Services {
		hc := svc.HealthCheck
		check := map[string]any{"protocol": hc.Protocol, "port": hc.Port, "interval": hc.Interval, "timeout": hc.Timeout, "retries": hc.Retries}
		if hc.Protocol == "http" {
			check["http"] = map[string]any{"domain": hc.Domain, "path": hc.Path, "response": hc.Response,
				"status_codes": append([]string{}, hc.StatusCodes...), "tls": hc.TLS}
		}
		s := map[string]any{"protocol": svc.Protocol, "listen_port": svc.ListenPort, "destination_port": svc.DestinationPort,
			"proxyprotocol": svc.Proxyprotocol, "health_check": check}
		if svc.Protocol == "http" {
			s["http"] = map[string]any{"cookie_name": svc.CookieName, "cookie_lifetime": svc.CookieLifetime, "certificates": []int{},
				"redirect_http": false, "sticky_sessions": svc.StickySessions}
		}
		services = append(services, s)
	}
	server := func(id int) map[string]any {
		return map[string]any{"type": "server", "server": map[string]any{"id": id}, "health_status": l.hHealth(lb, id), "use_private_ip": false}
	}
	targets := []any{}
	for _, t := range lb.Targets {
		switch t.Type {
		case "server":
			targets = append(targets, server(t.ServerID))
		case "label_selector":
			picked := []any{}
			for _, id := range l.hSelected(t.Selector) {
				picked = append(picked, server(id))
			}
			targets = append(targets, map[string]any{"type": "label_selector", "label_selector": map[string]any{"selector": t.Selector},
				"targets": picked, "use_private_ip": false})
		}
	}
	var v4, v6 any
	if lb.PublicInterface {
		v4, v6 = lb.IP, fmt.Sprintf("2001:db8:1b::%x", lb.ID)
	}
	return map[string]any{
		"id": lb.ID, "name": lb.Name, "created": ts(lb.Created), "labels": labelsJSON(lb.Labels),
		"load_balancer_type": hLBTypeJSON(), "location": hLocationJSON(hLocationNamed(lb.Location)),
		"algorithm": map[string]any{"type": lb.Algorithm}, "services": services, "targets": targets,
		"public_net": map[string]any{"enabled": lb.PublicInterface, "ipv4": map[string]any{"ip": v4, "dns_ptr": nil},
			"ipv6": map[string]any{"ip": v6, "dns_ptr": nil}},
		"private_net": []any{}, "protection": map[string]any{"delete": false},
		"included_traffic": int64(20) << 40, "ingoing_traffic": 0, "outgoing_traffic": 0,
	}
}

func (l *Lab) hzLBList(c *call) (result, *apiError) {
	sel, e := c.selector()
	if e != nil {
		return result{}, e
	}
	var lbs []*hLB
	for _, lb := range l.hLBs() {
		if n := c.r.URL.Query().Get("name"); (n == "" || lb.Name == n) && sel.matches(lb.Labels) {
			lbs = append(lbs, lb)
		}
	}
	return hList(c, "load_balancers", lbs, func(lb *hLB) any { return l.hLBJSON(lb) }), nil
}

func (l *Lab) hzLBGet(c *call) (result, *apiError) {
	lb := l.st.Hetzner.LBs[c.idParam("id")]
	if lb == nil {
		return result{}, hNotFound("load balancer")
	}
	return result{200, map[string]any{"load_balancer": l.hLBJSON(lb)}}, nil
}

type hServiceIn struct {
	Protocol        string `json:"protocol"`
	ListenPort      *int   `json:"listen_port"`
	DestinationPort *int   `json:"destination_port"`
	Proxyprotocol   bool   `json:"proxyprotocol"`
	HealthCheck     *struct {
		Protocol string `json:"protocol"`
		Port     *int   `json:"port"`
		Interval *int   `json:"interval"`
		Timeout  *int   `json:"timeout"`
		Retries  *int   `json:"retries"`
		HTTP     *struct {
			Domain      *string  `json:"domain"`
			Path        string   `json:"path"`
			Response    string   `json:"response"`
			StatusCodes []string `json:"status_codes"`
			TLS         bool     `json:"tls"`
		} `json:"http"`
	} `json:"health_check"`
	HTTP *struct {
		CookieName     *string `json:"cookie_name"`
		CookieLifetime *int    `json:"cookie_lifetime"`
		StickySessions *bool   `json:"sticky_sessions"`
		Certificates   []int   `json:"certificates"`
	} `json:"http"`
}

// service checks a requested service and fills in Hetzner's defaults.
func (in hServiceIn) service() (hService, *apiError) {
	svc := hService{Protocol: in.Protocol, Proxyprotocol: in.Proxyprotocol}
	switch in.Protocol {
	case "http":
		svc.ListenPort, svc.DestinationPort = 80, 80
	case "tcp":
		if in.ListenPort == nil || in.DestinationPort == nil {
			return svc, hInvalid("a tcp service needs listen_port and destination_port")
		}
	case "https":
		return svc, hInvalid("the lab has no certificates: use http or tcp services")
	default:
		return svc, hInvalid("service protocol %q: use http or tcp", in.Protocol)
	}
	if in.Proxyprotocol {
		return svc, hInvalid("the lab's load balancers do not speak the PROXY protocol")
	}
	if in.ListenPort != nil {
		svc.ListenPort = *in.ListenPort
	}
	if in.DestinationPort != nil {
		svc.DestinationPort = *in.DestinationPort
	}
	if svc.ListenPort < 1 || svc.ListenPort > 65535 || svc.DestinationPort < 1 || svc.DestinationPort > 65535 {
		return svc, hInvalid("ports must be between 1 and 65535")
	}
	hc := hHealthCheck{Protocol: in.Protocol, Port: svc.DestinationPort, Interval: 15, Timeout: 10, Retries: 3}
	if h := in.HealthCheck; h != nil {
		if h.Protocol != "" {
			hc.Protocol = h.Protocol
		}
		for _, f := range []struct {
			dst *int
			src *int
		}{{&hc.Port, h.Port}, {&hc.Interval, h.Interval}, {&hc.Timeout, h.Timeout}, {&hc.Retries, h.Retries}} {
			if f.src != nil {
				*f.dst = *f.src
			}
		}
		if h.HTTP != nil {
			hc.Domain, hc.Path, hc.Response, hc.StatusCodes, hc.TLS = h.HTTP.Domain, h.HTTP.Path, h.HTTP.Response, h.HTTP.StatusCodes, h.HTTP.TLS
		}
	}
	if hc.Protocol != "http" && hc.Protocol != "tcp" {
		return svc, hInvalid("health check protocol %q: use http or tcp", hc.Protocol)
	}
	if hc.TLS {
		return svc, hInvalid("the lab's health checks do not speak TLS")
	}
	if hc.Protocol == "http" {
		if hc.Path == "" {
			hc.Path = "/"
		}
		if len(hc.StatusCodes) == 0 {
			hc.StatusCodes = []string{"2??", "3??"}
		}
	}
	if hc.Interval < 1 || hc.Timeout < 1 || hc.Retries < 0 {
		return svc, hInvalid("health check interval and timeout must be at least 1 and retries at least 0")
	}
	svc.HealthCheck = hc
	if h := in.HTTP; h != nil && svc.Protocol == "http" {
		if len(h.Certificates) > 0 {
			return svc, hInvalid("the lab has no certificates")
		}
		if h.StickySessions != nil {
			svc.StickySessions = *h.StickySessions
		}
		if h.CookieName != nil {
			svc.CookieName = *h.CookieName
		}
		if h.CookieLifetime != nil {
			svc.CookieLifetime = *h.CookieLifetime
		}
	}
	if svc.Protocol == "http" {
		if svc.CookieName == "" {
			svc.CookieName = "HCLBSTICKY"
		}
		if svc.CookieLifetime == 0 {
			svc.CookieLifetime = 300
		}
	}
	return svc, nil
}

type hTargetIn struct {
	Type   string `json:"type"`
	Server *struct {
		ID int `json:"id"`
	} `json:"server"`
	LabelSelector *struct {
		Selector string `json:"selector"`
	} `json:"label_selector"`
	UsePrivateIP *bool `json:"use_private_ip"`
}

// target checks a requested target against what lb has.
func (l *Lab) target(in hTargetIn, have []hTarget) (hTarget, *apiError) {
	var t hTarget
	if in.UsePrivateIP != nil && *in.UsePrivateIP {
		return t, hErr(422, "load_balancer_not_attached_to_network", "the load balancer is not attached to a network")
	}
	switch in.Type {
	case "server":
		if in.Server == nil {
			return t, hInvalid("a server target needs server.id")
		}
		d := l.hServer(in.Server.ID)
		if d == nil {
			return t, hInvalid("server %d not found", in.Server.ID)
		}
		if d.PrimaryIPv4 == 0 {
			return t, hErr(422, "missing_ipv4", "server %d has no public IPv4 address", d.ID)
		}
		t = hTarget{Type: "server", ServerID: d.ID}
	case "label_selector":
		if in.LabelSelector == nil {
			return t, hInvalid("a label_selector target needs label_selector.selector")
		}
		if _, e := parseSelector(in.LabelSelector.Selector); e != nil {
			return t, e
		}
		t = hTarget{Type: "label_selector", Selector: in.LabelSelector.Selector}
	default:
		return t, hInvalid("target type %q: the lab supports server and label_selector targets", in.Type)
	}
	if slices.Contains(have, t) {
		return t, hErr(422, "target_already_defined", "the target is already defined")
	}
	return t, nil
}

func (l *Lab) hzLBCreate(c *call) (result, *apiError) {
	var in struct {
		Name             string            `json:"name"`
		LoadBalancerType idOrName          `json:"load_balancer_type"`
		Location         idOrName          `json:"location"`
		NetworkZone      string            `json:"network_zone"`
		Labels           map[string]string `json:"labels"`
		PublicInterface  *bool             `json:"public_interface"`
		Network          *int              `json:"network"`
		Algorithm        *struct {
			Type string `json:"type"`
		} `json:"algorithm"`
		Services []hServiceIn `json:"services"`
		Targets  []hTargetIn  `json:"targets"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.Name == "" {
		return result{}, hInvalid("name is required")
	}
	for _, lb := range l.st.Hetzner.LBs {
		if lb.Name == in.Name {
			return result{}, hUnique("load balancer name %q is already used", in.Name)
		}
	}
	if !in.LoadBalancerType.is(1, "lb11") {
		return result{}, hInvalid("load balancer type %s not found", in.LoadBalancerType)
	}
	loc, ok := hLocationBy(in.Location)
	switch {
	case in.Location.set && !ok:
		return result{}, hInvalid("location %s not found", in.Location)
	case !in.Location.set && in.NetworkZone == "eu-central":
		loc = hLocations[0]
	case !in.Location.set:
		return result{}, hInvalid("specify location or network_zone (eu-central)")
	}
	if in.Network != nil {
		return result{}, hInvalid("the lab has no private networks")
	}
	labels, e := checkLabels(in.Labels)
	if e != nil {
		return result{}, e
	}
	lb := &hLB{Name: in.Name, Location: loc.Name, Type: "lb11", Algorithm: "round_robin", PublicInterface: true, Labels: labels, Created: time.Now().UTC(),
		Services: []hService{}, Targets: []hTarget{}}
	if in.Algorithm != nil {
		if in.Algorithm.Type != "round_robin" && in.Algorithm.Type != "least_connections" {
			return result{}, hInvalid("algorithm %q", in.Algorithm.Type)
		}
		lb.Algorithm = in.Algorithm.Type
	}
	if in.PublicInterface != nil {
		lb.PublicInterface = *in.PublicInterface
	}
	if len(in.Services) > 5 {
		return result{}, hErr(422, "resource_limit_exceeded", "lb11 has at most 5 services")
	}
	for _, s := range in.Services {
		svc, e := s.service()
		if e != nil {
			return result{}, e
		}
		for _, o := range lb.Services {
			if o.ListenPort == svc.ListenPort {
				return result{}, hErr(422, "source_port_already_used", "listen port %d is used by another service", svc.ListenPort)
			}
		}
		lb.Services = append(lb.Services, svc)
	}
	for _, ti := range in.Targets {
		t, e := l.target(ti, lb.Targets)
		if e != nil {
			return result{}, e
		}
		lb.Targets = append(lb.Targets, t)
	}
	ip, err := l.allocIP()
	if err != nil {
		return result{}, hErr(422, "resource_unavailable", "%v", err)
	}
	lb.ID, lb.IP = l.nextID(), ip
	lb.IgnoreNew = l.ignoreNewArmed()
	if err := l.startHLBLocked(lb, false); err != nil {
		l.freeIP(ip)
		return result{}, hErr(500, "server_error", "%v", err)
	}
	l.st.Hetzner.LBs[lb.ID] = lb
	a := l.hNewAction("create_load_balancer", l.cfg.Durations.Action, hResource{lb.ID, "load_balancer"})
	l.hFinish(a, nil, nil, nil)
	return result{201, map[string]any{"load_balancer": l.hLBJSON(lb), "action": hActionJSON(a)}}, nil
}

// ignoreNewArmed reports whether an lb_ignore_new fault was injected: it
// holds for every load balancer from then on.
func (l *Lab) ignoreNewArmed() bool {
	for _, f := range l.faults {
		if f.Kind == FaultLBIgnoreNew {
			return true
		}
	}
	return false
}

func (l *Lab) hzLBUpdate(c *call) (result, *apiError) {
	lb := l.st.Hetzner.LBs[c.idParam("id")]
	if lb == nil {
		return result{}, hNotFound("load balancer")
	}
	var in hzUpdate
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if e := in.apply(&lb.Name, &lb.Labels); e != nil {
		return result{}, e
	}
	return result{200, map[string]any{"load_balancer": l.hLBJSON(lb)}}, nil
}

func (l *Lab) hzLBDelete(c *call) (result, *apiError) {
	lb := l.st.Hetzner.LBs[c.idParam("id")]
	if lb == nil {
		return result{}, hNotFound("load balancer")
	}
	l.stopHLBLocked(lb.ID)
	delete(l.st.Hetzner.LBs, lb.ID)
	l.freeIP(lb.IP)
	// Since 2026-10-05 Hetzner answers 201 with an action (hcloud-go v2.52.0
	// reads it); the vendored spec, older, says 204 and documents no 201.
	a := l.hNewAction("delete_load_balancer", l.cfg.Durations.Action, hResource{lb.ID, "load_balancer"})
	l.hFinish(a, nil, nil, nil)
	return result{201, map[string]any{"action": hActionJSON(a)}}, nil
}

// hzLBTarget adds or removes a target. The change applies at once: a
// removed target gets no new requests, and requests in flight complete.
func (l *Lab) hzLBTarget(add bool) handler {
	return func(c *call) (result, *apiError) {
		lb := l.st.Hetzner.LBs[c.idParam("id")]
		if lb == nil {
			return result{}, hNotFound("load balancer")
		}
		var in hTargetIn
		if e := c.decode(&in); e != nil {
			return result{}, e
		}
		command := "remove_target"
		if add {
			command = "add_target"
			t, e := l.target(in, lb.Targets)
			if e != nil {
				return result{}, e
			}
			lb.Targets = append(lb.Targets, t)
		} else {
			var t hTarget
			switch {
			case in.Type == "server" && in.Server != nil:
				t = hTarget{Type: "server", ServerID: in.Server.ID}
			case in.Type == "label_selector" && in.LabelSelector != nil:
				t = hTarget{Type: "label_selector", Selector: in.LabelSelector.Selector}
			default:
				return result{}, hInvalid("target type %q needs its %s field", in.Type, in.Type)
			}
			i := slices.Index(lb.Targets, t)
			if i < 0 {
				return result{}, hErr(422, "target_not_found", "the load balancer has no such target")
			}
			lb.Targets = slices.Delete(lb.Targets, i, i+1)
		}
		l.hSyncLBLocked(lb, false)
		a := l.hNewAction(command, l.cfg.Durations.Action, hResource{lb.ID, "load_balancer"})
		l.hFinish(a, nil, nil, nil)
		return result{201, map[string]any{"action": hActionJSON(a)}}, nil
	}
}

// HetznerHealthy returns the IDs of the servers a Hetzner load balancer's
// service on listenPort routes to now (its healthy targets).
func (l *Lab) HetznerHealthy(lbID int64, listenPort int) []int64 {
	l.mu.Lock()
	b := l.hlbs[int(lbID)][listenPort]
	l.mu.Unlock()
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int64
	for _, id := range b.order {
		if b.members[id].healthy {
			out = append(out, int64(id))
		}
	}
	return out
}
