package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/containerd/errdefs"

	"github.com/shoal-dev/shoal/resolver"
)

// OCI distribution error codes shoal answers with.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeUnsupported     = "UNSUPPORTED"
	codeRangeInvalid    = "RANGE_INVALID"
	codeSizeInvalid     = "SIZE_INVALID"
	codeTagInvalid      = "TAG_INVALID"
	codeTooManyRequests = "TOOMANYREQUESTS"
)

type ociError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// writeError writes an OCI error body. HEAD requests get the status alone.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	body, _ := json.Marshal(struct {
		Errors []ociError `json:"errors"`
	}{[]ociError{{Code: code, Message: msg}}})
	h := w.Header()
	for _, k := range []string{"Accept-Ranges", "Docker-Content-Digest", "Etag", "Content-Encoding", "X-Content-Type-Options"} {
		h.Del(k)
	}
	if status != http.StatusRequestedRangeNotSatisfiable {
		h.Del("Content-Range")
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// writeLookupError maps a resolver error to an answer. Everything shoal
// cannot serve is a 404, so containerd falls back to the next host at once;
// only bad input is a 400.
func writeLookupError(w http.ResponseWriter, r *http.Request, kind string, err error) {
	unknown := codeBlobUnknown
	if kind == kindManifest {
		unknown = codeManifestUnknown
	}
	switch {
	case errdefs.IsInvalidArgument(err):
		code := codeDigestInvalid
		if kind == kindManifest {
			code = codeTagInvalid
		}
		writeError(w, r, http.StatusBadRequest, code, err.Error())
	case errdefs.IsNotImplemented(err):
		writeError(w, r, http.StatusBadRequest, codeDigestInvalid, err.Error())
	case errors.Is(err, resolver.ErrManifestTooLarge):
		writeError(w, r, http.StatusNotFound, codeSizeInvalid, err.Error())
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		writeError(w, r, http.StatusNotFound, unknown, "request canceled")
	default:
		writeError(w, r, http.StatusNotFound, unknown, err.Error())
	}
}
