package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/bench/lab"
)

// conformAgent marks the test's own requests in the registry's log, so that
// what is left there is what shoal sent upstream.
const conformAgent = "shoal-e2e-conform"

// answer is what a client checks in an error: the status, and the code of
// the first OCI error in the body ("" when the body holds none, as in every
// answer to HEAD).
type answer struct {
	status int
	code   string
}

func (a answer) String() string {
	if a.code == "" {
		return fmt.Sprintf("%d", a.status)
	}
	return fmt.Sprintf("%d %s", a.status, a.code)
}

type probe struct {
	name   string // method first: it keys the table of differences
	method string
	path   string
	header map[string]string
}

// difference is an answer in which shoal deliberately departs from the
// registry. The registry's answer is asserted too, so that the table stays
// true to what it answers.
type difference struct {
	registry, shoal answer
	why             string
}

// TestPullErrorsMatchRegistry sends the same erroneous pull-API requests to
// the reference registry (distribution 2.8) and to a shoal daemon that
// mirrors it, and compares status and OCI error code. Every answer must be
// the registry's, save for the deliberate differences listed with their
// reasons. Shoal must also never send a malformed request upstream.
func TestPullErrorsMatchRegistry(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ctx := t.Context()
	log := testLogger(t)
	reg, err := lab.StartRegistry(ctx, lab.RegistryConfig{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, reg.Close)
	im, err := lab.PushImage(ctx, reg.Addr(), "e2e/conform", "v1", 1, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	// A second repository, which shoal never fetches content from: asked
	// there for the first image's, it answers from its store.
	other, err := lab.PushImage(ctx, reg.Addr(), "e2e/other", "v1", 1, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	// The registry is the default upstream too, so both get the very same
	// requests, without ?ns=. One node has no peers: p2p is off.
	s, err := lab.StartShoal(ctx, lab.ShoalConfig{Binary: shoalBin, Logger: log, Args: []string{
		"--containerd-sock", "", "--p2p=false",
		"--insecure-registry", reg.Addr(), "--default-registry", reg.Addr(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, func() error {
		if t.Failed() {
			t.Logf("shoal log:\n%s", tailFile(s.LogPath(), 40))
		}
		return s.Close()
	})

	regURL, shoalURL := "http://"+reg.Addr(), s.MirrorURL()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport: tr,
		Timeout:   30 * time.Second,
		// A redirect is an answer to compare, not to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// ask sends p to base. A body cut short fails the test only from shoal:
	// the registry's 416 keeps the blob's Content-Length over a shorter
	// plain-text body, and its status is still its answer.
	ask := func(base string, p probe) answer {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, p.method, base+p.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", conformAgent)
		// containerd's list: every manifest type is acceptable.
		req.Header.Set("Accept", strings.Join([]string{
			"application/vnd.docker.distribution.manifest.v2+json",
			"application/vnd.docker.distribution.manifest.list.v2+json",
			"application/vnd.oci.image.manifest.v1+json",
			"application/vnd.oci.image.index.v1+json", "*/*",
		}, ", "))
		for k, v := range p.header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", p.method, base+p.path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil && !(base == regURL && errors.Is(err, io.ErrUnexpectedEOF)) {
			t.Fatalf("%s %s: reading the body: %v", p.method, base+p.path, err)
		}
		a := answer{status: resp.StatusCode}
		var e struct {
			Errors []struct{ Code string }
		}
		if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
			a.code = e.Errors[0].Code
		}
		return a
	}

	// Shoal holds the first image, as after a pull, so that the cases on
	// held content do not depend on the order they run in.
	manifest, config, layer := im.Digest.String(), im.Config.String(), im.Layers[0].String()
	for _, p := range []string{"manifests/v1", "blobs/" + config, "blobs/" + layer} {
		if a := ask(shoalURL, probe{method: "GET", path: "/v2/e2e/conform/" + p}); a.status != 200 {
			t.Fatalf("GET %s through shoal: %v", p, a)
		}
	}
	err = lab.WaitFor(ctx, "shoal storing the image", 10*time.Second, func() error {
		for _, d := range []digest.Digest{im.Digest, im.Config, im.Layers[0]} {
			if _, err := os.Stat(filepath.Join(s.DataDir(), "blobs", "sha256", d.Encoded())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	before, err := reg.Requests()
	if err != nil {
		t.Fatal(err)
	}

	absent := digest.FromString("shoal e2e: no such content").String()
	hex64 := strings.Repeat("a", 64)
	var probes []probe
	// getHead adds a GET and a HEAD of the path.
	getHead := func(name, path string, header map[string]string) {
		for _, m := range []string{"GET", "HEAD"} {
			probes = append(probes, probe{name: m + " " + name, method: m, path: path, header: header})
		}
	}
	write := func(name, method, path string) {
		probes = append(probes, probe{name: method + " " + name, method: method, path: path})
	}
	rng := func(r string) map[string]string { return map[string]string{"Range": r} }

	// Repository names.
	getHead("upper-case first component", "/v2/E2E/conform/manifests/v1", nil)
	getHead("upper-case component", "/v2/e2e/Conform/manifests/v1", nil)
	getHead("component starting with a dash", "/v2/e2e/-conform/manifests/v1", nil)
	getHead("component ending with a dot", "/v2/e2e/conform./blobs/"+layer, nil)
	getHead("empty component", "/v2/e2e//conform/manifests/v1", nil)
	getHead("empty name", "/v2//manifests/v1", nil)
	getHead("name of 256 characters", "/v2/e2e/"+strings.Repeat("n", 252)+"/manifests/v1", nil)
	getHead("name with a port", "/v2/localhost:5000/conform/manifests/v1", nil)

	// Tags.
	getHead("invalid tag", "/v2/e2e/conform/manifests/.INVALID_MANIFEST_NAME", nil)
	getHead("tag starting with a dash", "/v2/e2e/conform/manifests/-v1", nil)
	getHead("tag of 129 characters", "/v2/e2e/conform/manifests/"+strings.Repeat("t", 129), nil)
	getHead("empty reference", "/v2/e2e/conform/manifests/", nil)
	getHead("unknown tag", "/v2/e2e/conform/manifests/v9", nil)
	getHead("tag in an unknown repository", "/v2/e2e/nowhere/manifests/v1", nil)
	getHead("tag with an Accept without its type", "/v2/e2e/conform/manifests/v1",
		map[string]string{"Accept": "application/vnd.docker.distribution.manifest.v2+json"})

	// Manifests by digest.
	getHead("unknown manifest digest", "/v2/e2e/conform/manifests/"+absent, nil)
	getHead("manifest of another repository", "/v2/e2e/other/manifests/"+manifest, nil)
	getHead("layer as a manifest", "/v2/e2e/conform/manifests/"+layer, nil)
	getHead("layer of another repository as a manifest", "/v2/e2e/other/manifests/"+layer, nil)
	getHead("config of another repository as a manifest", "/v2/e2e/other/manifests/"+config, nil)
	getHead("manifest digest too short", "/v2/e2e/conform/manifests/sha256:abc", nil)
	getHead("manifest digest not hex", "/v2/e2e/conform/manifests/sha256:"+strings.Repeat("z", 64), nil)
	getHead("manifest digest in upper case", "/v2/e2e/conform/manifests/sha256:"+strings.Repeat("A", 64), nil)
	getHead("manifest digest md5", "/v2/e2e/conform/manifests/md5:"+strings.Repeat("a", 32), nil)
	getHead("manifest digest sha512", "/v2/e2e/conform/manifests/sha512:"+strings.Repeat("a", 128), nil)
	getHead("manifest digest sha512 too short", "/v2/e2e/conform/manifests/sha512:"+hex64, nil)

	// Blobs.
	getHead("unknown blob", "/v2/e2e/conform/blobs/"+absent, nil)
	getHead("blob in an unknown repository", "/v2/e2e/nowhere/blobs/"+absent, nil)
	getHead("unknown blob, as containerd asks", "/v2/e2e/conform/blobs/"+absent+"?ns="+reg.Addr(), nil)
	getHead("blob of another repository", "/v2/e2e/other/blobs/"+layer, nil)
	getHead("manifest as a blob", "/v2/e2e/conform/blobs/"+manifest, nil)
	getHead("blob digest too short", "/v2/e2e/conform/blobs/sha256:abc", nil)
	getHead("blob digest of 63 characters", "/v2/e2e/conform/blobs/sha256:"+hex64[1:], nil)
	getHead("blob digest not hex", "/v2/e2e/conform/blobs/sha256:"+strings.Repeat("z", 64), nil)
	getHead("blob digest in upper case", "/v2/e2e/conform/blobs/sha256:"+strings.Repeat("A", 64), nil)
	getHead("blob digest md5", "/v2/e2e/conform/blobs/md5:"+strings.Repeat("a", 32), nil)
	getHead("blob digest sha1", "/v2/e2e/conform/blobs/sha1:"+strings.Repeat("a", 40), nil)
	getHead("blob digest sha384", "/v2/e2e/conform/blobs/sha384:"+strings.Repeat("a", 96), nil)
	getHead("blob digest sha512", "/v2/e2e/conform/blobs/sha512:"+strings.Repeat("a", 128), nil)
	getHead("blob digest sha512 too short", "/v2/e2e/conform/blobs/sha512:"+hex64, nil)
	getHead("blob by tag", "/v2/e2e/conform/blobs/v1", nil)
	getHead("empty blob reference", "/v2/e2e/conform/blobs/", nil)

	// Ranges of a blob both hold, and of one neither does.
	size := im.LayerSizes[0]
	blob := "/v2/e2e/conform/blobs/" + layer
	getHead("range past the end", blob, rng(fmt.Sprintf("bytes=%d-", size)))
	getHead("ranges all past the end", blob, rng(fmt.Sprintf("bytes=%d-,%d-", size, size+10)))
	getHead("range with one part past the end", blob, rng(fmt.Sprintf("bytes=0-1,%d-", size)))
	getHead("range reversed", blob, rng("bytes=9-3"))
	getHead("range not numbers", blob, rng("bytes=abc"))
	getHead("range in another unit", blob, rng("pages=1-2"))
	getHead("range of an empty suffix", blob, rng("bytes=-0"))
	getHead("range of an unknown blob", "/v2/e2e/conform/blobs/"+absent, rng("bytes=0-"))

	// Methods the pull API does not serve. None changes the registry's
	// content: the digests are unknown, the bodies empty.
	for _, m := range []string{"PUT", "POST", "DELETE", "PATCH"} {
		write("manifest by tag", m, "/v2/e2e/conform/manifests/v9")
		write("manifest by digest", m, "/v2/e2e/conform/manifests/"+absent)
		write("blob", m, "/v2/e2e/conform/blobs/"+absent)
	}
	write("upload", "POST", "/v2/e2e/conform/blobs/uploads/")
	write("upload chunk", "PATCH", "/v2/e2e/conform/blobs/uploads/"+strings.Repeat("0", 36))
	write("upload end", "PUT", "/v2/e2e/conform/blobs/uploads/"+strings.Repeat("0", 36)+"?digest="+absent)
	write("manifest", "OPTIONS", "/v2/e2e/conform/manifests/v1")

	// Paths outside the pull API.
	getHead("root", "/", nil)
	getHead("v1 API", "/v1/_ping", nil)
	getHead("v2 without its slash", "/v2", nil)
	getHead("catalog", "/v2/_catalog", nil)
	getHead("tags list", "/v2/e2e/conform/tags/list", nil)
	getHead("tags list of an unknown repository", "/v2/e2e/nowhere/tags/list", nil)
	getHead("referrers", "/v2/e2e/conform/referrers/"+manifest, nil)
	getHead("upload status", "/v2/e2e/conform/blobs/uploads/"+strings.Repeat("0", 36), nil)
	getHead("manifests without a reference", "/v2/e2e/conform/manifests", nil)

	// ?ns= names shoal's upstream; the registry ignores it.
	getHead("ns not a host", "/v2/e2e/conform/manifests/v1?ns=not%20a%20host", nil)
	getHead("tag of an unreachable ns", "/v2/e2e/other/manifests/v1?ns=127.0.0.1:1", nil)
	getHead("blob of an unreachable ns", "/v2/e2e/other/blobs/"+other.Layers[0].String()+"?ns=127.0.0.1:1", nil)

	// Why shoal answers otherwise.
	const (
		hostLike    = "distribution 2.8 reads an upper-case first component as a registry host; OCI names have no upper case"
		noRoute     = "the registry's router has no route for it (plain-text 404); shoal names the fault with its OCI code"
		redirect    = "the registry's router cleans the path and redirects to another name; shoal never rewrites a name"
		nameTooLong = "the registry's name error is no OCI error and goes out as 500 UNKNOWN"
		colonName   = "the registry fails to store a path with a colon (500 UNKNOWN); OCI names have none"
		plainBody   = "same status; the registry's router answers in plain text, shoal with an OCI error body"
		plain416    = "same status; the registry passes on net/http's plain-text 416, shoal an OCI error body"
		badDigest   = "the registry looks a malformed digest up as a tag and its storage fails (500 UNKNOWN); shoal answers as the registry does on /blobs/"
		layerLookup = "the registry also looks manifests up among the repository's layers, and fails to parse the layer (500 UNKNOWN)"
		blobByTag   = "blobs are named by digest: DIGEST_INVALID, as the registry answers a malformed digest its router can route"
		byDigest    = "shoal holds content by digest alone, as containerd does: what it holds serves any repository, manifests as blobs"
		noNegotiate = "shoal serves the manifest the registry gave for containerd's Accept list; the registry hides it from a client not accepting its type"
		emptySuffix = "RFC 9110 makes a zero-byte suffix unsatisfiable; the registry's net/http answers 206 with Content-Range bytes N-(N-1)/N"
		pullOnly    = "shoal is a pull-only mirror: every method but GET and HEAD is 405 UNSUPPORTED, with Allow: GET, HEAD"
		notPull     = "outside the pull API, all a mirror serves"
		v2Slash     = "shoal answers /v2 as /v2/, the API version check, rather than redirecting to it"
		nsNotHost   = "?ns= names shoal's upstream and must be a registry host; the registry ignores it"
		unreachable = "shoal cannot reach the ns registry: a miss, which sends containerd to the registry itself"
	)
	differences := map[string]difference{
		"GET upper-case first component":      {answer{404, "MANIFEST_UNKNOWN"}, answer{400, "NAME_INVALID"}, hostLike},
		"HEAD upper-case first component":     {answer{404, ""}, answer{400, ""}, hostLike},
		"GET upper-case component":            {answer{404, ""}, answer{400, "NAME_INVALID"}, noRoute},
		"HEAD upper-case component":           {answer{404, ""}, answer{400, ""}, noRoute},
		"GET component starting with a dash":  {answer{404, ""}, answer{400, "NAME_INVALID"}, noRoute},
		"HEAD component starting with a dash": {answer{404, ""}, answer{400, ""}, noRoute},
		"GET component ending with a dot":     {answer{404, ""}, answer{400, "NAME_INVALID"}, noRoute},
		"HEAD component ending with a dot":    {answer{404, ""}, answer{400, ""}, noRoute},
		"GET empty component":                 {answer{301, ""}, answer{400, "NAME_INVALID"}, redirect},
		"HEAD empty component":                {answer{301, ""}, answer{400, ""}, redirect},
		"GET empty name":                      {answer{301, ""}, answer{400, "NAME_INVALID"}, redirect},
		"HEAD empty name":                     {answer{301, ""}, answer{400, ""}, redirect},
		"GET name of 256 characters":          {answer{500, "UNKNOWN"}, answer{400, "NAME_INVALID"}, nameTooLong},
		"HEAD name of 256 characters":         {answer{500, ""}, answer{400, ""}, nameTooLong},
		"GET name with a port":                {answer{500, "UNKNOWN"}, answer{400, "NAME_INVALID"}, colonName},
		"HEAD name with a port":               {answer{500, ""}, answer{400, ""}, colonName},

		"GET invalid tag":                          {answer{404, ""}, answer{404, "MANIFEST_UNKNOWN"}, plainBody},
		"GET tag starting with a dash":             {answer{404, ""}, answer{404, "MANIFEST_UNKNOWN"}, plainBody},
		"GET tag of 129 characters":                {answer{404, ""}, answer{404, "MANIFEST_UNKNOWN"}, plainBody},
		"GET empty reference":                      {answer{404, ""}, answer{404, "MANIFEST_UNKNOWN"}, plainBody},
		"GET tag with an Accept without its type":  {answer{404, "MANIFEST_UNKNOWN"}, answer{200, ""}, noNegotiate},
		"HEAD tag with an Accept without its type": {answer{404, ""}, answer{200, ""}, noNegotiate},

		"GET manifest of another repository":    {answer{404, "MANIFEST_UNKNOWN"}, answer{200, ""}, byDigest},
		"HEAD manifest of another repository":   {answer{404, ""}, answer{200, ""}, byDigest},
		"GET layer as a manifest":               {answer{500, "UNKNOWN"}, answer{404, "MANIFEST_UNKNOWN"}, layerLookup},
		"HEAD layer as a manifest":              {answer{500, ""}, answer{404, ""}, layerLookup},
		"GET manifest digest too short":         {answer{500, "UNKNOWN"}, answer{400, "DIGEST_INVALID"}, badDigest},
		"HEAD manifest digest too short":        {answer{500, ""}, answer{400, ""}, badDigest},
		"GET manifest digest not hex":           {answer{500, "UNKNOWN"}, answer{400, "DIGEST_INVALID"}, badDigest},
		"HEAD manifest digest not hex":          {answer{500, ""}, answer{400, ""}, badDigest},
		"GET manifest digest in upper case":     {answer{500, "UNKNOWN"}, answer{400, "DIGEST_INVALID"}, badDigest},
		"HEAD manifest digest in upper case":    {answer{500, ""}, answer{400, ""}, badDigest},
		"GET manifest digest md5":               {answer{500, "UNKNOWN"}, answer{400, "DIGEST_INVALID"}, badDigest},
		"HEAD manifest digest md5":              {answer{500, ""}, answer{400, ""}, badDigest},
		"GET manifest digest sha512 too short":  {answer{500, "UNKNOWN"}, answer{400, "DIGEST_INVALID"}, badDigest},
		"HEAD manifest digest sha512 too short": {answer{500, ""}, answer{400, ""}, badDigest},
		"GET blob of another repository":        {answer{404, "BLOB_UNKNOWN"}, answer{200, ""}, byDigest},
		"HEAD blob of another repository":       {answer{404, ""}, answer{200, ""}, byDigest},
		"GET manifest as a blob":                {answer{404, "BLOB_UNKNOWN"}, answer{200, ""}, byDigest},
		"HEAD manifest as a blob":               {answer{404, ""}, answer{200, ""}, byDigest},
		"GET blob by tag":                       {answer{404, ""}, answer{400, "DIGEST_INVALID"}, blobByTag},
		"HEAD blob by tag":                      {answer{404, ""}, answer{400, ""}, blobByTag},
		"GET empty blob reference":              {answer{404, ""}, answer{400, "DIGEST_INVALID"}, blobByTag},
		"HEAD empty blob reference":             {answer{404, ""}, answer{400, ""}, blobByTag},
		"GET range past the end":                {answer{416, ""}, answer{416, "RANGE_INVALID"}, plain416},
		"GET ranges all past the end":           {answer{416, ""}, answer{416, "RANGE_INVALID"}, plain416},
		"GET range reversed":                    {answer{416, ""}, answer{416, "RANGE_INVALID"}, plain416},
		"GET range not numbers":                 {answer{416, ""}, answer{416, "RANGE_INVALID"}, plain416},
		"GET range in another unit":             {answer{416, ""}, answer{416, "RANGE_INVALID"}, plain416},
		"GET range of an empty suffix":          {answer{206, ""}, answer{416, "RANGE_INVALID"}, emptySuffix},
		"HEAD range of an empty suffix":         {answer{206, ""}, answer{416, ""}, emptySuffix},

		"PUT manifest by tag":       {answer{400, "MANIFEST_INVALID"}, answer{405, "UNSUPPORTED"}, pullOnly},
		"PUT manifest by digest":    {answer{400, "MANIFEST_INVALID"}, answer{405, "UNSUPPORTED"}, pullOnly},
		"PUT blob":                  {answer{405, ""}, answer{405, "UNSUPPORTED"}, pullOnly},
		"POST manifest by tag":      {answer{405, ""}, answer{405, "UNSUPPORTED"}, pullOnly},
		"POST manifest by digest":   {answer{405, ""}, answer{405, "UNSUPPORTED"}, pullOnly},
		"POST blob":                 {answer{405, ""}, answer{405, "UNSUPPORTED"}, pullOnly},
		"DELETE manifest by tag":    {answer{400, "DIGEST_INVALID"}, answer{405, "UNSUPPORTED"}, pullOnly},
		"DELETE manifest by digest": {answer{404, "MANIFEST_UNKNOWN"}, answer{405, "UNSUPPORTED"}, pullOnly},
		"DELETE blob":               {answer{404, "BLOB_UNKNOWN"}, answer{405, "UNSUPPORTED"}, pullOnly},
		"PATCH manifest by tag":     {answer{405, ""}, answer{405, "UNSUPPORTED"}, pullOnly},
		"PATCH manifest by digest":  {answer{405, ""}, answer{405, "UNSUPPORTED"}, pullOnly},
		"PATCH blob":                {answer{405, ""}, answer{405, "UNSUPPORTED"}, pullOnly},
		"POST upload":               {answer{202, ""}, answer{405, "UNSUPPORTED"}, pullOnly},
		"PATCH upload chunk":        {answer{404, "BLOB_UPLOAD_INVALID"}, answer{405, "UNSUPPORTED"}, pullOnly},
		"PUT upload end":            {answer{404, "BLOB_UPLOAD_INVALID"}, answer{405, "UNSUPPORTED"}, pullOnly},
		"OPTIONS manifest":          {answer{200, ""}, answer{405, "UNSUPPORTED"}, pullOnly},

		"GET root":                                {answer{200, ""}, answer{404, "UNSUPPORTED"}, notPull},
		"HEAD root":                               {answer{200, ""}, answer{404, ""}, notPull},
		"GET v1 API":                              {answer{404, ""}, answer{404, "UNSUPPORTED"}, plainBody},
		"GET v2 without its slash":                {answer{301, ""}, answer{200, ""}, v2Slash},
		"HEAD v2 without its slash":               {answer{301, ""}, answer{200, ""}, v2Slash},
		"GET catalog":                             {answer{200, ""}, answer{404, "UNSUPPORTED"}, notPull},
		"HEAD catalog":                            {answer{405, ""}, answer{404, ""}, notPull},
		"GET tags list":                           {answer{200, ""}, answer{404, "UNSUPPORTED"}, notPull},
		"HEAD tags list":                          {answer{405, ""}, answer{404, ""}, notPull},
		"GET tags list of an unknown repository":  {answer{404, "NAME_UNKNOWN"}, answer{404, "UNSUPPORTED"}, notPull},
		"HEAD tags list of an unknown repository": {answer{405, ""}, answer{404, ""}, notPull},
		"GET referrers":                           {answer{404, ""}, answer{404, "UNSUPPORTED"}, plainBody},
		"GET upload status":                       {answer{404, "BLOB_UPLOAD_INVALID"}, answer{404, "UNSUPPORTED"}, notPull},
		"GET manifests without a reference":       {answer{404, ""}, answer{404, "UNSUPPORTED"}, plainBody},

		"GET ns not a host":              {answer{200, ""}, answer{400, "NAME_INVALID"}, nsNotHost},
		"HEAD ns not a host":             {answer{200, ""}, answer{400, ""}, nsNotHost},
		"GET tag of an unreachable ns":   {answer{200, ""}, answer{404, "MANIFEST_UNKNOWN"}, unreachable},
		"HEAD tag of an unreachable ns":  {answer{200, ""}, answer{404, ""}, unreachable},
		"GET blob of an unreachable ns":  {answer{200, ""}, answer{404, "BLOB_UNKNOWN"}, unreachable},
		"HEAD blob of an unreachable ns": {answer{200, ""}, answer{404, ""}, unreachable},
	}

	seen := map[string]bool{}
	var table strings.Builder
	for _, p := range probes {
		if seen[p.name] {
			t.Fatalf("two requests are named %q", p.name)
		}
		seen[p.name] = true
		r, sh := ask(regURL, p), ask(shoalURL, p)
		d, deliberate := differences[p.name]
		switch {
		case !deliberate && r != sh:
			t.Errorf("%s %s: registry %v, shoal %v", p.name, p.path, r, sh)
		case deliberate && (r != d.registry || sh != d.shoal):
			t.Errorf("%s %s: registry %v, shoal %v; the table says registry %v, shoal %v (%s)", p.name, p.path, r, sh, d.registry, d.shoal, d.why)
		}
		note := "same"
		if deliberate {
			note = d.why
		}
		fmt.Fprintf(&table, "\n%-58s | %-24s | %-24s | %s", p.name, r, sh, note)
	}
	t.Logf("%-58s | %-24s | %-24s | %s%s", "request", "registry", "shoal", "", table.String())
	for name := range differences {
		if !seen[name] {
			t.Errorf("the table of differences names %q, which no request is", name)
		}
	}

	// Whatever shoal asked the registry, it asked in well-formed terms.
	after, err := reg.Requests()
	if err != nil {
		t.Fatal(err)
	}
	upstream := 0
	for _, q := range after[len(before):] {
		if q.UserAgent == conformAgent {
			continue
		}
		upstream++
		if err := wellFormed(q); err != nil {
			t.Errorf("shoal sent the registry %s %s: %v", q.Method, q.URI, err)
		}
	}
	if upstream == 0 {
		t.Error("shoal asked the registry nothing: the unknown answers are not real misses")
	}
	if !s.Running() {
		t.Fatal("shoal exited")
	}
}

// wellFormed checks that a request is a pull: GET or HEAD of the version
// check, of a manifest by tag or sha256 digest, or of a blob by sha256
// digest, in a repository the distribution grammar accepts.
func wellFormed(q lab.Request) error {
	if q.Method != "GET" && q.Method != "HEAD" {
		return fmt.Errorf("method %s", q.Method)
	}
	if q.Path == "/v2/" {
		return nil
	}
	named, err := reference.ParseNamed("shoal.invalid/" + q.Repo)
	if q.Repo == "" || err != nil || reference.Path(named) != q.Repo {
		return fmt.Errorf("repository %q", q.Repo)
	}
	switch {
	case q.Digest != "":
		if q.Digest.Algorithm() != digest.SHA256 {
			return fmt.Errorf("digest %s", q.Digest)
		}
		return nil
	case q.Reference == "":
		return errors.New("neither a tag nor a digest")
	}
	_, err = reference.WithTag(named, q.Reference)
	return err
}
