// Package docs holds the generators of the reference pages under
// docs/reference (flags, api) and, in its tests, the checks that keep the
// hand-written docs true to the code: the reasons table of
// docs/troubleshooting.md and every relative link and anchor.
package docs
