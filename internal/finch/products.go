package finch

// MissingProducts lists the products of want that granted lacks. "benefits"
// is taken as the older name of the "deduction" scope, so either grants both
// (the rule the operator has had since its first version). Unverified:
// developer.tryfinch.com now also describes a separate Benefits product
// (closed beta, /products/benefits/Overview, "How Benefits differs from
// Deductions"); for an app that uses it, this alias could hide a missing grant.
func MissingProducts(want, granted []string) []string {
	have := map[string]bool{}
	for _, p := range granted {
		have[p] = true
	}
	if have["benefits"] || have["deduction"] {
		have["benefits"], have["deduction"] = true, true
	}
	var out []string
	for _, p := range want {
		if !have[p] {
			out = append(out, p)
		}
	}
	return out
}

// SameProducts reports whether a and b name the same products, in any order.
func SameProducts(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	set := map[string]bool{}
	for _, p := range a {
		set[p] = true
	}
	for _, p := range b {
		if !set[p] {
			return false
		}
	}
	return true
}
