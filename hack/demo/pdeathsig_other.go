//go:build !linux

package main

// dieWithParent is a no-op outside Linux; demo.sh's traps stop the control plane there.
func dieWithParent() {}
