"""The wasp worker: one per shard, keeps the WhatsApp sessions of its slot range alive."""
