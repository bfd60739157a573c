package lab

import (
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Hetzner Cloud API handlers: https://docs.hetzner.cloud/reference/cloud
// Each runs with Lab.mu held. Operation names are the spec's operation IDs.

// hetznerBase is the path prefix of the lab's Hetzner Cloud API.
const hetznerBase = "/hetzner/v1"

func (l *Lab) hetznerRoutes(mux *http.ServeMux) {
	hz := func(pattern, op string, h handler) {
		method, path, _ := strings.Cut(pattern, " ")
		mux.Handle(method+" "+hetznerBase+path, l.wrap(apiHetzner, op, h))
	}
	hz("GET /ssh_keys", "list_ssh_keys", l.hzKeysList)
	hz("POST /ssh_keys", "create_ssh_key", l.hzKeysCreate)
	hz("GET /ssh_keys/{id}", "get_ssh_key", l.hzKeysGet)
	hz("DELETE /ssh_keys/{id}", "delete_ssh_key", l.hzKeysDelete)
	hz("GET /server_types", "list_server_types", l.hzServerTypesList)
	hz("GET /server_types/{id}", "get_server_type", l.hzServerTypesGet)
	hz("GET /locations", "list_locations", l.hzLocationsList)
	hz("GET /locations/{id}", "get_location", l.hzLocationsGet)
	hz("GET /datacenters", "list_data_centers", l.hzDatacentersList)
	hz("GET /datacenters/{id}", "get_data_center", l.hzDatacentersGet)
	hz("GET /load_balancer_types", "list_load_balancer_types", l.hzLBTypesList)
	hz("GET /load_balancer_types/{id}", "get_load_balancer_type", l.hzLBTypesGet)

	hz("GET /servers", "list_servers", l.hzServersList)
	hz("POST /servers", "create_server", l.hzServersCreate)
	hz("GET /servers/{id}", "get_server", l.hzServersGet)
	hz("PUT /servers/{id}", "replace_server", l.hzServersUpdate)
	hz("DELETE /servers/{id}", "delete_server", l.hzServersDelete)
	hz("GET /servers/{id}/actions", "list_actions_for_server", l.hzResourceActions("server"))
	hz("GET /servers/{id}/actions/{action_id}", "get_action_for_server", l.hzResourceAction("server"))
	hz("POST /servers/{id}/actions/create_image", "create_image_from_server", l.hzServerCreateImage)
	hz("POST /servers/{id}/actions/shutdown", "shutdown_server", l.hzServerPower("shutdown_server"))
	hz("POST /servers/{id}/actions/poweroff", "power_off_server", l.hzServerPower("stop_server"))
	hz("POST /servers/{id}/actions/poweron", "power_on_server", l.hzServerPower("start_server"))
	hz("POST /servers/{id}/actions/change_type", "change_type_of_server", l.hzServerChangeType)

	hz("GET /images", "list_images", l.hzImagesList)
	hz("GET /images/{id}", "get_image", l.hzImagesGet)
	hz("PUT /images/{id}", "replace_image", l.hzImagesUpdate)
	hz("DELETE /images/{id}", "delete_image", l.hzImagesDelete)

	hz("GET /actions", "get_multiple_actions", l.hzActionsList)
	hz("GET /actions/{id}", "get_action", l.hzActionGet)

	hz("GET /load_balancers", "list_load_balancers", l.hzLBList)
	hz("POST /load_balancers", "create_load_balancer", l.hzLBCreate)
	hz("GET /load_balancers/{id}", "get_load_balancer", l.hzLBGet)
	hz("PUT /load_balancers/{id}", "replace_load_balancer", l.hzLBUpdate)
	hz("DELETE /load_balancers/{id}", "delete_load_balancer", l.hzLBDelete)
	hz("GET /load_balancers/{id}/actions", "list_actions_for_load_balancer", l.hzResourceActions("load_balancer"))
	hz("GET /load_balancers/{id}/actions/{action_id}", "get_action_for_load_balancer", l.hzResourceAction("load_balancer"))
	hz("POST /load_balancers/{id}/actions/add_target", "add_target", l.hzLBTarget(true))
	hz("POST /load_balancers/{id}/actions/remove_target", "remove_target", l.hzLBTarget(false))

	hz("GET /floating_ips", "list_floating_ips", l.hzFloatingList)
	hz("POST /floating_ips", "create_floating_ip", l.hzFloatingCreate)
	hz("GET /floating_ips/{id}", "get_floating_ip", l.hzFloatingGet)
	hz("PUT /floating_ips/{id}", "replace_floating_ip", l.hzFloatingUpdate)
	hz("DELETE /floating_ips/{id}", "delete_floating_ip", l.hzFloatingDelete)
	hz("GET /floating_ips/{id}/actions", "list_actions_for_floating_ip", l.hzResourceActions("floating_ip"))
	hz("GET /floating_ips/{id}/actions/{action_id}", "get_action_for_floating_ip", l.hzResourceAction("floating_ip"))
	hz("POST /floating_ips/{id}/actions/assign", "assign_floating_ip_to_server", l.hzFloatingAssign(true))
	hz("POST /floating_ips/{id}/actions/unassign", "unassign_floating_ip", l.hzFloatingAssign(false))

	hz("GET /primary_ips", "list_primary_ips", l.hzPrimaryList)
	hz("POST /primary_ips", "create_primary_ip", l.hzPrimaryCreate)
	hz("GET /primary_ips/{id}", "get_primary_ip", l.hzPrimaryGet)
	hz("PUT /primary_ips/{id}", "replace_primary_ip", l.hzPrimaryUpdate)
	hz("DELETE /primary_ips/{id}", "delete_primary_ip", l.hzPrimaryDelete)
	hz("GET /primary_ips/{id}/actions", "list_actions_for_primary_ip", l.hzResourceActions("primary_ip"))
	hz("GET /primary_ips/{id}/actions/{action_id}", "get_action_for_primary_ip", l.hzResourceAction("primary_ip"))
	hz("POST /primary_ips/{id}/actions/assign", "assign_primary_ip_to_resource", l.hzPrimaryAssign(true))
	hz("POST /primary_ips/{id}/actions/unassign", "unassign_primary_ip_from_resource", l.hzPrimaryAssign(false))

	hz("GET /volumes", "list_volumes", l.hzVolumesList)
	hz("POST /volumes", "create_volume", l.hzVolumesCreate)
	hz("GET /volumes/{id}", "get_volume", l.hzVolumesGet)
	hz("DELETE /volumes/{id}", "delete_volume", l.hzVolumesDelete)
	hz("GET /volumes/{id}/actions", "list_actions_for_volume", l.hzResourceActions("volume"))
	hz("GET /volumes/{id}/actions/{action_id}", "get_action_for_volume", l.hzResourceAction("volume"))
	hz("POST /volumes/{id}/actions/attach", "attach_volume_to_server", l.hzVolumeAttach(true))
	hz("POST /volumes/{id}/actions/detach", "detach_volume", l.hzVolumeAttach(false))

	hz("GET /zones", "list_zones", l.hzZonesList)
	hz("POST /zones", "create_zone", l.hzZonesCreate)
	hz("GET /zones/{id_or_name}", "get_zone", l.hzZonesGet)
	hz("DELETE /zones/{id_or_name}", "delete_zone", l.hzZonesDelete)
	hz("GET /zones/{id_or_name}/actions", "list_actions_for_zone", l.hzZoneActions)
	hz("GET /zones/{id_or_name}/actions/{action_id}", "get_action_for_zone", l.hzZoneAction)
	hz("POST /zones/{id_or_name}/actions/change_ttl", "change_zones_default_ttl", l.hzZoneChangeTTL)
	hz("GET /zones/{id_or_name}/rrsets", "list_rrsets", l.hzRRSetsList)
	hz("POST /zones/{id_or_name}/rrsets", "create_rrset", l.hzRRSetsCreate)
	hz("GET /zones/{id_or_name}/rrsets/{rr_name}/{rr_type}", "get_rrset", l.hzRRSetsGet)
	hz("DELETE /zones/{id_or_name}/rrsets/{rr_name}/{rr_type}", "delete_rrset", l.hzRRSetsDelete)
	hz("POST /zones/{id_or_name}/rrsets/{rr_name}/{rr_type}/actions/set_records", "set_records_of_rrset", l.hzRRSetChange("set_records"))
	hz("POST /zones/{id_or_name}/rrsets/{rr_name}/{rr_type}/actions/add_records", "add_records_to_rrset", l.hzRRSetChange("add_records"))
	hz("POST /zones/{id_or_name}/rrsets/{rr_name}/{rr_type}/actions/remove_records", "remove_records_from_rrset", l.hzRRSetChange("remove_records"))
	hz("POST /zones/{id_or_name}/rrsets/{rr_name}/{rr_type}/actions/change_ttl", "change_rrsets_ttl", l.hzRRSetChange("change_ttl"))

	mux.Handle(hetznerBase+"/", l.wrap(apiHetzner, "unknown", func(c *call) (result, *apiError) { return result{}, hNotFound("no such route") }))
}

// restoreHetznerLocked brings back the Hetzner load balancers and floating
// IPs of a saved state, and drops the images whose creation the restart
// cut short (their actions failed).
func (l *Lab) restoreHetznerLocked() error {
	for _, im := range l.hImages() {
		if im.Status == "creating" {
			delete(l.st.Hetzner.Images, im.ID)
			os.RemoveAll(l.diskDir("s", im.ID))
		}
	}
	for _, lb := range l.hLBs() {
		if err := l.startHLBLocked(lb, true); err != nil {
			return err
		}
	}
	for _, f := range l.hFloatingIPs() {
		if err := l.startFloatingLocked(f); err != nil {
			return err
		}
	}
	return nil
}

// Hetzner errors: https://docs.hetzner.cloud/reference/cloud#errors

func hErr(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, id: code, msg: fmt.Sprintf(format, args...)}
}

func hInvalid(format string, args ...any) *apiError {
	return hErr(400, "invalid_input", format, args...)
}

func hNotFound(what string) *apiError { return hErr(404, "not_found", "%s not found", what) }

func hUnique(format string, args ...any) *apiError {
	return hErr(409, "uniqueness_error", format, args...)
}

func hLocked(what string) *apiError {
	return hErr(423, "locked", "%s is locked: another action is running", what)
}

// hetznerCode is the Hetzner error code of an error the lab's shared code
// made in DigitalOcean's words.
func hetznerCode(e *apiError) string {
	switch e.id {
	case "bad_request", "unprocessable_entity":
		return "invalid_input"
	case "too_many_requests":
		return "rate_limit_exceeded"
	case "Unauthorized":
		return "unauthorized"
	case "":
	default:
		return e.id
	}
	switch e.status {
	case 401:
		return "unauthorized"
	case 403:
		return "forbidden"
	case 404:
		return "not_found"
	case 409:
		return "conflict"
	case 423:
		return "locked"
	case 429:
		return "rate_limit_exceeded"
	case 502:
		return "bad_gateway"
	case 503:
		return "unavailable"
	case 504:
		return "timeout"
	}
	if e.status >= 500 {
		return "server_error"
	}
	return "invalid_input"
}

// SetHetznerRateLimit starts (or, with 0, stops) enforcing a budget of
// perHour requests on the Hetzner API, as Hetzner does (3,600 an hour): the
// budget refills evenly over the hour, and past it requests get 429
// rate_limit_exceeded. Unenforced, the RateLimit-* headers still say 3600.
func (l *Lab) SetHetznerRateLimit(perHour int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.hRateLimit, l.hTokens, l.hTokensAt = perHour, float64(perHour), time.Now()
}

// hetznerRateLimit takes one request from the Hetzner budget and sets the
// RateLimit-* headers. It returns false past the budget.
func (l *Lab) hetznerRateLimit(h http.Header) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.hRateLimit <= 0 {
		h.Set("RateLimit-Limit", "3600")
		h.Set("RateLimit-Remaining", "3599")
		h.Set("RateLimit-Reset", strconv.FormatInt(now.Add(time.Second).Unix(), 10))
		return true
	}
	limit := float64(l.hRateLimit)
	perSec := limit / 3600
	l.hTokens = min(limit, l.hTokens+now.Sub(l.hTokensAt).Seconds()*perSec)
	l.hTokensAt = now
	ok := l.hTokens >= 1
	if ok {
		l.hTokens--
	}
	full := time.Duration((limit - l.hTokens) / perSec * float64(time.Second))
	h.Set("RateLimit-Limit", strconv.Itoa(l.hRateLimit))
	h.Set("RateLimit-Remaining", strconv.Itoa(int(l.hTokens)))
	h.Set("RateLimit-Reset", strconv.FormatInt(now.Add(full).Unix(), 10))
	return ok
}

// hPage applies Hetzner pagination (page, per_page: 25 by default, 50 at
// most) to n items and returns the slice bounds and the meta object.
func (c *call) hPage(n int) (lo, hi int, meta map[string]any) {
	q := c.r.URL.Query()
	per, _ := strconv.Atoi(q.Get("per_page"))
	if per <= 0 {
		per = 25
	}
	per = min(per, 50)
	pg, _ := strconv.Atoi(q.Get("page"))
	if pg <= 0 {
		pg = 1
	}
	last := max((n+per-1)/per, 1)
	lo = min((pg-1)*per, n)
	hi = min(lo+per, n)
	var prev, next any
	if pg > 1 {
		prev = pg - 1
	}
	if pg < last {
		next = pg + 1
	}
	return lo, hi, map[string]any{"pagination": map[string]any{"page": pg, "per_page": per, "previous_page": prev,
		"next_page": next, "last_page": last, "total_entries": n}}
}

// hList renders one page of items as a list response under key.
func hList[T any](c *call, key string, items []T, render func(T) any) result {
	lo, hi, meta := c.hPage(len(items))
	out := []any{}
	for _, it := range items[lo:hi] {
		out = append(out, render(it))
	}
	return result{200, map[string]any{key: out, "meta": meta}}
}

// labelSelector is a parsed Hetzner label selector: comma-separated
// requirements that must all hold (k=v, k==v, k!=v, k, !k).
type labelSelector []func(map[string]string) bool

func parseSelector(s string) (labelSelector, *apiError) {
	var sel labelSelector
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "":
			return nil, hInvalid("label_selector %q: empty requirement", s)
		case strings.Contains(part, "!="):
			k, v, _ := strings.Cut(part, "!=")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			sel = append(sel, func(m map[string]string) bool { got, ok := m[k]; return !ok || got != v })
		case strings.Contains(part, "="):
			k, v, _ := strings.Cut(part, "=")
			k, v = strings.TrimSpace(k), strings.TrimSpace(strings.TrimPrefix(v, "="))
			sel = append(sel, func(m map[string]string) bool { got, ok := m[k]; return ok && got == v })
		case strings.HasPrefix(part, "!"):
			k := strings.TrimSpace(part[1:])
			sel = append(sel, func(m map[string]string) bool { _, ok := m[k]; return !ok })
		case strings.ContainsAny(part, " ()"):
			return nil, hInvalid("label_selector %q: the lab understands k=v, k!=v, k and !k", s)
		default:
			sel = append(sel, func(m map[string]string) bool { _, ok := m[part]; return ok })
		}
	}
	return sel, nil
}

func (sel labelSelector) matches(labels map[string]string) bool {
	for _, req := range sel {
		if !req(labels) {
			return false
		}
	}
	return true
}

// selector reads the label_selector query parameter; nil matches all.
func (c *call) selector() (labelSelector, *apiError) {
	if s := c.r.URL.Query().Get("label_selector"); s != "" {
		return parseSelector(s)
	}
	return nil, nil
}

// hzUpdate is what every Hetzner PUT takes: a new name (empty: unchanged)
// and the labels, replaced whole.
type hzUpdate struct {
	Name   *string            `json:"name"`
	Labels *map[string]string `json:"labels"`
}

// apply sets the name (nil for a resource without one) and the labels,
// checked as Hetzner checks them.
func (u hzUpdate) apply(name *string, labels *map[string]string) *apiError {
	if u.Labels != nil {
		l, e := checkLabels(*u.Labels)
		if e != nil {
			return e
		}
		*labels = l
	}
	if name != nil && u.Name != nil && *u.Name != "" {
		*name = *u.Name
	}
	return nil
}

// checkLabels applies Hetzner's rules for labels, nil meaning none.
func checkLabels(m map[string]string) (map[string]string, *apiError) {
	out := map[string]string{}
	for k, v := range m {
		if k == "" || len(k) > 63 || len(v) > 63 || strings.ContainsAny(k+v, " ,=!()") {
			return nil, hInvalid("label %q=%q: keys and values are at most 63 characters, without spaces, commas, '=', '!' or parentheses", k, v)
		}
		out[k] = v
	}
	return out, nil
}

func (c *call) idParam(name string) int {
	v, _ := strconv.Atoi(c.r.PathValue(name))
	return v
}

func labelsJSON(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Catalogue.

func money(v float64) map[string]any {
	return map[string]any{"net": fmt.Sprintf("%.10f", v), "gross": fmt.Sprintf("%.10f", v*1.19)}
}

func hPrices(monthly float64) []any {
	out := []any{}
	for _, loc := range hLocations {
		out = append(out, map[string]any{"location": loc.Name, "price_hourly": money(float64(int(monthly/730*1e4)) / 1e4),
			"price_monthly": money(monthly), "included_traffic": int64(20) << 40, "price_per_tb_traffic": money(1)})
	}
	return out
}

func hServerTypeJSON(t hServerType) map[string]any {
	locs := []any{}
	for _, loc := range hLocations {
		locs = append(locs, map[string]any{"id": loc.ID, "name": loc.Name, "deprecation": nil})
	}
	return map[string]any{"id": t.ID, "name": t.Name, "description": strings.ToUpper(t.Name), "cores": t.Cores,
		"memory": t.MemoryGB, "disk": t.DiskGB, "deprecated": false, "deprecation": nil, "prices": hPrices(t.Monthly),
		"storage_type": "local", "cpu_type": "shared", "architecture": "x86", "category": "cost_optimized", "locations": locs}
}

func hLocationJSON(loc hLocation) map[string]any {
	return map[string]any{"id": loc.ID, "name": loc.Name, "description": loc.Description, "country": loc.Country,
		"city": loc.City, "latitude": loc.Lat, "longitude": loc.Long, "network_zone": "eu-central"}
}

func hDatacenterJSON(loc hLocation) map[string]any {
	ids := []int{}
	for _, t := range hServerTypes {
		ids = append(ids, t.ID)
	}
	return map[string]any{"id": loc.DCID, "name": loc.DCName, "description": loc.DCDescription, "location": hLocationJSON(loc),
		"server_types": map[string]any{"available": ids, "supported": ids, "available_for_migration": ids}}
}

func hLBTypeJSON() map[string]any {
	return map[string]any{"id": 1, "name": "lb11", "description": "LB11", "max_connections": 10000, "max_services": 5,
		"max_targets": 25, "max_assigned_certificates": 10, "deprecated": nil, "prices": hPrices(5.39)}
}

// named filters a catalogue by the name query parameter.
func named[T any](c *call, all []T, name func(T) string) []T {
	want := c.r.URL.Query().Get("name")
	var out []T
	for _, v := range all {
		if want == "" || name(v) == want {
			out = append(out, v)
		}
	}
	return out
}

func (l *Lab) hzServerTypesList(c *call) (result, *apiError) {
	ts := named(c, hServerTypes, func(t hServerType) string { return t.Name })
	return hList(c, "server_types", ts, func(t hServerType) any { return hServerTypeJSON(t) }), nil
}

func (l *Lab) hzServerTypesGet(c *call) (result, *apiError) {
	t, ok := hServerTypeBy(idOrName{id: c.idParam("id"), set: true})
	if !ok {
		return result{}, hNotFound("server type")
	}
	return result{200, map[string]any{"server_type": hServerTypeJSON(t)}}, nil
}

func (l *Lab) hzLocationsList(c *call) (result, *apiError) {
	locs := named(c, hLocations, func(loc hLocation) string { return loc.Name })
	return hList(c, "locations", locs, func(loc hLocation) any { return hLocationJSON(loc) }), nil
}

func (l *Lab) hzLocationsGet(c *call) (result, *apiError) {
	loc, ok := hLocationBy(idOrName{id: c.idParam("id"), set: true})
	if !ok {
		return result{}, hNotFound("location")
	}
	return result{200, map[string]any{"location": hLocationJSON(loc)}}, nil
}

func (l *Lab) hzDatacentersList(c *call) (result, *apiError) {
	dcs := named(c, hLocations, func(loc hLocation) string { return loc.DCName })
	lo, hi, meta := c.hPage(len(dcs))
	out := []any{}
	for _, loc := range dcs[lo:hi] {
		out = append(out, hDatacenterJSON(loc))
	}
	return result{200, map[string]any{"datacenters": out, "recommendation": hLocations[0].DCID, "meta": meta}}, nil
}

func (l *Lab) hzDatacentersGet(c *call) (result, *apiError) {
	loc, ok := hDatacenterBy(idOrName{id: c.idParam("id"), set: true})
	if !ok {
		return result{}, hNotFound("datacenter")
	}
	return result{200, map[string]any{"datacenter": hDatacenterJSON(loc)}}, nil
}

func (l *Lab) hzLBTypesList(c *call) (result, *apiError) {
	types := named(c, []string{"lb11"}, func(s string) string { return s })
	return hList(c, "load_balancer_types", types, func(string) any { return hLBTypeJSON() }), nil
}

func (l *Lab) hzLBTypesGet(c *call) (result, *apiError) {
	if c.idParam("id") != 1 {
		return result{}, hNotFound("load balancer type")
	}
	return result{200, map[string]any{"load_balancer_type": hLBTypeJSON()}}, nil
}

// SSH keys.

func hKeyJSON(k *hKey) map[string]any {
	return map[string]any{"id": k.ID, "name": k.Name, "fingerprint": k.Fingerprint, "public_key": k.PublicKey,
		"labels": labelsJSON(k.Labels), "created": ts(k.Created)}
}

func (l *Lab) hKeys() []*hKey {
	return sortedByID(l.st.Hetzner.Keys, func(k *hKey) int { return k.ID })
}

func (l *Lab) hzKeysList(c *call) (result, *apiError) {
	sel, e := c.selector()
	if e != nil {
		return result{}, e
	}
	q := c.r.URL.Query()
	var ks []*hKey
	for _, k := range l.hKeys() {
		if (q.Get("name") == "" || k.Name == q.Get("name")) && (q.Get("fingerprint") == "" || k.Fingerprint == q.Get("fingerprint")) && sel.matches(k.Labels) {
			ks = append(ks, k)
		}
	}
	return hList(c, "ssh_keys", ks, func(k *hKey) any { return hKeyJSON(k) }), nil
}

func (l *Lab) hzKeysCreate(c *call) (result, *apiError) {
	var in struct {
		Name      string            `json:"name"`
		PublicKey string            `json:"public_key"`
		Labels    map[string]string `json:"labels"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(in.PublicKey))
	if err != nil {
		return result{}, hInvalid("invalid public key: %v", err)
	}
	labels, e := checkLabels(in.Labels)
	if e != nil {
		return result{}, e
	}
	fp := strings.TrimPrefix(ssh.FingerprintLegacyMD5(pk), "MD5:")
	for _, k := range l.st.Hetzner.Keys {
		if k.Fingerprint == fp {
			return result{}, hUnique("SSH key with the same fingerprint already exists")
		}
		if k.Name == in.Name {
			return result{}, hUnique("name is already used")
		}
	}
	k := &hKey{ID: l.nextID(), Name: in.Name, PublicKey: strings.TrimSpace(in.PublicKey), Fingerprint: fp, Labels: labels, Created: time.Now().UTC()}
	l.st.Hetzner.Keys[k.ID] = k
	return result{201, map[string]any{"ssh_key": hKeyJSON(k)}}, nil
}

func (l *Lab) hzKeysGet(c *call) (result, *apiError) {
	k := l.st.Hetzner.Keys[c.idParam("id")]
	if k == nil {
		return result{}, hNotFound("SSH key")
	}
	return result{200, map[string]any{"ssh_key": hKeyJSON(k)}}, nil
}

func (l *Lab) hzKeysDelete(c *call) (result, *apiError) {
	if l.st.Hetzner.Keys[c.idParam("id")] == nil {
		return result{}, hNotFound("SSH key")
	}
	delete(l.st.Hetzner.Keys, c.idParam("id"))
	return result{204, nil}, nil
}

// Actions: https://docs.hetzner.cloud/reference/cloud#actions

// hNewAction starts a Hetzner action on resources; it is expected to take d
// (its progress grows with time).
func (l *Lab) hNewAction(command string, d time.Duration, res ...hResource) *action {
	a := &action{ID: l.nextID(), Status: "in-progress", Type: command, StartedAt: time.Now().UTC(), Cloud: cloudHetzner,
		Resources: res, Duration: d}
	l.st.Actions[a.ID] = a
	return a
}

// hDoneAction is an action that finished the moment it started.
func (l *Lab) hDoneAction(command string, res ...hResource) *action {
	a := l.hNewAction(command, 0, res...)
	a.Status, a.CompletedAt = "completed", a.StartedAt
	return a
}

// hFinish completes a after its duration: do runs unless an armed
// action_errored fault (operation: the command) fails it first, and an
// error do returns fails it; fail then runs. The server unlock, if set, is
// unlocked either way.
func (l *Lab) hFinish(a *action, unlock *droplet, do func() *hActionError, fail func()) {
	l.after(a.Duration, func() {
		if unlock != nil {
			unlock.Locked, unlock.Phase = false, ""
		}
		if a.Status != "in-progress" {
			return
		}
		var err *hActionError
		if l.takeFault(FaultActionErrored, a.Type) != nil {
			err = &hActionError{Code: "action_failed", Message: "action failed (lab fault action_errored)"}
		} else if do != nil {
			err = do()
		}
		a.CompletedAt = time.Now().UTC()
		a.Status, a.Error = "completed", err
		if err != nil {
			a.Status = "errored"
			if fail != nil {
				fail()
			}
		}
	})
}

func hActionJSON(a *action) map[string]any {
	status, progress := "running", 0
	var finished, aerr any
	switch a.Status {
	case "completed":
		status, progress, finished = "success", 100, ts(a.CompletedAt)
	case "errored":
		status, progress, finished = "error", 100, ts(a.CompletedAt)
		e := a.Error
		if e == nil { // the lab restarted while it ran
			e = &hActionError{Code: "action_failed", Message: "the lab stopped while the action ran"}
		}
		aerr = map[string]any{"code": e.Code, "message": e.Message}
	default:
		if a.Duration > 0 {
			progress = min(99, int(time.Since(a.StartedAt)*100/a.Duration))
		}
	}
	res := []any{}
	for _, r := range a.Resources {
		res = append(res, map[string]any{"id": r.ID, "type": r.Type})
	}
	return map[string]any{"id": a.ID, "command": a.Type, "status": status, "progress": progress, "started": ts(a.StartedAt),
		"finished": finished, "resources": res, "error": aerr}
}

// hActions returns the Hetzner actions that touch a resource ("" type:
// all), newest first.
func (l *Lab) hActions(typ string, id int) []*action {
	var out []*action
	for _, a := range l.st.Actions {
		if a.Cloud != cloudHetzner {
			continue
		}
		for _, r := range a.Resources {
			if typ == "" || (r.Type == typ && r.ID == id) {
				out = append(out, a)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	return out
}

// filterActions applies the status query parameter.
func filterActions(c *call, as []*action) []*action {
	want := c.r.URL.Query()["status"]
	if len(want) == 0 {
		return as
	}
	var out []*action
	for _, a := range as {
		if s := hActionJSON(a)["status"].(string); strings.Contains(","+strings.Join(want, ",")+",", ","+s+",") {
			out = append(out, a)
		}
	}
	return out
}

func (l *Lab) hzActionsList(c *call) (result, *apiError) {
	var as []*action
	for _, raw := range c.r.URL.Query()["id"] {
		id, _ := strconv.Atoi(raw)
		if a := l.st.Actions[id]; a != nil && a.Cloud == cloudHetzner {
			as = append(as, a)
		}
	}
	sort.Slice(as, func(i, j int) bool { return as[i].ID < as[j].ID })
	return hList(c, "actions", filterActions(c, as), func(a *action) any { return hActionJSON(a) }), nil
}

func (l *Lab) hzActionGet(c *call) (result, *apiError) {
	a := l.st.Actions[c.idParam("id")]
	if a == nil || a.Cloud != cloudHetzner {
		return result{}, hNotFound("action")
	}
	return result{200, map[string]any{"action": hActionJSON(a)}}, nil
}

// hResourceExists reports whether a Hetzner resource of the type exists.
func (l *Lab) hResourceExists(typ string, id int) bool {
	h := l.st.Hetzner
	switch typ {
	case "server":
		return l.hServer(id) != nil
	case "load_balancer":
		return h.LBs[id] != nil
	case "floating_ip":
		return h.FloatingIPs[id] != nil
	case "primary_ip":
		return h.PrimaryIPs[id] != nil
	case "volume":
		return h.Volumes[id] != nil
	}
	return false
}

func (l *Lab) hzResourceActions(typ string) handler {
	return func(c *call) (result, *apiError) {
		id := c.idParam("id")
		if !l.hResourceExists(typ, id) {
			return result{}, hNotFound(strings.ReplaceAll(typ, "_", " "))
		}
		return hList(c, "actions", filterActions(c, l.hActions(typ, id)), func(a *action) any { return hActionJSON(a) }), nil
	}
}

func (l *Lab) hzResourceAction(typ string) handler {
	return func(c *call) (result, *apiError) {
		id, aid := c.idParam("id"), c.idParam("action_id")
		for _, a := range l.hActions(typ, id) {
			if a.ID == aid {
				return result{200, map[string]any{"action": hActionJSON(a)}}, nil
			}
		}
		return result{}, hNotFound("action")
	}
}
