"""Output writers: each consumes the merged FileEntry stream."""
