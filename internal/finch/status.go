package finch

// statusRank orders connection statuses from healthy to terminal. The values
// are the ConnectionStatusType enum (finch-api-go shared/shared.go,
// finch-api-node src/resources/shared.ts) plus "disconnected", which
// entities[].status adds (finch-api-go account.go IntrospectionEntitiesStatus)
// and the webhooks doc lists for account.updated.
func statusRank(s string) int {
	switch s {
	case "":
		return -1 // absent: ignored
	case StatusConnected:
		return 0
	case StatusPending, StatusProcessing:
		return 1
	case StatusReauth:
		return 3
	case StatusDisconnected:
		return 4
	default:
		// error_permissions, error_no_account_setup, and any value this
		// client does not know: the enum is open and has grown before, so an
		// unknown status is treated as an error, never as healthy.
		return 2
	}
}

// WorstStatus returns the least healthy of statuses, ranking
// disconnected > reauth > error_* (error_permissions, error_no_account_setup
// and any unknown non-empty value) > pending/processing > connected. Empty
// strings are ignored; it returns "" when every status is empty. Among equally
// ranked values the first one wins, so an unknown value is kept verbatim.
func WorstStatus(statuses ...string) string {
	worst, rank := "", -1
	for _, s := range statuses {
		if r := statusRank(s); r > rank {
			worst, rank = s, r
		}
	}
	return worst
}

// Status is the connection's status: the top-level connection_status.status
// when Finch sent one, else the WorstStatus of authentication_methods[]
// statuses. The SDKs mark connection_status required (finch-api-go
// account.go Introspection.ConnectionStatus `api:"required"`), but the
// Connection & Session ID Migration Guide's own /introspect example carries
// only authentication_methods[].connection_status, so the client must not
// read a missing top-level status as "no status".
//
// Entities do not count: an entity's status is its own. POST
// /disconnect-entity removes entities and leaves the others and the access
// token working (developer.tryfinch.com/implementation-guide/Backend-Application/Disconnect-Connections,
// /api-reference/management/disconnect-entity), so an entity reported
// "disconnected" says nothing about the connection. (The caller still asks
// for re-authentication when an entity reports reauth.) Only when no
// authentication method has a status do the entities stand in, without the
// removed ones.
func (i *Introspection) Status() string {
	if s := i.ConnectionStatus.Status; s != "" {
		return s
	}
	return WorstStatus(i.derivedStatuses()...)
}

// StatusDerived reports whether Finch sent no top-level
// connection_status.status, so that Status (possibly "") was derived from the
// authentication methods (or, without any, the entities).
func (i *Introspection) StatusDerived() bool {
	return i.ConnectionStatus.Status == ""
}

// EffectiveConnectionStatus is the ConnectionStatus behind Status: the
// top-level one when Finch sent a status, else the connection_status of the
// first authentication method whose status is the worst (its message is the
// one to show), else just the worst entity status.
func (i *Introspection) EffectiveConnectionStatus() ConnectionStatus {
	if i.ConnectionStatus.Status != "" {
		return i.ConnectionStatus
	}
	worst := i.Status()
	if worst == "" {
		return i.ConnectionStatus
	}
	for _, m := range i.AuthenticationMethods {
		if m.ConnectionStatus != nil && m.ConnectionStatus.Status == worst {
			return *m.ConnectionStatus
		}
	}
	return ConnectionStatus{Status: worst}
}

func (i *Introspection) derivedStatuses() []string {
	var out []string
	for _, m := range i.AuthenticationMethods {
		if m.ConnectionStatus != nil && m.ConnectionStatus.Status != "" {
			out = append(out, m.ConnectionStatus.Status)
		}
	}
	if len(out) > 0 {
		return out
	}
	for _, e := range i.Entities {
		if e.Status != StatusDisconnected {
			out = append(out, e.Status)
		}
	}
	return out
}
