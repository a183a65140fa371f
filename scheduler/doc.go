// Package scheduler will be Shoal's pure placement engine: filters
// (readiness, resources, constraints, platform, host ports, max replicas),
// strategies (spread, binpack, random) and placement preferences, with
// explanations for tasks that cannot be placed. It does no I/O and imports
// nothing else of Shoal.
package scheduler
