// Package finch is the operator's Finch API client: a typed HTTP client for
// the calls the operator makes (Connect sessions, reauthentication sessions,
// the authorization-code exchange, introspection, disconnect and the sandbox
// connection-status override), their request and response types, the typed
// errors the controllers act on, Finch webhook signatures and payloads, and
// the allow-list of Finch API hosts.
//
// The client is hand-written on net/http rather than built on the Finch SDK so
// that it can enforce the operator's rules in one place:
//
//   - every attempt is admitted by a Limiter first (internal/budget's Gate:
//     the Finch application's request budget and the API host's per-IP
//     guard), so the operator never provokes a 429 by itself, and a 429
//     finch_api_ip_rl pauses every app calling that host;
//   - retries only where they are safe (see the method docs), bounded in
//     attempts and in how long the client sleeps in-process;
//   - typed errors (Error) with helpers for the cases the controllers act on,
//     and Classify to decide between requeue-with-backoff and Stalled;
//   - no token, secret or customer identifier in errors or metric labels.
//
// Wire facts come from Finch's API reference (developer.tryfinch.com) and the
// official SDKs (Finch-API/finch-api-go, finch-api-node); each rule cites its source.
package finch
