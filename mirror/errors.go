package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

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
	codeTooManyRequests = "TOOMANYREQUESTS"
	codeDenied          = "DENIED"
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

// writeLookupError maps a resolver error to an answer. The request was
// checked before the look-up, so whatever shoal cannot serve is a 404,
// which sends containerd to the next host at once. That includes a digest
// whose content is no manifest (a layer or config asked for as one), which
// the resolver reports as invalid or unsupported: the registry answers it
// MANIFEST_UNKNOWN too.
func writeLookupError(w http.ResponseWriter, r *http.Request, kind string, err error) {
	switch {
	case errors.Is(err, resolver.ErrManifestTooLarge):
		writeError(w, r, http.StatusNotFound, codeSizeInvalid, err.Error())
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads the answer.
		writeError(w, r, http.StatusNotFound, unknownCode(kind), "request canceled")
	default:
		writeError(w, r, http.StatusNotFound, unknownCode(kind), err.Error())
	}
}
