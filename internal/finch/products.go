package finch

// MissingProducts lists the products of want that granted lacks. Deduction
// and benefits are one product under two names (Finch's product list; the
// SDKs accept both), so either grants both.
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
