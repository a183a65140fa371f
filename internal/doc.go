// Package internal holds what no user of Shoal should import: test kits such
// as testca, and later the network-namespace test hosts.
package internal
