package inbound

// InitialSyncsTotal is finch_initial_syncs_total, for the external tests.
var InitialSyncsTotal = initialSyncsTotal
