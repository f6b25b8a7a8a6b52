package finchtest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// PollInterval is how often the Wait functions read the FinchConnection.
var PollInterval = 50 * time.Millisecond

// WaitFor reads the FinchConnection named like conn until done accepts it,
// and returns that version. When timeout (or ctx) ends first, the error
// names what was awaited and describes what the connection last looked like
// (see Describe), so a failed test says why.
func WaitFor(ctx context.Context, c client.Client, conn client.Object, timeout time.Duration, what string, done func(*finchv1.FinchConnection) bool) (*finchv1.FinchConnection, error) {
	key := client.ObjectKeyFromObject(conn)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var lastErr error
	for {
		got := &finchv1.FinchConnection{}
		if lastErr = c.Get(ctx, key, got); lastErr == nil && done(got) {
			return got, nil
		}
		select {
		case <-ctx.Done():
			// A fresh context: the awaited one has ended.
			rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer rcancel()
			return nil, fmt.Errorf("FinchConnection %s: not %s after %s: %s", key, what, timeout, Describe(rctx, c, key))
		case <-time.After(PollInterval):
		}
	}
}

// WaitForPhase waits until status.phase is phase (Connected, ReauthRequired...).
func WaitForPhase(ctx context.Context, c client.Client, conn client.Object, phase finchv1.Phase, timeout time.Duration) (*finchv1.FinchConnection, error) {
	return WaitFor(ctx, c, conn, timeout, "in phase "+string(phase), func(fc *finchv1.FinchConnection) bool {
		return fc.Status.Phase == phase && fc.Status.ObservedGeneration == fc.Generation
	})
}

// WaitForCondition waits until the condition typ has status.
func WaitForCondition(ctx context.Context, c client.Client, conn client.Object, typ string, status metav1.ConditionStatus, timeout time.Duration) (*finchv1.FinchConnection, error) {
	return WaitFor(ctx, c, conn, timeout, fmt.Sprintf("%s=%s", typ, status), func(fc *finchv1.FinchConnection) bool {
		for _, cd := range fc.Status.Conditions {
			if cd.Type == typ {
				return cd.Status == status
			}
		}
		return false
	})
}

// WaitForSession waits until the operator publishes a Connect session of
// kind (Connect or Reauthenticate) in status.session.
func WaitForSession(ctx context.Context, c client.Client, conn client.Object, kind finchv1.SessionKind, timeout time.Duration) (*finchv1.FinchConnection, error) {
	return WaitFor(ctx, c, conn, timeout, "publishing a "+string(kind)+" session", func(fc *finchv1.FinchConnection) bool {
		s := fc.Status.Session
		return s != nil && s.Kind == kind && s.ID != "" && s.ConnectURL != ""
	})
}

// Describe is a one-paragraph account of a FinchConnection for a test
// failure: its phase, session, conditions and last Events. It never fails;
// what it cannot read it says so.
func Describe(ctx context.Context, c client.Client, key client.ObjectKey) string {
	fc := &finchv1.FinchConnection{}
	if err := c.Get(ctx, key, fc); err != nil {
		return "cannot read it: " + err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase %q (generation %d, observed %d)", fc.Status.Phase, fc.Generation, fc.Status.ObservedGeneration)
	if s := fc.Status.Session; s != nil {
		fmt.Fprintf(&b, "; session %s %s", s.Kind, s.ID)
	} else {
		b.WriteString("; no session")
	}
	if fc.Status.ConnectionID != "" {
		fmt.Fprintf(&b, "; connectionID %s", fc.Status.ConnectionID)
	}
	fmt.Fprintf(&b, "; conditions %s", describeConditions(fc.Status.Conditions))
	fmt.Fprintf(&b, "; last events %s", lastEvents(ctx, c, fc, 5))
	return b.String()
}

func describeConditions(cs []metav1.Condition) string {
	if len(cs) == 0 {
		return "[none]"
	}
	parts := make([]string, 0, len(cs))
	for _, cd := range cs {
		p := fmt.Sprintf("%s=%s", cd.Type, cd.Status)
		if cd.Reason != "" {
			p += " (" + cd.Reason
			if cd.Message != "" {
				p += ": " + cd.Message
			}
			p += ")"
		}
		parts = append(parts, p)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// lastEvents are the newest n Events regarding obj, oldest first.
func lastEvents(ctx context.Context, c client.Client, obj client.Object, n int) string {
	list := &eventsv1.EventList{}
	if err := c.List(ctx, list, client.InNamespace(obj.GetNamespace())); err != nil {
		return "(cannot list Events: " + err.Error() + ")"
	}
	var evs []eventsv1.Event
	for _, ev := range list.Items {
		if ev.Regarding.Name == obj.GetName() && ev.Regarding.Kind == "FinchConnection" {
			evs = append(evs, ev)
		}
	}
	if len(evs) == 0 {
		return "[none]"
	}
	at := func(ev eventsv1.Event) time.Time {
		switch {
		case ev.Series != nil:
			return ev.Series.LastObservedTime.Time
		case !ev.EventTime.IsZero():
			return ev.EventTime.Time
		}
		return ev.CreationTimestamp.Time
	}
	sort.SliceStable(evs, func(i, j int) bool { return at(evs[i]).Before(at(evs[j])) })
	if len(evs) > n {
		evs = evs[len(evs)-n:]
	}
	parts := make([]string, 0, len(evs))
	for _, ev := range evs {
		p := fmt.Sprintf("%s %s: %s", ev.Type, ev.Reason, ev.Note)
		if ev.Series != nil && ev.Series.Count > 1 {
			p += fmt.Sprintf(" (x%d)", ev.Series.Count)
		}
		parts = append(parts, p)
	}
	return "[" + strings.Join(parts, "; ") + "]"
}
