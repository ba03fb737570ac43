package resolver_test

import (
	"encoding/json"
	"mime"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/resolver"
)

// FuzzDetectMediaType reads arbitrary bodies as manifests shoal holds
// without a media type: a type it finds is the body's own mediaType, or
// the OCI index or manifest type the body's fields imply, and is a bare
// type/subtype fit for the Content-Type header the mirror sends.
func FuzzDetectMediaType(f *testing.F) {
	for _, s := range []string{
		`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}`,
		`{"schemaVersion":2,"config":{},"layers":[]}`,
		`{"schemaVersion":2,"manifests":[]}`,
		`{"schemaVersion":1,"fsLayers":[]}`,
		`{"schemaVersion":2,"mediaType":"x\r\ny"}`,
		`{"schemaVersion":2,"mediaType":"text/plain; charset=utf-8"}`,
		`{"schemaVersion":2,"config":null,"layers":null}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		mt, err := resolver.DetectMediaType(body)
		if err != nil {
			return
		}
		base, params, perr := mime.ParseMediaType(mt)
		if perr != nil || len(params) != 0 || base != strings.ToLower(mt) || strings.Count(mt, "/") != 1 {
			t.Fatalf("%q: media type %q is not a bare type/subtype: %v", body, mt, perr)
		}
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		_ = json.Unmarshal(body, &probe)
		if probe.MediaType != "" && mt != probe.MediaType {
			t.Fatalf("%q: media type %q, the body says %q", body, mt, probe.MediaType)
		}
		if probe.MediaType == "" && mt != ocispec.MediaTypeImageIndex && mt != ocispec.MediaTypeImageManifest {
			t.Fatalf("%q: media type %q from fields", body, mt)
		}
	})
}
