"""Session backends: real WhatsApp (neonize) and the deterministic simulator, one interface."""
