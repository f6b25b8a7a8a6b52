package finch

// Initial data sync webhooks: Finch sends one when a connection's first
// automated sync of a kind of data succeeds (finch-api-node 9.6.0
// src/resources/webhooks.ts JobCompletionEvent, data {job_id, job_url};
// finch-api-go webhook.go JobCompletionEventEventTypeJobInitialDataSync*;
// developer.tryfinch.com/developer-resources/Webhooks: "Emitted when
// automated data sync jobs succeed for the first time").
const (
	EventInitialSyncOrg     = "job.initial_data_sync_org.succeeded"
	EventInitialSyncPayroll = "job.initial_data_sync_payroll.succeeded"
)

// Kinds of initial data sync, as status.initialSync and the
// finch_initial_syncs_total{kind} metric name them.
const (
	SyncOrganization = "organization"
	SyncPayroll      = "payroll"
)

// InitialSyncKind is the kind of initial sync an event type reports, or ""
// for any other event type.
func InitialSyncKind(eventType string) string {
	switch eventType {
	case EventInitialSyncOrg:
		return SyncOrganization
	case EventInitialSyncPayroll:
		return SyncPayroll
	}
	return ""
}

// Finch's Organization products (finch-api-node
// src/resources/sandbox/connections/accounts.ts: "defaults to Organization
// products (company, directory, employment, individual)"; ssn is a scope of
// /employer/individual, developer.tryfinch.com
// /api-reference/development-guides/Permissions) and Payroll products
// (developer.tryfinch.com/implementation-guide/API-Calls/Read-Data).
var (
	organizationProducts = map[string]bool{"company": true, "directory": true, "individual": true, "employment": true, "ssn": true}
	payrollProducts      = map[string]bool{"payment": true, "pay_statement": true}
)

// RequiredInitialSyncs are the kinds of initial sync a connection with these
// products waits for: organization with an Organization product, payroll
// with a Payroll product. Finch does not document which syncs a connection
// gets (docs/finch-api.md#webhooks), so this is the operator's rule; for
// products of neither kind (benefits alone, say) it returns nil, and any one
// initial sync counts.
func RequiredInitialSyncs(products []string) []string {
	var org, pay bool
	for _, p := range products {
		org = org || organizationProducts[p]
		pay = pay || payrollProducts[p]
	}
	var out []string
	if org {
		out = append(out, SyncOrganization)
	}
	if pay {
		out = append(out, SyncPayroll)
	}
	return out
}
