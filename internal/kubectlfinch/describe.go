package kubectlfinch

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// until renders a future or past instant relative to now: "in 3d", "expired 2h ago".
func until(t, now time.Time) string {
	if t.After(now) {
		return "in " + duration.HumanDuration(t.Sub(now))
	}
	return "expired " + duration.HumanDuration(now.Sub(t)) + " ago"
}

// ago renders a past instant: "5m ago".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if t.After(now) {
		return "in " + duration.HumanDuration(t.Sub(now))
	}
	return duration.HumanDuration(now.Sub(t)) + " ago"
}

// sessionColumn is the session expiry of a connection, "-" when none is published.
func sessionColumn(conn *finchv1.FinchConnection, now time.Time) string {
	if s := conn.Status.Session; s != nil {
		return until(s.ExpiresAt.Time, now)
	}
	return "-"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func condition(conn *finchv1.FinchConnection, typ string) *metav1.Condition {
	return meta.FindStatusCondition(conn.Status.Conditions, typ)
}

func conditionIs(conn *finchv1.FinchConnection, typ string, status metav1.ConditionStatus) bool {
	c := condition(conn, typ)
	return c != nil && c.Status == status
}

// sessionLive says whether the published session can still be used.
func sessionLive(conn *finchv1.FinchConnection, now time.Time) bool {
	s := conn.Status.Session
	return s != nil && s.ConnectURL != "" && now.Before(s.ExpiresAt.Time)
}

// embedded says whether the published session is for embedded Connect (no
// redirect_uri), so the code comes back through the customer's backend.
func embedded(conn *finchv1.FinchConnection) bool {
	if s := conn.Status.Session; s != nil {
		return s.RedirectURI == ""
	}
	return conn.Spec.ConnectFlow == finchv1.ConnectFlowEmbedded
}

// nextStep is what a human should do next, in one line. The operator's
// condition messages say the same at length; this is the short version for
// a table, and it names the plugin command that does it.
func nextStep(conn *finchv1.FinchConnection, now time.Time) string {
	name, st := conn.Name, &conn.Status
	if conn.DeletionTimestamp != nil {
		return "being deleted"
	}
	if conn.Spec.Suspend {
		return "suspended: no Finch calls until `kubectl finch resume " + name + "`"
	}
	if stalled := condition(conn, finchv1.ConditionStalled); stalled != nil && stalled.Status == metav1.ConditionTrue {
		return stalledStep(conn, stalled.Reason)
	}
	ready := condition(conn, finchv1.ConditionReady)
	if ready != nil && ready.Status != metav1.ConditionTrue {
		switch ready.Reason {
		case finchv1.ReasonAppNotFound:
			return appMissingStep(conn)
		case finchv1.ReasonAppNotReady:
			return fmt.Sprintf("fix %s (kubectl describe %s %s)", conn.AppDescription(), appResource(conn), conn.AppName())
		case finchv1.ReasonCodeRejected:
			return "the code was rejected: have the employer finish Finch Connect again"
		case finchv1.ReasonBudgetWait:
			return "waiting in line for the app's Finch request budget; nothing to do"
		case finchv1.ReasonReauthUnrecorded:
			until := ""
			if pc := st.PendingCall; pc != nil && pc.ExpiresAt != nil {
				until = " until " + pc.ExpiresAt.UTC().Format(time.RFC3339)
			}
			return fmt.Sprintf("a reauthentication link may have been issued but was not recorded; the operator waits%s, or `kubectl finch reauth %s` issues a new one", until, name)
		}
	}
	if r := st.Retry; r != nil {
		return fmt.Sprintf("Finch call failed (%s); the operator retries %s", r.Reason, ago(r.NextAttemptTime.Time, now))
	}
	switch st.Phase {
	case "", finchv1.PhasePending:
		return "waiting for the operator"
	case finchv1.PhaseAwaitingConnect, finchv1.PhaseReauthRequired:
		verb := "connect"
		if st.Phase == finchv1.PhaseReauthRequired {
			verb = "re-authenticate"
		}
		switch {
		case st.Session == nil:
			return "waiting for the operator to issue a session"
		case !sessionLive(conn, now):
			return "session expired unused; the operator issues a fresh one"
		case embedded(conn):
			return fmt.Sprintf("employer to %s in embedded Connect (session %s), then `kubectl finch handoff %s`", verb, st.Session.ID, name)
		default:
			return fmt.Sprintf("send the employer the link to %s: `kubectl finch link %s`", verb, name)
		}
	case finchv1.PhaseConnecting:
		return "employer authenticated; Finch is setting up the connection (re-checked by the operator)"
	case finchv1.PhaseConnected:
		return "none"
	case finchv1.PhaseDisconnected:
		return fmt.Sprintf("disconnected at Finch: delete Secret %s to start over with a new connection", conn.TokenSecretName())
	}
	return "see `kubectl finch status " + name + "`"
}

// appMissingStep is the next step when the connection's app does not exist.
func appMissingStep(conn *finchv1.FinchConnection) string {
	if conn.UsesClusterApp() {
		return fmt.Sprintf("create %s (cluster-scoped), or fix spec.appRef", conn.AppDescription())
	}
	return fmt.Sprintf("create %s in this namespace", conn.AppDescription())
}

// duplicateStep is the next step for a DuplicateCustomerID: a ClusterFinchApp
// has one customerID space across every namespace that uses it.
func duplicateStep(conn *finchv1.FinchConnection) string {
	where := ""
	if conn.UsesClusterApp() {
		where = " (in any namespace)"
	}
	return "another FinchConnection of the app" + where + " uses this customerID: give this one a distinct ID"
}

// stalledStep is the next step for a Stalled reason (README, "When things go wrong").
func stalledStep(conn *finchv1.FinchConnection, reason string) string {
	name := conn.Name
	switch reason {
	case finchv1.ReasonInvalidCredentials:
		return fmt.Sprintf("Finch rejects %s's credentials: fix its credentials Secret", conn.AppDescription())
	case finchv1.ReasonFinchRejected:
		return "Finch refused the request: fix the spec (`kubectl finch status " + name + "` shows Finch's message)"
	case finchv1.ReasonDuplicateCustomerID:
		return duplicateStep(conn)
	case finchv1.ReasonNamespaceNotAllowed:
		return fmt.Sprintf("%s does not allow this namespace: ask its owner to add it to spec.conditions, or use a FinchApp here", conn.AppDescription())
	case finchv1.ReasonClusterAppUnavailable:
		return fmt.Sprintf("this operator is installed namespace-scoped and cannot use %s: use a FinchApp in this namespace", conn.AppDescription())
	case finchv1.ReasonConnectionExists:
		return fmt.Sprintf("Finch already has this customer's connection: `kubectl finch adopt %s --token-file F`, or `kubectl finch reauth %s`", name, name)
	case finchv1.ReasonTokenSecretNotOwned:
		return fmt.Sprintf("Secret %s is not this connection's: `kubectl finch adopt %s --token-file F --overwrite`, or delete it", conn.TokenSecretName(), name)
	case finchv1.ReasonTokenRevoked:
		return fmt.Sprintf("Finch rejects the stored token: `kubectl finch reauth %s`, or adopt a valid token", name)
	case finchv1.ReasonEmployerAction:
		return "the employer must fix access at their provider (`kubectl finch status " + name + "` has Finch's message)"
	case finchv1.ReasonDisconnected:
		return fmt.Sprintf("disconnected at Finch: delete Secret %s to start over with a new connection", conn.TokenSecretName())
	case finchv1.ReasonDisconnectFailed:
		return "disconnect at Finch keeps failing; see README \"When things go wrong\" (DisconnectFailed)"
	case finchv1.ReasonUnknownStatus:
		return "Finch reported a status this operator does not know; see `kubectl finch status " + name + "`"
	}
	return "stalled (" + reason + "): see `kubectl finch status " + name + "`"
}
