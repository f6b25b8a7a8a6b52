package finchtest_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	finchv1 "github.com/connectops/finch-operator/api/v1alpha1"
	"github.com/connectops/finch-operator/pkg/finchsim"
	"github.com/connectops/finch-operator/pkg/finchtest"
)

const wait = 2 * time.Minute

// The embedded flow: the code reaches the operator in a code Secret, and the
// connection takes the provider and auth method the employer chose.
func TestConnectEmbedded(t *testing.T) {
	env := finchtest.Start(t, apiServer(t), finchtest.Options{})
	conn, err := env.NewConnection(ctx, "globex", "globex-1", func(c *finchv1.FinchConnection) {
		c.Spec.ConnectFlow = finchv1.ConnectFlowEmbedded
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Employer.Connect(ctx, conn, finchtest.Connect{Provider: "adp_run", AuthMethod: "api_token"}); err != nil {
		t.Fatal(err)
	}
	got, err := finchtest.WaitForPhase(ctx, env.Client, conn, finchv1.PhaseConnected, wait)
	if err != nil {
		t.Fatal(err)
	}
	fc, ok := env.Sim.Connection(got.Status.ConnectionID)
	if !ok || fc.ProviderID != "adp_run" || fc.AuthMethod != "api_token" {
		t.Fatalf("Finch's connection %s: %+v, want provider adp_run with api_token", got.Status.ConnectionID, fc)
	}
	if n := env.Calls()[finchsim.EndpointToken]; n != 1 {
		t.Errorf("%s called %d times, want 1", finchsim.EndpointToken, n)
	}
}

// Finch asks for reauthentication (webhook), the operator publishes a
// Reauthenticate session, the employer completes it through the redirect,
// and the connection is Connected again; a removed entity leaves it so.
func TestReauthAndRemoveEntity(t *testing.T) {
	env := finchtest.Start(t, apiServer(t), finchtest.Options{})
	conn, _ := env.NewConnection(ctx, "initech", "initech-1")
	entities := []finchsim.EntityInfo{{Name: "Initech East"}, {Name: "Initech West"}}
	if err := env.Employer.Connect(ctx, conn, finchtest.Connect{Entities: entities}); err != nil {
		t.Fatal(err)
	}
	got, err := finchtest.WaitForPhase(ctx, env.Client, conn, finchv1.PhaseConnected, wait)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Employer.RequireReauth(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := finchtest.WaitForSession(ctx, env.Client, conn, finchv1.SessionReauthenticate, wait); err != nil {
		t.Fatal(err)
	}
	if err := env.Employer.Connect(ctx, conn, finchtest.Connect{}); err != nil {
		t.Fatal(err)
	}
	if _, err := finchtest.WaitFor(ctx, env.Client, conn, wait, "Connected with no session", func(c *finchv1.FinchConnection) bool {
		return c.Status.Phase == finchv1.PhaseConnected && c.Status.Session == nil
	}); err != nil {
		t.Fatal(err)
	}
	fc, _ := env.Sim.Connection(got.Status.ConnectionID)
	if len(fc.Entities) != 2 {
		t.Fatalf("entities %+v, want 2", fc.Entities)
	}
	if err := env.Employer.RemoveEntity(ctx, conn, fc.Entities[1].ID); err != nil {
		t.Fatal(err)
	}
	fc, _ = env.Sim.Connection(got.Status.ConnectionID)
	if fc.Entities[1].Status != "disconnected" {
		t.Fatalf("entity after RemoveEntity: %+v", fc.Entities[1])
	}
	if _, err := finchtest.WaitForCondition(ctx, env.Client, conn, finchv1.ConditionConnected, metav1.ConditionTrue, wait); err != nil {
		t.Fatal(err)
	}
}

// Disconnecting in Finch revokes the token; the operator notices.
func TestDisconnect(t *testing.T) {
	env := finchtest.Start(t, apiServer(t), finchtest.Options{})
	conn, _ := env.NewConnection(ctx, "umbrella", "umbrella-1")
	if err := env.Employer.Connect(ctx, conn, finchtest.Connect{}); err != nil {
		t.Fatal(err)
	}
	if _, err := finchtest.WaitForPhase(ctx, env.Client, conn, finchv1.PhaseConnected, wait); err != nil {
		t.Fatal(err)
	}
	if err := env.Employer.Disconnect(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := finchtest.WaitFor(ctx, env.Client, conn, wait, "away from Connected", func(c *finchv1.FinchConnection) bool {
		return c.Status.Phase != finchv1.PhaseConnected
	}); err != nil {
		t.Fatal(err)
	}
}

// A wait that times out says what it saw: the phase, the session and the
// conditions.
func TestWaitReportsWhatItSaw(t *testing.T) {
	env := finchtest.Start(t, apiServer(t), finchtest.Options{})
	conn, _ := env.NewConnection(ctx, "hooli", "hooli-1")
	if _, err := finchtest.WaitForSession(ctx, env.Client, conn, finchv1.SessionConnect, wait); err != nil {
		t.Fatal(err)
	}
	_, err := finchtest.WaitForPhase(ctx, env.Client, conn, finchv1.PhaseConnected, time.Second)
	if err == nil {
		t.Fatal("WaitForPhase(Connected) succeeded for a connection nobody connected")
	}
	for _, want := range []string{"not in phase Connected", `phase "AwaitingConnect"`, "session Connect", "conditions [", "Connected=False", "last events ["} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q:\n%v", want, err)
		}
	}
}

// The simulator alone speaks Finch's wire format on a loopback port.
func TestStartSimulator(t *testing.T) {
	sim := finchtest.StartSimulator(t, finchsim.Options{}, finchsim.AppConfig{ClientID: "c1", ClientSecret: "s1"})
	req, _ := http.NewRequest(http.MethodPost, sim.URL()+"/connect/sessions",
		strings.NewReader(`{"customer_id":"x","customer_name":"X","products":["company"]}`))
	req.SetBasicAuth("c1", "s1")
	req.Header.Set("Finch-API-Version", "2020-09-17")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || sim.Calls(finchsim.EndpointCreateSession) != 1 {
		t.Fatalf("POST /connect/sessions: %s, %d calls", resp.Status, sim.Calls(finchsim.EndpointCreateSession))
	}
}
