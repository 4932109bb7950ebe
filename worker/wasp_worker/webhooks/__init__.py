"""Webhooks on the worker: the events of this shard's slots, kept in a durable
outbox on its volume and delivered, signed, to every subscription that wants them.

    outbox     the events (written in the caller's transaction) and each
               consumer's progress per slot, dead letters
    sinks      what a consumer of the outbox is (`Sink`): a webhook
               subscription today, a broker beside it later
    signing    Standard Webhooks headers (the official library)
    http       a subscription as a Sink: POST, timeouts, answers → outcomes
    delivery   lanes per (consumer, slot), in order, retried with backoff
    source     which subscriptions exist (CONFIGDIR) and the events to emit
"""
