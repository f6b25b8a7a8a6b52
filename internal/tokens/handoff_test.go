package tokens

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
)

// The hand-off rule as a table: which codes may be spent, and which tokens
// stored, for a connection.
func TestHandOffRule(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	conn := func(sess *finchv1.Session) *finchv1.FinchConnection {
		c := &finchv1.FinchConnection{}
		c.Spec.CustomerID = "acme"
		c.Status.ConnectionID = "conn_acme"
		c.Status.Session = sess
		return c
	}
	open := &finchv1.Session{ID: "sess_1", Kind: finchv1.SessionConnect, ExpiresAt: metav1.Time{Time: now.Add(time.Minute)}}
	expired := &finchv1.Session{ID: "sess_0", Kind: finchv1.SessionConnect, ExpiresAt: metav1.Time{Time: now}}
	reauth := &finchv1.Session{ID: "sess_r", Kind: finchv1.SessionReauthenticate, ExpiresAt: metav1.Time{Time: now.Add(time.Minute)}}

	for _, c := range []struct {
		name         string
		sess         *finchv1.Session
		tokenSession string
		want         error
	}{
		{"no session (connected)", nil, "", ErrNoSession},
		{"expired session", expired, "", ErrNoSession},
		{"open session", open, "", nil},
		{"open session, token from an earlier one", open, "sess_old", nil},
		{"open session that already produced the token", open, "sess_1", ErrSessionCompleted},
	} {
		got, err := CodeSession(conn(c.sess), c.tokenSession, now)
		wantSess := c.sess
		if c.want != nil {
			wantSess = nil
		}
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) || got != wantSess {
			t.Errorf("%s: CodeSession = %v, %v; want %v", c.name, got, err, c.want)
		}
	}

	for _, c := range []struct {
		name string
		sess *finchv1.Session
		resp finch.TokenResponse
		want error
	}{
		{"same customer", open, finch.TokenResponse{CustomerID: "acme", ConnectionID: "conn_new"}, nil},
		{"no customer_id (older connection)", open, finch.TokenResponse{ConnectionID: "conn_x"}, nil},
		{"another customer", open, finch.TokenResponse{CustomerID: "globex", ConnectionID: "conn_globex"}, ErrOtherCustomer},
		{"reauth, same connection", reauth, finch.TokenResponse{CustomerID: "acme", ConnectionID: "conn_acme"}, nil},
		{"reauth, another connection", reauth, finch.TokenResponse{ConnectionID: "conn_globex"}, ErrOtherConnection},
		{"reauth, another customer", reauth, finch.TokenResponse{CustomerID: "globex", ConnectionID: "conn_acme"}, ErrOtherCustomer},
	} {
		if err := CheckToken(conn(c.sess), c.sess, &c.resp); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("%s: CheckToken = %v, want %v", c.name, err, c.want)
		}
	}
}
