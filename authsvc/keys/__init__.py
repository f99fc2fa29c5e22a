"""The key ring: signing keys, their life cycle, and their sealing at rest."""
