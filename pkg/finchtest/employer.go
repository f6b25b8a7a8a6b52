package finchtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/internal/finch"
	"github.com/connectops/finch-operator/pkg/finchsim"
)

// Flow is how an Employer hands the authorization code to the operator.
type Flow string

const (
	// FlowAuto uses the redirect flow when the session has a redirect_uri,
	// else the embedded flow.
	FlowAuto Flow = ""
	// FlowRedirect: Finch Connect redirects the employer's browser to the
	// operator's callback with the code and state; the Employer follows it.
	FlowRedirect Flow = "Redirect"
	// FlowEmbedded: the code reaches the application's frontend (the embedded
	// SDK's onSuccess), which hands it over in a code Secret.
	FlowEmbedded Flow = "Embedded"
)

// Connect is how an Employer completes a Connect session.
type Connect struct {
	// Flow is how the code comes back (default FlowAuto).
	Flow Flow
	// Provider is the payroll provider chosen ("gusto", "adp_run"...;
	// default: the session's integration.provider, else "gusto").
	Provider string
	// AuthMethod is the authentication method ("credential", "api_token",
	// "oauth", "assisted"; default: the session's integration.auth_method,
	// else "credential").
	AuthMethod string
	// Status is the connection's status in Finch once connected ("connected",
	// or "pending" for an assisted connection Finch still sets up...; default
	// "connected").
	Status string
	// Entities makes the connection multi-entity with these entities.
	Entities []finchsim.EntityInfo
	// Timeout bounds the wait for the operator to publish the session
	// (default one minute).
	Timeout time.Duration
}

// Employer plays the employer, and Finch's side of a connection's life, for
// FinchConnections of apps that use Sim.
type Employer struct {
	// Client reads FinchConnections and token Secrets and creates code
	// Secrets.
	Client client.Client
	// Sim is the Finch the connections' app talks to.
	Sim *finchsim.Sim
	// HTTP is the employer's browser (default: a client with a one-minute
	// timeout, following redirects).
	HTTP *http.Client
}

func (em *Employer) http() *http.Client {
	if em.HTTP != nil {
		return em.HTTP
	}
	return &http.Client{Timeout: time.Minute}
}

// Connect waits until the operator publishes a session for conn (a Connect
// or a Reauthenticate one), completes it in Finch Connect as c says, and
// hands the code to the operator: for the redirect flow it follows the
// redirect to the operator's callback (an error if the callback does not
// answer 200), for the embedded flow it creates the code Secret as the
// application's backend would (kubectl finch handoff does the same). It
// returns once the code is handed over; wait for the phase you expect next.
func (em *Employer) Connect(ctx context.Context, conn client.Object, c Connect) error {
	if c.Timeout <= 0 {
		c.Timeout = time.Minute
	}
	fc, err := WaitFor(ctx, em.Client, conn, c.Timeout, "publishing a session", func(fc *finchv1.FinchConnection) bool {
		return fc.Status.Session != nil && fc.Status.Session.ID != ""
	})
	if err != nil {
		return err
	}
	s := fc.Status.Session
	flow := c.Flow
	if flow == FlowAuto {
		flow = FlowEmbedded
		if s.RedirectURI != "" {
			flow = FlowRedirect
		}
	}
	code, err := em.Sim.CompleteSession(s.ID, finchsim.Completion{Provider: c.Provider, AuthMethod: c.AuthMethod, Status: c.Status, Entities: c.Entities})
	if err != nil {
		return fmt.Errorf("complete session %s of %s: %w", s.ID, client.ObjectKeyFromObject(conn), err)
	}
	if flow == FlowEmbedded {
		return em.HandOverCode(ctx, conn, code)
	}
	info, ok := em.Sim.Session(s.ID)
	if !ok || info.RedirectURI == "" {
		return fmt.Errorf("session %s of %s has no redirect_uri: use FlowEmbedded", s.ID, client.ObjectKeyFromObject(conn))
	}
	q := url.Values{"code": {code}}
	if u, err := url.Parse(s.ConnectURL); err == nil && u.Query().Get("state") != "" {
		q.Set("state", u.Query().Get("state"))
	}
	return em.OpenCallback(ctx, appendQuery(info.RedirectURI, q.Encode()))
}

// OpenCallback opens the operator's callback URL as the employer's browser
// does after Finch Connect's redirect; an answer other than 200 is an error
// that carries the page's text.
func (em *Employer) OpenCallback(ctx context.Context, callbackURL string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, callbackURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/html")
	resp, err := em.http().Do(req)
	if err != nil {
		return fmt.Errorf("open the callback: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the callback answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// HandOverCode creates the embedded flow's code Secret for conn: type
// finch.connectops.dev/authorization-code, labelled with the connection's
// name, the code under key "code". The operator exchanges it and deletes it.
func (em *Employer) HandOverCode(ctx context.Context, conn client.Object, code string) error {
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: conn.GetName() + "-code-", Namespace: conn.GetNamespace(),
			Labels: map[string]string{finchv1.ConnectionLabel: conn.GetName()},
		},
		Type: finchv1.CodeSecretType,
		Data: map[string][]byte{finchv1.CodeKey: []byte(code)},
	}
	if err := em.Client.Create(ctx, sec); err != nil {
		return fmt.Errorf("create the code Secret of %s: %w", client.ObjectKeyFromObject(conn), err)
	}
	return nil
}

// connectionID is conn's Finch connection_id from its status.
func (em *Employer) connectionID(ctx context.Context, conn client.Object) (string, error) {
	fc := &finchv1.FinchConnection{}
	if err := em.Client.Get(ctx, client.ObjectKeyFromObject(conn), fc); err != nil {
		return "", err
	}
	if fc.Status.ConnectionID == "" {
		return "", fmt.Errorf("%s: %w", client.ObjectKeyFromObject(conn), errNoConnectionID)
	}
	return fc.Status.ConnectionID, nil
}

// RequireReauth has Finch mark conn's connection as needing
// reauthentication (the employer changed a password, the provider revoked
// access): its status becomes "reauth" and Finch sends the signed
// account.updated webhook to the operator.
func (em *Employer) RequireReauth(ctx context.Context, conn client.Object) error {
	return em.SetStatus(ctx, conn, "reauth")
}

// SetStatus sets the Finch status of conn's connection ("connected",
// "pending", "reauth", "error_no_account_setup"...) and sends the
// account.updated webhook.
func (em *Employer) SetStatus(ctx context.Context, conn client.Object, status string) error {
	id, err := em.connectionID(ctx, conn)
	if err != nil {
		return err
	}
	return em.Sim.SetConnectionStatus(id, status)
}

// RemoveEntity removes entities from conn's multi-entity connection as
// POST /disconnect-entity does; Finch sends an account.updated webhook for
// each.
func (em *Employer) RemoveEntity(ctx context.Context, conn client.Object, entityIDs ...string) error {
	id, err := em.connectionID(ctx, conn)
	if err != nil {
		return err
	}
	return em.Sim.DisconnectEntities(id, entityIDs...)
}

// Disconnect disconnects conn's connection in Finch from outside the
// operator (another service holding the token, or Finch's dashboard): it
// calls POST /disconnect with the token the operator stored, which revokes
// every token of the connection, then asks the operator to look now (the
// requestedAt annotation, as `kubectl finch reconcile` does) instead of at
// its next introspection.
func (em *Employer) Disconnect(ctx context.Context, conn client.Object) error {
	fc := &finchv1.FinchConnection{}
	if err := em.Client.Get(ctx, client.ObjectKeyFromObject(conn), fc); err != nil {
		return err
	}
	sec := &corev1.Secret{}
	if err := em.Client.Get(ctx, client.ObjectKey{Namespace: fc.Namespace, Name: fc.TokenSecretName()}, sec); err != nil {
		return fmt.Errorf("read the token Secret of %s: %w", client.ObjectKeyFromObject(conn), err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(em.Sim.URL(), "/")+"/disconnect", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+string(sec.Data[finchv1.AccessTokenKey]))
	req.Header.Set("Finch-API-Version", finch.DefaultAPIVersion)
	req.Header.Set("Content-Type", "application/json")
	resp, err := em.http().Do(req)
	if err != nil {
		return fmt.Errorf("POST /disconnect: %w", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /disconnect answered %s", resp.Status)
	}
	patch := client.MergeFrom(fc.DeepCopy())
	if fc.Annotations == nil {
		fc.Annotations = map[string]string{}
	}
	fc.Annotations[finchv1.RequestedAtAnnotation] = time.Now().UTC().Format(time.RFC3339Nano)
	return em.Client.Patch(ctx, fc, patch)
}

// appendQuery adds an encoded query to a URI that may already have one.
func appendQuery(uri, query string) string {
	sep := "?"
	if strings.Contains(uri, "?") {
		sep = "&"
	}
	return uri + sep + query
}
