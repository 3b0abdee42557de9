"""Data protection: the store guard (producer manifests, scanning, restore, quarantine),
the encrypted deduplicating backup repository, and the replicator to the DR site."""
