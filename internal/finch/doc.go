// Package finch is a small typed HTTP client for the part of the Finch API the
// operator uses: Connect sessions, reauthentication sessions, the
// authorization-code exchange, introspection, disconnect and the sandbox
// connection-status override. It also verifies Finch webhook signatures.
//
// The client is hand-written on net/http rather than built on the Finch SDK so
// that it can enforce the operator's rules in one place:
//
//   - a client-side sliding-window request budget per application and endpoint
//     (Budget), so the operator never provokes a 429 by itself, and an
//     IPGuard per Finch API host for Finch's per-IP limit, which also stops
//     the calls of every app using that host during a finch_api_ip_rl penalty
//     (at most Finch's documented 60 minutes);
//   - retries only where they are safe (see the method docs), bounded in
//     attempts and in how long the client sleeps in-process;
//   - typed errors (Error) with helpers for the cases the controllers act on,
//     and Classify to decide between requeue-with-backoff and Stalled;
//   - no token, secret or customer identifier in errors or metric labels.
//
// Wire facts come from Finch's API reference (developer.tryfinch.com) and the
// official SDKs (Finch-API/finch-api-go, finch-api-node); each rule cites its source.
package finch
