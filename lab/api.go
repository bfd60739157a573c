package lab

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"
)

const (
	apiDigitalOcean = "digitalocean"
	apiCloudflare   = "cloudflare"
	apiHetzner      = "hetzner"
	apiLab          = "lab"
)

// call is one API request being handled. Handlers run with Lab.mu held.
type call struct {
	l   *Lab
	r   *http.Request
	api string
	op  string
	// body is the raw request body.
	body []byte
}

// apiError is a provider error, rendered in the provider's shape.
type apiError struct {
	status int
	id     string // DigitalOcean error id, Hetzner error code
	code   int    // Cloudflare error code
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// result is what a handler returns: a status and a JSON body (nil: no body).
type result struct {
	status int
	body   any
}

type handler func(c *call) (result, *apiError)

func notFound() *apiError {
	return &apiError{status: 404, id: "not_found", code: 7003, msg: "The resource you were accessing could not be found."}
}

func unprocessable(format string, args ...any) *apiError {
	return &apiError{status: 422, id: "unprocessable_entity", code: 1004, msg: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: 400, id: "bad_request", code: 1004, msg: fmt.Sprintf(format, args...)}
}

func (l *Lab) apiHandler() http.Handler {
	mux := http.NewServeMux()
	do := func(pattern, op string, h handler) { mux.Handle(pattern, l.wrap(apiDigitalOcean, op, h)) }
	cf := func(pattern, op string, h handler) { mux.Handle(pattern, l.wrap(apiCloudflare, op, h)) }
	lab := func(pattern, op string, h handler) { mux.Handle(pattern, l.wrap(apiLab, op, h)) }

	do("GET /v2/account", "account_get", l.doAccount)
	do("GET /v2/account/keys", "sshKeys_list", l.doKeysList)
	do("POST /v2/account/keys", "sshKeys_create", l.doKeysCreate)
	do("GET /v2/account/keys/{ssh_key_identifier}", "sshKeys_get", l.doKeysGet)
	do("GET /v2/sizes", "sizes_list", l.doSizes)
	do("GET /v2/regions", "regions_list", l.doRegions)
	do("GET /v2/droplets", "droplets_list", l.doDropletsList)
	do("POST /v2/droplets", "droplets_create", l.doDropletsCreate)
	do("GET /v2/droplets/{droplet_id}", "droplets_get", l.doDropletsGet)
	do("DELETE /v2/droplets/{droplet_id}", "droplets_destroy", l.doDropletsDelete)
	do("GET /v2/droplets/{droplet_id}/snapshots", "droplets_list_snapshots", l.doDropletSnapshots)
	do("GET /v2/droplets/{droplet_id}/actions", "dropletActions_list", l.doDropletActionsList)
	do("POST /v2/droplets/{droplet_id}/actions", "dropletActions_post", l.doDropletActionsPost)
	do("GET /v2/droplets/{droplet_id}/actions/{action_id}", "dropletActions_get", l.doDropletActionGet)
	do("GET /v2/actions", "actions_list", l.doActionsList)
	do("GET /v2/actions/{action_id}", "actions_get", l.doActionGet)
	do("GET /v2/images", "images_list", l.doImagesList)
	do("GET /v2/images/{image_id}", "images_get", l.doImagesGet)
	do("DELETE /v2/images/{image_id}", "images_delete", l.doSnapshotsDelete)
	do("GET /v2/snapshots", "snapshots_list", l.doSnapshotsList)
	do("GET /v2/snapshots/{snapshot_id}", "snapshots_get", l.doSnapshotsGet)
	do("DELETE /v2/snapshots/{snapshot_id}", "snapshots_delete", l.doSnapshotsDelete)
	do("GET /v2/load_balancers", "loadBalancers_list", l.doLBList)
	do("POST /v2/load_balancers", "loadBalancers_create", l.doLBCreate)
	do("GET /v2/load_balancers/{lb_id}", "loadBalancers_get", l.doLBGet)
	do("POST /v2/load_balancers/{lb_id}/droplets", "loadBalancers_add_droplets", l.doLBAdd)
	do("DELETE /v2/load_balancers/{lb_id}/droplets", "loadBalancers_remove_droplets", l.doLBRemove)
	do("GET /v2/domains", "domains_list", l.doDomainsList)
	do("POST /v2/domains", "domains_create", l.doDomainsCreate)
	do("GET /v2/domains/{domain_name}", "domains_get", l.doDomainsGet)
	do("GET /v2/domains/{domain_name}/records", "domains_list_records", l.doRecordsList)
	do("POST /v2/domains/{domain_name}/records", "domains_create_record", l.doRecordsCreate)
	do("GET /v2/domains/{domain_name}/records/{domain_record_id}", "domains_get_record", l.doRecordsGet)
	do("PUT /v2/domains/{domain_name}/records/{domain_record_id}", "domains_update_record", l.doRecordsUpdate)
	do("PATCH /v2/domains/{domain_name}/records/{domain_record_id}", "domains_patch_record", l.doRecordsUpdate)
	do("DELETE /v2/domains/{domain_name}/records/{domain_record_id}", "domains_delete_record", l.doRecordsDelete)
	do("GET /v2/reserved_ips", "reservedIPs_list", l.doRIPList)
	do("POST /v2/reserved_ips", "reservedIPs_create", l.doRIPCreate)
	do("GET /v2/reserved_ips/{reserved_ip}", "reservedIPs_get", l.doRIPGet)
	do("POST /v2/reserved_ips/{reserved_ip}/actions", "reservedIPsActions_post", l.doRIPAction)
	do("GET /v2/reserved_ips/{reserved_ip}/actions/{action_id}", "reservedIPsActions_get", l.doRIPActionGet)
	do("GET /v2/tags", "tags_list", l.doTagsList)
	do("POST /v2/tags", "tags_create", l.doTagsCreate)
	do("GET /v2/tags/{tag_id}", "tags_get", l.doTagsGet)
	do("DELETE /v2/tags/{tag_id}", "tags_delete", l.doTagsDelete)
	do("POST /v2/tags/{tag_id}/resources", "tags_assign_resources", l.doTagsResources(true))
	do("DELETE /v2/tags/{tag_id}/resources", "tags_unassign_resources", l.doTagsResources(false))

	cf("GET /client/v4/zones", "zones-get", l.cfZonesList)
	cf("GET /client/v4/zones/{zone_id}", "zones-0-get", l.cfZoneGet)
	cf("GET /client/v4/zones/{zone_id}/dns_records", "dns-records-for-a-zone-list-dns-records", l.cfRecordsList)
	cf("POST /client/v4/zones/{zone_id}/dns_records", "dns-records-for-a-zone-create-dns-record", l.cfRecordsCreate)
	cf("GET /client/v4/zones/{zone_id}/dns_records/{dns_record_id}", "dns-records-for-a-zone-dns-record-details", l.cfRecordsGet)
	cf("PUT /client/v4/zones/{zone_id}/dns_records/{dns_record_id}", "dns-records-for-a-zone-update-dns-record", l.cfRecordsUpdate)
	cf("PATCH /client/v4/zones/{zone_id}/dns_records/{dns_record_id}", "dns-records-for-a-zone-patch-dns-record", l.cfRecordsUpdate)
	cf("DELETE /client/v4/zones/{zone_id}/dns_records/{dns_record_id}", "dns-records-for-a-zone-delete-dns-record", l.cfRecordsDelete)

	lab("GET /lab/inventory", "lab_inventory", func(c *call) (result, *apiError) { return result{200, c.l.inventoryLocked()}, nil })
	lab("GET /lab/requests", "lab_requests", func(c *call) (result, *apiError) { return result{200, c.l.reqlog}, nil })
	lab("GET /lab/faults", "lab_faults", l.labFaultsList)
	lab("POST /lab/faults", "lab_faults_create", l.labFaultsCreate)
	lab("POST /lab/zones", "lab_zones_create", l.labZonesCreate)
	lab("PUT /lab/droplets/{droplet_id}/files/{path...}", "lab_files_put", l.labFilesPut)

	l.hetznerRoutes(mux)

	mux.Handle("/", l.wrap(apiDigitalOcean, "unknown", func(c *call) (result, *apiError) { return result{}, notFound() }))
	mux.Handle("/client/v4/", l.wrap(apiCloudflare, "unknown", func(c *call) (result, *apiError) {
		return result{}, &apiError{status: 404, code: 7000, msg: "No route for that URI"}
	}))
	return mux
}

// wrap adds what every call gets: authentication, spec validation of the
// request and the response, injected faults, rate-limit headers and the
// request log.
func (l *Lab) wrap(api, op string, h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		c := &call{l: l, r: r, api: api, op: op, body: body}
		rec := newRecorder()
		l.serve(c, h, rec)
		l.mu.Lock()
		l.logRequest(Request{Time: time.Now(), API: api, Operation: op, Method: r.Method, Path: r.URL.Path, Status: rec.status})
		drop := rec.status < 300 && l.takeFault(FaultDropAfterCommit, op) != nil
		l.mu.Unlock()
		if drop {
			// Done, and the client never hears of it.
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		rec.flush(w)
	})
}

func (l *Lab) serve(c *call, h handler, w *recorder) {
	r := c.r
	switch c.api {
	case apiDigitalOcean:
		if retry := l.rateLimit(w.header); retry > 0 {
			w.header.Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
			l.writeError(c, w, &apiError{status: 429, id: "too_many_requests", code: 971, msg: "API Rate limit exceeded."})
			return
		}
	case apiHetzner:
		if !l.hetznerRateLimit(w.header) {
			l.writeError(c, w, &apiError{status: 429, id: "rate_limit_exceeded", msg: "limit of 3600 requests per hour reached"})
			return
		}
	}
	if !l.authorized(r) {
		switch c.api {
		case apiHetzner:
			l.writeError(c, w, &apiError{status: 401, id: "unauthorized", msg: "unable to authenticate"})
		case apiCloudflare:
			l.writeError(c, w, &apiError{status: 401, code: 10000, msg: "Authentication error: invalid or missing API token"})
		default:
			l.writeError(c, w, &apiError{status: 401, id: "Unauthorized", msg: "Unable to authenticate you"})
		}
		return
	}
	var in *openapi3filter.RequestValidationInput
	if l.specs != nil && c.api != apiLab && c.op != "unknown" {
		vin, msg, ok := l.specs.checkRequest(c.api, r)
		if !ok {
			if vin == nil { // the lab serves an operation its spec lacks: a lab bug
				l.violation("request: %s", msg)
			}
			l.writeError(c, w, badRequest("%s", msg))
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(c.body))
		in = vin
	}

	l.mu.Lock()
	if f := l.takeFault(FaultRateLimit, c.op); f != nil {
		wait := f.RetryAfter
		if wait <= 0 {
			wait = time.Second
		}
		secs := int((wait + time.Second - 1) / time.Second)
		reset := strconv.FormatInt(time.Now().Add(wait).Unix(), 10)
		l.mu.Unlock()
		if c.api == apiHetzner {
			// Hetzner sends no Retry-After: RateLimit-Reset says when.
			w.header.Set("RateLimit-Remaining", "0")
			w.header.Set("RateLimit-Reset", reset)
			l.writeError(c, w, &apiError{status: 429, id: "rate_limit_exceeded", msg: "limit of 3600 requests per hour reached"})
			return
		}
		w.header.Set("Retry-After", strconv.Itoa(secs))
		w.header.Set("ratelimit-remaining", "0")
		w.header.Set("ratelimit-reset", reset)
		l.writeError(c, w, &apiError{status: 429, id: "too_many_requests", code: 971, msg: "API Rate limit exceeded."})
		return
	}
	if f := l.takeFault(FaultHTTPError, c.op); f != nil {
		status := f.Status
		if status == 0 {
			status = 500
		}
		l.mu.Unlock()
		l.writeError(c, w, &apiError{status: status, id: "server_error", code: 10001, msg: "Server was unable to give you a response."})
		return
	}
	res, aerr := h(c)
	res, aerr = l.handle(c, res, aerr)
	l.mu.Unlock()
	if aerr != nil {
		l.writeError(c, w, aerr)
		if c.api == apiHetzner {
			l.checkResponse(c, in, w)
		}
		return
	}
	w.status = res.status
	if res.body != nil {
		w.header.Set("Content-Type", "application/json; charset=utf-8")
		json.NewEncoder(&w.body).Encode(res.body)
	}
	l.checkResponse(c, in, w)
}

// handle runs a handler's result through the state save.
func (l *Lab) handle(c *call, res result, aerr *apiError) (result, *apiError) {
	if aerr == nil && c.r.Method != http.MethodGet {
		if err := l.saveLocked(); err != nil {
			l.cfg.Logf("lab: save state: %v", err)
		}
	}
	return res, aerr
}

func (l *Lab) checkResponse(c *call, in *openapi3filter.RequestValidationInput, w *recorder) {
	if in == nil {
		return
	}
	if err := checkResponse(c.r.Context(), in, w.status, w.header, w.body.Bytes()); err != nil {
		l.mu.Lock()
		l.violation("response %s %s -> %d: %s", c.r.Method, c.r.URL.Path, w.status, shortError(err))
		l.mu.Unlock()
	}
}

func (l *Lab) violation(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if slices.Contains(l.viol, msg) {
		return
	}
	l.viol = append(l.viol, msg)
	l.cfg.Logf("lab: spec violation: %s", msg)
}

func (l *Lab) authorized(r *http.Request) bool {
	want := "Bearer " + l.Token()
	got := r.Header.Get("Authorization")
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (l *Lab) writeError(c *call, w *recorder, e *apiError) {
	w.status = e.status
	w.header.Set("Content-Type", "application/json; charset=utf-8")
	w.body.Reset()
	var body any
	switch c.api {
	case apiHetzner:
		body = map[string]any{"error": map[string]any{"code": hetznerCode(e), "message": e.msg, "details": map[string]any{}}}
	case apiCloudflare:
		code := e.code
		if code == 0 {
			code = 1000
		}
		body = map[string]any{"success": false, "errors": []any{map[string]any{"code": code, "message": e.msg}}, "messages": []any{}, "result": nil}
	default:
		id := e.id
		if id == "" {
			id = strings.ToLower(strings.ReplaceAll(http.StatusText(e.status), " ", "_"))
		}
		body = map[string]any{"id": id, "message": e.msg, "request_id": randomHex(8)}
	}
	json.NewEncoder(&w.body).Encode(body)
}

// decode reads the JSON request body into v.
func (c *call) decode(v any) *apiError {
	if len(bytes.TrimSpace(c.body)) == 0 {
		return badRequest("request body is required")
	}
	if err := json.Unmarshal(c.body, v); err != nil {
		return badRequest("invalid JSON body: %v", err)
	}
	return nil
}

// page applies DigitalOcean pagination (page, per_page) to n items and
// returns the slice bounds and the links and meta objects.
func (c *call) page(n int) (lo, hi int, links map[string]any, meta map[string]any) {
	q := c.r.URL.Query()
	per, _ := strconv.Atoi(q.Get("per_page"))
	if per <= 0 {
		per = 20
	}
	if per > 200 {
		per = 200
	}
	pg, _ := strconv.Atoi(q.Get("page"))
	if pg <= 0 {
		pg = 1
	}
	last := (n + per - 1) / per
	if last == 0 {
		last = 1
	}
	lo = min((pg-1)*per, n)
	hi = min(lo+per, n)
	pages := map[string]any{}
	link := func(p int) string {
		u := url.URL{Scheme: "http", Host: c.r.Host, Path: c.r.URL.Path}
		qq := c.r.URL.Query()
		qq.Set("page", strconv.Itoa(p))
		qq.Set("per_page", strconv.Itoa(per))
		u.RawQuery = qq.Encode()
		return u.String()
	}
	if pg < last {
		pages["next"], pages["last"] = link(pg+1), link(last)
	}
	if pg > 1 {
		pages["first"], pages["prev"] = link(1), link(pg-1)
	}
	links = map[string]any{}
	if len(pages) > 0 {
		links["pages"] = pages
	}
	return lo, hi, links, map[string]any{"total": n}
}

func (l *Lab) labFaultsList(c *call) (result, *apiError) {
	out := make([]Fault, len(l.faults))
	for i, f := range l.faults {
		out[i] = *f
	}
	return result{200, out}, nil
}

func (l *Lab) labFaultsCreate(c *call) (result, *apiError) {
	var f Fault
	if e := c.decode(&f); e != nil {
		return result{}, e
	}
	if err := l.injectLocked(f); err != nil {
		return result{}, badRequest("%v", err)
	}
	return result{201, f}, nil
}

func (l *Lab) labZonesCreate(c *call) (result, *apiError) {
	var in struct {
		Name string `json:"name"`
	}
	if e := c.decode(&in); e != nil {
		return result{}, e
	}
	z, err := l.addZoneLocked(in.Name)
	if err != nil {
		return result{}, unprocessable("%v", err)
	}
	return result{201, map[string]any{"id": z.ID, "name": z.Name}}, nil
}

func (l *Lab) labFilesPut(c *call) (result, *apiError) {
	id, _ := strconv.Atoi(c.r.PathValue("droplet_id"))
	if _, ok := l.st.Droplets[id]; !ok {
		return result{}, notFound()
	}
	if err := writeFile(l.diskDir("d", id)+"/"+strings.TrimPrefix(c.r.PathValue("path"), "/"), string(c.body)); err != nil {
		return result{}, unprocessable("%v", err)
	}
	return result{204, nil}, nil
}

// rateLimit counts a DigitalOcean API request against the lab's budget and
// sets the ratelimit-* headers DigitalOcean sends (the hourly budget, what
// is left of it, when it next grows). Past the budget it returns how long
// until a request is allowed, and the request is not counted.
func (l *Lab) rateLimit(h http.Header) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	rl := l.cfg.RateLimit
	now := time.Now()
	if rl == nil {
		h.Set("ratelimit-limit", "5000")
		h.Set("ratelimit-remaining", "4999")
		h.Set("ratelimit-reset", strconv.FormatInt(now.Add(time.Minute).Unix(), 10))
		return 0
	}
	hourly := rl.Hourly
	if hourly <= 0 {
		hourly = 5000
	}
	i := 0
	for i < len(l.rateLog) && now.Sub(l.rateLog[i]) >= time.Hour {
		i++
	}
	l.rateLog = l.rateLog[i:]
	inWindow := 0
	var oldestInWindow time.Time
	for _, t := range l.rateLog {
		if now.Sub(t) < rl.Window {
			if inWindow == 0 {
				oldestInWindow = t
			}
			inWindow++
		}
	}
	h.Set("ratelimit-limit", strconv.Itoa(hourly))
	reset := now.Add(time.Hour)
	if len(l.rateLog) > 0 {
		reset = l.rateLog[0].Add(time.Hour)
	}
	h.Set("ratelimit-reset", strconv.FormatInt(reset.Unix(), 10))
	switch {
	case len(l.rateLog) >= hourly:
		h.Set("ratelimit-remaining", "0")
		return time.Until(reset)
	case inWindow >= rl.Requests:
		h.Set("ratelimit-remaining", strconv.Itoa(hourly-len(l.rateLog)))
		return oldestInWindow.Add(rl.Window).Sub(now)
	}
	l.rateLog = append(l.rateLog, now)
	h.Set("ratelimit-remaining", strconv.Itoa(hourly-len(l.rateLog)))
	return 0
}
