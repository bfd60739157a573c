package lab

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Spec files inside a specs directory (shared/specs; see its README).
const (
	doSpecFile = "digitalocean/DigitalOcean-public.v2.bundled.yaml"
	cfSpecFile = "cloudflare/dns-records.openapi.json"
	hzSpecFile = "hetzner/hcloud.openapi.json"
)

// specs validates requests and responses against the providers' OpenAPI
// documents.
type specs struct {
	do, cf, hz routers.Router
}

var defineIPv4 sync.Once

// loaded keeps the specs loaded from each directory: loading takes most of
// a second, and a test process starts many labs. A router only reads its
// documents, so labs share them.
var loaded struct {
	sync.Mutex
	byDir map[string]*specs
}

// loadSpecs loads and checks the documents once per directory. A missing
// directory is an error that says what to pass.
func loadSpecs(dir string) (*specs, error) {
	loaded.Lock()
	defer loaded.Unlock()
	if sp := loaded.byDir[dir]; sp != nil {
		return sp, nil
	}
	sp, err := readSpecs(dir)
	if err != nil {
		return nil, err
	}
	if loaded.byDir == nil {
		loaded.byDir = map[string]*specs{}
	}
	loaded.byDir[dir] = sp
	return sp, nil
}

// readSpecs loads and checks the documents of a directory.
func readSpecs(dir string) (*specs, error) {
	if _, err := os.Stat(filepath.Join(dir, doSpecFile)); err != nil {
		return nil, fmt.Errorf("lab: specs: %w (pass the shared/specs directory, or no specs to run without validation)", err)
	}
	defineIPv4.Do(openapi3.DefineIPv4Format)
	load := func(file, server string, fix func(*openapi3.T)) (routers.Router, error) {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(filepath.Join(dir, file))
		if err != nil {
			return nil, fmt.Errorf("lab: specs: %s: %w", file, err)
		}
		if err := doc.Validate(context.Background(), openapi3.DisableExamplesValidation()); err != nil {
			return nil, fmt.Errorf("lab: specs: %s: %w", file, err)
		}
		// The lab serves on its own host; match on path only.
		doc.Servers = openapi3.Servers{{URL: server}}
		if fix != nil {
			fix(doc)
		}
		r, err := gorillamux.NewRouter(doc)
		if err != nil {
			return nil, fmt.Errorf("lab: specs: %s: %w", file, err)
		}
		return r, nil
	}
	do, err := load(doSpecFile, "/", nil)
	if err != nil {
		return nil, err
	}
	cf, err := load(cfSpecFile, "/client/v4", nil)
	if err != nil {
		return nil, err
	}
	hz, err := load(hzSpecFile, "/hetzner/v1", fixHetzner)
	if err != nil {
		return nil, err
	}
	return &specs{do: do, cf: cf, hz: hz}, nil
}

// fixHetzner makes the Hetzner spec match on the lab's path alone (its
// paths name their own servers: api.hetzner.cloud or api.hetzner.com), and
// renames its "4xx" and "5xx" responses to "4XX" and "5XX", the spelling
// kin-openapi matches, so the lab's error responses are validated too.
func fixHetzner(doc *openapi3.T) {
	for _, item := range doc.Paths.Map() {
		item.Servers = nil
		for _, op := range item.Operations() {
			op.Servers = nil
			if op.Responses == nil {
				continue
			}
			for code, ref := range op.Responses.Map() {
				if up := strings.ToUpper(code); up != code {
					op.Responses.Delete(code)
					op.Responses.Set(up, ref)
				}
			}
		}
	}
}

// FindSpecs looks for the vendored specs directory beside the working
// directory or one of its parents (…/shared/specs), as laid out in a checkout.
// It returns "" if there is none.
func FindSpecs() string {
	if d := os.Getenv("VMSWAP_SPECS"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		for _, cand := range []string{filepath.Join(dir, "shared", "specs"), filepath.Join(dir, "..", "shared", "specs")} {
			if _, err := os.Stat(filepath.Join(cand, doSpecFile)); err == nil {
				abs, _ := filepath.Abs(cand)
				return abs
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

var validationOptions = &openapi3filter.Options{
	AuthenticationFunc:         openapi3filter.NoopAuthenticationFunc,
	ExcludeReadOnlyValidations: true,
	MultiError:                 false,
}

// checkRequest validates r against the spec for api. It returns the request
// input (for the response check) or a message for a 4xx.
func (s *specs) checkRequest(api string, r *http.Request) (*openapi3filter.RequestValidationInput, string, bool) {
	router := s.do
	switch api {
	case apiCloudflare:
		router = s.cf
	case apiHetzner:
		router = s.hz
	}
	route, params, err := router.FindRoute(r)
	if err != nil {
		return nil, fmt.Sprintf("no such operation in the %s API spec: %s %s", api, r.Method, r.URL.Path), false
	}
	in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: validationOptions}
	if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
		return in, shortError(err), false
	}
	return in, "", true
}

// checkResponse validates a response the lab is about to send.
func checkResponse(ctx context.Context, in *openapi3filter.RequestValidationInput, status int, h http.Header, body []byte) error {
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: status, Header: h, Options: validationOptions}
	out.SetBodyBytes(body)
	return openapi3filter.ValidateResponse(ctx, out)
}

// shortError keeps the first lines of a kin-openapi error: enough for a
// person, without dumping the schema.
func shortError(err error) string {
	lines := strings.Split(err.Error(), "\n")
	var keep []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "Schema:") {
			break
		}
		keep = append(keep, l)
		if len(keep) == 3 {
			break
		}
	}
	return strings.Join(keep, " ")
}

// recorder buffers a handler's response so it can be validated before it is
// sent.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}, status: http.StatusOK} }

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(code int)        { r.status = code }

func (r *recorder) flush(w http.ResponseWriter) {
	for k, v := range r.header {
		w.Header()[k] = v
	}
	w.WriteHeader(r.status)
	io.Copy(w, &r.body)
}
