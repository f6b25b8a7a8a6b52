package v1alpha1

// Condition and Event reasons, shared by the controllers and the inbound
// server (Event reasons equal condition reasons). A FinchApp that cannot be
// used also reports the reason of its configuration error (e.g.
// CredentialsSecretNotFound).
const (
	ReasonAwaitingEmployer    = "AwaitingEmployer"
	ReasonConnected           = "Connected"
	ReasonConnectionPending   = "ConnectionPending"
	ReasonReauthRequired      = "ReauthRequired"
	ReasonNotConnected        = "NotConnected"
	ReasonProgressing         = "Progressing"
	ReasonSucceeded           = "Succeeded"
	ReasonSuspended           = "Suspended"
	ReasonAppNotFound         = "AppNotFound"
	ReasonAppNotReady         = "AppNotReady"
	ReasonInvalidCredentials  = "InvalidCredentials"
	ReasonFinchRejected       = "FinchRejected"
	ReasonFinchUnavailable    = "FinchUnavailable"
	ReasonRateLimited         = "RateLimited"
	ReasonDuplicateCustomerID = "DuplicateCustomerID"
	ReasonConnectionExists    = "ConnectionExists"
	ReasonTokenRevoked        = "TokenRevoked"
	ReasonTokenSecretNotOwned = "TokenSecretNotOwned"
	ReasonTokenStoreFailed    = "TokenStoreFailed"
	ReasonEmployerAction      = "EmployerActionRequired"
	ReasonDisconnected        = "Disconnected"
	ReasonDisconnectFailed    = "DisconnectFailed"
	ReasonCodeRejected        = "CodeRejected"
	ReasonTokenStored         = "TokenStored"
	ReasonSessionCreated      = "SessionCreated"
	ReasonSessionRefreshed    = "SessionRefreshed"
	ReasonSessionExpired      = "SessionExpired"
	ReasonReauthSession       = "ReauthSessionCreated"
	ReasonReauthCompleted     = "ReauthCompleted"
	ReasonProductsChanged     = "ProductsChanged"
	ReasonIPRateLimited       = "FinchIPRateLimited"
	ReasonUnknownStatus       = "UnknownConnectionStatus"
	ReasonBudgetWait          = "WaitingForBudget"
	ReasonCallbackFailed      = "CallbackFailed"
	ReasonCallbackFlood       = "CallbackFlood"
	ReasonUnmatchedCode       = "UnmatchedCode"
	ReasonNotRequired         = "NotRequired"
	// ReasonDataSynced: DataSynced=True, every initial data sync the products call for succeeded.
	ReasonDataSynced = "DataSynced"
	// ReasonAwaitingInitialSync: DataSynced=False, Finch has not reported an initial data sync yet.
	ReasonAwaitingInitialSync = "AwaitingInitialSync"
	// ReasonInitialSyncSucceeded: the Event of one initial data sync webhook (organization, payroll).
	ReasonInitialSyncSucceeded = "InitialSyncSucceeded"
	// ReasonConnectionServerError: Finch keeps answering 5xx for this connection while it answers
	// others; a revoked connection can look like that, so the next attempt waits hours.
	ReasonConnectionServerError = "ConnectionServerError"
	// ReasonNamespaceNotAllowed: the ClusterFinchApp's spec.conditions do not admit the connection's namespace.
	ReasonNamespaceNotAllowed = "NamespaceNotAllowed"
	// ReasonClusterAppUnavailable: a namespace-scoped install cannot use a ClusterFinchApp.
	ReasonClusterAppUnavailable = "ClusterAppUnavailable"
	// ReasonReauthUnrecorded: a reauthentication session may have been issued but its link was not
	// recorded (status.pendingCall without a session); no other is issued until it would expire.
	ReasonReauthUnrecorded = "ReauthSessionUnrecorded"
	// ReasonAPIHostNotAllowed: the app's spec.apiURL names a host the operator may not call
	// (--finch-api-hosts); no Finch call is made for it.
	ReasonAPIHostNotAllowed = "APIHostNotAllowed"
	// ReasonDeprecatedField: the app sets a deprecated spec field (spec.apiVersion); the Warning Event
	// names the field to write instead.
	ReasonDeprecatedField = "DeprecatedField"
	// ReasonInsecureAPIURL: the app's spec.insecureAPIURL lets its client secret and tokens travel to
	// a non-loopback http:// apiURL in clear text (a Warning Event).
	ReasonInsecureAPIURL = "InsecureAPIURL"
)
