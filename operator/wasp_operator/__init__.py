"""The wasp operator: turns WhatsAppShard resources into StatefulSets, Services and status."""
