//go:build !linux

package pgtest

// memoryTempRoot: only Linux reliably has a tmpfs at /dev/shm.
func memoryTempRoot() string { return "" }
