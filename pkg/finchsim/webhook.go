package finchsim

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"
)

// webhookRetryDelays is the delay before each delivery attempt.
var webhookRetryDelays = []time.Duration{0, 100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second}

type webhookJob struct {
	url     string
	key     []byte
	eventID string
	body    []byte
	delay   time.Duration // before the first attempt
}

// accountUpdatedEvent is finch-api-go webhook.go BaseWebhookEvent (account_id, company_id,
// connection_id, entity_id) plus event_type and data.
type accountUpdatedEvent struct {
	AccountID    string             `json:"account_id"`
	CompanyID    string             `json:"company_id"`
	ConnectionID string             `json:"connection_id"`
	EntityID     string             `json:"entity_id,omitempty"` // only for an entity's own update
	EventType    string             `json:"event_type"`
	Data         accountUpdatedData `json:"data"`
}

type accountUpdatedData struct {
	Status               string `json:"status"`
	AuthenticationMethod struct {
		Type string `json:"type"`
	} `json:"authentication_method"`
}

// accountUpdatedLocked builds the account.updated webhook for a connection, or nil when its app
// has no webhook URL. It also marks the job in flight; dispatch must follow.
func (s *Sim) accountUpdatedLocked(c *connection) *webhookJob {
	return s.webhookLocked(c, "", c.status)
}

// entityUpdatedLocked is accountUpdatedLocked for one entity of a multi-entity connection: the
// event carries entity_id and the entity's status.
func (s *Sim) entityUpdatedLocked(c *connection, e *entity) *webhookJob {
	return s.webhookLocked(c, e.id, e.status)
}

func (s *Sim) webhookLocked(c *connection, entityID, status string) *webhookJob {
	a := s.apps[c.clientID]
	if a == nil || a.cfg.WebhookURL == "" {
		return nil
	}
	ev := accountUpdatedEvent{AccountID: c.accountID, CompanyID: c.companyID, ConnectionID: c.id, EntityID: entityID, EventType: "account.updated"}
	ev.Data.Status = status
	ev.Data.AuthenticationMethod.Type = c.authMethod
	body, err := json.Marshal(ev)
	if err != nil {
		return nil
	}
	s.webhooksInflight++
	return &webhookJob{url: a.cfg.WebhookURL, key: a.webhookKey, eventID: "msg_" + randBase62(27), body: body}
}

// jobEvent is finch-api-node src/resources/webhooks.ts JobCompletionEvent: the common fields plus
// event_type and data {job_id, job_url}.
type jobEvent struct {
	AccountID    string `json:"account_id"`
	CompanyID    string `json:"company_id"`
	ConnectionID string `json:"connection_id"`
	EventType    string `json:"event_type"`
	Data         struct {
		JobID  string `json:"job_id"`
		JobURL string `json:"job_url"`
	} `json:"data"`
}

// Initial data sync event types (finch-api-node 9.6.0 src/resources/webhooks.ts
// JobCompletionEvent.event_type; finch-api-go webhook.go JobCompletionEventEventType*).
const (
	EventInitialSyncOrg     = "job.initial_data_sync_org.succeeded"
	EventInitialSyncPayroll = "job.initial_data_sync_payroll.succeeded"
)

// initialSyncJobsLocked prepares a new connection's initial data sync webhooks (see InitialSync),
// once per connection; none when they are off or the app has no webhook URL.
func (s *Sim) initialSyncJobsLocked(c *connection) []*webhookJob {
	a := s.apps[c.clientID]
	if !s.initialSync.Enabled || c.initialSyncSent || a == nil || a.cfg.WebhookURL == "" {
		return nil
	}
	c.initialSyncSent = true
	org, pay := false, false
	for _, p := range c.products {
		switch p {
		case "company", "directory", "individual", "employment", "ssn":
			org = true
		case "payment", "pay_statement":
			pay = true
		}
	}
	var jobs []*webhookJob
	delay := s.initialSync.Delay
	for _, ev := range []struct {
		send bool
		typ  string
	}{{org || !pay, EventInitialSyncOrg}, {pay, EventInitialSyncPayroll}} {
		if !ev.send {
			continue
		}
		e := jobEvent{AccountID: c.accountID, CompanyID: c.companyID, ConnectionID: c.id, EventType: ev.typ}
		e.Data.JobID = newUUID()
		e.Data.JobURL = s.apiBaseLocked() + "/jobs/automated/" + e.Data.JobID
		body, err := json.Marshal(e)
		if err != nil {
			continue
		}
		s.webhooksInflight++
		jobs = append(jobs, &webhookJob{url: a.cfg.WebhookURL, key: a.webhookKey, eventID: "msg_" + randBase62(27), body: body, delay: delay})
		delay += s.initialSync.Delay
	}
	return jobs
}

// apiBaseLocked is the simulator's base URL, or Finch's when it is not serving.
func (s *Sim) apiBaseLocked() string {
	if s.url != "" {
		return s.url
	}
	return "https://api.tryfinch.com"
}

// SignWebhook computes Finch's Finch-Signature value ("v1,<base64 HMAC-SHA256>") for an event,
// with key the base64-decoded webhook secret.
func SignWebhook(key []byte, eventID, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(eventID))
	m.Write([]byte{'.'})
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// dispatch delivers a webhook asynchronously, retrying on network errors and non-2xx answers.
// Each attempt carries the same Finch-Event-Id and a fresh timestamp and signature.
func (s *Sim) dispatch(job *webhookJob) {
	if job == nil {
		return
	}
	go func() {
		defer func() {
			s.mu.Lock()
			s.webhooksInflight--
			s.mu.Unlock()
		}()
		for i, d := range webhookRetryDelays {
			if i == 0 {
				d = job.delay
			}
			if d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-s.ctx.Done():
					t.Stop()
					return
				}
			}
			ts := strconv.FormatInt(s.now().Unix(), 10)
			req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, job.url, bytes.NewReader(job.body))
			if err != nil {
				s.logf("finchsim: webhook %s: bad URL %q: %v", job.eventID, job.url, err)
				s.countWebhook(false, true)
				return
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "finchsim-webhooks/1")
			req.Header.Set("Finch-Event-Id", job.eventID)
			req.Header.Set("Finch-Timestamp", ts)
			req.Header.Set("Finch-Signature", SignWebhook(job.key, job.eventID, ts, job.body))
			resp, err := s.hc.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				_ = resp.Body.Close()
				if resp.StatusCode >= 200 && resp.StatusCode < 300 {
					s.countWebhook(true, false)
					return
				}
				s.logf("finchsim: webhook %s attempt %d: receiver answered %d", job.eventID, i+1, resp.StatusCode)
			} else {
				if s.ctx.Err() != nil {
					return
				}
				s.logf("finchsim: webhook %s attempt %d: %v", job.eventID, i+1, err)
			}
			s.countWebhook(false, i == len(webhookRetryDelays)-1)
		}
	}()
}

func (s *Sim) countWebhook(ok, gaveUp bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.webhookAttempts++
	if ok {
		s.webhookDeliveries++
	}
	if gaveUp {
		s.webhookFailures++
	}
}
