"""The wasp master: routes every /api/* request to the shard owning its slot, fans events out."""
