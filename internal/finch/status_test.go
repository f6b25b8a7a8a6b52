package finch

import (
	"context"
	"net/http"
	"testing"
)

func TestWorstStatus(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"", ""}, ""},
		{[]string{StatusConnected}, StatusConnected},
		{[]string{StatusConnected, StatusPending}, StatusPending},
		{[]string{StatusProcessing, StatusConnected}, StatusProcessing},
		{[]string{StatusPending, StatusErrorPermissions, StatusConnected}, StatusErrorPermissions},
		{[]string{StatusErrorNoAccountSetup, StatusPending}, StatusErrorNoAccountSetup},
		{[]string{"", StatusConnected, "brand_new_status"}, "brand_new_status"},    // unknown = error
		{[]string{"brand_new_status", StatusErrorPermissions}, "brand_new_status"}, // ties: first wins
		{[]string{StatusErrorPermissions, StatusReauth, StatusPending}, StatusReauth},
		{[]string{StatusReauth, StatusDisconnected, StatusConnected}, StatusDisconnected},
		{[]string{"", StatusDisconnected, ""}, StatusDisconnected},
	} {
		if got := WorstStatus(tc.in...); got != tc.want {
			t.Errorf("WorstStatus(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// migrationGuideIntrospection is the /introspect example of Finch's
// Connection & Session ID Migration Guide, verbatim: no top-level
// connection_status, only one per authentication method.
const migrationGuideIntrospection = `{
"client_id": "25ea8bd8-f76b-41f9-96e3-1e6162021c50",
"client_type": "production",
"connection_type": "provider",
"company_id": "87eb4bc3-f76b-35e7-78d2-8f7822021d73",
"account_id": "ca23fd65-5a0c-4f8b-a0fa-7853fd6f5768",
"connection_id": "9289c95e-9162-4221-a850-b8ee135d4d20",
"products": [
"company",
"directory"
],
"username": "johndoe@tryfinch.com",
"payroll_provider_id": "gusto",
"manual": false,
"authentication_methods": [
{
"type": "assisted",
"connection_status": {
"status": "pending",
"message": "This employer has created a token, and we are waiting for access to its provider"
}
},
{
"type": "credential",
"connection_status": {
"status": "connected",
"message": "This employer is working as expected"
}
}
]
}`

func TestIntrospectionStatusFromMigrationGuideExample(t *testing.T) {
	rc := &recorder{routes: map[string]http.HandlerFunc{"GET /introspect": jsonHandler(200, migrationGuideIntrospection)}}
	c := newTestClient(t, rc, nil)
	in, err := c.Introspect(context.Background(), testToken)
	if err != nil {
		t.Fatal(err)
	}
	if in.ConnectionID != "9289c95e-9162-4221-a850-b8ee135d4d20" || in.ConnectionStatus.Status != "" {
		t.Fatalf("introspection = %+v", in)
	}
	if !in.StatusDerived() {
		t.Error("StatusDerived() = false without a top-level connection_status")
	}
	if got := in.Status(); got != StatusPending {
		t.Errorf("Status() = %q, want pending (the worse of pending and connected)", got)
	}
	eff := in.EffectiveConnectionStatus()
	if eff.Status != StatusPending || eff.Message != "This employer has created a token, and we are waiting for access to its provider" {
		t.Errorf("EffectiveConnectionStatus() = %+v, want the assisted method's status and message", eff)
	}
}

func TestIntrospectionStatusDerivation(t *testing.T) {
	method := func(status string) AuthenticationMethod {
		return AuthenticationMethod{Type: "credential", ConnectionStatus: &ConnectionStatus{Status: status, Message: status + " message"}}
	}
	for _, tc := range []struct {
		name        string
		in          Introspection
		want        string
		wantDerived bool
		wantMessage string
	}{
		{"top-level wins over worse methods", Introspection{
			ConnectionStatus:      ConnectionStatus{Status: StatusConnected, Message: "top"},
			AuthenticationMethods: []AuthenticationMethod{method(StatusReauth)},
		}, StatusConnected, false, "top"},
		{"methods only", Introspection{
			AuthenticationMethods: []AuthenticationMethod{method(StatusConnected), method(StatusReauth), {Type: "oauth"}},
		}, StatusReauth, true, "reauth message"},
		{"a removed entity does not disconnect the connection", Introspection{
			AuthenticationMethods: []AuthenticationMethod{method(StatusConnected)},
			Entities:              []Entity{{ID: "e1", Status: StatusConnected}, {ID: "e2", Status: StatusDisconnected}},
		}, StatusConnected, true, "connected message"},
		{"entity statuses are the entities' own", Introspection{
			AuthenticationMethods: []AuthenticationMethod{method(StatusConnected)},
			Entities:              []Entity{{ID: "e1", Status: StatusPending}, {ID: "e2", Status: StatusErrorPermissions}},
		}, StatusConnected, true, "connected message"},
		{"no method status: the entities stand in, without removed ones", Introspection{
			AuthenticationMethods: []AuthenticationMethod{{Type: "assisted"}},
			Entities:              []Entity{{ID: "e1", Status: StatusConnected}, {ID: "e2", Status: StatusDisconnected}},
		}, StatusConnected, true, ""},
		{"nothing at all", Introspection{}, "", true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.in.Status(); got != tc.want {
				t.Errorf("Status() = %q, want %q", got, tc.want)
			}
			if got := tc.in.StatusDerived(); got != tc.wantDerived {
				t.Errorf("StatusDerived() = %v, want %v", got, tc.wantDerived)
			}
			if eff := tc.in.EffectiveConnectionStatus(); eff.Status != tc.want || eff.Message != tc.wantMessage {
				t.Errorf("EffectiveConnectionStatus() = %+v, want status %q message %q", eff, tc.want, tc.wantMessage)
			}
		})
	}
}

func TestEntityLenientDecoding(t *testing.T) {
	body := `{"connection_id":"c","entities":[
		{"id":"e1","name":"Acme East","source_id":"src-1","status":"connected"},
		{"id":"e2","name":null,"source_id":null,"status":"reauth"},
		{"id":"e3","name":7,"source_id":{"x":1},"status":null},
		"not an object"]}`
	rc := &recorder{routes: map[string]http.HandlerFunc{"GET /introspect": jsonHandler(200, body)}}
	c := newTestClient(t, rc, nil)
	in, err := c.Introspect(context.Background(), testToken)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entity{
		{ID: "e1", Name: "Acme East", SourceID: "src-1", Status: StatusConnected},
		{ID: "e2", Status: StatusReauth},
		{ID: "e3", Name: "7"},
		{},
	}
	if len(in.Entities) != len(want) {
		t.Fatalf("entities = %+v", in.Entities)
	}
	for i := range want {
		if in.Entities[i] != want[i] {
			t.Errorf("entities[%d] = %+v, want %+v", i, in.Entities[i], want[i])
		}
	}
	if in.Status() != StatusReauth {
		t.Errorf("Status() = %q, want reauth from entities", in.Status())
	}
}
