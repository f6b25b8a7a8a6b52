// Package events records Kubernetes Events and condition messages the same
// way for the controllers and the inbound server: bounded in length, never
// formatted from user input.
package events

import (
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// MaxMessage is the longest Event or condition message kept (the API server
// rejects longer condition messages; Events get the same bound).
const MaxMessage = 1024

// Truncate shortens s to at most n bytes, marking the cut with "...".
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// Record records an Event on obj (a nil recorder records nothing).
func Record(rec recorder.EventRecorder, obj runtime.Object, typ, reason, action, msg string) {
	if rec != nil {
		rec.Eventf(obj, nil, typ, reason, action, "%s", Truncate(msg, MaxMessage))
	}
}
