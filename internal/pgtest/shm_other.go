//go:build !linux

package pgtest

// memoryTempRoot: only Linux reliably has a tmpfs at /dev/shm.
func memoryTempRoot() string { return "" }

// isTmpfs: outside Linux we cannot tell; TMPDIR is taken to be on disk.
func isTmpfs(string) bool { return false }
