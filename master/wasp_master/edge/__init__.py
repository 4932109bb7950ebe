"""The master's front door: slot requests go straight to their worker, byte for byte.

aiohttp's server and client cost the master most of its CPU per proxied
request (py-spy, bench/proxy_overhead.py), so the hot path does not use them:

- `server.EdgeConnection` reads a client connection. When its first request
  is `/api/accounts/{slot}/...` for an awake shard, the connection stays here:
  requests are parsed by httptools (llhttp, the parser Node.js uses), their
  heads rewritten, and bodies streamed both ways (`exchange.Exchange`).
- `upstream.UpstreamPool` keeps keep-alive connections to each worker.
- Any other connection (console, Socket.IO, config, a shard that must be woken)
  is handed whole to the aiohttp app at its first byte, so the app serves it
  exactly as before. A later non-slot request on a connection kept here goes
  to the app over an internal socket.
"""
