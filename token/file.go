package token

// WriteFileAtomic writes data to path with mode 0600 so that a crash never
// leaves a half-written file: a temporary file in the same directory is
// written, synced and renamed over path. Other packages' file stores (the
// platforms' state) use it too.
func WriteFileAtomic(path string, data []byte) error { return writeFileAtomic(path, data) }
