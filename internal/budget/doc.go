// Package budget keeps the operator's Finch calls inside Finch's rate limits,
// in one place below the Finch client:
//
//   - Budget, a sliding-window request budget per Finch application and
//     endpoint, with a fair line (Queue) across the tenants sharing it and an
//     optional Journal of Claims (internal/budgetstore keeps one in a
//     ConfigMap) so that restarts and a leader change never overspend it;
//   - IPGuard, one per Finch API host (IPGuards), for Finch's per-IP limit
//     and its penalty after 429 finch_api_ip_rl;
//   - Gate, the one admission of an app's calls that combines the two: Admit
//     for callers that come back later, Acquire and Penalize for the client.
//
// It knows nothing of HTTP or of Finch's wire format: endpoints are opaque
// keys, and the Finch client turns a PenaltyError into its own error.
package budget
