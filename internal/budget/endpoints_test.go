package budget

// Endpoint keys as the Finch client spells them (its Endpoint* constants),
// for tests: the budget treats endpoints as opaque keys.
const (
	EndpointCreateSession = "POST /connect/sessions"
	EndpointReauthSession = "POST /connect/sessions/reauthenticate"
	EndpointToken         = "POST /auth/token"
	EndpointIntrospect    = "GET /introspect"
	EndpointDisconnect    = "POST /disconnect"
)
