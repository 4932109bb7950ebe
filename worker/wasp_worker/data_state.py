"""The data API's parts on the aiohttp application (beside `state`'s), by key."""

from __future__ import annotations

from aiohttp import web

from wasp_worker.contacts import Contacts
from wasp_worker.db import SerialDatabase
from wasp_worker.message_pages import MessagePages

CONTACTS = web.AppKey("contacts", Contacts)
PAGES = web.AppKey("pages", MessagePages)
DATABASE = web.AppKey("database", SerialDatabase)
