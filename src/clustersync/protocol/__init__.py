"""The synchronizer protocol without I/O: messages, codecs, checksums, patches and decisions."""
