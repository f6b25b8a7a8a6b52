package finch

import "net/http"

// DefaultHTTPClient returns the *http.Client a Client uses when
// Config.HTTPClient is nil, so that the external contract tests can wrap its
// transport (to measure request latency) without changing anything else.
func DefaultHTTPClient() *http.Client { return defaultHTTPClient() }
