package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/agentkeys/broker/shared/strictjson"
)

// readJSON decodes a capped JSON body into v (a shared/httpapi request type)
// strictly: an unknown key, a key given twice or a key in another case than
// the type's is 400 bad_request, because encoding/json would quietly take the
// last of two keys and fill "Audience" into audience, and a proxy or auditor
// reading the same bytes could see another request than the one acted on. An
// empty body is allowed when optional is true and leaves v untouched.
func readJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) *httpError {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, KindTooLarge, fmt.Sprintf("request body is larger than %d bytes", MaxBodySize))
		}
		return errorf(http.StatusBadRequest, KindBadRequest, "failed to read the request body")
	}
	return decodeBody(body, v, optional)
}

// decodeBody is readJSON after the read: the part that FuzzDecodeRequestBody drives.
func decodeBody(body []byte, v any, optional bool) *httpError {
	if len(strings.TrimSpace(string(body))) == 0 {
		if optional {
			return nil
		}
		return errorf(http.StatusBadRequest, KindBadRequest, "request body is empty; want a JSON object")
	}
	if err := strictjson.Decode(body, v, strictjson.Limits{MaxSize: MaxBodySize}); err != nil {
		return errorf(http.StatusBadRequest, KindBadRequest, "request body is not valid JSON for this route: "+truncate(err.Error(), 200))
	}
	return nil
}
