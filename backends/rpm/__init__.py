"""RPM backend: .rpm archives (header, scriptlets, streamed cpio payload) and rpm's
version comparison."""
