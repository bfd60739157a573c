package lab

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Cloudflare API v4 DNS handlers:
// https://developers.cloudflare.com/api/resources/dns/subresources/records/
// Each runs with Lab.mu held.

// AddZone creates a Cloudflare zone (the subset of the API the lab serves has
// no zone creation; an account's zones exist before vmswap runs).
func (l *Lab) AddZone(name string) (id string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	z, err := l.addZoneLocked(name)
	if err != nil {
		return "", err
	}
	return z.ID, l.saveLocked()
}

func (l *Lab) addZoneLocked(name string) (*zone, error) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if !strings.Contains(name, ".") {
		return nil, fmt.Errorf("lab: zone name %q is not a domain", name)
	}
	if l.zoneNameTaken(name) {
		return nil, fmt.Errorf("lab: zone %s already exists", name)
	}
	z := &zone{ID: randomHex(16), Name: name, Created: time.Now().UTC()}
	l.st.Zones[z.ID] = z
	l.dnsChanged()
	return z, nil
}

func (l *Lab) zoneByName(name string) *zone {
	for _, z := range l.st.Zones {
		if z.Name == name {
			return z
		}
	}
	return nil
}

func cfOK(res any, info map[string]any) map[string]any {
	out := map[string]any{"success": true, "errors": []any{}, "messages": []any{}, "result": res}
	if info != nil {
		out["result_info"] = info
	}
	return out
}

func cfNotFound(what string) *apiError {
	code := 1001
	if what == "record" {
		code = 81044
	}
	return &apiError{status: 404, code: code, msg: fmt.Sprintf("Invalid %s identifier or not found", what)}
}

func zoneJSON(z *zone) map[string]any {
	return map[string]any{
		"id": z.ID, "name": z.Name, "status": "active", "paused": false, "type": "full", "development_mode": 0,
		"name_servers": []string{"ns1.lab.vmswap.test"}, "original_name_servers": nil, "original_registrar": nil, "original_dnshost": nil,
		"created_on": z.Created.Format(time.RFC3339Nano), "modified_on": z.Created.Format(time.RFC3339Nano), "activated_on": z.Created.Format(time.RFC3339Nano),
		"meta":        map[string]any{"step": 4, "custom_certificate_quota": 0, "page_rule_quota": 3, "phishing_detected": false},
		"owner":       map[string]any{"id": "7c5dae5552338874e5053f2534d2767a", "type": "user", "email": "operator@lab.vmswap.test"},
		"account":     map[string]any{"id": "01a7362d577a6c3019a474fd6f485823", "name": "vmswap lab"},
		"permissions": []string{"#dns_records:edit", "#dns_records:read", "#zone:read"},
	}
}

// cfPage applies Cloudflare pagination (page, per_page) and returns result_info.
func (c *call) cfPage(n int) (lo, hi int, info map[string]any) {
	q := c.r.URL.Query()
	per, _ := strconv.Atoi(q.Get("per_page"))
	if per <= 0 {
		per = 100
	}
	pg, _ := strconv.Atoi(q.Get("page"))
	if pg <= 0 {
		pg = 1
	}
	lo = min((pg-1)*per, n)
	hi = min(lo+per, n)
	pages := (n + per - 1) / per
	return lo, hi, map[string]any{"page": pg, "per_page": per, "count": hi - lo, "total_count": n, "total_pages": pages}
}

func (l *Lab) cfZonesList(c *call) (result, *apiError) {
	name := c.r.URL.Query().Get("name")
	var zs []*zone
	for _, z := range l.st.Zones {
		if name == "" || z.Name == name {
			zs = append(zs, z)
		}
	}
	sort.Slice(zs, func(i, j int) bool { return zs[i].Name < zs[j].Name })
	lo, hi, info := c.cfPage(len(zs))
	out := []any{}
	for _, z := range zs[lo:hi] {
		out = append(out, zoneJSON(z))
	}
	return result{200, cfOK(out, info)}, nil
}

func (l *Lab) cfZoneGet(c *call) (result, *apiError) {
	z := l.st.Zones[c.r.PathValue("zone_id")]
	if z == nil {
		return result{}, cfNotFound("zone")
	}
	return result{200, cfOK(zoneJSON(z), nil)}, nil
}

func cfRecordJSON(z *zone, r *cfRecord) map[string]any {
	out := map[string]any{
		"id": r.ID, "zone_id": z.ID, "zone_name": z.Name, "name": r.Name, "type": r.Type, "content": r.Content,
		"proxiable": r.Type == "A" || r.Type == "AAAA" || r.Type == "CNAME", "proxied": r.Proxied, "ttl": r.TTL, "locked": false,
		"meta":       map[string]any{"auto_added": false, "source": "primary"},
		"created_on": r.CreatedOn.Format(time.RFC3339Nano), "modified_on": r.ModifiedOn.Format(time.RFC3339Nano),
	}
	// The spec's comment and tags are not nullable: omit them when unset.
	if r.Comment != "" {
		out["comment"] = r.Comment
	}
	if len(r.Tags) > 0 {
		out["tags"] = r.Tags
	}
	return out
}

func (l *Lab) cfRecordsList(c *call) (result, *apiError) {
	z := l.st.Zones[c.r.PathValue("zone_id")]
	if z == nil {
		return result{}, cfNotFound("zone")
	}
	q := c.r.URL.Query()
	name := q.Get("name")
	if name == "" {
		name = q.Get("name.exact")
	}
	var rs []*cfRecord
	for _, r := range z.Records {
		if name != "" && !strings.EqualFold(r.Name, strings.TrimSuffix(name, ".")) {
			continue
		}
		if t := q.Get("type"); t != "" && r.Type != t {
			continue
		}
		rs = append(rs, r)
	}
	lo, hi, info := c.cfPage(len(rs))
	out := []any{}
	for _, r := range rs[lo:hi] {
		out = append(out, cfRecordJSON(z, r))
	}
	return result{200, cfOK(out, info)}, nil
}

type cfRecordInput struct {
	Type    *string   `json:"type"`
	Name    *string   `json:"name"`
	Content *string   `json:"content"`
	TTL     *int      `json:"ttl"`
	Proxied *bool     `json:"proxied"`
	Comment *string   `json:"comment"`
	Tags    *[]string `json:"tags"`
}

// apply sets the fields present in in on r (PATCH semantics; PUT callers
// start from a blank record) and checks the result as Cloudflare does.
func (in cfRecordInput) apply(z *zone, r *cfRecord) *apiError {
	if in.Type != nil {
		r.Type = strings.ToUpper(*in.Type)
	}
	if in.Name != nil {
		n := strings.TrimSuffix(strings.ToLower(*in.Name), ".")
		if n == "@" {
			n = z.Name
		} else if !strings.HasSuffix(n, z.Name) {
			n = n + "." + z.Name
		}
		r.Name = n
	}
	if in.Content != nil {
		r.Content = *in.Content
	}
	if in.TTL != nil {
		r.TTL = *in.TTL
	}
	if in.Proxied != nil {
		r.Proxied = *in.Proxied
	}
	if in.Comment != nil {
		r.Comment = *in.Comment
	}
	if in.Tags != nil {
		r.Tags = *in.Tags
	}
	if r.TTL == 0 {
		r.TTL = 1
	}
	if r.TTL != 1 && (r.TTL < 60 || r.TTL > 86400) {
		return &apiError{status: 400, code: 9021, msg: "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic."}
	}
	if r.Type == "A" && net.ParseIP(r.Content).To4() == nil {
		return &apiError{status: 400, code: 9005, msg: "Content for A record must be a valid IPv4 address."}
	}
	return nil
}

func (l *Lab) cfRecordsCreate(c *call) (result, *apiError) {
	z := l.st.Zones[c.r.PathValue("zone_id")]
	if z == nil {
		return result{}, cfNotFound("zone")
	}
	var in cfRecordInput
	if err := json.Unmarshal(c.body, &in); err != nil {
		return result{}, &apiError{status: 400, code: 9207, msg: "Request body is invalid JSON."}
	}
	now := time.Now().UTC()
	r := &cfRecord{ID: randomHex(16), CreatedOn: now, ModifiedOn: now}
	if e := in.apply(z, r); e != nil {
		return result{}, e
	}
	for _, o := range z.Records {
		if o.Name == r.Name && o.Type == r.Type && o.Content == r.Content {
			return result{}, &apiError{status: 400, code: 81057, msg: "An identical record already exists."}
		}
	}
	z.Records = append(z.Records, r)
	l.dnsChanged()
	return result{200, cfOK(cfRecordJSON(z, r), nil)}, nil
}

func (l *Lab) cfFindRecord(c *call) (*zone, *cfRecord, int, *apiError) {
	z := l.st.Zones[c.r.PathValue("zone_id")]
	if z == nil {
		return nil, nil, -1, cfNotFound("zone")
	}
	for i, r := range z.Records {
		if r.ID == c.r.PathValue("dns_record_id") {
			return z, r, i, nil
		}
	}
	return z, nil, -1, cfNotFound("record")
}

func (l *Lab) cfRecordsGet(c *call) (result, *apiError) {
	z, r, _, e := l.cfFindRecord(c)
	if e != nil {
		return result{}, e
	}
	return result{200, cfOK(cfRecordJSON(z, r), nil)}, nil
}

func (l *Lab) cfRecordsUpdate(c *call) (result, *apiError) {
	z, r, _, e := l.cfFindRecord(c)
	if e != nil {
		return result{}, e
	}
	var in cfRecordInput
	if err := json.Unmarshal(c.body, &in); err != nil {
		return result{}, &apiError{status: 400, code: 9207, msg: "Request body is invalid JSON."}
	}
	if l.takeFault(FaultDNSReject, "") != nil {
		return result{}, &apiError{status: 400, code: 1004, msg: "DNS Validation Error (lab fault dns_reject)"}
	}
	next := *r
	if c.r.Method == "PUT" { // PUT replaces: unset fields go back to defaults
		next = cfRecord{ID: r.ID, CreatedOn: r.CreatedOn}
	}
	if e := in.apply(z, &next); e != nil {
		return result{}, e
	}
	next.ModifiedOn = time.Now().UTC()
	*r = next
	l.dnsChanged()
	return result{200, cfOK(cfRecordJSON(z, r), nil)}, nil
}

func (l *Lab) cfRecordsDelete(c *call) (result, *apiError) {
	z, r, i, e := l.cfFindRecord(c)
	if e != nil {
		return result{}, e
	}
	z.Records = slices.Delete(z.Records, i, i+1)
	l.dnsChanged()
	return result{200, cfOK(map[string]any{"id": r.ID}, nil)}, nil
}
