// Step 5: a stored token, and what Finch says about its connection.

package controllers

import (
	"cmp"
	"context"
	"fmt"
	"time"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"

	corev1 "k8s.io/api/core/v1"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/connectops/finch-operator/internal/events"
	"github.com/connectops/finch-operator/internal/finch"
)

// introspect calls GET /introspect when a new token, a request or the
// interval asks for it, and records what Finch says. A signed webhook that
// reported reauth goes straight to the reauthentication session. Reads
// s.token, s.requests and s.app; writes status.connectionStatus, the
// connection's facts, lastIntrospectionTime and tokenVersion.
func (r *FinchConnectionReconciler) introspect(ctx context.Context, s *syncState) outcome {
	if s.token.Token == "" {
		return nil
	}
	conn, st := s.conn, &s.conn.Status
	newToken := st.TokenVersion != s.token.Version
	switch {
	case s.requests.webhookStatus == finch.StatusReauth && !newToken:
		st.ConnectionStatus = &finchv1.ConnectionStatus{Status: finch.StatusReauth, Message: "Finch reported (account.updated webhook) that the employer must re-authenticate"}
		return nil
	case !newToken && !s.requests.forceIntrospect() && st.LastIntrospectionTime != nil && s.now.Before(r.nextIntrospection(s)):
		return nil
	}
	if o := deferForBudget(s, finch.EndpointIntrospect); o != nil {
		return o
	}
	info, err := s.app.Client.Introspect(ctx, s.token.Token)
	switch {
	case err == nil:
	case finch.IsReauthRequired(err):
		st.ConnectionStatus = &finchv1.ConnectionStatus{Status: finch.StatusReauth, Message: finchMessage(err)}
		st.LastIntrospectionTime = &metav1.Time{Time: s.now}
		st.TokenVersion = s.token.Version
		return nil
	case finch.IsInvalidToken(err):
		st.LastIntrospectionTime = &metav1.Time{Time: s.now}
		st.TokenVersion = s.token.Version
		if s.requests.webhookStatus == finch.StatusDisconnected || (st.ConnectionStatus != nil && st.ConnectionStatus.Status == finch.StatusDisconnected) {
			st.ConnectionStatus = &finchv1.ConnectionStatus{Status: finch.StatusDisconnected, Message: "the access token was revoked"}
			o := stalled(finchv1.ReasonDisconnected, "connection %s was disconnected at Finch; delete Secret %s to start a new Connect session (a new connection ID), or delete this FinchConnection",
				st.ConnectionID, conn.TokenSecretName())
			o.phase = finchv1.PhaseDisconnected
			return o
		}
		o := stalled(finchv1.ReasonTokenRevoked, "Finch rejected the access token in Secret %s (revoked: disconnected, or re-authenticated elsewhere). Put a valid token in the Secret, set annotation %s to issue a reauthentication session, or delete the Secret if the connection was disconnected",
			conn.TokenSecretName(), finchv1.ReauthRequestedAtAnnotation)
		o.phase = finchv1.PhaseError
		return o
	default:
		return r.introspectFailed(s, err)
	}
	r.noteAnswered(conn.AppKey(), s.now)
	wasConnected := st.ConnectionStatus != nil && st.ConnectionStatus.Status == finch.StatusConnected
	cs := recordIntrospection(st, info)
	st.LastIntrospectionTime = &metav1.Time{Time: s.now}
	st.TokenVersion = s.token.Version
	if cs.Status == finch.StatusConnected {
		if st.ConnectedAt == nil {
			st.ConnectedAt = &metav1.Time{Time: s.now}
			if st.FirstSessionTime != nil {
				observeTimeToConnect(s.conn, s.now.Sub(st.FirstSessionTime.Time))
			}
		}
		if !wasConnected {
			events.Record(r.Recorder, conn, corev1.EventTypeNormal, finchv1.ReasonConnected, "Introspect", fmt.Sprintf("Finch reports connection %s connected (provider %s)", st.ConnectionID, st.ProviderID))
		}
	}
	return nil
}

// recordIntrospection copies what Finch said about the connection into
// status (never the token) and returns the connection status it derived.
func recordIntrospection(st *finchv1.FinchConnectionStatus, info *finch.Introspection) *finchv1.ConnectionStatus {
	st.ConnectionID = info.ConnectionID
	cs := &finchv1.ConnectionStatus{Status: info.Status(), Message: info.ConnectionStatus.Message}
	if info.StatusDerived() {
		// The guide's sandbox example has only authentication_methods[].connection_status.
		cs.Message = cmp.Or(cs.Message, "derived from authentication_methods (no top-level connection_status)")
	}
	st.Entities = nil
	for _, e := range info.Entities {
		st.Entities = append(st.Entities, finchv1.EntityStatus{ID: e.ID, Name: e.Name, SourceID: e.SourceID, Status: e.Status})
		// An entity Finch wants re-authenticated is the connection's
		// reauth (finch-api-go account.go: IntrospectionEntity.Status).
		if e.Status == finch.StatusReauth && cs.Status != finch.StatusReauth && cs.Status != finch.StatusDisconnected {
			cs.Status = finch.StatusReauth
			cs.Message = fmt.Sprintf("entity %s (%s) needs re-authentication", e.ID, cmp.Or(e.Name, "unnamed"))
		}
	}
	st.FinchCustomerName, st.FinchCustomerEmail = info.CustomerName, info.CustomerEmail
	cs.LastSuccessfulSync, cs.LastSuccessfulSyncRaw = lastSync(&info.ConnectionStatus)
	st.ConnectionStatus = cs
	st.AuthenticationMethods = nil
	for _, m := range info.AuthenticationMethods {
		am := finchv1.AuthenticationMethodStatus{Type: m.Type}
		if m.ConnectionStatus != nil {
			am.Status, am.Message = m.ConnectionStatus.Status, m.ConnectionStatus.Message
			am.LastSuccessfulSync, am.LastSuccessfulSyncRaw = lastSync(m.ConnectionStatus)
		}
		st.AuthenticationMethods = append(st.AuthenticationMethods, am)
	}
	st.ProviderID = cmp.Or(info.ProviderID, info.PayrollProviderID)
	st.ConnectionType = info.ConnectionType
	st.ClientType = info.ClientType
	st.GrantedProducts = info.Products
	st.AccountID = info.AccountID
	st.CompanyID = info.CompanyID
	return cs
}

// nextIntrospection is when the connection is due for a health check: the
// app's interval, shorter while Finch reports it pending.
func (r *FinchConnectionReconciler) nextIntrospection(s *syncState) time.Time {
	st := s.conn.Status
	if st.LastIntrospectionTime == nil {
		return s.now
	}
	interval := s.app.IntrospectionInterval()
	if phaseForStatus(st.ConnectionStatus) == finchv1.PhaseConnecting && interval > pendingIntrospection {
		interval = pendingIntrospection
	}
	return st.LastIntrospectionTime.Add(interval)
}

// phaseForStatus maps Finch's connection status to a phase (step 5).
func phaseForStatus(cs *finchv1.ConnectionStatus) finchv1.Phase {
	if cs == nil {
		return finchv1.PhaseConnecting
	}
	switch cs.Status {
	case finch.StatusConnected:
		return finchv1.PhaseConnected
	case finch.StatusPending, finch.StatusProcessing:
		return finchv1.PhaseConnecting
	case finch.StatusReauth:
		return finchv1.PhaseReauthRequired
	case finch.StatusDisconnected:
		return finchv1.PhaseDisconnected
	default: // error_permissions, error_no_account_setup, or a status Finch added later
		return finchv1.PhaseError
	}
}

func isKnownStatus(s string) bool {
	switch s {
	case finch.StatusPending, finch.StatusProcessing, finch.StatusConnected, finch.StatusReauth, finch.StatusDisconnected,
		finch.StatusErrorPermissions, finch.StatusErrorNoAccountSetup:
		return true
	}
	return false
}

// maxLastSyncRaw bounds a last_successful_sync kept verbatim (the CRD's
// maxLength of lastSuccessfulSyncRaw).
const maxLastSyncRaw = 256

// lastSync is Finch's last_successful_sync for status: the time, or the value
// verbatim (bounded) when it is not a date-time, since the SDKs type it
// "date-time or any string" (docs/finch-api.md#introspection).
func lastSync(cs *finch.ConnectionStatus) (*metav1.Time, string) {
	if cs.LastSuccessfulSync != nil {
		return &metav1.Time{Time: *cs.LastSuccessfulSync}, ""
	}
	return nil, events.Truncate(cs.LastSuccessfulSyncRaw, maxLastSyncRaw)
}
