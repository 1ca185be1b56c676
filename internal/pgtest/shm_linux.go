package pgtest

import "syscall"

// minShmFree is how much free tmpfs we want before putting a cluster there:
// a cluster starts near 40 MB, each test database adds about 8 MB until it is
// dropped, and WAL is capped by max_wal_size.
const minShmFree = 2 << 30

// memoryTempRoot returns /dev/shm when it is a roomy tmpfs. A RAM-backed data
// dir makes CREATE DATABASE several times faster than a disk one, even with
// fsync off, because checkpoints and file copies still hit the page cache
// writeback of a shared, often busy, disk.
func memoryTempRoot() string {
	const dir = "/dev/shm"
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return ""
	}
	if st.Type != tmpfsMagic || uint64(st.Bavail)*uint64(st.Bsize) < minShmFree {
		return ""
	}
	return dir
}

const tmpfsMagic = 0x01021994

// isTmpfs reports whether dir is on a tmpfs (RAM), where fsync is free.
func isTmpfs(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && st.Type == tmpfsMagic
}
