// Package integration holds productstream's end-to-end tests: they build the
// binary, run it as a separate process, and talk to it only over HTTP and the
// Kafka protocol, as users and their tools do.
package integration
