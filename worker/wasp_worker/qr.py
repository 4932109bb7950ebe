"""A login QR code as the PNG data URL a status event carries.

Every backend that shows a QR (the simulator's made-up one, WhatsApp's real
one) renders it the same way, so the console draws them alike.
"""

from __future__ import annotations

import segno


def qr_data_url(payload: str) -> str:
    return str(segno.make_qr(payload).png_data_uri(scale=6))
