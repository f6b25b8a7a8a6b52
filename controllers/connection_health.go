// The last step: what the connection's health means, and when to look again.

package controllers

import (
	"cmp"
	"context"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
)

// reportHealth ends a pass with a token: connected (look again at the next
// introspection), or an error or disconnect only the employer or a human can
// fix. Reads status (tokenPhase, nextIntrospection) and s.app.
func (r *FinchConnectionReconciler) reportHealth(_ context.Context, s *syncState) outcome {
	conn, st := s.conn, &s.conn.Status
	phase := tokenPhase(conn, s.now)
	switch phase {
	case finchv1.PhaseError:
		cs := st.ConnectionStatus
		o := stalled(finchv1.ReasonUnknownStatus, "Finch reports an unknown connection status %q (%s); kept verbatim, re-checked every %s",
			cs.Status, cs.Message, s.app.IntrospectionInterval())
		if isKnownStatus(cs.Status) {
			o = stalled(finchv1.ReasonEmployerAction, "Finch reports %s: %s. The employer must fix this with their provider; the operator re-checks every %s",
				cs.Status, cmp.Or(cs.Message, "no message"), s.app.IntrospectionInterval())
		}
		o.phase = phase
		return o
	case finchv1.PhaseDisconnected:
		o := stalled(finchv1.ReasonDisconnected, "connection %s was disconnected at Finch and cannot come back; delete Secret %s to start a new Connect session (it creates a new connection ID), or delete this FinchConnection",
			st.ConnectionID, conn.TokenSecretName())
		o.phase = phase
		return o
	}
	return done{phase: phase, requeue: jitterDown(r.nextIntrospection(s).Sub(s.now))}
}
