"""wasp: WhatsApp sessions on Kubernetes, sharded by slot.

This package is the shared core that the three programs import: the slot
model (`wasp.slots`) and the `wasp` command line (`wasp.cli`). The programs
themselves live in their own top-level folders: `operator/wasp_operator`,
`master/wasp_master` and `worker/wasp_worker`.
"""

__version__ = "0.1.0"
