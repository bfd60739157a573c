package lab

import (
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Hetzner DNS in the Cloud API: https://docs.hetzner.cloud/reference/cloud#zones
// Zones are served by the lab's DNS server. A change is served once the
// action it started succeeds (DNSApply after the request).

func (l *Lab) hZones() []*hZone {
	return sortedByID(l.st.Hetzner.Zones, func(z *hZone) int { return z.ID })
}

// hZone finds a zone by the id_or_name path parameter.
func (l *Lab) hZone(c *call) (*hZone, *apiError) {
	ref := c.r.PathValue("id_or_name")
	for _, z := range l.st.Hetzner.Zones {
		if strconv.Itoa(z.ID) == ref || z.Name == strings.TrimSuffix(strings.ToLower(ref), ".") {
			return z, nil
		}
	}
	return nil, hNotFound("zone")
}

// zoneNameTaken reports whether any of the lab's DNS providers has a zone
// of the name: the DNS server serves each name once.
func (l *Lab) zoneNameTaken(name string) bool {
	if l.st.Domains[name] != nil || l.zoneByName(name) != nil {
		return true
	}
	for _, z := range l.st.Hetzner.Zones {
		if z.Name == name {
			return true
		}
	}
	return false
}

func hZoneJSON(z *hZone) map[string]any {
	n := 0
	for _, rs := range z.RRSets {
		n += len(rs.Records)
	}
	return map[string]any{"id": z.ID, "name": z.Name, "mode": "primary", "ttl": z.TTL, "labels": labelsJSON(z.Labels),
		"created": ts(z.Created), "status": "ok", "protection": map[string]any{"delete": false}, "record_count": n, "registrar": "other",
		"authoritative_nameservers": map[string]any{"assigned": []string{nameserver}, "delegated": []string{},
			"delegation_last_check": nil, "delegation_status": "unknown"}}
}

func hRRSetJSON(z *hZone, rs *hRRSet) map[string]any {
	recs := []any{}
	for _, r := range rs.Records {
		rec := map[string]any{"value": r.Value}
		if r.Comment != "" {
			rec["comment"] = r.Comment
		}
		recs = append(recs, rec)
	}
	var ttl any
	if rs.TTL != nil {
		ttl = *rs.TTL
	}
	return map[string]any{"id": rs.Name + "/" + rs.Type, "name": rs.Name, "type": rs.Type, "ttl": ttl, "labels": labelsJSON(rs.Labels),
		"protection": map[string]any{"change": false}, "records": recs, "zone": z.ID}
}

// hDNSAction starts an action that changes a zone; the DNS server serves
// the change when it completes.
func (l *Lab) hDNSAction(command string, z *hZone) *action {
	a := l.hNewAction(command, l.cfg.Durations.DNSApply, hResource{z.ID, "zone"})
	publish := func() { l.publishDNS() }
	if a.Duration <= 0 {
		publish()
		a.Status, a.CompletedAt = "completed", a.StartedAt
		return a
	}
	l.hFinish(a, nil, func() *hActionError { publish(); return nil }, publish)
	return a
}

func (l *Lab) hzZonesList(c *call) (result, *apiError) {
	sel, e := c.selector()
	if e != nil {
		return result{}, e
	}
	q := c.r.URL.Query()
	var zs []*hZone
	for _, z := range l.hZones() {
		if (q.Get("name") == "" || z.Name == q.Get("name")) && (q.Get("mode") == "" || q.Get("mode") == "primary") && sel.matches(z.Labels) {
			zs = append(zs, z)
		}
	}
	return hList(c, "zones", zs, func(z *hZone) any { return hZoneJSON(z) }), nil
}

func (l *Lab) hzZonesGet(c *call) (result, *apiError) {
	z, e := l.hZone(c)
	if e != nil {
		return result{}, e
	}
	return result{200, map[string]any{"zone": hZoneJSON(z)}}, nil
}

type hRRSetIn struct {
	Name    string            `json:"name"`
	Type    string            `json:"type"`
	TTL     *int              `json:"ttl"`
	Records []hRecord         `json:"records"`
	Labels  map[string]string `json:"labels"`
}

func (l *Lab) hzZonesCreate(c *call) (result, *apiError) {
	var in struct {
		Name     string            `json:"name"`
		Mode     string            `json:"mode"`
		TTL      *int              `json:"ttl"`
		Labels   map[string]string `json:"labels"`
		RRSets   []hRRSetIn        `json:"rrsets"`
		Zonefile string            `json:"zonefile"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.Mode != "primary" {
		return result{}, hInvalid("the lab serves primary zones only")
	}
	if in.Zonefile != "" {
		return result{}, hInvalid("the lab does not import zone files: pass rrsets")
	}
	name := in.Name
	if name != strings.ToLower(name) || strings.HasSuffix(name, ".") || !strings.Contains(name, ".") || !validHostname(name) {
		return result{}, hInvalid("zone name %q: a lower-case domain name without a trailing dot", name)
	}
	if l.zoneNameTaken(name) {
		return result{}, hUnique("zone %s already exists", name)
	}
	labels, e := checkLabels(in.Labels)
	if e != nil {
		return result{}, e
	}
	z := &hZone{Name: name, TTL: 3600, Labels: labels, Created: time.Now().UTC()}
	if in.TTL != nil {
		z.TTL = *in.TTL
	}
	if z.TTL < 60 {
		return result{}, hInvalid("ttl must be at least 60")
	}
	ns := strings.TrimSuffix(nameserver, ".")
	z.RRSets = []*hRRSet{
		{Name: "@", Type: "SOA", Records: []hRecord{{Value: fmt.Sprintf("%s. hostmaster.%s. %d 86400 10800 3600000 3600", ns, name, time.Now().Unix())}}},
		{Name: "@", Type: "NS", Records: []hRecord{{Value: ns + "."}}},
	}
	for _, ri := range in.RRSets {
		rs, e := z.newRRSet(ri)
		if e != nil {
			return result{}, e
		}
		z.RRSets = append(z.RRSets, rs)
	}
	z.ID = l.nextID()
	l.st.Hetzner.Zones[z.ID] = z
	a := l.hDNSAction("create_zone", z)
	return result{201, map[string]any{"zone": hZoneJSON(z), "action": hActionJSON(a)}}, nil
}

func (l *Lab) hzZonesDelete(c *call) (result, *apiError) {
	z, e := l.hZone(c)
	if e != nil {
		return result{}, e
	}
	delete(l.st.Hetzner.Zones, z.ID)
	a := l.hDNSAction("delete_zone", z)
	return result{201, map[string]any{"action": hActionJSON(a)}}, nil
}

func (l *Lab) hzZoneActions(c *call) (result, *apiError) {
	z, e := l.hZone(c)
	if e != nil {
		return result{}, e
	}
	return hList(c, "actions", filterActions(c, l.hActions("zone", z.ID)), func(a *action) any { return hActionJSON(a) }), nil
}

func (l *Lab) hzZoneAction(c *call) (result, *apiError) {
	z, e := l.hZone(c)
	if e != nil {
		return result{}, e
	}
	for _, a := range l.hActions("zone", z.ID) {
		if a.ID == c.idParam("action_id") {
			return result{200, map[string]any{"action": hActionJSON(a)}}, nil
		}
	}
	return result{}, hNotFound("action")
}

func (l *Lab) hzZoneChangeTTL(c *call) (result, *apiError) {
	z, e := l.hZone(c)
	if e != nil {
		return result{}, e
	}
	var in struct {
		TTL int `json:"ttl"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if in.TTL < 60 {
		return result{}, hInvalid("ttl must be at least 60")
	}
	z.TTL = in.TTL
	return result{201, map[string]any{"action": hActionJSON(l.hDNSAction("change_ttl", z))}}, nil
}

// newRRSet checks a requested RRSet against the zone.
func (z *hZone) newRRSet(in hRRSetIn) (*hRRSet, *apiError) {
	if in.Name == "" || in.Name != strings.ToLower(in.Name) || strings.HasSuffix(in.Name, ".") ||
		(in.Name != "@" && (in.Name == z.Name || strings.HasSuffix(in.Name, "."+z.Name))) {
		return nil, hInvalid("rrset name %q: lower case, relative to the zone (\"@\" for its apex), without a trailing dot", in.Name)
	}
	if z.rrset(in.Name, in.Type) != nil {
		return nil, hUnique("rrset %s/%s already exists", in.Name, in.Type)
	}
	if in.Type == "SOA" || (in.Type == "NS" && in.Name == "@") {
		return nil, hInvalid("the zone's SOA and apex NS records are its own")
	}
	labels, e := checkLabels(in.Labels)
	if e != nil {
		return nil, e
	}
	rs := &hRRSet{Name: in.Name, Type: in.Type, Labels: labels}
	if e := z.setTTL(rs, in.TTL); e != nil {
		return nil, e
	}
	if e := z.setRecords(rs, in.Records); e != nil {
		return nil, e
	}
	return rs, nil
}

func (z *hZone) rrset(name, typ string) *hRRSet {
	for _, rs := range z.RRSets {
		if rs.Name == name && rs.Type == typ {
			return rs
		}
	}
	return nil
}

func (z *hZone) setTTL(rs *hRRSet, ttl *int) *apiError {
	if ttl != nil && *ttl < 60 {
		return hInvalid("ttl must be at least 60")
	}
	rs.TTL = ttl
	return nil
}

// setRecords replaces an RRSet's records, each checked as the DNS server
// will parse it.
func (z *hZone) setRecords(rs *hRRSet, recs []hRecord) *apiError {
	if len(recs) == 0 {
		return hInvalid("an rrset needs at least one record")
	}
	var out []hRecord
	for _, r := range recs {
		switch ip := net.ParseIP(r.Value); {
		case rs.Type == "A" && (ip == nil || ip.To4() == nil):
			return hInvalid("A record value %q is not an IPv4 address", r.Value)
		case rs.Type == "AAAA" && (ip == nil || ip.To4() != nil):
			return hInvalid("AAAA record value %q is not an IPv6 address", r.Value)
		}
		if _, err := dns.NewRR(fmt.Sprintf("%s 60 IN %s %s", hFQDN(rs.Name, z.Name), rs.Type, r.Value)); err != nil {
			return hInvalid("%s record value %q: %v", rs.Type, r.Value, err)
		}
		if !slices.ContainsFunc(out, func(o hRecord) bool { return o.Value == r.Value }) {
			out = append(out, r)
		}
	}
	rs.Records = out
	return nil
}

// hFQDN is an RRSet's owner name, with its trailing dot.
func hFQDN(name, zone string) string {
	if name == "@" {
		return dns.Fqdn(zone)
	}
	return dns.Fqdn(name + "." + zone)
}

func (l *Lab) hzRRSetsList(c *call) (result, *apiError) {
	z, e := l.hZone(c)
	if e != nil {
		return result{}, e
	}
	sel, e := c.selector()
	if e != nil {
		return result{}, e
	}
	q := c.r.URL.Query()
	var out []*hRRSet
	for _, rs := range z.RRSets {
		if (q.Get("name") == "" || rs.Name == q.Get("name")) && (len(q["type"]) == 0 || slices.Contains(q["type"], rs.Type)) && sel.matches(rs.Labels) {
			out = append(out, rs)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Type < out[j].Type
	})
	return hList(c, "rrsets", out, func(rs *hRRSet) any { return hRRSetJSON(z, rs) }), nil
}

// hRRSetOf finds the RRSet of the path's zone, rr_name and rr_type.
func (l *Lab) hRRSetOf(c *call) (*hZone, *hRRSet, *apiError) {
	z, e := l.hZone(c)
	if e != nil {
		return nil, nil, e
	}
	rs := z.rrset(c.r.PathValue("rr_name"), c.r.PathValue("rr_type"))
	if rs == nil {
		return nil, nil, hNotFound("rrset")
	}
	return z, rs, nil
}

func (l *Lab) hzRRSetsGet(c *call) (result, *apiError) {
	z, rs, e := l.hRRSetOf(c)
	if e != nil {
		return result{}, e
	}
	return result{200, map[string]any{"rrset": hRRSetJSON(z, rs)}}, nil
}

func (l *Lab) hzRRSetsCreate(c *call) (result, *apiError) {
	z, e := l.hZone(c)
	if e != nil {
		return result{}, e
	}
	var in hRRSetIn
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	if l.takeFault(FaultDNSReject, "") != nil {
		return result{}, hErr(422, "invalid_input", "record change rejected (lab fault dns_reject)")
	}
	rs, e := z.newRRSet(in)
	if e != nil {
		return result{}, e
	}
	z.RRSets = append(z.RRSets, rs)
	a := l.hDNSAction("create_rrset", z)
	return result{201, map[string]any{"rrset": hRRSetJSON(z, rs), "action": hActionJSON(a)}}, nil
}

func (l *Lab) hzRRSetsDelete(c *call) (result, *apiError) {
	z, rs, e := l.hRRSetOf(c)
	if e != nil {
		return result{}, e
	}
	if rs.Type == "SOA" || (rs.Type == "NS" && rs.Name == "@") {
		return result{}, hInvalid("the zone's SOA and apex NS records are its own")
	}
	z.RRSets = slices.DeleteFunc(z.RRSets, func(o *hRRSet) bool { return o == rs })
	return result{201, map[string]any{"action": hActionJSON(l.hDNSAction("delete_rrset", z))}}, nil
}

// hzRRSetChange runs the RRSet actions set_records, add_records,
// remove_records (an RRSet left empty is deleted) and change_ttl.
func (l *Lab) hzRRSetChange(kind string) handler {
	return func(c *call) (result, *apiError) {
		z, rs, e := l.hRRSetOf(c)
		if e != nil {
			return result{}, e
		}
		var in struct {
			Records []hRecord `json:"records"`
			TTL     *int      `json:"ttl"`
		}
		if e := c.decode(&in); e != nil {
			return result{}, e
		}
		if rs.Type == "SOA" {
			return result{}, hInvalid("the zone's SOA record is its own")
		}
		if l.takeFault(FaultDNSReject, "") != nil {
			return result{}, hErr(422, "invalid_input", "record change rejected (lab fault dns_reject)")
		}
		next := *rs
		switch kind {
		case "set_records":
			e = z.setRecords(&next, in.Records)
		case "add_records":
			e = z.setRecords(&next, append(slices.Clone(rs.Records), in.Records...))
			if e == nil && in.TTL != nil {
				e = z.setTTL(&next, in.TTL)
			}
		case "remove_records":
			next.Records = slices.DeleteFunc(slices.Clone(rs.Records), func(r hRecord) bool {
				return slices.ContainsFunc(in.Records, func(o hRecord) bool { return o.Value == r.Value })
			})
		case "change_ttl":
			e = z.setTTL(&next, in.TTL)
		}
		if e != nil {
			return result{}, e
		}
		*rs = next
		if len(rs.Records) == 0 {
			z.RRSets = slices.DeleteFunc(z.RRSets, func(o *hRRSet) bool { return o == rs })
		}
		command := map[string]string{"set_records": "set_rrset_records", "add_records": "add_rrset_records",
			"remove_records": "remove_rrset_records", "change_ttl": "change_rrset_ttl"}[kind]
		return result{201, map[string]any{"action": hActionJSON(l.hDNSAction(command, z))}}, nil
	}
}

// hetznerZoneRecords renders the Hetzner zones for the DNS server (the
// zone's SOA and NS records are the server's own).
func (l *Lab) hetznerZoneRecords(out map[string]*servedZone) {
	for _, z := range l.st.Hetzner.Zones {
		sz := out[dns.Fqdn(z.Name)]
		if sz == nil {
			sz = &servedZone{name: dns.Fqdn(z.Name)}
			out[sz.name] = sz
		}
		for _, rs := range z.RRSets {
			if rs.Type == "SOA" || (rs.Type == "NS" && rs.Name == "@") {
				continue
			}
			ttl := z.TTL
			if rs.TTL != nil {
				ttl = *rs.TTL
			}
			for _, r := range rs.Records {
				rr, err := dns.NewRR(fmt.Sprintf("%s %d IN %s %s", hFQDN(rs.Name, z.Name), ttl, rs.Type, r.Value))
				if err == nil && rr != nil {
					sz.records = append(sz.records, rr)
				}
			}
		}
	}
}
