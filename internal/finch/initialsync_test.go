package finch

import (
	"slices"
	"testing"
)

func TestInitialSyncKind(t *testing.T) {
	for typ, want := range map[string]string{
		"job.initial_data_sync_org.succeeded":      SyncOrganization,
		"job.initial_data_sync_payroll.succeeded":  SyncPayroll,
		"job.data_sync_all.completed":              "",
		"job.initial_data_sync_benefits.succeeded": "",
		"account.updated":                          "",
	} {
		if got := InitialSyncKind(typ); got != want {
			t.Errorf("InitialSyncKind(%q) = %q, want %q", typ, got, want)
		}
	}
}

func TestRequiredInitialSyncs(t *testing.T) {
	for _, tc := range []struct {
		products []string
		want     []string
	}{
		{[]string{"company", "directory"}, []string{SyncOrganization}},
		{[]string{"ssn"}, []string{SyncOrganization}},
		{[]string{"payment"}, []string{SyncPayroll}},
		{[]string{"directory", "pay_statement"}, []string{SyncOrganization, SyncPayroll}},
		{[]string{"benefits"}, nil},
		{nil, nil},
	} {
		if got := RequiredInitialSyncs(tc.products); !slices.Equal(got, tc.want) {
			t.Errorf("RequiredInitialSyncs(%v) = %v, want %v", tc.products, got, tc.want)
		}
	}
}

func TestParseEventJobID(t *testing.T) {
	ev, err := ParseEvent([]byte(`{"account_id":"a","company_id":"c","connection_id":"conn","event_type":"job.initial_data_sync_org.succeeded","data":{"job_id":"job-1","job_url":"https://api.tryfinch.com/jobs/automated/job-1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if ev.EventType != EventInitialSyncOrg || ev.ConnectionID != "conn" || ev.Data.JobID != "job-1" {
		t.Errorf("event = %+v", ev)
	}
}

func TestSessionRequestRecordkeeping(t *testing.T) {
	plan := "plan-7"
	for _, tc := range []struct {
		rk   *Recordkeeping
		want string
	}{
		{nil, `{"customer_id":"c","customer_name":"C","products":["recordkeeping"]}`},
		{&Recordkeeping{Recordkeeper: "voya"}, `{"customer_id":"c","customer_name":"C","products":["recordkeeping"],"recordkeeping":{"recordkeeper":"voya"}}`},
		{&Recordkeeping{Recordkeeper: "empower", PlanID: &plan}, `{"customer_id":"c","customer_name":"C","products":["recordkeeping"],"recordkeeping":{"recordkeeper":"empower","plan_id":"plan-7"}}`},
	} {
		b, err := SessionRequest{CustomerID: "c", CustomerName: "C", Products: []string{"recordkeeping"}, Recordkeeping: tc.rk}.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tc.want {
			t.Errorf("wire = %s, want %s", b, tc.want)
		}
	}
}
