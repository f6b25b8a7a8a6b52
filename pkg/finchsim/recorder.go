package finchsim

import "net/http"

// StatusRecorder is an http.ResponseWriter that remembers the status code of
// the response. Status stays 0 when nothing was written: a response dropped
// after commit (Fault.CommitThenDrop) hijacks the connection and closes it.
type StatusRecorder struct {
	http.ResponseWriter
	Status int // the first status written (0: none)
}

// WriteHeader records the first status written.
func (r *StatusRecorder) WriteHeader(code int) {
	if r.Status == 0 {
		r.Status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200 when no status was written.
func (r *StatusRecorder) Write(p []byte) (int, error) {
	if r.Status == 0 {
		r.Status = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer (hijacking
// for CommitThenDrop).
func (r *StatusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
