"""The worker's composition root: build the application from its parts, and serve it.

The parts: the HTTP handlers (`http_api`, bound to the operations the core
declares in `wasp.worker_api`), the lease loop and its watchdog (`lease_loop`),
the warm-up (`warmup`), the outbound runner, the live feed to the masters.
Every route but the probes takes the master's token (`trust`); /metrics has a
port of its own (`wasp.metrics_port`), started by `serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from wasp import logs as json_logs
from wasp import worker_api
from wasp.contract import MAX_BODY_BYTES
from wasp.kube import api_client
from wasp.metrics_port import serving_metrics
from wasp.openapi import add_routes, bind
from wasp.slots import Slot
from wasp_worker.account_guard import AccountGuard
from wasp_worker.backends.base import ReceiptEvent
from wasp_worker.backends.neonize import NeonizeBackend
from wasp_worker.backends.proxy_gate import ProxyGate
from wasp_worker.backends.simulator import SimulatorBackend
from wasp_worker.compaction import Compactor
from wasp_worker.config import WorkerConfig
from wasp_worker.contacts import Contacts
from wasp_worker.data_state import CONTACTS, DATABASE, PAGES
from wasp_worker.events import EventLog
from wasp_worker.groups_http import NUMBER_CHECKS
from wasp_worker.history import Direction, complete
from wasp_worker.http_api import HANDLERS, errors_as_json
from wasp_worker.lease_loop import guard_lease, hold_lease
from wasp_worker.live_feed import LiveFeed
from wasp_worker.message_pages import MessagePages
from wasp_worker.metrics import registry_for
from wasp_worker.number_checks import NumberChecks
from wasp_worker.outbound import OutboundRunner
from wasp_worker.ownership import LEASE_THREADS, FileLease, KubeLease, Lease
from wasp_worker.pending_settings import PendingSettings
from wasp_worker.presence import PresenceWatch
from wasp_worker.presence_http import PRESENCE
from wasp_worker.proxies import CREDENTIALS_FILE, ProxyLookup
from wasp_worker.reactions import Reactions
from wasp_worker.remote_changes import RemoteChanges
from wasp_worker.retention import Pruner
from wasp_worker.sessions import SessionManager
from wasp_worker.settings_sender import SettingsSender
from wasp_worker.state import (
    BACKGROUND,
    CONFIG,
    CONVERSATIONS,
    FEED,
    HISTORY,
    LOG,
    METRICS,
    QUEUE,
    RUNNER,
    SESSIONS,
    SETTINGS,
    WEBHOOKS,
)
from wasp_worker.store import ShardStore
from wasp_worker.trust import master_only
from wasp_worker.wanted import WantedSessions
from wasp_worker.webhooks.delivery import Backoff
from wasp_worker.webhooks.service import Webhooks
from wasp_worker.webhooks.source import tap

LEASE_RETRY_S = 1.0  # the lock file's: a quick syscall


def build_app(config: WorkerConfig, log: EventLog | None = None) -> web.Application:
    app = web.Application(
        middlewares=[master_only(config.tokens, config.insecure), errors_as_json],
        client_max_size=MAX_BODY_BYTES,
    )
    event_log = log or EventLog()
    backend: SimulatorBackend | NeonizeBackend
    identity = config.pod_name or f"{socket.gethostname()}-{os.getpid()}"
    credentials = config.proxy_credentials_file or config.config_dir / CREDENTIALS_FILE
    proxies = ProxyLookup(config.config_dir, credentials)
    if config.backend == "simulator":
        backend = SimulatorBackend(
            config.work_dir,
            owner=identity,
            server_dir=config.simulator_server_dir,
            proxy_gate=ProxyGate(proxies),
        )
    else:
        backend = NeonizeBackend(config.work_dir, breaker=config.breaker(), proxies=proxies)
    app[CONFIG] = config
    app[BACKGROUND] = []
    app[LOG] = event_log
    app[FEED] = link = LiveFeed(
        config.shard_name or str(config.slots),
        config.master_internal_url,
        config.master_token,
        event_log,
    )
    lease: Lease
    if config.shard_name and config.pod_namespace:
        timing = config.lease_timing()
        lease = KubeLease(
            config.shard_name,
            config.pod_namespace,
            config.pod_name or socket.gethostname(),
            timing,
            api_client(None, pool_size=LEASE_THREADS),
        )
        renew_s = timing.retry_period_s
    else:
        lease = FileLease(config.work_dir / "worker.lock")
        renew_s = LEASE_RETRY_S
    wanted = WantedSessions(config.work_dir / "wanted.json")
    for refused in wanted.load():
        event_log.emit("wanted_entry_refused", entry=refused)
    app[SESSIONS] = sessions = SessionManager(config, backend, event_log, link, lease, wanted)
    app[METRICS] = registry = registry_for(sessions)
    # One database for the shard's state: a change and its webhook events commit together.
    store = ShardStore.in_folder(config.work_dir)
    app[QUEUE] = queue = store.queue
    app[HISTORY] = history = store.history
    app[CONVERSATIONS] = store.conversations
    app[CONTACTS] = contacts = Contacts(store.db)
    app[NUMBER_CHECKS] = NumberChecks()
    app[PAGES] = MessagePages(store.db)
    app[DATABASE] = store.db
    app[RUNNER] = runner = OutboundRunner(queue, sessions, event_log, registry)
    pruner = Pruner(
        store.db,
        config.work_dir,
        config.shard_retention(),
        event_log,
        batch=config.retention_batch,
    )
    compactor = Compactor(
        store.db,
        config.retention_sync_horizon_days,
        event_log,
        batch=config.retention_sync_batch,
    )
    app[WEBHOOKS] = webhooks = Webhooks(
        store.outbox,
        config.config_dir,
        config.webhook_secrets_file,
        event_log,
        registry,
        timeout_s=config.webhook_timeout_s,
        backoff=Backoff(
            base_s=config.webhook_retry_base_s,
            cap_s=config.webhook_retry_cap_s,
            horizon_s=config.webhook_horizon_s,
        ),
    )
    # Session status and QR events go to the outbox as the live feed emits them.
    link.listeners.append(tap(webhooks.emit))
    received = Counter(
        "wasp_worker_messages_received_total", "Inbound messages received.", registry=registry
    )

    async def inbound(received_fields: dict[str, Any]) -> None:
        """A message for one of our sessions: count it, log its id (never its body), fan it out."""
        fields = complete(received_fields)
        slot = Slot.parse(fields["slot"])
        state = sessions.states.get(slot)
        if state is None or state.status != "CONNECTED":
            return
        received.inc()
        if fields.get("sender_lid") and fields.get("sender_phone_jid"):
            # WhatsApp named both: a reply to this LID can now be sent to the phone JID.
            await queue.map_lid(slot, fields["sender_lid"], fields["sender_phone_jid"])
        # From the account's own phone: outbound in the history, never unread. Stored with
        # its message.received webhook event, in one transaction.
        direction: Direction = "out" if fields.get("from_me") else "in"
        try:
            await history.record(slot, direction, fields)
        except Exception as error:
            # Not stored: raised, so the backend does not count it delivered and hands it
            # over again (the simulator's server keeps it until acknowledged; neonize retries).
            event_log.emit(
                "history_write_failed",
                slot=fields["slot"],
                wa_message_id=fields["wa_message_id"],
                error=type(error).__name__,
            )
            raise
        event_log.emit("wa_message_in", slot=fields["slot"], wa_message_id=fields["wa_message_id"])
        link.emit("wa:message", fields)

    async def receipt(event: ReceiptEvent) -> None:
        """WhatsApp says sent messages were delivered, read or played: move them forward
        (never back, with their message.status webhook events) and tell the front-end,
        one wa:message_status per message."""
        moved = await queue.receipt(event.slot, list(event.message_ids), event.state, event.chat_id)
        for status in moved:
            link.emit("wa:message_status", status)
        event_log.emit("wa_receipt", slot=str(event.slot), state=event.state, messages=len(moved))

    backend.on_inbound = inbound
    backend.on_receipt = receipt
    # Typing and recording: the chats the agent opens are watched, wa:presence live only.
    app[PRESENCE] = presence = PresenceWatch(sessions, event_log, link.emit)
    backend.on_presence = presence.seen
    link.listeners.append(presence.listen)
    # Edits, deletes, history syncs and the phone's chat settings, into the store.
    remote = RemoteChanges(
        store.db,
        history,
        store.conversations,
        contacts,
        sessions,
        event_log,
        reactions=Reactions(store.db, store.outbox),
        emit=link.emit,
    )
    backend.on_remote = remote.apply
    queue.emit = link.emit  # the account's own actions, once sent, show live as received ones
    if isinstance(backend, NeonizeBackend):
        backend.known_chats = remote.known_chats
    # Pin, archive and mute set while the session was away go out when it connects,
    # before the backend reads the phone's back.
    app[SETTINGS] = settings_sender = SettingsSender(PendingSettings(store.db), sessions, event_log)
    backend.before_settings_read = settings_sender.flush
    sessions.on_unlinked.append(settings_sender.unlinked)
    # One owner per account: another account linked to the slot never sends the queued
    # messages of the one before.
    guard = AccountGuard(store, backend, event_log, link.emit, runner.failed)
    sessions.on_connected.append(guard.connected)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await link.open()
        await webhooks.open()
        tasks = app[BACKGROUND]
        tasks += [
            asyncio.create_task(hold_lease(app, renew_s)),
            asyncio.create_task(guard_lease(app)),
            asyncio.create_task(runner.run()),
            asyncio.create_task(webhooks.run()),
            asyncio.create_task(
                pruner.run(config.retention_interval_s, lambda: sessions.holds_lease)
            ),
            asyncio.create_task(
                compactor.run(config.retention_interval_s, lambda: sessions.holds_lease)
            ),
        ]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await presence.close()
        await settings_sender.close()
        await backend.close()
        await link.close()
        await webhooks.close()
        store.close()
        await lease.release()
        event_log.emit("lease_released", lease=lease.describe(), result=lease.reason)

    async def release_long_polls(_: web.Application) -> None:
        # Before aiohttp waits for in-flight requests: else a poll its client left
        # holds the shutdown for up to its `wait`.
        link.release_waiters()

    app.on_shutdown.append(release_long_polls)
    app.cleanup_ctx.append(lifecycle)
    add_routes(app, bind(worker_api.ENDPOINTS, HANDLERS), worker_api.API)
    return app


class NoWorkerTokens(SystemExit):
    def __init__(self) -> None:
        super().__init__(
            "wasp worker: WORKER_TOKENS is not set. Only the master may call a worker: set "
            "WORKER_TOKENS to the token(s) the master sends (the chart and `wasp dev` do), or "
            "WORKER_INSECURE=true for a worker on your own machine that anyone may call."
        )


def serve(config: WorkerConfig) -> None:
    json_logs.setup()  # aiohttp's own lines (server errors, access) as JSON, like the events
    if not config.tokens and not config.insecure:
        raise NoWorkerTokens()
    log = EventLog()
    log.emit(
        "worker_start",
        port=config.port,
        metricsPort=config.metrics_port or None,
        slotFrom=str(config.slot_from),
        slotTo=str(config.slot_to),
        backend=config.backend,
        workerTokens=len(config.tokens),  # how many, never which
    )
    if config.insecure:
        log.emit("worker_open", reason="WORKER_INSECURE: every route answers any caller")
    if config.access_log:
        logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    app = build_app(config, log)

    async def metrics_site(app: web.Application) -> AsyncIterator[None]:
        async with serving_metrics(app[METRICS], config.host, config.metrics_port or None):
            yield

    app.cleanup_ctx.append(metrics_site)
    web.run_app(
        app,
        host=config.host,
        port=config.port,
        print=None,
        access_log_class=json_logs.JsonAccessLogger,
        access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
    )
